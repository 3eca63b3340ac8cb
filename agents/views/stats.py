"""Statistics page."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from agents.access import agent_required


@agent_required
def statistics(request: HttpRequest) -> HttpResponse:
    return HttpResponse("not built yet", status=501)
