"""`make serve`'s supervisor (deploy/serve.py) for real: nginx in front of two daphne
workers over a fresh PostgreSQL database and Redis; the demo page, a static file and a
conversation through nginx; SIGTERM stops every process it started."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import websockets

from tests.browser import conftest as live
from tests.deploy.conftest import POSTGRES, REDIS, serve_missing_reason

SERVE = live.ROOT / "deploy" / "serve.py"
START_SECONDS = 180  # migrate, the demo bot (embedding its knowledge base), two workers
WAIT = 30  # seconds for one websocket frame
QUESTION = "How can I track my order?"  # word for word in the demo's knowledge base


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (nginx's own workers included), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    url: str
    log: Path


@pytest.fixture
def database() -> Iterator[str]:
    name = f"serve_test_{uuid.uuid4().hex[:12]}"
    admin = f"postgresql://postgres@{POSTGRES[0]}:{POSTGRES[1]}/postgres"
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgres://postgres@{POSTGRES[0]}:{POSTGRES[1]}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def served(tmp_path: Path, database: str) -> Iterator[Served]:
    port = live.free_port()
    live.ARTIFACTS.mkdir(exist_ok=True)
    log = live.ARTIFACTS / "serve.log"
    env = {
        **os.environ,
        "DATABASE_URL": database,
        "REDIS_URL": os.environ.get("REDIS_URL") or f"redis://{REDIS[0]}:{REDIS[1]}/0",
        "REDIS_KEY_PREFIX": f"servetest{os.getpid()}",
        "DEBUG": "1",
        "PYTHONUNBUFFERED": "1",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                str(SERVE),
                "--workers",
                "2",
                "--port",
                str(port),
                "--run-dir",
                str(tmp_path / "serve"),
            ],
            cwd=live.ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Served(process, f"http://127.0.0.1:{port}", log)
    finally:
        if process.poll() is None:
            process.kill()  # its children die with it (PR_SET_PDEATHSIG)
            process.wait()


def get(url: str) -> tuple[int, dict[str, str], str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read().decode()


def wait_for_demo(served: Served) -> str:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        assert served.process.poll() is None, served.log.read_text(errors="replace")[-3000:]
        try:
            status, headers, body = get(served.url + "/demo/")
            if status == 200:
                assert headers["server"].startswith("nginx"), headers
                return body
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(
        f"no demo page within {START_SECONDS} s: {served.log.read_text(errors='replace')[-3000:]}"
    )


async def frame(ws: Any) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), WAIT))


async def converse(ws_url: str, origin: str) -> list[dict[str, Any]]:
    async with websockets.connect(ws_url, origin=origin) as ws:
        await ws.send(json.dumps({"type": "hello", "visitor": None, "page": origin + "/demo/", "lang": "en"}))
        welcome = await frame(ws)
        assert welcome["type"] == "welcome", welcome
        await ws.send(json.dumps({"type": "message", "text": QUESTION, "client_id": "c1"}))
        frames = [await frame(ws)]
        while frames[-1]["type"] != "reply.end":
            frames.append(await frame(ws))
        return frames


@pytest.mark.skipif(serve_missing_reason() is not None, reason=str(serve_missing_reason()))
async def test_two_workers_behind_nginx_serve_the_demo_and_stop_together(served: Served) -> None:
    page = await asyncio.to_thread(wait_for_demo, served)
    key = re.search(r'data-bot="([^"]+)"', page).group(1)
    script = re.search(r'<script src="([^"]+)" data-bot=', page).group(1)

    # The widget comes from nginx itself, with the lifetime its config gives static files.
    status, headers, body = await asyncio.to_thread(get, served.url + script)
    assert status == 200 and "WebSocket" in body
    assert headers["server"].startswith("nginx") and "expires" in headers
    assert "max-age=3600" in headers["cache-control"]

    frames = await converse(served.url.replace("http", "ws") + f"/ws/chat/{key}/", served.url)
    assert [f["type"] for f in frames[:2]] == ["ack", "reply.start"]
    assert {f["type"] for f in frames[2:-1]} == {"reply.delta"}
    end = frames[-1]
    assert end["status"] == "complete" and end["source"] == "knowledge" and end["text"]

    children = descendants(served.process.pid)
    assert len(children) >= 4, children  # two workers, nginx's master and its worker
    served.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(served.process.wait, 60) == 0
    left = [pid for pid in children if alive(pid)]
    assert left == [], f"still running after SIGTERM: {left}"
    assert "serve: stopped" in served.log.read_text(errors="replace")


@pytest.mark.parametrize("via_make", [False, True], ids=["serve.py", "make"])
def test_more_than_one_worker_without_redis_is_refused(via_make: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    if via_make:  # -o: the venv is what it is, never reinstalled by a test
        argv = ["make", "-s", "-o", ".venv/.requirements-installed", "serve", "WORKERS=2", "PORT=1"]
    else:
        argv = [sys.executable, str(SERVE), "--workers", "2", "--port", "1"]
    done = subprocess.run(argv, cwd=live.ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "WORKERS=2 needs REDIS_URL" in done.stderr
