"""Statistics page: parse the filters, collect the figures, draw them."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.safestring import SafeString

from agents.access import agent_required, visible_bots
from agents.selectors.percentiles import PERCENTILES
from agents.selectors.stats import Statistics, statistics_collect, stats_period
from chatbot.charts import Bar, Series, bar_chart_render, column_chart_render
from chatbot.models import Bot

MAX_DAYS = 365


class StatsFilterForm(forms.Form):
    bot = forms.TypedChoiceField(
        required=False,
        coerce=int,
        empty_value=None,
        error_messages={"invalid_choice": "No such bot, or not one of the bots you may see."},
    )
    days = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_DAYS,
        error_messages={"invalid": "Days must be a whole number from 1 to 365."},
    )
    date_from = forms.DateField(
        required=False, error_messages={"invalid": "From must be a date like 2025-03-01."}
    )
    date_to = forms.DateField(
        required=False, error_messages={"invalid": "To must be a date like 2025-03-31."}
    )

    def __init__(self, *args: Any, bots: list[Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["bot"].choices = [("", "All bots"), *((b.pk, b.name) for b in bots)]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.errors:
            return data
        days = data.get("days") or settings.AGENT_STATS_DAYS
        date_to = data.get("date_to") or timezone.localdate()
        date_from = data.get("date_from") or date_to - timedelta(days=days - 1)
        if date_from > date_to:
            raise forms.ValidationError("From must not be after To.")
        if (date_to - date_from).days + 1 > MAX_DAYS:
            raise forms.ValidationError(f"Choose at most {MAX_DAYS} days.")
        data["date_from"], data["date_to"], data["days"] = date_from, date_to, days
        return data


@agent_required
def statistics(request: HttpRequest) -> HttpResponse:
    bots = list(visible_bots(request.user))
    form = StatsFilterForm(request.GET, bots=bots)
    if not form.is_valid():
        context = {"form": form, "bots": bots, "default_days": settings.AGENT_STATS_DAYS}
        return render(request, "agents/stats.html", context, status=400)
    chosen = form.cleaned_data["bot"]
    period = stats_period(date_from=form.cleaned_data["date_from"], date_to=form.cleaned_data["date_to"])
    if chosen:
        bot_ids: list[int] | None = [chosen]
    else:
        # Seeing every bot: no filter at all, which spares every query a join.
        bot_ids = None if len(bots) == Bot.objects.count() else [b.pk for b in bots]
    stats = statistics_collect(bot_ids=bot_ids, period=period)
    replies = stats.replies
    context = {
        "form": form,
        "bots": bots,
        "chosen": chosen,
        "default_days": settings.AGENT_STATS_DAYS,
        "stats": stats,
        "charts": _charts(stats),
        "shares": [(s, _rate(s.replies, replies.total)) for s in replies.sources],
        "deflection_rate": _rate(replies.deflected, replies.total),
        "up_rate": _rate(replies.up, replies.up + replies.down),
        "gaps_query": _gaps_query(period_start=period.date_from, bot=chosen),
    }
    return render(request, "agents/stats.html", context)


def _gaps_query(*, period_start: date, bot: int | None) -> str:
    """The gap report covers the last N days up to today: from the period's first day on."""
    days = min(MAX_DAYS, max(1, (timezone.localdate() - period_start).days + 1))
    return urlencode({"days": days, **({"bot": bot} if bot else {})})


def _day(value: date) -> str:
    return value.strftime("%b %d").replace(" 0", " ")


def _rate(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "–"


def _percent(part: int, whole: int) -> str:
    return f"{part} ({part / whole:.1%})" if whole else str(part)


def _charts(stats: Statistics) -> dict[str, SafeString]:
    days = stats.activity.days
    return {
        "per_day": column_chart_render(
            title="Conversations and messages per day",
            labels=[_day(d.day) for d in days],
            series=[
                Series("Conversations", [d.conversations for d in days], css="s0"),
                Series("Messages", [d.messages for d in days], css="s1"),
            ],
        ),
        "per_hour": column_chart_render(
            title="Messages per hour of day",
            labels=[f"{h:02d}" for h in range(24)],
            series=[Series("Messages", stats.activity.hours)],
        ),
        "cost": _cost_chart(stats),
        "top_entries": bar_chart_render(
            title="Most used knowledge-base entries",
            bars=[Bar(e.question, e.replies) for e in stats.top_entries],
        ),
        **_reply_charts(stats),
    }


def _reply_charts(stats: Statistics) -> dict[str, SafeString]:
    replies = stats.replies
    rated = replies.up + replies.down
    return {
        "sources": bar_chart_render(
            title="Replies by source",
            bars=[
                Bar(s.label, s.replies, note=_percent(s.replies, replies.total), css=s.source)
                for s in replies.sources
            ],
            scale=replies.total,
        ),
        "ttft": column_chart_render(
            title="Time to first reply by source, ms",
            labels=[s.label for s in replies.sources],
            series=[Series(f"p{p}", [s.ttft[p] or 0 for s in replies.sources]) for p in PERCENTILES],
        ),
        "feedback": bar_chart_render(
            title="Thumbs up and down",
            bars=[
                Bar("Thumbs up", replies.up, note=_percent(replies.up, rated), css="up"),
                Bar("Thumbs down", replies.down, note=_percent(replies.down, rated), css="down"),
            ],
            scale=rated,
        ),
    }


def _cost_chart(stats: Statistics) -> SafeString:
    days = stats.period.days()
    models = sorted({u.model for u in stats.usage})
    cost = {(u.day, u.model): u.cost for u in stats.usage}
    return column_chart_render(
        title="LLM cost per day, by model",
        labels=[_day(d) for d in days],
        series=[Series(m, [cost.get((d, m), 0) for d in days]) for m in models],
        stacked=True,
    )
