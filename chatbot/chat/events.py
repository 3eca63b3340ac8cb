"""What travels between the visitor's and the agents' sockets over the channel layer
(Redis when REDIS_URL is set, so the two sides may be on different server processes).

Groups: ``conversation.<id>`` (every tab of the visitor), ``agents.conversation.<id>``
(agent sockets that took or opened the conversation), ``agents.bot.<bot id>`` (agent
sockets that see the bot's queue)."""

from __future__ import annotations

import time
from typing import Any

from channels.layers import BaseChannelLayer

TYPING_EVERY = 2.0  # seconds: at most one typing frame relayed per connection (and conversation)


def conversation_group(conversation_id: int) -> str:
    return f"conversation.{conversation_id}"


def agents_conversation_group(conversation_id: int) -> str:
    return f"agents.conversation.{conversation_id}"


def agents_bot_group(bot_id: int) -> str:
    return f"agents.bot.{bot_id}"


async def to_visitor(layer: BaseChannelLayer, conversation_id: int, frame: dict[str, Any]) -> None:
    """To every tab of the conversation's visitor (handled by ChatConsumer.chat_frame)."""
    event = {"type": "chat.frame", "frame": frame, "sender": ""}
    await layer.group_send(conversation_group(conversation_id), event)


async def to_agents(
    layer: BaseChannelLayer, conversation_id: int, frame: dict[str, Any], *, sender: str = ""
) -> None:
    """To the agent sockets that have the conversation open (but ``sender``)."""
    event = {"type": "agent.frame", "frame": frame, "sender": sender}
    await layer.group_send(agents_conversation_group(conversation_id), event)


# The visitor's side tells the agents what happened, as plain events; the agent socket
# (``agents.consumers``) builds its own frames from them.


async def visitor_message(layer: BaseChannelLayer, conversation_id: int, item: dict[str, Any]) -> None:
    """A visitor's message (a history item) for the agents who have the conversation open."""
    event = {"type": "visitor.message", "conversation": conversation_id, "message": item}
    await layer.group_send(agents_conversation_group(conversation_id), event)


async def visitor_typing(layer: BaseChannelLayer, conversation_id: int) -> None:
    event = {"type": "visitor.typing", "conversation": conversation_id}
    await layer.group_send(agents_conversation_group(conversation_id), event)


async def queue_changed(layer: BaseChannelLayer, bot_id: int) -> None:
    """The bot's agents recompute their queue and their own list (``queue.update``)."""
    await layer.group_send(agents_bot_group(bot_id), {"type": "agents.queue"})


class Throttle:
    """Lets one event per key through every ``every`` seconds."""

    def __init__(self, every: float = TYPING_EVERY) -> None:
        self.every = every
        self.last: dict[object, float] = {}

    def allow(self, key: object = None) -> bool:
        now = time.monotonic()
        if now - self.last.get(key, float("-inf")) < self.every:
            return False
        self.last[key] = now
        return True
