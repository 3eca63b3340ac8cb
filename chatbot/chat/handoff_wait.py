"""The wait for a person that a chat connection times (HANDOFF_WAIT_SECONDS, from the moment
the visitor asked): when no agent took the conversation in time, every tab of the visitor
is told and the agents' queues shrink. The conversation's state is ``chatbot.handoff``'s."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from channels.db import database_sync_to_async
from channels.layers import BaseChannelLayer

from chatbot.chat import events, frames
from chatbot.chat.session import Session
from chatbot.handoff import handoff_expire, wait_remaining

log = logging.getLogger(__name__)


class HandoffWait:
    def __init__(self, layer: BaseChannelLayer, session: Session) -> None:
        self.layer = layer
        self.session = session
        self.timer: asyncio.Task[None] | None = None
        self.since: datetime | None = None  # the start of the wait the timer is for

    def start(self, since: datetime | None, bot_id: int) -> None:
        """Time the wait for a person that began at ``since`` (once per wait)."""
        if self.timer is not None and not self.timer.done():
            if self.since == since:
                return
            self.timer.cancel()
        self.since = since
        self.timer = asyncio.create_task(self._expire(since, bot_id))

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()

    async def ended(self, bot_id: int) -> None:
        """No agent took the conversation in time: every tab is told, the agents' queues shrink."""
        frame = frames.handoff_unavailable(self.session.lang, timed_out=True)
        await events.to_visitor(self.layer, self.session.conversation_id, frame)
        await events.queue_changed(self.layer, bot_id)

    async def _expire(self, since: datetime | None, bot_id: int) -> None:
        conversation_id = self.session.conversation_id
        try:
            await asyncio.sleep(wait_remaining(since))
            expired = await database_sync_to_async(handoff_expire)(
                conversation_id=conversation_id, waiting_since=since
            )
            if expired:
                await self.ended(bot_id)
        except Exception:
            log.exception("handoff wait of conversation %s", conversation_id)
