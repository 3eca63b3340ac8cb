"""Faults `make serve` survives without a restart: Redis restarting under live conversations
(two tabs of a visitor and an agent, on different workers), and PostgreSQL going away and
coming back (clean failures meanwhile, success after). Each scenario starts its own private
Redis or PostgreSQL on a free port: the machine's shared ones are never touched."""

from __future__ import annotations

import asyncio
import http.client
import http.cookiejar
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import websockets

from deploy import serve
from tests.deploy.conftest import serve_missing_reason
from tests.deploy.private_servers import PG_BIN, PrivatePostgres, PrivateRedis, wait_until
from tests.deploy.serving import WAIT, Served, demo_key, get, postgres_database

QUESTION = "How can I track my order?"  # in the demo's knowledge base

needs_serve = pytest.mark.skipif(serve_missing_reason() is not None, reason=str(serve_missing_reason()))


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    if os.geteuid() != 0:
        pytest.skip("a private PostgreSQL is started as the postgres user: needs root (runuser)")
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL 15 not found at {PG_BIN}")
    # Not under tmp_path: pytest's directories are root's alone, and postgres must reach its own.
    workdir = Path(tempfile.mkdtemp(prefix="faults-pg-"))
    try:
        postgres = PrivatePostgres(workdir)
        postgres.start()
        try:
            postgres.create_database()
            yield postgres
        finally:
            postgres.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def serving(run_dir: Path, database_url: str, **options: Any) -> Iterator[Served]:
    served = Served(run_dir=run_dir, database_url=database_url, **options)
    try:
        yield served
    finally:
        served.kill()


# --- The served processes -------------------------------------------------------------------


def workers(served: Served) -> dict[Path, int]:
    """Each daphne worker's unix socket and pid."""
    return {  # daphne, or deploy/worker.py around it: the one child with -u <socket>
        Path(argv[argv.index(b"-u") + 1].decode()): pid
        for pid, argv in serve.children(served.process.pid).items()
        if b"-u" in argv[:-1]
    }


def worker_get(path: Path, url: str) -> tuple[int, str]:
    connection = serve.UnixHTTPConnection(path, timeout=10)
    try:
        connection.request("GET", url)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def fetch(url: str) -> tuple[int, dict[str, str], str]:
    """Like ``get``, but an HTTP error status is returned, not raised."""
    try:
        return get(url)
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read().decode()


def admin_session_cookie(served: Served) -> str:
    """Signed in through nginx as the admin `make serve` created (its password is in the log)."""
    found = re.search(r"Created superuser '([^']+)'.*?\n\s+(\S+)", served.log.read_text(errors="replace"))
    assert found, served.output()
    username, password = found.groups()
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    login = served.url + "/agent/login/"
    page = opener.open(login, timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "username": username, "password": password})
    opener.open(urllib.request.Request(login, data=form.encode(), headers={"Referer": login}), timeout=10)
    session = {cookie.name: cookie.value for cookie in jar}.get("sessionid")
    assert session, "not signed in"
    return f"sessionid={session}"


# --- Websocket clients ----------------------------------------------------------------------


async def frame_of(ws: Any, kind: str) -> dict[str, Any]:
    """The next frame of this type (others are skipped)."""
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        if frame["type"] == kind:
            return frame


async def say(ws: Any, **frame: Any) -> None:
    await ws.send(json.dumps(frame))


def on_worker(path: Path, served: Served, route: str, **options: Any) -> Any:
    """A websocket straight to one worker's unix socket (so the test picks who is where)."""
    uri = served.url.replace("http", "ws", 1) + route
    return websockets.unix_connect(str(path), uri, origin=served.url, **options)


# --- Redis restarts ---------------------------------------------------------------------------


@needs_serve
async def test_a_redis_restart_leaves_tabs_and_an_agent_on_other_workers_talking(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    with (
        postgres_database() as database,
        serving(
            tmp_path / "serve", database, workers=2, redis_url=private_redis.url, log_name="faults-redis.log"
        ) as served,
    ):
        key = demo_key(await asyncio.to_thread(served.wait_for_demo))
        cookie = await asyncio.to_thread(admin_session_cookie, served)
        before = workers(served)
        first, second = sorted(before)
        chat = f"/ws/chat/{key}/"
        async with (
            on_worker(first, served, chat) as tab_a,
            on_worker(second, served, chat) as tab_b,
            on_worker(second, served, "/ws/agent/", additional_headers={"Cookie": cookie}) as agent,
        ):
            await say(tab_a, type="hello", visitor=None, page=served.url + "/demo/", lang="en")
            welcome = await frame_of(tab_a, "welcome")
            conversation = welcome["conversation"]
            await say(tab_b, type="hello", visitor=welcome["visitor"], page=served.url + "/demo/", lang="en")
            assert (await frame_of(tab_b, "welcome"))["conversation"] == conversation
            await say(agent, type="hello")
            await frame_of(agent, "welcome")

            # Before: the second tab sees the first one's question and reply.
            await talk_bot(tab_a, tab_b, "a1")
            await say(tab_a, type="handoff")
            await frame_of(tab_a, "handoff.waiting")
            await say(agent, type="take", conversation=conversation)
            await frame_of(agent, "conversation")
            for tab in (tab_a, tab_b):
                assert (await frame_of(tab, "agent.joined"))["agent"]

            await asyncio.to_thread(private_redis.stop)
            # Stored and acknowledged while Redis is down; relayed once it is back (empty: no groups).
            await say(agent, type="message", conversation=conversation, text="Still there?", client_id="g1")
            await frame_of(agent, "ack")
            await asyncio.to_thread(private_redis.start)

            # The agent (worker 2) reaches both tabs, one of them on worker 1.
            for tab in (tab_a, tab_b):
                assert (await frame_of(tab, "agent.message"))["text"] == "Still there?"
            # Each tab reaches the agent and the other tab, across workers both ways.
            for sender, other, text in ((tab_a, tab_b, "Yes, from tab A."), (tab_b, tab_a, "And tab B.")):
                await say(sender, type="message", text=text, client_id=text[-2:])
                ack = await frame_of(sender, "ack")
                assert (await frame_of(other, "message"))["id"] == ack["id"]
                heard = await frame_of(agent, "visitor.message")
                assert (heard["conversation"], heard["message"]["text"]) == (conversation, text)
            # Back to the bot: a reply streams to the tab that asked and reaches the other.
            await say(agent, type="release", conversation=conversation)
            for tab in (tab_a, tab_b):
                await frame_of(tab, "agent.left")
            await talk_bot(tab_b, tab_a, "b2")

        assert workers(served) == before, "a worker was restarted"
        assert served.process.poll() is None, served.output()
        assert "Redis back after" in served.log.read_text(errors="replace")


async def talk_bot(asker: Any, other: Any, client_id: str) -> None:
    await say(asker, type="message", text=QUESTION, client_id=client_id)
    ack = await frame_of(asker, "ack")
    end = await frame_of(asker, "reply.end")
    assert end["status"] == "complete" and end["source"] == "knowledge", end
    assert (await frame_of(other, "message"))["id"] == ack["id"]
    assert (await frame_of(other, "reply.end"))["id"] == end["id"]


def ready_again(served: Served) -> None:
    last: list[str] = []

    def ready() -> bool:
        status, _, body = fetch(served.url + "/readyz")
        last[:] = [body]
        return status == 200

    try:
        wait_until(ready, "/readyz 200 again")
    except AssertionError as err:
        raise AssertionError(f"{err}; it said {last}") from None


async def new_socket_outcome(url: str, origin: str) -> int | str:
    """What a new visitor's socket gets: a welcome, a close code, or a refused handshake."""
    try:
        async with websockets.connect(url, origin=origin) as ws:
            await say(ws, type="hello", visitor=None, page=origin + "/demo/", lang="en")
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
                if frame["type"] in ("welcome", "error"):
                    return frame["type"]
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else 1006
    except websockets.InvalidStatus as refused:
        return f"handshake {refused.response.status_code}"


# --- PostgreSQL restarts --------------------------------------------------------------------


@needs_serve
async def test_while_postgres_is_down_requests_fail_cleanly_and_succeed_once_it_is_back(
    tmp_path: Path, private_postgres: PrivatePostgres
) -> None:
    with serving(
        tmp_path / "serve", private_postgres.url, workers=1, log_name="faults-postgres-serve.log"
    ) as served:
        key = demo_key(await asyncio.to_thread(served.wait_for_demo))
        (worker,) = workers(served).items()
        async with websockets.connect(served.ws_url(key), origin=served.url) as ws:
            await say(ws, type="hello", visitor=None, page=served.url + "/demo/", lang="en")
            conversation = (await frame_of(ws, "welcome"))["conversation"]
            await say(ws, type="message", text=QUESTION, client_id="m1")
            accepted = (await frame_of(ws, "ack"))["id"]
            answered = await frame_of(ws, "reply.end")

            await asyncio.to_thread(private_postgres.stop)

            status, headers, body = await asyncio.to_thread(fetch, served.url + "/demo/")
            assert status == 503, body[:500]
            assert "Traceback" not in body and len(body) < 500, body[:500]
            assert "database" in body.lower() and headers.get("retry-after"), (headers, body)
            status, _, body = await asyncio.to_thread(fetch, served.url + "/readyz")
            assert status == 503
            assert json.loads(body)["checks"]["database"]["ok"] is False
            # A message now is answered with an error naming it, and the socket stays open.
            await say(ws, type="message", text="Are you there?", client_id="m2")
            error = await frame_of(ws, "error")
            assert error["client_id"] == "m2" and error["code"] in ("server_error", "unavailable"), error
            await say(ws, type="ping")
            await frame_of(ws, "pong")
            # A new socket meanwhile is not told to give up (no 4xxx close): the widget retries.
            assert await new_socket_outcome(served.ws_url(key), served.url) not in range(4000, 5000)

            await asyncio.to_thread(private_postgres.start)
            # No restart and no waiting: the first request and the next message succeed (the
            # broken persistent connection is replaced, not reused).
            assert (await asyncio.to_thread(fetch, served.url + "/demo/"))[0] == 200
            await say(ws, type="message", text=QUESTION, client_id="m3")
            await frame_of(ws, "ack")
            assert (await frame_of(ws, "reply.end"))["status"] == "complete"
        await asyncio.to_thread(ready_again, served)
        assert await new_socket_outcome(served.ws_url(key), served.url) == "welcome"

        assert workers(served) == dict([worker]), "the worker was restarted"
        with psycopg.connect(private_postgres.url.replace("postgres://", "postgresql://", 1)) as db:
            ids = [
                row[0]
                for row in db.execute(
                    "SELECT id FROM chatbot_message WHERE conversation_id = %s ORDER BY id", (conversation,)
                )
            ]
        assert accepted in ids and answered["id"] in ids
