"""Reads for the conversation domain."""

from __future__ import annotations

from chatbot.models import Bot, Message

DEMO_BOT_NAME = "Demo shop assistant"


def demo_bot() -> Bot | None:
    return Bot.objects.filter(name=DEMO_BOT_NAME).order_by("id").first()


def bot_by_public_key(key: str) -> Bot | None:
    return Bot.objects.filter(public_key=key).first()


def conversation_history(*, conversation_id: int, limit: int, after: int | None = None) -> list[Message]:
    """What the visitor sees of a conversation: its newest ``limit`` messages (only those
    after the message id ``after``, when given), oldest first. A reply still being written
    (its row is reserved empty) is left out."""
    if limit <= 0:
        return []
    rows = Message.objects.filter(
        conversation_id=conversation_id, role__in=[Message.Role.VISITOR, Message.Role.BOT, Message.Role.AGENT]
    ).exclude(text="")
    if after is not None:
        rows = rows.filter(id__gt=after)
    fields = ("id", "role", "text", "source", "status", "created_at")
    return list(rows.order_by("-id").only(*fields)[:limit])[::-1]
