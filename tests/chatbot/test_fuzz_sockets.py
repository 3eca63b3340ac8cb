"""Seeded fuzzing of both websockets (docs/chat-protocol.md, docs/agent-socket.md).

Thousands of random and hostile frames per socket: deep and unbalanced nesting, sizes
around CHAT_MAX_FRAME_BYTES, every JSON type in every field, lone surrogates and other odd
unicode, huge numbers, NaN, binary frames, mangled frames, before and after hello. Each is
answered with documented frames only (errors with a documented code), or the socket closes
with a documented code and the fuzzer reconnects; never 1011 (with channels' communicator,
an exception in the consumer would surface here); nothing is logged as an error; and a
normal conversation works afterwards. ``FUZZ_SEED=<n>`` replays another seed.

After each frame the fuzzer sends a marker (an unknown type named after the frame's
number): every frame received before the marker's error is that frame's answer.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import User

from agents.models import Presence
from chatbot import closecodes
from chatbot.models import Bot, Conversation
from tests.agents.conftest import make_user
from tests.agents.test_live_consumer import agent_communicator, session_cookie
from tests.chatbot.ws_client import WAIT, communicator, connected, db, hello, recv, send, until
from tests.factories import make_bot, make_conversation
from tests.fixtures.llm import StandIn

pytestmark = pytest.mark.django_db(transaction=True)

SEED = int(os.environ.get("FUZZ_SEED", "18"))
FRAMES = 2000  # per socket

# What each socket may send (README), and what a fuzzed frame may leave unanswered.
CHAT_ERRORS = {
    "bad_json", "unknown_type", "invalid", "not_ready", "empty", "too_long", "busy",
    "rate_limited", "not_found", "bad_email", "llm_unavailable", "server_error",
}  # fmt: skip
CHAT_FRAMES = {
    "welcome", "pong", "ack", "reply.start", "reply.delta", "reply.end", "error", "message",
    "handoff.waiting", "handoff.unavailable", "contact.saved", "feedback.saved",
    "agent.joined", "agent.left", "agent.message", "agent.typing",
}  # fmt: skip
CHAT_CLOSES = {closecodes.FRAME_TOO_LARGE, closecodes.ERASED}
CHAT_SILENT = {"message", "typing"}  # a message's ack comes from the reply worker
AGENT_ERRORS = {
    "bad_json", "unknown_type", "not_ready", "not_found", "forbidden", "taken", "bad_state",
    "empty", "too_long", "invalid", "server_error",
}  # fmt: skip
AGENT_FRAMES = {
    "welcome", "queue.update", "conversation", "ack", "agent.message", "visitor.message",
    "visitor.typing", "pong", "error",
}  # fmt: skip
AGENT_CLOSES = {closecodes.FRAME_TOO_LARGE}
AGENT_SILENT = {"typing", "release", "close"}  # answered by queue.update, if at all

ODD_CHARS = (
    'ab Z09 "\\/[]{}:,\x00\x01\x1f\x7f é你好😀\u0301\u202e\ufeff\uffff\U0010ffff\ud800\udbff\udc00\udfff'
)
SURROGATE_TOKENS = ["\ud800:abc:def", "abc:def:\udfff", "\udc00" * 20]


def odd_text(rng: random.Random) -> str:
    """A short message of odd characters that passes the checks: hostile text to store."""
    return "x" + "".join(rng.choice(ODD_CHARS) for _ in range(30))


@dataclass
class Hostile:
    """Frames for one socket: ``types`` and a plausible value per field name."""

    rng: random.Random
    types: list[str]
    fields: dict[str, Callable[[], Any]]
    hello: Callable[[], dict[str, Any]] = dict

    def text(self) -> str:
        size = self.rng.choice([0, 1, 5, 20, 60, 1999, 2000, 2001, 4000])
        return "".join(self.rng.choice(ODD_CHARS) for _ in range(size))

    def value(self, depth: int = 0) -> Any:
        pick = self.rng.randrange(10 if depth < 3 else 8)
        if pick == 0:
            return self.rng.choice([None, True, False])
        if pick in (1, 2):
            return self.rng.choice([0, 1, -1, 7, 2**31, 2**63 - 1, -(2**63), 2**63, 10**30, -(10**40)])
        if pick == 3:
            return self.rng.choice([0.5, -0.0, 1e308, 1e-308, float("inf"), float("-inf"), float("nan")])
        if pick in (4, 5, 6, 7):
            return self.text()
        if pick == 8:
            return [self.value(depth + 1) for _ in range(self.rng.randrange(4))]
        return {self.text()[:8]: self.value(depth + 1) for _ in range(self.rng.randrange(4))}

    def structured(self) -> tuple[dict[str, Any], str]:
        kind = self.rng.choice(self.types) if self.rng.random() < 0.85 else self.value()
        frame: dict[str, Any] = {"type": kind}
        for name, plausible in self.fields.items():
            roll = self.rng.random()
            if roll < 0.5:
                frame[name] = plausible()
            elif roll < 0.8:
                frame[name] = self.value()
        if self.rng.random() < 0.1:
            frame[self.text()[:10]] = self.value()
        return frame, kind if isinstance(kind, str) else ""

    def encoded(self, frame: Any) -> str:
        # ensure_ascii=False leaves lone surrogates raw in the text (only a test client can).
        raw = json.dumps(frame, ensure_ascii=self.rng.random() < 0.5)
        if self.rng.random() < 0.1 and raw:  # mangled: cut, or a character in or out
            at = self.rng.randrange(len(raw))
            raw = self.rng.choice(
                [raw[:at], raw[:at] + self.rng.choice(ODD_CHARS) + raw[at:], raw[:at] + raw[at + 1 :]]
            )
        return raw

    def nested(self) -> tuple[str, str]:
        levels = self.rng.choice([2, 31, 32, 33, 64, 1000, 5000, 16000])
        opening, closing = self.rng.choice([("[", "]"), ('{"a":', "}"), ('[{"b":', "}]")])
        inner = opening * levels + "0" + closing * levels
        kind = self.rng.choice(self.types)
        return self.rng.choice(
            [
                (inner, ""),
                (opening * levels, ""),  # never closed
                (json.dumps({"type": kind})[:-1] + ', "x": ' + inner + "}", kind),
                (json.dumps({"type": kind, "text": opening * levels}), kind),  # in a string
            ]
        )

    def number(self) -> tuple[str, str]:
        digits = "".join(
            self.rng.choice("0123456789") for _ in range(self.rng.choice([18, 19, 20, 400, 5000]))
        )
        literal = self.rng.choice(["", "-"]) + "9" + digits + self.rng.choice(["", ".5", "e99999", "E-99999"])
        name, kind = self.rng.choice([*self.fields, "id"]), self.rng.choice(self.types)
        return json.dumps({"type": kind})[:-1] + f', "{name}": {literal}}}', kind

    def sized(self) -> str:
        target = settings.CHAT_MAX_FRAME_BYTES + self.rng.choice([-50, -1, 0, 1, 3, 1000, 40000])
        head = '{"type": "message", "conversation": 1, "text": "'
        char = self.rng.choice(["x", "é", "你", "😀"])
        count = max(0, (target - len(head) - 2) // len(char.encode()))
        return head + char * count + '"}'

    def binary(self) -> bytes:
        return self.rng.choice(
            [
                b"",
                b'{"type": "ping"}',
                b"\xff\xfe\xfd",
                bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(200))),
                b"x" * (settings.CHAT_MAX_FRAME_BYTES + 1),
            ]
        )

    def frame(self) -> tuple[str, str | bytes, str]:
        """(category, payload, the frame's type when it is one that may go unanswered)."""
        roll = self.rng.random()
        if roll < 0.55:
            frame, kind = self.structured()
            return "structured", self.encoded(frame), kind
        if roll < 0.67:
            return "nesting", *self.nested()
        if roll < 0.73:
            return "numbers", *self.number()
        if roll < 0.85:
            garbage = [self.text(), "", " ", "null", "true", "[]", '"hello"', "{}", "{", "}", '{"type"}']
            return "garbage", self.rng.choice(garbage), ""
        if roll < 0.93:
            return "binary", self.binary(), ""
        if roll < 0.96:
            return "size", self.sized(), "message"
        return "hello", json.dumps({"type": "hello", **self.hello()}), ""


@dataclass
class Tally:
    sent: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    frames: Counter[str] = field(default_factory=Counter)
    closes: Counter[int] = field(default_factory=Counter)
    unanswered: Counter[str] = field(default_factory=Counter)

    def __str__(self) -> str:
        return (
            f"{sum(self.sent.values())} frames sent {dict(self.sent)}; error codes {dict(self.errors)}; "
            f"other frames {dict(self.frames)}; close codes {dict(self.closes)}; "
            f"left unanswered (documented silent types) {dict(self.unanswered)}"
        )


@dataclass
class Fuzzer:
    """Drives one socket: sends each frame and its marker, checks every answer, reconnects."""

    hostile: Hostile
    connect: Callable[[], WebsocketCommunicator]
    errors: set[str]
    frames: set[str]
    closes: set[int]
    silent: set[str]
    seen: list[dict[str, Any]] = field(default_factory=list)  # every frame received
    tally: Tally = field(default_factory=Tally)
    comm: WebsocketCommunicator | None = None

    async def reconnect(self) -> WebsocketCommunicator:
        if self.comm is not None:
            await self.comm.disconnect(timeout=WAIT)
        self.comm = self.connect()
        assert (await self.comm.connect(timeout=WAIT))[0]
        return self.comm

    async def run(self, count: int) -> None:
        comm = await self.reconnect()
        for n in range(count):
            if self.hostile.rng.random() < 0.01:  # a new connection, before hello again
                comm = await self.reconnect()
            category, payload, kind = self.hostile.frame()
            self.tally.sent[category] += 1
            # As the server delivers it (send_to refuses empty frames).
            data = {"bytes": payload} if isinstance(payload, bytes) else {"text": payload}
            await comm.send_input({"type": "websocket.receive", **data})
            marker = f"fuzz.marker.{n}"
            await comm.send_to(text_data=json.dumps({"type": marker}))
            answered = await self.answers(comm, marker, payload)
            if answered is None:  # closed: the marker went nowhere
                comm = await self.reconnect()
            elif not answered:
                assert kind in self.silent, f"frame {n} got no answer: {payload!r:.300}"
                self.tally.unanswered[kind] += 1
        await self.comm.disconnect(timeout=WAIT)  # type: ignore[union-attr]

    async def answers(self, comm: WebsocketCommunicator, marker: str, payload: Any) -> int | None:
        """How many frames answered ``payload`` before its marker; None if it closed the socket."""
        answered = 0
        while True:
            try:
                output = await comm.receive_output(timeout=WAIT)
            except Exception as err:  # the consumer raised: a real server closes with 1011
                raise AssertionError(f"the consumer failed on {payload!r:.300}") from err
            if output["type"] == "websocket.close":
                code = output.get("code", 1000)
                assert code in self.closes, f"closed with {code} after {payload!r:.300}"
                self.tally.closes[code] += 1
                return None
            text = output["text"]
            text.encode("utf-8")  # sendable: no lone surrogate goes back out
            frame = json.loads(text)
            self.seen.append(frame)
            if frame["type"] == "error" and marker in frame["message"]:
                return answered
            answered += 1
            assert frame["type"] in self.frames, f"undocumented {frame} after {payload!r:.300}"
            if frame["type"] == "error":
                assert frame["code"] in self.errors, f"undocumented {frame} after {payload!r:.300}"
                self.tally.errors[frame["code"]] += 1
            else:
                self.tally.frames[frame["type"]] += 1


def unhandled(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


# --- The chat socket ------------------------------------------------------------------------


def chat_hostile(rng: random.Random, seen: list[dict[str, Any]]) -> Hostile:
    """Chat frames; ``seen`` (what the server sent) gives real tokens and reply ids."""

    def token() -> Any:
        welcomes = [f["visitor"] for f in seen[-50:] if f["type"] == "welcome"]
        return rng.choice([None, *welcomes[-1:], *SURROGATE_TOKENS, "x" * 600, ["t"]])

    def reply_id() -> Any:
        ids = [f["id"] for f in seen[-200:] if f["type"] in ("reply.end", "ack")]
        return rng.choice([*ids[-3:], 1, 0, -5])

    fields: dict[str, Callable[[], Any]] = {
        "visitor": token,
        "text": lambda: rng.choice(
            ["Do you ship to Norway?", "yes", "I want a real person", "  ", odd_text(rng)]
        ),
        "client_id": lambda: rng.choice(["m-1", "", "x" * 101, "\ud800"]),
        "id": reply_id,
        "rating": lambda: rng.choice(["up", "down", "UP"]),
        "comment": lambda: rng.choice(["", "thanks", "x" * 2001]),
        "email": lambda: rng.choice(["ann@example.com", "ann@", "a" * 250 + "@x.io", "ann@例え.jp"]),
        "page": lambda: rng.choice(["https://shop.example/cart", "javascript:alert(1)", "https://\ud800/"]),
        "lang": lambda: rng.choice(["en", "zh-CN", "x" * 40, "<b>"]),
        "after": lambda: rng.choice([0, 1, 10**6, -1]),
    }
    types = ["hello", "message", "feedback", "ping", "handoff", "contact", "typing"]
    return Hostile(rng, types, fields, hello=lambda: {"visitor": token(), "lang": "en", "after": 0})


async def test_the_chat_socket_answers_every_hostile_frame_as_documented(
    settings: Any, kb: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    settings.CHAT_RATE_VISITOR = None  # let hostile messages reach the reply pipeline
    settings.CHAT_RATE_IP = None
    bot = await db(make_bot)
    seen: list[dict[str, Any]] = []
    hostile = chat_hostile(random.Random(SEED), seen)
    fuzzer = Fuzzer(
        hostile,
        lambda: communicator(bot, matcher=kb),
        CHAT_ERRORS,
        CHAT_FRAMES,
        CHAT_CLOSES,
        CHAT_SILENT,
        seen,
    )
    await fuzzer.run(FRAMES)
    print(f"\nchat socket, seed {SEED}: {fuzzer.tally}")

    assert unhandled(caplog) == []
    assert sum(fuzzer.tally.sent.values()) == FRAMES
    assert fuzzer.tally.errors["bad_json"] > 100 and fuzzer.tally.closes[closecodes.FRAME_TOO_LARGE] > 5
    async with connected(bot, matcher=kb) as comm:  # and then, a normal conversation
        await hello(comm)
        await send(comm, type="message", text="Do you ship to Norway?", client_id="after-fuzz")
        answer = await until(comm, "reply.end")
        assert [f["type"] for f in answer][:2] == ["ack", "reply.start"]
        assert answer[0]["client_id"] == "after-fuzz" and answer[-1]["text"]


# --- The agent socket -----------------------------------------------------------------------


def agent_hostile(rng: random.Random, conversations: list[int]) -> Hostile:
    fields: dict[str, Callable[[], Any]] = {
        "conversation": lambda: rng.choice([*conversations, 0, -1, 10**6, True]),
        "after": lambda: rng.choice([0, 1, 10**6, -1]),
        "text": lambda: rng.choice(["Let me check that for you.", "  ", odd_text(rng), "x" * 2001]),
        "client_id": lambda: rng.choice(["c-1", "", "x" * 101, "\ud800"]),
    }
    types = ["hello", "ping", "take", "release", "close", "typing", "open", "message"]
    return Hostile(rng, types, fields)


async def conversations_for_agents(bot: Bot, ann: User) -> list[int]:
    """One conversation in each state: ann's, another agent's, waiting, open and closed."""
    bob = await db(make_user, "bob", staff=True)
    rows = [
        await db(make_conversation, bot, status=status) for status in ("waiting_for_agent", "open", "closed")
    ]
    for agent in (ann, bob):
        rows.append(await db(make_conversation, bot, status="with_agent", assigned_agent=agent))
    return [row.pk for row in rows]


async def test_the_agent_socket_answers_every_hostile_frame_as_documented(
    kb: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await db(make_bot)
    ann: User = await db(make_user, "ann", staff=True)
    conversations = await conversations_for_agents(bot, ann)
    cookie = await db(session_cookie, ann)
    fuzzer = Fuzzer(
        agent_hostile(random.Random(SEED), conversations),
        lambda: agent_communicator(cookie),
        AGENT_ERRORS,
        AGENT_FRAMES,
        AGENT_CLOSES,
        AGENT_SILENT,
    )
    await fuzzer.run(FRAMES)
    print(f"\nagent socket, seed {SEED}: {fuzzer.tally}")

    assert unhandled(caplog) == []
    assert sum(fuzzer.tally.sent.values()) == FRAMES
    assert fuzzer.tally.errors["bad_json"] > 100 and fuzzer.tally.closes[closecodes.FRAME_TOO_LARGE] > 5
    # And then, a normal conversation: a visitor asks for a person, the agent takes it and writes.
    await db(Presence.objects.update_or_create, user=ann)
    async with connected(bot, matcher=kb) as visitor:
        conversation = (await hello(visitor))["conversation"]
        await send(visitor, type="handoff")
        assert (await recv(visitor))["type"] == "handoff.waiting"
        console = agent_communicator(cookie)
        assert (await console.connect(timeout=WAIT))[0]
        try:
            await send(console, type="hello")
            assert (await recv(console))["type"] == "welcome"
            await send(console, type="take", conversation=conversation)
            assert "conversation" in [f["type"] for f in await until(console, "conversation")]
            await send(console, type="message", conversation=conversation, text="Hello!", client_id="c-1")
            ack = await until(console, "ack")
            assert ack[-1]["client_id"] == "c-1"
            said = await until(visitor, "agent.message")
            assert said[-1]["text"] == "Hello!"
        finally:
            await console.disconnect(timeout=WAIT)
    assert await db(Conversation.objects.filter(pk=conversation, status="with_agent").exists)
