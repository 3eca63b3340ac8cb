"""Turn a bot reply into a knowledge-base entry or an alternative phrasing."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from agents.access import agent_required


@agent_required
def correct(request: HttpRequest, pk: int) -> HttpResponse:
    return HttpResponse("not built yet", status=501)
