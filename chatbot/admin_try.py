"""The "try a question" box on a bot's admin page: top matches, scores and the decision."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from chatbot.models import Bot

MAX_TRY_CHARS = 500


def try_question_context(request: HttpRequest, bot: Bot | None) -> dict[str, Any]:
    question = request.GET.get("try", "").strip()[:MAX_TRY_CHARS]
    if bot is None or not question:
        return {"try_question": question}
    from knowledge.matching import match  # loads the model on first use only

    result = match(bot, question, k=5)
    return {
        "try_question": question,
        "try_result": result,
        "try_thresholds": (bot.answer_threshold, bot.reference_threshold),
    }
