"""What no client can break on the agent socket: frames outside the bounds and a failure
inside the server (never a 1011 close). The seeded fuzz test of both sockets is
tests/chatbot/test_fuzz_sockets.py."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from agents import live
from tests.agents.conftest import make_user
from tests.agents.test_live_consumer import agent_communicator, agent_socket, session_cookie
from tests.chatbot.ws_client import WAIT, db, recv, send
from tests.factories import make_bot, make_conversation

pytestmark = pytest.mark.django_db(transaction=True)

NESTED = "[" * 1000 + "]" * 1000  # 2 KB: RecursionError in json.loads, once


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


async def pong(comm: Any) -> None:
    await send(comm, type="ping")
    assert await recv(comm) == {"type": "pong"}


@pytest.mark.parametrize(
    "raw",
    [
        NESTED,
        '{"type": "open", "conversation": ' + NESTED + "}",
        '{"type": "take", "conversation": 100000000000000000000000}',  # OverflowError in SQLite
        '{"type": "open", "conversation": 1, "after": -Infinity}',
    ],
    ids=["nested", "nested-field", "huge-id", "infinity"],
)
async def test_a_frame_outside_the_bounds_is_bad_json_before_and_after_hello(
    raw: str, caplog: pytest.LogCaptureFixture
) -> None:
    ann = await db(make_user, "ann", staff=True)
    comm = agent_communicator(await db(session_cookie, ann))
    assert (await comm.connect(timeout=WAIT))[0]
    try:
        for _ in ("before hello", "after hello"):
            await comm.send_to(text_data=raw)
            error = await recv(comm)
            assert (error["type"], error["code"]) == ("error", "bad_json")
            await pong(comm)
            await send(comm, type="hello")
            assert (await recv(comm))["type"] == "welcome"
    finally:
        await comm.disconnect(timeout=WAIT)
    assert errors_logged(caplog) == []


async def test_a_text_frame_holding_a_lone_surrogate_is_answered() -> None:
    ann = await db(make_user, "ann", staff=True)
    async with agent_socket(ann) as console:
        await console.send_to(text_data='{"type": "message", "conversation": 1, "text": "\ud800"}')
        assert (await recv(console))["code"] in ("not_found", "forbidden")
        await pong(console)


async def test_an_unexpected_failure_is_logged_once_and_answered_with_server_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(**kwargs: Any) -> Any:
        raise RuntimeError("the service fell over")

    bot = await db(make_bot)
    conversation = await db(make_conversation, bot)
    ann = await db(make_user, "ann", staff=True)
    async with agent_socket(ann) as console:
        with monkeypatch.context() as patch:
            patch.setattr(live, "agent_conversation", broken)
            await send(console, type="open", conversation=conversation.pk)
            assert await recv(console) == {
                "type": "error",
                "code": "server_error",
                "message": "Something went wrong on our side.",
                "client_id": None,
                "conversation": conversation.pk,
            }
            await pong(console)
        await send(console, type="open", conversation=conversation.pk)
        assert (await recv(console))["type"] == "conversation"
    [record] = errors_logged(caplog)
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError
