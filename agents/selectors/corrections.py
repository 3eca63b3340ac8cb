"""Reads for the correction page: the reply under review and the question it answered."""

from __future__ import annotations

import logging
from typing import Any

from django.http import Http404

from agents.access import message_or_404
from chatbot.models import Message
from knowledge.matching import Candidate, match

log = logging.getLogger(__name__)

SUGGESTIONS = 5


def correctable_reply_or_404(*, user: Any, pk: int) -> Message:
    """A non-empty bot reply of a bot the agent sees; anything else is a 404."""
    reply = message_or_404(user, pk)
    if reply.role != Message.Role.BOT or not reply.text.strip():
        raise Http404("Only a bot's reply can be turned into a knowledge-base entry.")
    return reply


def reply_question(*, reply: Message) -> str:
    """The visitor message this reply answered: the latest one before it in the conversation."""
    text = (
        Message.objects.filter(
            conversation_id=reply.conversation_id, pk__lt=reply.pk, role=Message.Role.VISITOR
        )
        .order_by("-pk")
        .values_list("text", flat=True)
        .first()
    )
    return text or ""


def entry_suggestions(*, reply: Message, question: str) -> list[Candidate]:
    """The bot's entries closest to ``question``, best first, with their confidence."""
    if not question.strip():
        return []
    try:
        return match(reply.conversation.bot, question, k=SUGGESTIONS).candidates
    except Exception:
        # Suggestions are a convenience: a broken index must not block the correction itself.
        log.exception("knowledge-base match failed for bot %s", reply.conversation.bot_id)
        return []
