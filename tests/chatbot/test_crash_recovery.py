"""A server process killed (SIGKILL) while it streams a reply: after a restart the text
streamed so far is in the history, as ``partial``. Real processes: daphne on a free port,
over a SQLite file of its own (made by ``manage.py migrate``), and the fake LLM server
streaming slowly; the visitor is a real websocket client."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import websockets

from tests.browser import conftest as live

TOKENS = 400  # the fake reply: "tok1 tok2 ... tok400 ", one delta every DELAY_MS
DELAY_MS = 50
FLUSH_SECONDS = 1.0  # REPLY_FLUSH_SECONDS as shipped
WAIT = 60  # seconds for one frame: the first question loads the embedding model


@dataclass
class Site:
    server: live.LiveServer
    database: Path
    key: str

    @property
    def ws_url(self) -> str:
        return self.server.url.replace("http", "ws") + f"/ws/chat/{self.key}/"


def manage(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=live.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture
def fake_llm() -> Iterator[str]:
    """The fake provider as its own process, every reply TOKENS deltas DELAY_MS apart."""
    fake = live.FakeLLM(["--tokens", str(TOKENS), "--delay-ms", str(DELAY_MS)], log_name="fake-llm-crash.log")
    try:
        yield fake.url + "/v1"
    finally:
        live.stop_process(fake.process)


@pytest_asyncio.fixture
async def site(tmp_path: Path, fake_llm: str) -> AsyncIterator[Site]:
    database = tmp_path / "crash.sqlite3"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{database}",
        "DEBUG": "1",
        "PYTHONUNBUFFERED": "1",
        "EMBEDDING_PRELOAD": "0",
        "LLM_PROVIDER": "openai",
        "LLM_BASE_URL": fake_llm,
        "LLM_API_KEY": "test",
        "LLM_MODEL": "fake",
        "LLM_FALLBACK_PROVIDER": "",
        "REPLY_FLUSH_SECONDS": str(FLUSH_SECONDS),
        # Quick to call a process dead, so the test needn't wait the shipped 20 s.
        "PROCESS_HEARTBEAT_SECONDS": "0.5",
        "PROCESS_DEAD_SECONDS": "2",
    }
    await asyncio.to_thread(manage, "migrate", "--noinput", env=env)
    key = (await asyncio.to_thread(manage, "create_bot", "Crash test", env=env)).split()[-1]
    # The questions are for the LLM (the fake one), not refused for lack of knowledge.
    general = (
        "from chatbot.models import Bot; "
        f"Bot.objects.filter(public_key={key!r}).update(answer_only_from_knowledge=False)"
    )
    await asyncio.to_thread(manage, "shell", "-c", general, env=env)
    server = live.LiveServer(env)
    server.log = live.ARTIFACTS / "daphne-crash.log"
    server.log.write_text("")
    await asyncio.to_thread(server.start)
    try:
        yield Site(server, database, key)
    finally:
        await asyncio.to_thread(server.stop)


async def frame(ws: Any) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), WAIT))


async def hello(ws: Any, visitor: str | None = None, after: int | None = None) -> dict[str, Any]:
    extra = {} if after is None else {"after": after}
    await ws.send(
        json.dumps({"type": "hello", "visitor": visitor, "page": "http://shop/", "lang": "en", **extra})
    )
    welcome = await frame(ws)
    assert welcome["type"] == "welcome", welcome
    return welcome


def stored_reply(database: Path, reply_id: int) -> tuple[str, str] | None:
    with sqlite3.connect(database) as db:
        row = db.execute("SELECT status, text FROM chatbot_message WHERE id = ?", (reply_id,)).fetchone()
    return None if row is None else (row[0], row[1])


async def test_a_reply_streaming_when_the_server_is_killed_is_kept_as_partial_after_a_restart(
    site: Site,
) -> None:
    whole = "".join(f"tok{n} " for n in range(1, TOKENS + 1))
    async with websockets.connect(site.ws_url) as ws:
        welcome = await hello(ws)
        await ws.send(json.dumps({"type": "message", "text": "Tell me everything.", "client_id": "c1"}))
        ack, start = await frame(ws), await frame(ws)
        assert (ack["type"], start["type"]) == ("ack", "reply.start")
        received: list[tuple[float, str]] = []  # (when, text) of each delta
        while sum(len(text) for _, text in received) < 300:
            delta = await frame(ws)
            assert delta["type"] == "reply.delta", delta
            received.append((time.monotonic(), delta["text"]))
        site.server.process.kill()  # SIGKILL: no clean-up of any kind
        killed_at = time.monotonic()
        site.server.process.wait()
    streamed = "".join(text for _, text in received)
    assert stored_reply(site.database, start["id"])[0] == "pending"

    await asyncio.to_thread(site.server.start)  # the same port, database and settings
    resynced: list[dict[str, Any]] = []
    for _ in range(100):  # the reaper runs at start-up and with each heartbeat
        async with websockets.connect(site.ws_url) as ws:
            resynced = (await hello(ws, welcome["visitor"], after=ack["id"]))["messages"]
        if resynced:
            break
        await asyncio.sleep(0.2)
    kept = stored_reply(site.database, start["id"])
    print(f"\ncrash test: {len(streamed)} characters streamed before SIGKILL, {len(kept[1])} kept as partial")

    assert resynced == [
        {
            "id": start["id"],
            "role": "bot",
            "text": kept[1],
            "source": "llm",
            "status": "partial",
            "created": resynced[0]["created"],
            "sources": [],
        }
    ]
    assert kept[0] == "partial" and whole.startswith(kept[1])
    # Everything streamed a flush interval (and a margin for the write) before the kill is kept.
    settled = "".join(text for at, text in received if at < killed_at - FLUSH_SECONDS - 0.5)
    assert len(settled) > 100 and kept[1].startswith(settled)
