from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
from collections.abc import Callable
from contextlib import aclosing
from pathlib import Path

import pytest

from chatbot.llm import Delta, http, stream_chat
from chatbot.llm.loop_thread import LoopThread
from chatbot.runtime import runtime
from devtools.fake_llm.server import FakeLLMServer, Script
from tests.chatbot.llm.helpers import ask, collect

ROOT = Path(__file__).resolve().parents[3]


async def test_replies_share_one_session_and_its_kept_alive_connection(
    llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm()
    session = http.shared_session()
    for _ in range(3):
        deltas, result = await collect(ask("hi there"))
        assert result.text == "".join(deltas) != ""
    assert http.shared_session() is session
    assert fake.connections == 1 and len(fake.requests) == 3
    await http.close_shared_client()
    assert session.closed
    assert http.shared_session() is not session  # a new one on the next use


async def test_closing_the_runtime_closes_every_loops_session_on_its_own_loop(fake: FakeLLMServer) -> None:
    async def fetch() -> http.ClientSession:
        session = http.shared_session()
        async with session.get(f"{fake.url}/health") as response:
            await response.read()
        return session

    elsewhere = LoopThread("another-loop")  # as the embedding client's private loop
    try:
        here = await fetch()
        there = await asyncio.to_thread(elsewhere.run, fetch())
        sessions = runtime().part(http.Sessions)
        assert len(sessions) == 2 and here is not there and fake.connections == 2
        await runtime().aclose()
        assert here.closed and there.closed and len(sessions) == 0
    finally:
        await asyncio.to_thread(elsewhere.close)


async def test_a_stream_left_unread_closes_its_connection_instead_of_reusing_it(
    llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm()
    async with aclosing(stream_chat(ask("[[fake: tokens=50 delay_ms=20]]"))) as items:
        async for item in items:
            assert isinstance(item, Delta)
            break  # the visitor left after the first delta
    deltas, result = await collect(ask("[[fake: tokens=3]]"))
    assert len(deltas) == 3 and result.finish_reason == "stop"
    assert fake.connections == 2  # the half-read response's connection was not pooled


async def test_concurrent_streams_each_get_a_connection(
    llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm()
    results = await asyncio.gather(*(collect(ask("[[fake: tokens=3 delay_ms=20]]")) for _ in range(5)))
    assert [len(deltas) for deltas, _ in results] == [3] * 5
    assert fake.max_active == 5 and fake.connections == 5


async def test_a_proxy_set_in_the_environment_carries_the_requests(
    llm: Callable[..., None], fake: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A second fake stands in for the proxy: it records the request in the absolute form a
    # client uses only when talking to a proxy (and, lenient, answers it itself).
    with FakeLLMServer(defaults=Script(delay_ms=0)).running_in_thread() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        await http.close_shared_client()  # the environment is read when a session is made
        llm()
        _, result = await collect(ask("hi"))
        assert result.text == "You said: hi"
        assert [r.path for r in proxy.requests] == [f"{fake.url}/v1/chat/completions"]
        assert fake.requests == []


@pytest.mark.parametrize(
    "run",
    [
        "asyncio.new_event_loop().run_until_complete(main())",  # daphne on SIGTERM: the loop stops
        "asyncio.run(main())",  # a script: the loop is closed at the end
    ],
)
def test_a_process_that_ends_with_its_session_open_closes_it_quietly(fake: FakeLLMServer, run: str) -> None:
    code = f"""
import asyncio, django
django.setup()
from chatbot.llm import http

async def main():
    async with http.shared_session().get("{fake.url}/health") as response:
        assert response.status == 200
        await response.read()

{run}
"""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "chatbot.settings"}
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Unclosed" not in done.stderr and "never awaited" not in done.stderr, done.stderr
    assert fake.connections == 1  # it did talk to the server through the shared session


def test_a_session_left_open_by_a_closed_loop_is_dropped_quietly_by_the_next_loop(
    fake: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def use() -> None:
        async with http.shared_session().get(f"{fake.url}/health") as response:
            await response.read()

    async def use_and_close() -> None:
        await use()  # finds the first loop's session: that loop is closed now
        await http.close_shared_client()

    asyncio.run(use())  # leaves its session open, with a kept-alive connection
    asyncio.run(use_and_close())
    gc.collect()
    assert len(runtime().part(http.Sessions)) == 0
    assert fake.connections == 2
    assert not [r for r in caplog.records if "Unclosed" in r.getMessage()]
