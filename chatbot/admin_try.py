"""The "try a question" box on a bot's admin page: top matches, confidences, the decision
and the thresholds it was made with."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from chatbot.admin_calibration import origin_label, threshold_text
from chatbot.models import Bot
from knowledge.matching import match

MAX_TRY_CHARS = 500


def try_question_context(request: HttpRequest, bot: Bot | None) -> dict[str, Any]:
    question = request.GET.get("try", "").strip()[:MAX_TRY_CHARS]
    if bot is None or not question:
        return {"try_question": question}
    result = match(bot, question, k=5)  # loads the embedding model on first use
    context: dict[str, Any] = {"try_question": question, "try_result": result, "try_thresholds": None}
    if result.thresholds is not None:  # None only for an empty question
        context.update(
            try_thresholds=result.thresholds,
            try_answer=threshold_text(result.thresholds.answer),
            try_reference=threshold_text(result.thresholds.reference),
            try_origin=origin_label(result.thresholds.source),
        )
    return context
