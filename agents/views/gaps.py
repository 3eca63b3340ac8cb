"""Knowledge gaps: unanswered visitor questions, clustered."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from agents.access import agent_required


@agent_required
def gap_list(request: HttpRequest) -> HttpResponse:
    return HttpResponse("not built yet", status=501)
