"""While the database is unreachable (PostgreSQL restarting, a failover, the network), a page
that needs it is answered 503 with a short message and ``Retry-After``, not a 500 with a
traceback page; ``/readyz`` says the same with its reason (``chatbot.readiness``), so a
load balancer stops sending visitors meanwhile.

Nothing is kept broken afterwards: with ``CONN_HEALTH_CHECKS`` (on whenever
``DB_CONN_MAX_AGE`` > 0, ``chatbot.config``) Django drops a persistent connection that
failed and opens a new one for the next request, so the first request after the database
is back succeeds without a server restart.
"""

from __future__ import annotations

import logging

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.utils.deprecation import MiddlewareMixin

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
MESSAGE = "Service temporarily unavailable: the database cannot be reached. Please try again in a moment.\n"


def database_unreachable(err: BaseException) -> bool:
    """A failure of the database connection rather than of the query (also psycopg's own
    errors, which Django re-raises as these)."""
    return isinstance(err, (OperationalError, InterfaceError))


def outage_response() -> HttpResponse:
    response = HttpResponse(MESSAGE, status=503, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    response["Cache-Control"] = "no-store"
    return response


class DatabaseOutageMiddleware(MiddlewareMixin):
    """Last in ``MIDDLEWARE``: the first to see a view's exception, DEBUG or not."""

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not database_unreachable(exception):
            return None
        # One line, not a traceback per request while the outage lasts.
        log.warning("database unreachable: %s %s answered 503 (%s)", request.method, request.path, exception)
        return outage_response()
