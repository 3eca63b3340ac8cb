"""The running summary of a long conversation: when the oldest turns no longer fit the
LLM's context budget, one LLM call folds them into ``Conversation.summary``, in the
background, at most one refresh per conversation at a time (``chatbot.replying`` schedules
it after a reply whose prompt had to leave history out)."""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import sync_to_async

from chatbot.llm import LLMError, complete
from chatbot.prompting import context_budget, split_for_summary, summary_request
from chatbot.reply_store import summary_save, summary_source
from chatbot.runtime import runtime

log = logging.getLogger(__name__)


class SummaryRefreshes:
    """The conversations whose summary is being refreshed, and the background tasks doing
    it (a runtime part; a reference is kept until each is done)."""

    def __init__(self) -> None:
        self.running: set[int] = set()
        self.tasks: set[asyncio.Task[bool]] = set()


def _refreshes() -> SummaryRefreshes:
    return runtime().part(SummaryRefreshes)


def summary_refresh_schedule(conversation_id: int) -> asyncio.Task[bool] | None:
    """Refresh the summary in the background (at most one refresh per conversation at a time)."""
    refreshes = _refreshes()
    if conversation_id in refreshes.running:
        return None
    task = asyncio.get_running_loop().create_task(summary_refresh(conversation_id=conversation_id))
    refreshes.tasks.add(task)
    task.add_done_callback(refreshes.tasks.discard)
    return task


async def summary_refreshes_wait() -> None:
    """Until the summary refreshes running in the background are done."""
    await asyncio.gather(*_refreshes().tasks)


async def summary_refresh(*, conversation_id: int, budget: int | None = None) -> bool:
    """Fold the oldest turns that no longer fit the context budget into Conversation.summary
    with one LLM call. True when a new summary was stored."""
    running = _refreshes().running
    if conversation_id in running:
        return False
    running.add(conversation_id)
    try:
        bot, summary, until, rows = await sync_to_async(summary_source)(conversation_id)
        fold = split_for_summary([(role, text) for _, role, text in rows], budget or context_budget())
        if fold == 0:
            return False
        request = summary_request(bot=bot, summary=summary, turns=[(r, t) for _, r, t in rows[:fold]])
        try:
            result = await complete(request)
        except LLMError as err:
            log.warning("summary refresh for conversation %s failed: %s", conversation_id, err)
            return False
        if not result.text.strip():
            return False
        return await sync_to_async(summary_save)(
            conversation_id, previous=until, until=rows[fold - 1][0], summary=result.text.strip()
        )
    finally:
        running.discard(conversation_id)
