"""Turn a reviewed bot reply into knowledge: a new entry, or a new phrasing of an entry.

Saving an entry or a phrasing bumps the bot's ``kb_revision`` (knowledge.signals), and the
new phrasings are embedded in the same transaction, so every server process rebuilds its
index with them on its next search, and never sees the entry without its vectors.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction

from agents.models import Correction
from chatbot.models import Message
from knowledge import embeddings
from knowledge.models import Alternative, Entry
from knowledge.services import entries_embed, entry_upsert


def _encoder_load() -> None:
    # Loading the model takes seconds; do it before the transaction, because SQLite holds
    # its write lock from the first write until the commit.
    embeddings.get_encoder()


def correction_entry_create(
    *,
    reply: Message,
    question: str,
    answer: str,
    alternatives: Iterable[str] = (),
    tags: Iterable[str] = (),
    agent: Any,
) -> Correction:
    """A new entry of the reply's bot, embedded, and the Correction linking the reply to it."""
    _encoder_load()
    with transaction.atomic():
        entry, _ = entry_upsert(
            bot=reply.conversation.bot, question=question, answer=answer, alternatives=alternatives, tags=tags
        )
        entries_embed(entries=[entry])
        return Correction.objects.create(
            message=reply, entry=entry, kind=Correction.Kind.NEW_ENTRY, question=entry.question, agent=agent
        )


def correction_alternative_add(*, reply: Message, entry: Entry, question: str, agent: Any) -> Correction:
    """``question`` becomes a phrasing of ``entry`` (unless it already is one), embedded."""
    question = question.strip()
    if not question:
        raise ValueError("The question is empty.")
    if entry.bot_id != reply.conversation.bot_id:
        raise ValueError("The entry belongs to another bot.")
    _encoder_load()
    with transaction.atomic():
        if question not in entry.phrasings():
            Alternative.objects.create(entry=entry, text=question)
        entries_embed(entries=[entry])
        return Correction.objects.create(
            message=reply, entry=entry, kind=Correction.Kind.ALTERNATIVE, question=question, agent=agent
        )
