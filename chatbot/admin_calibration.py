"""The admin side of a bot's automatic calibration: the "Calibration" panel on the bot's
page (what is in force and why, the estimated curve, the entries taken for one another),
the "Recalibrate now" button, and the form rule that editing a threshold pins it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.db import transaction
from django.http import HttpRequest
from django.utils.safestring import SafeString

from chatbot.charts import Marker, Series, line_chart_render
from chatbot.models import Bot
from knowledge import matching
from knowledge.calibration import optimism_warning
from knowledge.calibration_services import Thresholds, calibrated_read, thresholds_for
from knowledge.models import Calibration, Entry
from knowledge.services import bot_embedding_model

log = logging.getLogger(__name__)
ESTIMATES = ("precision", "coverage", "false_answer_rate")
MAX_CONFUSED = 20  # pairs shown; the calibration keeps up to 50, most phrasings first

ORIGINS = {
    "auto": "automatic (calibrated from the knowledge base)",
    "labelled": "labelled (set by kb_calibrate from labelled questions)",
    "pinned": "pinned by an admin",
    "uncalibrated": "not calibrated yet: the bot's own thresholds serve until the first calibration",
}
IMPOSSIBLE_HINT = "Add more entries, or more phrasings to each (three or four), then recalibrate."
NO_THRESHOLD = (
    "No threshold reaches the target precision: the bot never answers on its own; "
    "entries are still given to the LLM as references."
)
PINNED_BY_EDIT = (
    "The thresholds you edited are now pinned: the source switched from Automatic to Pinned. "
    "Set it back to Automatic to let the calibration choose them again."
)


def percent(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.1f}%"


def threshold_text(value: float) -> str:
    """A threshold as shown: ``never`` for one no confidence reaches (no threshold met the target)."""
    return "never" if value > 1.0 else f"{value:.3f}".rstrip("0").rstrip(".")


def origin_label(source: str) -> str:
    return ORIGINS.get(source, source)


@dataclass(frozen=True)
class EntryLink:
    id: int
    question: str | None  # None: deleted since the calibration ran


@dataclass(frozen=True)
class ConfusedPair:
    entry: EntryLink
    taken_for: EntryLink
    phrasings: int
    examples: list[str]


@dataclass(frozen=True)
class CurvePoint:
    threshold: str
    precision: str
    coverage: str
    false_answers: str
    answering: bool  # at or above the answer threshold in force


@dataclass(frozen=True)
class Panel:
    model: str
    thresholds: Thresholds
    answer: str
    reference: str
    origin: str
    row: Calibration | None
    freshness: str  # "up to date", "re-running", ...
    target_differs: bool  # fitted for another target than the bot's (until it re-runs)
    warnings: list[str]
    estimated: dict[str, str]
    curve: list[CurvePoint]
    chart: SafeString | None
    confused: list[ConfusedPair]
    confused_more: int


def calibration_panel(bot: Bot) -> Panel:
    model = bot_embedding_model(bot.pk)
    row = Calibration.objects.filter(bot=bot, model_name=model).first()
    thresholds = thresholds_for(bot, calibrated_read(bot.pk, model))
    ok = row is not None and row.status == Calibration.Status.OK
    confused = confused_pairs(row.confused) if ok else []
    return Panel(
        model=model,
        thresholds=thresholds,
        answer=threshold_text(thresholds.answer),
        reference=threshold_text(thresholds.reference),
        origin=origin_label(thresholds.source),
        row=row,
        freshness=freshness(row, bot),
        target_differs=ok and abs(row.target_precision - bot.target_precision) > 1e-9,
        warnings=calibration_warnings(row, thresholds.source),
        estimated={key: percent(row.estimated[key]) for key in ESTIMATES if key in row.estimated}
        if ok
        else {},
        curve=curve_points(row.curve, thresholds) if ok else [],
        chart=curve_chart(row.curve, thresholds) if ok and row.curve else None,
        confused=confused[:MAX_CONFUSED],
        confused_more=max(len(confused) - MAX_CONFUSED, 0),
    )


def freshness(row: Calibration | None, bot: Bot) -> str:
    if row is None or row.kb_revision == bot.kb_revision:
        return "up to date"
    if settings.KB_AUTO_CALIBRATE:  # a knowledge-base change schedules a background run
        return "re-running"
    return "out of date (automatic calibration is off: recalibrate now)"


def calibration_warnings(row: Calibration | None, source: str) -> list[str]:
    if row is None:
        return []
    if row.status == Calibration.Status.IMPOSSIBLE:
        return [f"Too little to calibrate from: {row.message}. {IMPOSSIBLE_HINT}"]
    if row.status == Calibration.Status.FAILED:
        return [f"The calibration failed: {row.message}"]
    warnings = [row.message] if row.message else []  # e.g. "the last re-run failed: ..."
    if (optimistic := optimism_warning(row.counts)) is not None:
        warnings.append(optimistic)
    if row.answer_threshold is None and source == "auto":
        warnings.append(NO_THRESHOLD)
    elif row.answer_threshold is None:
        warnings.append(f"No automatic threshold reaches the target precision; the {source} ones serve.")
    return warnings


def curve_points(curve: list[dict[str, float]], thresholds: Thresholds) -> list[CurvePoint]:
    return [
        CurvePoint(
            threshold=threshold_text(point["threshold"]),
            precision=percent(point["precision"]),
            coverage=percent(point["coverage"]),
            false_answers=percent(point["false_answer_rate"]),
            answering=point["threshold"] >= thresholds.answer,
        )
        for point in curve
    ]


def curve_chart(curve: list[dict[str, float]], thresholds: Thresholds) -> SafeString:
    markers = [Marker(thresholds.reference, f"reference {threshold_text(thresholds.reference)}", "reference")]
    if thresholds.answer <= 1.0:
        markers.append(Marker(thresholds.answer, f"answer {threshold_text(thresholds.answer)}", "answer"))
    return line_chart_render(
        title="Estimated precision and coverage by answer threshold",
        x=[point["threshold"] for point in curve],
        series=[
            Series("precision", [point["precision"] for point in curve], css="precision"),
            Series("coverage", [point["coverage"] for point in curve], css="coverage"),
        ],
        x_range=(0.0, 1.0),
        y_max=1.0,
        markers=markers,
        y_fmt=lambda value: f"{value * 100:.3g}%",
    )


def confused_pairs(stored: list[dict[str, Any]]) -> list[ConfusedPair]:
    ids = {pair["entry"] for pair in stored} | {pair["confused_with"] for pair in stored}
    questions = dict(Entry.objects.filter(pk__in=ids).values_list("pk", "question"))
    return [
        ConfusedPair(
            entry=EntryLink(pair["entry"], questions.get(pair["entry"])),
            taken_for=EntryLink(pair["confused_with"], questions.get(pair["confused_with"])),
            phrasings=pair["phrasings"],
            examples=list(pair.get("examples", [])),
        )
        for pair in stored
    ]


def calibration_outcome(row: Calibration) -> tuple[int, str]:
    """The message level and text that report a calibration just run."""
    if row.status == Calibration.Status.IMPOSSIBLE:
        return messages.WARNING, f"Could not calibrate: {row.message}. {IMPOSSIBLE_HINT}"
    if row.status == Calibration.Status.FAILED:
        return messages.ERROR, f"Calibration failed: {row.message}"
    if row.answer_threshold is None:
        return messages.WARNING, f"Calibrated for {percent(row.target_precision)} precision. {NO_THRESHOLD}"
    return messages.SUCCESS, (
        f"Calibrated on {row.counts.get('in_scope', 0)} phrasings in {row.seconds:.1f} s: answers at "
        f"confidence ≥ {threshold_text(row.answer_threshold)} (estimated precision "
        f"{percent(row.estimated.get('precision'))}, coverage {percent(row.estimated.get('coverage'))})."
    )


def calibration_run(request: HttpRequest, bot: Bot) -> Calibration | None:
    """Calibrate ``bot`` now and report the outcome as a message; None if it raised."""
    try:
        with transaction.atomic():  # a failure must not spoil the request's own transaction
            row = matching.calibrate_now(bot)
    except Exception as err:  # reported, not raised: the stored calibration keeps serving
        log.exception("calibrating bot %s from the admin failed", bot.pk)
        messages.error(request, f"Calibration failed: {type(err).__name__}: {err}")
        return None
    level, text = calibration_outcome(row)
    messages.add_message(request, level, text)
    return row


class BotAdminForm(forms.ModelForm):
    """Editing a threshold while the source is Automatic pins the thresholds: the
    automatic source ignores them, so the edit would otherwise do nothing."""

    pinned_by_edit = False

    class Meta:
        model = Bot
        # The threshold fields; BotAdmin's fieldsets add the rest of the page.
        fields = ["threshold_source", "target_precision", "answer_threshold", "reference_threshold"]
        help_texts = {
            "threshold_source": (
                "Automatic: the answer and reference thresholds are chosen from the knowledge base for "
                "the target precision, and the two threshold fields below are ignored. Labelled (set by "
                "kb_calibrate) or pinned: the two fields below are used as they are. Editing either "
                "threshold while this is Automatic switches it to Pinned."
            ),
            "target_precision": (
                "Share of the bot's own answers that should be right (0.5 to 0.999). The automatic answer "
                "threshold is the lowest that reaches it; saving a new value re-calibrates at once."
            ),
            "answer_threshold": (
                "Used only when the source is Pinned or Labelled: the bot replies with an entry's answer "
                "when its confidence (probability right) reaches this. Editing it while the source is "
                "Automatic pins it."
            ),
            "reference_threshold": (
                "Used only when the source is Pinned or Labelled: entries whose confidence reaches this "
                "are given to the LLM as references. At most the answer threshold. Editing it while the "
                "source is Automatic pins it."
            ),
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        edited = {"answer_threshold", "reference_threshold"} & set(self.changed_data)
        source_kept = "threshold_source" not in self.changed_data  # an explicit choice wins
        if edited and source_kept and data.get("threshold_source") == Bot.ThresholdSource.AUTO:
            data["threshold_source"] = Bot.ThresholdSource.PINNED
            self.pinned_by_edit = True
        return data
