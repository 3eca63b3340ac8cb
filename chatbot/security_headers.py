"""Content-Security-Policy on the staff pages: the admin (its calibration and "try a
question" pages included), the agent workspace and its live console.

Every page gets the policy unless its view is public: the demo shop stands in for a
company's own site, whose policy is the company's to set, and the widget is a guest there.
New staff pages are covered without anyone remembering to. Django's SecurityMiddleware
adds the other headers (X-Content-Type-Options, Referrer-Policy, HSTS).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.utils.decorators import sync_and_async_middleware

# Scripts and styles from our own origin only: no inline <script>, no event-handler
# attributes, no <style> blocks or style="" attributes (the staff templates keep theirs in
# static/staff/; Django's admin has none). connect-src 'self' covers the live console's
# ws:/wss: socket on the same host. data: images: the admin's CSS has none today, but
# some admin widgets draw icons that way.
STAFF_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
HEADER = "Content-Security-Policy"

# Views (URL names) visitors see: no policy of ours.
PUBLIC_VIEWS = frozenset({"demo"})


def is_public(request: HttpRequest) -> bool:
    match = getattr(request, "resolver_match", None)
    return match is not None and match.view_name in PUBLIC_VIEWS


def with_policy(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    """STAFF_POLICY on the response unless it is a public view's. Under DEBUG, error pages
    go without: Django's technical 404/500 pages are built on inline styles and scripts."""
    if HEADER in response or is_public(request):
        return response
    if settings.DEBUG and response.status_code >= 400:
        return response
    response[HEADER] = STAFF_POLICY
    return response


@sync_and_async_middleware
def staff_content_security_policy(get_response: Callable[[HttpRequest], Any]) -> Callable[[HttpRequest], Any]:
    # Both flavours, so that async views (/readyz) don't hop to a thread for this.
    if iscoroutinefunction(get_response):

        async def middleware(request: HttpRequest) -> HttpResponseBase:
            return with_policy(request, await get_response(request))

        return markcoroutinefunction(middleware)

    def middleware_sync(request: HttpRequest) -> HttpResponseBase:
        return with_policy(request, get_response(request))

    return middleware_sync
