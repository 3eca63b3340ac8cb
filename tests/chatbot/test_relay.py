"""The relay without a socket: each pipeline event and the frames it becomes, and the fan-out
of a stream to the visitor's other tabs and the agents (chatbot.chat.relay)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer

from chatbot.chat import relay as relay_module
from chatbot.chat.events import agents_conversation_group
from chatbot.chat.relay import Frames, Relayed, relay, reply_frames
from chatbot.chat.tabs import Tabs
from chatbot.llm import ChatResult
from chatbot.reply_events import NO_LLM, Acked, AgentHasConversation, Delta, Ended, ReplyEvent, Started

CREATED = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
ITEM = {
    "id": 5,
    "role": "visitor",
    "text": "Hello?",
    "source": "",
    "status": "complete",
    "created": "2025-03-01T09:30:00+00:00",
}
START = {"type": "reply.start", "id": 6, "source": "llm"}


def end_frame(
    text: str, source: str, status: str, entry_id: int | None = None, score: float | None = None
) -> Any:
    return {
        "type": "reply.end",
        "id": 6,
        "text": text,
        "source": source,
        "status": status,
        "entry_id": entry_id,
        "score": score,
        "sources": [],  # always present; with passages: tests/chatbot/test_replying_documents.py
    }


def error_frame(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message, "client_id": "c1"}


RESULT = ChatResult("Hi", "stop", 3, 1, False, None, 5, 9, "m", "openai")
CASES: list[tuple[str, ReplyEvent, Frames]] = [
    (
        "acked",
        Acked(5, "Hello?", CREATED),
        Frames(own=[{"type": "ack", "client_id": "c1", "id": 5}], others=[{"type": "message", **ITEM}]),
    ),
    (
        "acked-again",
        Acked(5, "Hello?", CREATED, duplicate=True),
        Frames(own=[{"type": "ack", "client_id": "c1", "id": 5, "duplicate": True}]),
    ),
    ("agent-has-it", AgentHasConversation(5, "Hello?", CREATED), Frames(for_agents=[ITEM])),
    ("started", Started(6, "llm"), Frames(own=[START], others=[START])),
    (
        "delta",
        Delta(6, "Hi"),
        Frames(
            own=[{"type": "reply.delta", "id": 6, "text": "Hi"}],
            others=[{"type": "reply.delta", "id": 6, "text": "Hi"}],
        ),
    ),
    (
        "knowledge",
        Ended(6, "5 days.", "knowledge", "complete", 0.93, entry_id=3),
        Frames(
            own=[end_frame("5 days.", "knowledge", "complete", 3, 0.93)],
            others=[end_frame("5 days.", "knowledge", "complete", 3, 0.93)],
        ),
    ),
    (
        "llm",
        Ended(6, "Hi", "llm", "complete", result=RESULT),
        Frames(own=[end_frame("Hi", "llm", "complete")], others=[end_frame("Hi", "llm", "complete")]),
    ),
    (
        "cut-off",
        Ended(6, "Hi", "llm", "partial", error="APIConnectionError: reset"),
        Frames(
            own=[
                end_frame("Hi", "llm", "partial"),
                error_frame("llm_unavailable", "The assistant's answer was cut off."),
            ],
            others=[end_frame("Hi", "llm", "partial")],
        ),
    ),
    (
        "llm-failed",
        Ended(6, "Sorry.", "fallback", "complete", error="ServerError: 500"),
        Frames(
            own=[
                end_frame("Sorry.", "fallback", "complete"),
                error_frame("llm_unavailable", "The assistant is unavailable right now."),
            ],
            others=[end_frame("Sorry.", "fallback", "complete")],
        ),
    ),
    (
        "no-llm",  # nothing failed: there is no LLM to tell the visitor about
        Ended(6, "Sorry.", "fallback", "complete", error=NO_LLM),
        Frames(
            own=[end_frame("Sorry.", "fallback", "complete")],
            others=[end_frame("Sorry.", "fallback", "complete")],
        ),
    ),
]


@pytest.mark.parametrize(("event", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_event_becomes_its_frames(event: ReplyEvent, expected: Frames) -> None:
    assert reply_frames(event, client_id="c1") == expected


def test_only_the_fallback_offers_a_person() -> None:
    assert Ended(6, "Sorry.", "fallback", "complete").person_offered
    assert not Ended(6, "5 days.", "knowledge", "complete").person_offered
    assert not Ended(6, "Hi", "llm", "complete").person_offered


# --- The fan-out (the relay releases the pipeline's database connection after each reply) ---


class OtherTabs(Tabs):
    """The visitor has another tab; what it would be sent is recorded."""

    def __init__(self, layer: InMemoryChannelLayer) -> None:
        super().__init__(layer, "this-tab", conversation_id=9)
        self.others = {"other-tab"}
        self.sent: list[dict[str, Any]] = []

    async def broadcast(self, frame: dict[str, Any]) -> None:
        self.sent.append(frame)


async def events(*items: ReplyEvent, then: BaseException | None = None) -> AsyncIterator[ReplyEvent]:
    for item in items:
        yield item
    if then is not None:
        raise then


async def relayed(stream: AsyncIterator[ReplyEvent], tabs: Tabs, *, stop_after: int = 0) -> list[Relayed]:
    steps: list[Relayed] = []
    async with aclosing(relay(stream, conversation_id=9, client_id="c1", tabs=tabs)) as relaying:
        async for step in relaying:
            steps.append(step)
            if len(steps) == stop_after:
                break
    return steps


REPLY = (Acked(5, "Hello?", CREATED), Started(6, "llm"), Delta(6, "Hi "), Delta(6, "there"), Delta(6, "!"))


@pytest.mark.django_db
async def test_the_sender_gets_every_frame_and_the_other_tabs_get_the_deltas_merged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(relay_module, "OTHERS_DELTA_INTERVAL", 60.0)
    tabs = OtherTabs(InMemoryChannelLayer())
    ended = Ended(6, "Hi there!", "llm", "complete")
    steps = await relayed(events(*REPLY, ended), tabs)
    assert [step.event for step in steps] == [*REPLY, ended]
    assert [f["type"] for step in steps for f in step.frames] == ["ack", "reply.start"] + [
        "reply.delta"
    ] * 3 + ["reply.end"]
    assert tabs.sent == [
        {"type": "message", **ITEM},
        START,
        {"type": "reply.delta", "id": 6, "text": "Hi "},  # the first at once
        {"type": "reply.delta", "id": 6, "text": "there!"},  # the rest merged, before the end
        end_frame("Hi there!", "llm", "complete"),
    ]


@pytest.mark.django_db
async def test_a_reply_the_sender_left_ends_for_the_other_tabs_as_far_as_it_went() -> None:
    tabs = OtherTabs(InMemoryChannelLayer())
    steps = await relayed(events(*REPLY), tabs, stop_after=4)  # the sender went away after "there"
    assert steps[-1].event == Delta(6, "there")
    assert tabs.sent[-1] == end_frame("Hi there", "llm", "partial")  # as the pipeline kept it


@pytest.mark.django_db
async def test_a_broken_reply_ends_as_failed_and_the_sender_hears_of_it() -> None:
    tabs = OtherTabs(InMemoryChannelLayer())
    steps = await relayed(events(*REPLY[:3], then=RuntimeError("a bug")), tabs)
    assert steps[-1] == Relayed(
        [end_frame("Hi ", "llm", "failed"), error_frame("server_error", "Something went wrong on our side.")],
        None,
    )
    assert tabs.sent[-1] == end_frame("Hi ", "llm", "failed")


@pytest.mark.django_db
async def test_a_message_for_the_agent_who_has_the_conversation_reaches_the_agents_group() -> None:
    layer = InMemoryChannelLayer()
    console = await layer.new_channel()
    await layer.group_add(agents_conversation_group(9), console)
    tabs = OtherTabs(layer)
    steps = await relayed(
        events(Acked(5, "Hello?", CREATED), AgentHasConversation(5, "Hello?", CREATED)), tabs
    )
    assert [step.frames for step in steps] == [[{"type": "ack", "client_id": "c1", "id": 5}], []]
    assert await layer.receive(console) == {"type": "visitor.message", "conversation": 9, "message": ITEM}
    assert tabs.sent == [{"type": "message", **ITEM}]
