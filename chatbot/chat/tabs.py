"""The other connections (the visitor's other tabs) of a conversation, as one connection
knows them.

A tab says ``joined`` to the conversation's group after its first hello, those present
answer it directly (``present``), and a closing tab says ``left``; so a visitor with one tab,
the usual case, costs no channel-layer message per reply frame. A tab of a crashed process
is never "left": the others keep sending to it, which is harmless.

The other tabs are a courtesy to the tab that acts: when Redis stays unreachable past
CHANNEL_LAYER_OUTAGE_SECONDS (``chatbot.channel_layer``), what they would have been told is
logged and dropped, and this tab's own reply and hello go on (the others catch up from the
history when they next connect).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

from channels.layers import BaseChannelLayer

from chatbot.channel_layer import ChannelLayerUnavailable
from chatbot.chat import events

log = logging.getLogger(__name__)


class Tabs:
    def __init__(self, layer: BaseChannelLayer, channel_name: str, conversation_id: int) -> None:
        self.layer = layer
        self.channel_name = channel_name
        self.conversation_id = conversation_id
        self.group = events.conversation_group(conversation_id)
        self.others: set[str] = set()  # channel names of the conversation's other tabs

    async def join(self) -> None:
        # The layer keeps the membership even when Redis is away, and adds it once it is back.
        await self._best_effort("joining", self.layer.group_add(self.group, self.channel_name))
        await self._say("joined")

    async def leave(self) -> None:
        await self._best_effort("leaving", self.layer.group_discard(self.group, self.channel_name))
        await self._say("left")

    async def heard(self, event: dict[str, Any]) -> None:
        """Another tab joined, is present, or left (a ``chat.tab`` event)."""
        sender = event["sender"]
        if sender == self.channel_name:
            return
        if event["event"] == "left":
            self.others.discard(sender)
            return
        self.others.add(sender)
        if event["event"] == "joined":
            reply = {"type": "chat.tab", "event": "present", "sender": self.channel_name}
            await self._best_effort("tab present", self.layer.send(sender, reply))

    async def broadcast(self, frame: dict[str, Any]) -> None:
        """To the conversation's other tabs, if there are any (``chat.frame``)."""
        if not self.others:
            return
        event = {"type": "chat.frame", "frame": frame, "sender": self.channel_name}
        await self._best_effort(f"a {frame.get('type')} frame", self.layer.group_send(self.group, event))

    async def _say(self, event: str) -> None:
        said = {"type": "chat.tab", "event": event, "sender": self.channel_name}
        await self._best_effort(f"tab {event}", self.layer.group_send(self.group, said))

    async def _best_effort(self, what: str, operation: Awaitable[None]) -> None:
        try:
            await operation
        except ChannelLayerUnavailable as err:
            log.warning(
                "conversation %s: %s not relayed to the other tabs (%s)", self.conversation_id, what, err
            )
