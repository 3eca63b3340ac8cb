"""The server process's own work (chatbot.lifecycle): started by the first connection under
daphne, or by ASGI lifespan events under servers that send them."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from chatbot import inflight
from chatbot.lifecycle import ProcessLifecycle
from chatbot.models import Message, ProcessHeartbeat
from chatbot.runtime import Runtime, runtime
from knowledge.docs import jobs
from knowledge.models import Source
from tests.chatbot.ws_client import db
from tests.factories import make_bot, make_conversation, make_message

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def keeper() -> inflight.Keeper:
    return inflight.keeper()  # the test's runtime's: new


class App:
    def __init__(self) -> None:
        self.scopes: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scopes.append(scope["type"])


def left_by_a_dead_process() -> list[Message]:
    conversation = make_conversation()
    ProcessHeartbeat.objects.create(owner="gone", beat_at=timezone.now() - timedelta(hours=1))
    return [
        make_message(conversation, role="bot", source="llm", status="pending", text=text, owner="gone")
        for text in ("Half a sent", "")
    ]


def statuses(messages: list[Message]) -> list[str | None]:
    found = dict(Message.objects.filter(pk__in=[m.pk for m in messages]).values_list("pk", "status"))
    return [found.get(m.pk) for m in messages]


async def until_settled(messages: list[Message]) -> list[str | None]:
    for _ in range(250):
        now = await db(statuses, messages)
        if "pending" not in now:
            return now
        await asyncio.sleep(0.02)
    return now


async def test_the_first_request_starts_the_heartbeat_and_reaps_what_a_dead_process_left(
    keeper: inflight.Keeper,
) -> None:
    left = await db(left_by_a_dead_process)
    app = App()
    await ProcessLifecycle(app)({"type": "http"}, None, None)
    assert app.scopes == ["http"]
    assert await until_settled(left) == ["partial", None]
    assert await db(ProcessHeartbeat.objects.filter(owner=keeper.owner).exists)
    await ProcessLifecycle(app)({"type": "websocket"}, None, None)  # already serving: nothing new
    assert keeper.beats == 1


async def test_lifespan_starts_it_and_shutdown_settles_this_processs_own_replies_and_closes_the_runtime(
    keeper: inflight.Keeper, fresh_runtime: Runtime
) -> None:
    left = await db(left_by_a_dead_process)
    conversation = await db(make_conversation)
    own = await db(
        make_message, conversation, role="bot", source="llm", status="pending", text="", owner=keeper.owner
    )
    keeper.track(own.pk, ["Streamed ", "so far"])
    events = asyncio.Queue[dict[str, Any]]()
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    events.put_nowait({"type": "lifespan.startup"})
    lifespan = asyncio.create_task(ProcessLifecycle(App())({"type": "lifespan"}, events.get, send))
    assert await until_settled(left) == ["partial", None]
    events.put_nowait({"type": "lifespan.shutdown"})
    await asyncio.wait_for(lifespan, 10)
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    assert await db(lambda: Message.objects.values_list("status", "text").get(pk=own.pk)) == (
        "partial",
        "Streamed so far",
    )
    assert not await db(ProcessHeartbeat.objects.filter(owner=keeper.owner).exists)
    assert fresh_runtime.closed and runtime() is not fresh_runtime


async def test_the_first_request_queues_again_the_documents_a_stopped_process_left() -> None:
    def left() -> Source:
        bot = make_bot()
        return Source.objects.create(
            bot=bot,
            kind=Source.Kind.FILE,
            filename="returns.md",
            content=b"# Returns\n\nYou can return any item within 30 days of delivery.",
            content_type="text/markdown",
            status=Source.Status.RUNNING,  # the process indexing it was killed
        )

    source = await db(left)
    app = App()
    await ProcessLifecycle(app)({"type": "http"}, None, None)
    await ProcessLifecycle(app)({"type": "websocket"}, None, None)  # resumed once only
    documents = jobs.jobs()
    assert documents.resuming is not None
    assert await asyncio.wait_for(documents.resuming, 10) == 1
    assert await asyncio.to_thread(documents.wait, 60)
    status, passages = await db(lambda: (Source.objects.get(pk=source.pk).status, source.passages.count()))
    assert (status, passages) == ("ready", 1)
