"""Replies in flight (chatbot.inflight): the text written while a reply streams, the
heartbeat, and the reaper of replies a dead server process left pending."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from chatbot import inflight, replying
from chatbot.llm.types import Delta
from chatbot.models import Conversation, Message, ProcessHeartbeat
from chatbot.reply_events import Started
from tests.chatbot.ws_client import connected, db, hello, recv, send, until
from tests.factories import make_bot, make_conversation, make_message
from tests.fixtures.llm import StandIn

pytestmark = pytest.mark.django_db(transaction=True)

DEAD = "d" * 32
ALIVE = "a" * 32


@pytest.fixture
def keeper() -> inflight.Keeper:
    """This process's keeper: the test's runtime's, so new (new owner, counters at zero)."""
    return inflight.keeper()


def beat(owner: str, seconds_ago: float) -> None:
    ProcessHeartbeat.objects.create(owner=owner, beat_at=timezone.now() - timedelta(seconds=seconds_ago))


def pending(conversation: Any, owner: str, text: str = "") -> Message:
    return make_message(conversation, role="bot", source="llm", status="pending", text=text, owner=owner)


def state(message: Message) -> tuple[str, str] | None:
    row = Message.objects.filter(pk=message.pk).values_list("status", "text").first()
    return None if row is None else (row[0], row[1])


async def eventually(check: Callable[[], Any], within: float = 10.0) -> Any:
    """Poll ``check`` (a database read, run off the loop) until it returns something true."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await db(check)
        if value or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.02)


# --- The reaper -----------------------------------------------------------------------------


def test_it_keeps_the_text_of_a_dead_processs_reply_as_partial(settings: Any) -> None:
    settings.PROCESS_DEAD_SECONDS = 20
    conversation = make_conversation()
    beat(DEAD, seconds_ago=21)
    cut = pending(conversation, DEAD, "Our opening hours are 9 to")
    assert inflight.orphans_reap() == (1, 0)
    assert state(cut) == ("partial", "Our opening hours are 9 to")
    assert not ProcessHeartbeat.objects.filter(owner=DEAD).exists()  # a dead process's beat goes too


def test_it_deletes_a_dead_processs_reply_that_had_no_text_yet() -> None:
    conversation = make_conversation()
    beat(DEAD, seconds_ago=3600)
    empty = pending(conversation, DEAD)
    assert inflight.orphans_reap() == (0, 1)
    assert state(empty) is None


def test_it_takes_a_reply_whose_owner_never_beat_for_dead() -> None:
    conversation = make_conversation()
    orphan = pending(conversation, "never-beat", "Half")
    assert inflight.orphans_reap() == (1, 0)
    assert state(orphan) == ("partial", "Half")


def test_it_leaves_a_live_processs_replies_and_every_ended_reply_alone(settings: Any) -> None:
    settings.PROCESS_DEAD_SECONDS = 20
    conversation = make_conversation()
    beat(ALIVE, seconds_ago=19)
    streaming, starting = pending(conversation, ALIVE, "Still going"), pending(conversation, ALIVE)
    ended = [
        make_message(conversation, role="bot", source="llm", status=status, text=text, owner=DEAD)
        for status, text in (("complete", "Done."), ("partial", "Cut"), ("failed", "Broke"))
    ]
    assert inflight.orphans_reap() == (0, 0)
    assert [state(m) for m in (streaming, starting, *ended)] == [
        ("pending", "Still going"),
        ("pending", ""),
        ("complete", "Done."),
        ("partial", "Cut"),
        ("failed", "Broke"),
    ]
    assert ProcessHeartbeat.objects.filter(owner=ALIVE).exists()


def test_processes_reaping_at_once_settle_each_reply_once() -> None:
    conversation = make_conversation()
    cut, empty = pending(conversation, DEAD, "Hello th"), pending(conversation, DEAD)
    assert [inflight.orphans_reap() for _ in range(3)] == [(1, 1), (0, 0), (0, 0)]
    assert (state(cut), state(empty)) == (("partial", "Hello th"), None)


# --- Writing the text while a reply streams --------------------------------------------------


def test_texts_are_written_into_pending_rows_only() -> None:
    beat(ALIVE, 0)  # a live owner: a reaper running meanwhile must leave these rows alone
    conversation = make_conversation()
    streaming = pending(conversation, ALIVE, "Hel")
    ended = make_message(conversation, role="bot", source="llm", status="complete", text="Hello!")
    reaped = make_message(conversation, role="bot", source="llm", status="partial", text="Hel")
    written = inflight.reply_texts_store({streaming.pk: "Hello", ended.pk: "Hel", reaped.pk: "Hello"})
    assert written == 1
    assert [state(m) for m in (streaming, ended, reaped)] == [
        ("pending", "Hello"),
        ("complete", "Hello!"),
        ("partial", "Hel"),
    ]


def test_many_replies_are_written_in_chunks_of_one_update_each() -> None:
    beat(ALIVE, 0)  # a live owner: a reaper running meanwhile must leave these rows alone
    conversation = make_conversation()
    rows = [pending(conversation, ALIVE) for _ in range(inflight.FLUSH_CHUNK + 5)]
    assert inflight.reply_texts_store({m.pk: f"reply {m.pk}" for m in rows}) == len(rows)
    assert all(state(m) == ("pending", f"reply {m.pk}") for m in rows)


async def test_the_keeper_beats_before_a_reply_and_writes_every_grown_text_in_one_batch_per_tick(
    settings: Any, keeper: inflight.Keeper
) -> None:
    settings.REPLY_FLUSH_SECONDS = 0.05
    conversation = await db(make_conversation)
    first, second = (
        await db(pending, conversation, keeper.owner),
        await db(pending, conversation, keeper.owner),
    )
    first_parts, second_parts = ["Bon"], ["Hel", "lo"]
    async with keeper.flight():
        assert await db(ProcessHeartbeat.objects.filter(owner=keeper.owner).exists)
        keeper.track(first.pk, first_parts)
        keeper.track(second.pk, second_parts)
        assert await eventually(lambda: state(first) == ("pending", "Bon") and state(second)[1] == "Hello")
        assert keeper.flushes == 1  # both replies, one batch
        await asyncio.sleep(0.2)  # nothing grew: nothing written
        assert keeper.flushes == 1
        first_parts.append("jour")
        assert await eventually(lambda: state(first) == ("pending", "Bonjour"))
        assert keeper.flushes == 2
        keeper.untrack(first.pk)
        keeper.untrack(second.pk)
    assert keeper.beats == 1


async def test_a_reply_streams_its_text_into_the_database_before_it_ends(
    kb: StandIn, llm: Callable[..., None], settings: Any, keeper: inflight.Keeper
) -> None:
    settings.REPLY_FLUSH_SECONDS = 0.1
    async with connected(await db(make_bot, answer_only_from_knowledge=False), matcher=kb) as comm:
        await hello(comm)
        # 80 deltas 40 ms apart: about 3 s of streaming.
        await send(comm, type="message", text="[[fake: tokens=80 delay_ms=40]]", client_id="c1")
        _, start = await recv(comm), await recv(comm)
        reply = Message(pk=start["id"])
        seen = ""
        while len(seen) < 50:  # what the visitor has seen so far
            seen += (await recv(comm))["text"]
        written = await eventually(
            lambda: (row := state(reply)) is not None and row[0] == "pending" and row[1]
        )
        rest = await until(comm, "reply.end")
    end = rest[-1]
    assert end["status"] == "complete" and len(end["text"]) > len(written) >= 5
    assert end["text"].startswith(written)  # a prefix of the reply, written while it streamed
    assert await db(state, reply) == ("complete", end["text"])
    assert 1 <= keeper.flushes < 40  # one write per tick, never one per delta (80)


async def test_a_reply_abandoned_before_any_text_leaves_no_row(
    kb: StandIn, llm: Callable[..., None], keeper: inflight.Keeper
) -> None:
    conversation = await db(make_conversation)
    stream = replying.reply_stream(
        conversation_id=conversation.pk, text="[[fake: first_delay_ms=5000]]", matcher=kb
    )
    await anext(stream)  # acknowledged: the reply's row is reserved
    reply = await db(Message.objects.get, conversation=conversation, role="bot")
    assert await db(state, reply) == ("pending", "")
    await stream.aclose()
    assert await db(state, reply) is None
    assert await db(Message.objects.filter(conversation=conversation).count) == 1  # the question


async def test_a_reply_whose_stream_breaks_unexpectedly_keeps_what_was_streamed(
    kb: StandIn, llm: Callable[..., None], keeper: inflight.Keeper, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def breaking(request: Any) -> AsyncIterator[Delta]:
        yield Delta("Our shop opens")
        raise RuntimeError("a bug, not a provider error")

    monkeypatch.setattr(replying, "stream_chat", breaking)
    conversation = await db(make_conversation, await db(make_bot, answer_only_from_knowledge=False))
    events = []
    with pytest.raises(RuntimeError):
        async for event in replying.reply_stream(
            conversation_id=conversation.pk, text="When do you open?", matcher=kb
        ):
            events.append(event)
    [started] = [e for e in events if isinstance(e, Started)]
    assert await db(state, Message(pk=started.reply_id)) == ("partial", "Our shop opens")


# --- What is shown ------------------------------------------------------------------------------


def test_visible_is_everything_but_replies_being_written_and_empty_rows() -> None:
    conversation = make_conversation()
    shown = [
        make_message(conversation, text="Do you ship to Oslo?"),
        make_message(conversation, role="bot", source="llm", status="complete", text="Yes."),
        make_message(conversation, role="bot", source="llm", status="partial", text="We ship to"),
        make_message(conversation, role="bot", source="llm", status="failed", text="Broken off"),
        make_message(conversation, role="system", text="Ann joined."),
    ]
    pending(conversation, ALIVE, "Being writ")
    make_message(conversation, role="bot", source="llm", status="failed", text="")  # an old placeholder
    assert list(Message.objects.visible().filter(conversation=conversation)) == shown


async def test_hello_after_shows_a_reply_the_reaper_kept_as_partial_and_never_one_being_written(
    kb: StandIn, llm: Callable[..., None]
) -> None:
    bot = await db(make_bot)
    async with connected(bot, matcher=kb) as comm:
        welcome = await hello(comm)
    conversation = await db(Conversation.objects.get, pk=welcome["conversation"])
    asked = await db(make_message, conversation, text="Hours?", client_id="c1")
    cut = await db(pending, conversation, DEAD, "We open at 9 and")
    async with connected(bot, matcher=kb) as comm:
        assert (await hello(comm, welcome["visitor"], after=asked.pk))["messages"] == []
    await db(inflight.orphans_reap)
    async with connected(bot, matcher=kb) as comm:
        resync = await hello(comm, welcome["visitor"], after=asked.pk)
        history = await hello(comm, welcome["visitor"])
    assert [(m["id"], m["status"], m["text"]) for m in resync["messages"]] == [
        (cut.pk, "partial", "We open at 9 and")
    ]
    assert [m.get("client_id") for m in history["messages"]] == ["c1", None]
