"""Knowledge gaps: unanswered visitor questions, clustered."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from agents.access import agent_required, visible_bots
from agents.forms_corrections import GapFilterForm
from agents.selectors.gaps import CLUSTERS_SHOWN, gap_report


@agent_required
@require_safe
def gap_list(request: HttpRequest) -> HttpResponse:
    data = request.GET.copy()
    data.setdefault("days", str(settings.AGENT_GAP_DAYS))
    form = GapFilterForm(data, bots=visible_bots(request.user))
    form.is_valid()  # an invalid value is reported on the form and its default used
    report = gap_report(user=request.user, days=form.days_value(), bot=form.bot_value())
    context = {
        "form": form,
        "report": report,
        "max_questions": settings.AGENT_GAP_MAX_QUESTIONS,
        "clusters_shown": CLUSTERS_SHOWN,
    }
    return render(request, "agents/gaps.html", context)
