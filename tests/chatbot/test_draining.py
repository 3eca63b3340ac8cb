"""Graceful shutdown (chatbot.draining, deploy/worker.py): replies in progress finish and
their sockets close with 1012 after the reply's end, idle sockets close at once, a reply
still running past the grace is kept as partial, nothing new is admitted, /readyz says 503.

The drain is run in process against real consumers (the fake LLM over real HTTP, slowed by
``[[fake: ...]]`` in the message); the last test runs one real worker process and sends it
SIGTERM (its listening socket closes, the close code reaches a real client, it exits 0)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import websockets
from django.test import AsyncClient

from chatbot import closecodes, draining
from chatbot.models import Message
from devtools.fake_llm.server import FakeLLMServer
from tests.agents.conftest import make_user
from tests.agents.test_live_consumer import agent_socket
from tests.browser import conftest as live
from tests.chatbot.ws_client import WAIT, closed_with, communicator, connected, db, hello, send, until
from tests.factories import make_bot
from tests.fixtures.llm import StandIn

pytestmark = pytest.mark.django_db(transaction=True)

SLOW = "[[fake: tokens=400 delay_ms=50]]"  # 20 s: never over within a test's grace
SHORT = "[[fake: tokens=6 delay_ms=20]]"


def reply_rows(conversation_id: int) -> list[tuple[str, str, str]]:
    rows = Message.objects.filter(conversation_id=conversation_id, role=Message.Role.BOT).order_by("id")
    return list(rows.values_list("text", "source", "status"))


def visitor_texts(conversation_id: int) -> list[str]:
    rows = Message.objects.filter(conversation_id=conversation_id, role=Message.Role.VISITOR).order_by("id")
    return list(rows.values_list("text", flat=True))


async def test_it_closes_an_idle_socket_with_1012_at_once(kb: StandIn) -> None:
    bot = await db(make_bot)
    async with connected(bot, matcher=kb) as idle, connected(bot, matcher=kb) as before_hello:
        await hello(idle)
        drained = await draining.drain().run(grace=WAIT)
        assert await closed_with(idle) == closecodes.SERVICE_RESTART
        assert await closed_with(before_hello) == closecodes.SERVICE_RESTART
    assert (drained.sockets, drained.stopped, drained.left) == (2, 0, 0)


async def test_a_reply_in_progress_ends_then_its_socket_closes_with_1012(
    kb: StandIn, llm: Callable[..., None]
) -> None:
    async with connected(await db(make_bot, answer_only_from_knowledge=False), matcher=kb) as comm:
        welcome = await hello(comm)
        await send(comm, type="message", text=f"Tell me {SHORT}", client_id="c1")
        await until(comm, "reply.start")
        run = asyncio.create_task(draining.drain().run(grace=WAIT))
        # Sent while draining: not acknowledged, the widget sends it again after reconnecting.
        await send(comm, type="message", text="And another thing", client_id="c2")
        frames = await until(comm, "reply.end")
        assert await closed_with(comm) == closecodes.SERVICE_RESTART
        drained = await run
    assert frames[-1]["status"] == "complete" and frames[-1]["text"] == "tok1 tok2 tok3 tok4 tok5 tok6 "
    assert "ack" not in [f["type"] for f in frames]
    assert await db(reply_rows, welcome["conversation"]) == [(frames[-1]["text"], "llm", "complete")]
    assert await db(visitor_texts, welcome["conversation"]) == [f"Tell me {SHORT}"]
    assert (drained.sockets, drained.stopped, drained.left) == (1, 0, 0)


async def test_a_reply_still_running_past_the_grace_is_kept_as_partial_and_closed_with_1012(
    kb: StandIn, llm: Callable[..., None]
) -> None:
    bot = await db(make_bot, answer_only_from_knowledge=False)
    async with connected(bot, matcher=kb) as slow, connected(bot, matcher=kb) as idle:
        welcome = await hello(slow)
        await hello(idle)
        await send(slow, type="message", text=f"Everything {SLOW}", client_id="c1")
        frames = await until(slow, "reply.delta")
        drained = await draining.drain().run(grace=0.2)
        assert await closed_with(idle) == closecodes.SERVICE_RESTART
        while (output := await slow.receive_output(timeout=WAIT))["type"] == "websocket.send":
            frames.append(json.loads(output["text"]))
        assert output == {"type": "websocket.close", "code": 1012, "reason": "server restarting, reconnect"}
    sent = "".join(f["text"] for f in frames if f["type"] == "reply.delta")
    assert "reply.end" not in [f["type"] for f in frames]
    [(text, source, status)] = await db(reply_rows, welcome["conversation"])
    assert (source, status) == ("llm", "partial")
    assert text.startswith("tok1 ") and sent.startswith(text)  # what the visitor saw, kept
    assert (drained.sockets, drained.stopped, drained.left) == (2, 1, 0)


async def test_a_second_signal_cuts_the_grace_short(kb: StandIn, llm: Callable[..., None]) -> None:
    async with connected(await db(make_bot, answer_only_from_knowledge=False), matcher=kb) as comm:
        welcome = await hello(comm)
        await send(comm, type="message", text=f"Everything {SLOW}", client_id="c1")
        await until(comm, "reply.delta")
        drain = draining.drain()
        run = asyncio.create_task(drain.run(grace=3600))
        await asyncio.sleep(0)  # the drain has begun
        drain.hurry()
        drained = await run
        while (output := await comm.receive_output(timeout=WAIT))["type"] == "websocket.send":
            pass
        assert output["code"] == closecodes.SERVICE_RESTART
    assert drained.stopped == 1
    assert [status for _, _, status in await db(reply_rows, welcome["conversation"])] == ["partial"]


async def test_a_chat_socket_that_arrives_while_draining_is_closed_with_1012(kb: StandIn) -> None:
    bot = await db(make_bot)
    await draining.drain().run(grace=WAIT)
    comm = communicator(bot, matcher=kb)
    ok, _ = await comm.connect(timeout=WAIT)
    assert ok  # accepted, then closed: a browser sees the code only on an accepted socket
    assert await closed_with(comm) == closecodes.SERVICE_RESTART
    await comm.disconnect()


async def test_readyz_answers_503_draining_from_the_moment_the_drain_begins(kb: StandIn) -> None:
    async with connected(await db(make_bot), matcher=kb) as comm:
        await hello(comm)
        drain = draining.drain()
        drain.enlist(Lingering())  # a socket that has not closed yet: the drain goes on
        run = asyncio.create_task(drain.run(grace=WAIT))
        await asyncio.sleep(0)
        response = await AsyncClient().get("/readyz")
        assert response.status_code == 503
        assert response.json()["status"] == "draining"
        drain.hurry()
        await run


async def test_an_agent_console_is_closed_with_1012(kb: StandIn) -> None:
    agent = await db(make_user, "agent", staff=True)
    async with agent_socket(agent) as console:
        drained = await draining.drain().run(grace=WAIT)
        assert await closed_with(console) == closecodes.SERVICE_RESTART
    assert drained.sockets == 1


class Lingering:
    async def drain(self, *, now: bool) -> None:
        if now:
            draining.release(self)


# --- One real worker process -----------------------------------------------------------------


async def close_code(ws: Any) -> int | None:
    """Read to the end (a client that stops reading never sees the close frame)."""
    with contextlib.suppress(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), WAIT)
    return ws.close_code


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.fixture
def worker(llm: Callable[..., None], fake: FakeLLMServer) -> Any:
    """deploy/worker.py on a free port over the test database; grace 1 s."""
    port = live.free_port()
    env = {
        **os.environ,
        "DATABASE_URL": live.test_database_url(),
        "DEBUG": "1",
        "PYTHONUNBUFFERED": "1",
        "EMBEDDING_PRELOAD": "0",
        # Embeddings and replies from the fake server: no local model to load.
        "EMBEDDING_PROVIDER": "openai",
        "EMBEDDING_API_MODEL": "fake-embed",
        "LLM_PROVIDER": "openai",
        "LLM_BASE_URL": fake.url + "/v1",
        "LLM_API_KEY": "test",
        "LLM_MODEL": "fake",
        "LLM_FALLBACK_PROVIDER": "",
    }
    live.ARTIFACTS.mkdir(exist_ok=True)
    log = live.ARTIFACTS / "worker-drain.log"
    argv = [sys.executable, "deploy/worker.py", "-b", "127.0.0.1", "-p", str(port), "--grace", "1"]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, cwd=live.ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        live.wait_until_up(process, f"http://127.0.0.1:{port}/readyz", log, "worker")
        yield process, port, log
    finally:
        live.stop_process(process)


async def test_a_worker_told_to_stop_closes_its_port_drains_and_exits_0(worker: Any) -> None:
    process, port, log = worker
    key = (await db(make_bot, answer_only_from_knowledge=False)).public_key
    url = f"ws://127.0.0.1:{port}/ws/chat/{key}/"
    hello_frame = json.dumps({"type": "hello", "visitor": None, "page": "http://shop/", "lang": "en"})
    async with websockets.connect(url) as idle, websockets.connect(url) as busy:
        for ws in (idle, busy):
            await ws.send(hello_frame)
            welcome = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        await busy.send(json.dumps({"type": "message", "text": f"All {SLOW}", "client_id": "c1"}))
        while json.loads(await asyncio.wait_for(busy.recv(), WAIT))["type"] != "reply.delta":
            pass
        process.send_signal(signal.SIGTERM)
        assert await close_code(idle) == closecodes.SERVICE_RESTART, log.read_text()[-2000:]
        assert refused(port)  # not listening any more: the proxy sends new sockets elsewhere
        assert await close_code(busy) == closecodes.SERVICE_RESTART
    assert await asyncio.to_thread(process.wait, WAIT) == 0
    [(text, _, status)] = await db(reply_rows, welcome["conversation"])
    assert status == "partial" and text.startswith("tok1 ")
    assert "drained in" in log.read_text()
