"""A rolling restart under load loses nothing: `make serve` with one, then two workers (deploy/serve.py,
nginx, PostgreSQL, Redis) and the fake LLM streaming each reply over a second or so; a few
visitors talk the whole time, reconnecting as the widget does (on a close: reconnect, hello
with ``after``, send the unacknowledged messages again under the same client_id); SIGHUP to
the supervisor restarts the workers one at a time. Afterwards every conversation's history
holds each message sent exactly once, and each reply the visitor saw end, as it ended."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
import websockets

from tests.browser import conftest as live
from tests.deploy.conftest import serve_missing_reason
from tests.deploy.serving import WAIT, Served, alive, demo_key, postgres_database

pytestmark = pytest.mark.skipif(serve_missing_reason() is not None, reason=str(serve_missing_reason()))

VISITORS = 5
TOKENS, DELAY_MS = 24, 60  # each reply streams for about 1.5 s
RESTART_SECONDS = 180  # both workers drained and started again, their readiness included
AFTER_RESTART = 2.0  # seconds the visitors go on talking once it is done


@dataclass
class Site:
    served: Served
    database: str
    key: str


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[str]:
    """The fake provider as a process of its own, every reply TOKENS deltas DELAY_MS apart."""
    fake = live.FakeLLM(
        ["--tokens", str(TOKENS), "--delay-ms", str(DELAY_MS)], log_name="fake-llm-rolling.log"
    )
    try:
        yield fake.url + "/v1"
    finally:
        live.stop_process(fake.process)


@pytest.fixture(scope="module", params=[1, 2], ids=["1 worker", "2 workers"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, fake_llm: str
) -> Iterator[Site]:
    env = {
        "LLM_PROVIDER": "openai",
        "LLM_BASE_URL": fake_llm,
        "LLM_API_KEY": "test",
        "LLM_MODEL": "fake",
        "LLM_FALLBACK_PROVIDER": "",
        # Embeddings from the fake provider too: workers start in seconds, no model to load.
        "EMBEDDING_PROVIDER": "openai",
        "EMBEDDING_API_MODEL": "fake-embed",
        # Every visitor comes from 127.0.0.1 and talks fast: no rate limits.
        "CHAT_RATE_VISITOR": "0",
        "CHAT_RATE_IP": "0",
    }
    with postgres_database() as database:
        served = Served(
            run_dir=tmp_path_factory.mktemp("rolling") / "serve",
            database_url=database,
            workers=request.param,
            env=env,
            log_name=f"serve-rolling-{request.param}.log",
        )
        try:
            key = demo_key(served.wait_for_demo())
            # The demo bot answers only from its knowledge; these visitors want the LLM's streams.
            with psycopg.connect(database, autocommit=True) as db:
                db.execute("UPDATE chatbot_bot SET answer_only_from_knowledge = false")
            yield Site(served, database, key)
        finally:
            # Stopped before its database is dropped: the workers settle their replies there.
            served.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                served.process.wait(60)
            served.kill()


@dataclass
class Visitor:
    """One widget's behaviour, as far as losing nothing goes (static/chatbot/widget.js)."""

    url: str
    origin: str
    name: str
    token: str | None = None
    conversation: int | None = None
    last_id: int = 0  # the newest message id seen: hello's ``after``
    sent: list[str] = field(default_factory=list)  # client ids, in order
    unacked: dict[str, str] = field(default_factory=dict)  # client id -> text
    waiting: int | None = None  # the acknowledged message whose reply has not ended yet
    ended: dict[int, tuple[str, str]] = field(default_factory=dict)  # reply id -> (status, text)
    closes: list[int] = field(default_factory=list)  # close codes seen (1006: dropped)
    unanswered: int = 0  # handshakes that failed (nginx had no worker to send them to)

    async def talk(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set and nothing is left unanswered."""
        while True:
            try:
                async with websockets.connect(self.url, origin=self.origin, open_timeout=WAIT) as ws:
                    await self.session(ws, stop)
                    return
            except websockets.ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd is not None else 1006
                self.closes.append(code)
                # 1012: another process answers now; anything else: back off a little.
                await asyncio.sleep(random.uniform(0.05, 0.5) if code == 1012 else 0.5)
            except (OSError, websockets.InvalidHandshake, TimeoutError):
                self.unanswered += 1  # nginx found no worker for a moment
                await asyncio.sleep(0.5)

    async def session(self, ws: Any, stop: asyncio.Event) -> None:
        hello = {"type": "hello", "visitor": self.token, "page": self.origin + "/demo/", "lang": "en"}
        if self.last_id:
            hello["after"] = self.last_id
        await ws.send(json.dumps(hello))
        welcome = await receive(ws)
        assert welcome["type"] == "welcome", welcome
        self.token, self.conversation = welcome["visitor"], welcome["conversation"]
        for item in welcome["messages"]:
            self.resynced(item)
        for client_id, text in self.unacked.items():  # sent again, under the same client_id
            await ws.send(json.dumps({"type": "message", "text": text, "client_id": client_id}))
        while True:
            if not self.unacked and self.waiting is None:
                if stop.is_set():
                    return
                await asyncio.sleep(random.uniform(0.2, 0.6))
                await self.say(ws)
            self.heard(await receive(ws))

    async def say(self, ws: Any) -> None:
        client_id = f"{self.name}-{len(self.sent) + 1}"
        text = f"Question {len(self.sent) + 1} from {self.name}"
        self.sent.append(client_id)
        self.unacked[client_id] = text
        await ws.send(json.dumps({"type": "message", "text": text, "client_id": client_id}))

    def resynced(self, item: dict[str, Any]) -> None:
        """A message of the welcome's history (newer than ``after``)."""
        self.last_id = max(self.last_id, item["id"])
        if item["role"] == "visitor" and self.unacked.pop(item.get("client_id"), None) is not None:
            self.waiting = item["id"]  # stored, its ack lost with the connection
        elif item["role"] == "bot" and self.waiting is not None and item["id"] > self.waiting:
            self.waiting = None  # its reply ended before we came back

    def heard(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        assert kind != "error", frame
        if kind == "ack" and self.unacked.pop(frame["client_id"], None) is not None:
            self.last_id = max(self.last_id, frame["id"])
            # A duplicate was stored before: its reply is in the history we were sent.
            self.waiting = None if frame.get("duplicate") else frame["id"]
        elif kind == "reply.end":
            self.last_id = max(self.last_id, frame["id"])
            self.ended[frame["id"]] = (frame["status"], frame["text"])
            self.waiting = None


async def receive(ws: Any) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), WAIT))


def history(database: str, conversation_id: int) -> list[tuple[int, str, str | None, str, str]]:
    with psycopg.connect(database) as db:
        rows = db.execute(
            "SELECT id, role, client_id, status, text FROM chatbot_message "
            "WHERE conversation_id = %s ORDER BY id",
            (conversation_id,),
        )
        return list(rows.fetchall())


def worker_pids(log: str) -> dict[str, list[int]]:
    pids: dict[str, list[int]] = {}
    for name, pid in re.findall(r"serve: started (worker \d+) \(pid (\d+)\)", log):
        pids.setdefault(name, []).append(int(pid))
    return pids


async def restarted(served: Served) -> float:
    """SIGHUP, then the seconds the supervisor says the rolling restart took."""
    served.signal(signal.SIGHUP)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RESTART_SECONDS
    while loop.time() < deadline:
        assert served.process.poll() is None, served.output()
        if found := re.search(r"serve: rolling restart done in (\d+\.\d) s", served.output(100_000)):
            return float(found.group(1))
        await asyncio.sleep(0.2)
    raise AssertionError(f"no rolling restart within {RESTART_SECONDS} s: {served.output()}")


async def test_a_rolling_restart_under_load_loses_no_message_and_no_reply(site: Site) -> None:
    served = site.served
    before = worker_pids(served.output(100_000))
    stop = asyncio.Event()
    visitors = [Visitor(served.ws_url(site.key), served.url, f"v{n}") for n in range(1, VISITORS + 1)]
    talking = [asyncio.create_task(v.talk(stop)) for v in visitors]
    try:
        await asyncio.sleep(2)  # every visitor mid-conversation
        took = await restarted(served)
        await asyncio.sleep(AFTER_RESTART)
    finally:
        stop.set()
    await asyncio.wait_for(asyncio.gather(*talking), 2 * WAIT)
    print(f"\nrolling restart of {len(before)} worker(s) under {VISITORS} visitors: {took:.1f} s")

    after = worker_pids(served.output(100_000))
    assert served.output(100_000).count("serve: rolling restart done in") == 1
    assert before and set(before) == set(after)
    for name in before:
        [old], new = before[name], after[name][-1]
        assert new != old and not alive(old), (name, before, after)
    codes = [code for v in visitors for code in v.closes]
    assert codes.count(1012) >= 1, codes  # the sockets were handed over...
    assert 1006 not in codes, codes  # ...and none was dropped

    for visitor in visitors:
        assert visitor.conversation is not None and not visitor.unacked
        rows = await asyncio.to_thread(history, site.database, visitor.conversation)
        stored = [client_id for _, role, client_id, _, _ in rows if role == "visitor"]
        assert sorted(stored) == sorted(visitor.sent), (visitor.name, stored, visitor.sent)  # each once
        bots = {id_: (status, text) for id_, role, _, status, text in rows if role == "bot"}
        for reply_id, (status, text) in visitor.ended.items():
            assert bots.get(reply_id) == (status, text), (visitor.name, reply_id, bots.get(reply_id))
        # Every message has its reply after it, complete or kept as partial; none left pending.
        roles = [role for _, role, _, _, _ in rows]
        assert roles == ["visitor", "bot"] * len(visitor.sent), (visitor.name, rows)
        assert {status for status, _ in bots.values()} <= {"complete", "partial"}
    print(f"messages: {sum(len(v.sent) for v in visitors)}, closes: {codes}")
    # nginx always had a worker to send a reconnecting visitor to (never a 502), even with
    # one: its replacement was ready before it was drained.
    assert [v.unanswered for v in visitors] == [0] * VISITORS
