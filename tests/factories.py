"""Small builders for test data (plain functions, no factory library)."""

from __future__ import annotations

from typing import Any

from chatbot.models import Bot, Conversation, Message, Visitor


def make_bot(**fields: Any) -> Bot:
    fields.setdefault("name", "Test bot")
    return Bot.objects.create(**fields)


def make_conversation(bot: Bot | None = None, **fields: Any) -> Conversation:
    bot = bot or make_bot()
    visitor = fields.pop("visitor", None) or Visitor.objects.create(bot=bot)
    return Conversation.objects.create(bot=bot, visitor=visitor, **fields)


def make_message(conversation: Conversation, **fields: Any) -> Message:
    fields.setdefault("role", Message.Role.VISITOR)
    fields.setdefault("text", "hello")
    return Message.objects.create(conversation=conversation, **fields)
