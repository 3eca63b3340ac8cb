"""`make serve` (deploy/serve.py) started by a test: the supervisor, nginx and its daphne
workers over their own PostgreSQL database and a Redis, plus the small clients the deploy
tests share (HTTP GET, the demo page, a websocket conversation, processes from /proc)."""

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
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import websockets

from deploy import serve
from tests.browser import conftest as live
from tests.deploy.conftest import POSTGRES, REDIS

SERVE = live.ROOT / "deploy" / "serve.py"
START_SECONDS = 180  # migrate, the demo bot (embedding its knowledge base), the workers
WAIT = 30  # seconds for one websocket frame
QUESTION = "How can I track my order?"  # word for word in the demo's knowledge base


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL, dropped after."""
    name = f"serve_test_{uuid.uuid4().hex[:12]}"
    admin = f"postgresql://postgres@{POSTGRES[0]}:{POSTGRES[1]}/postgres"
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgres://postgres@{POSTGRES[0]}:{POSTGRES[1]}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Served:
    """One `deploy/serve.py` run; its output goes to ``log`` (test-artifacts/)."""

    def __init__(
        self,
        *,
        run_dir: Path,
        database_url: str,
        workers: int = 2,
        redis_url: str | None = None,
        env: dict[str, str] | None = None,
        log_name: str = "serve.log",
    ) -> None:
        self.port = live.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.run_dir = run_dir
        live.ARTIFACTS.mkdir(exist_ok=True)
        self.log = live.ARTIFACTS / log_name
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url or os.environ.get("REDIS_URL") or f"redis://{REDIS[0]}:{REDIS[1]}/0",
            "REDIS_KEY_PREFIX": f"servetest{os.getpid()}{uuid.uuid4().hex[:6]}",
            "DEBUG": "1",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    str(SERVE),
                    "--workers",
                    str(workers),
                    "--port",
                    str(self.port),
                    "--run-dir",
                    str(run_dir),
                ],
                cwd=live.ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self, tail: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-tail:]

    def wait_for_demo(self) -> str:
        """The demo page through nginx, once every worker is ready (blocking)."""
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                status, headers, body = get(self.url + "/demo/")
                if status == 200:
                    assert headers["server"].startswith("nginx"), headers
                    return body
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"no demo page within {START_SECONDS} s: {self.output()}")

    def ws_url(self, key: str) -> str:
        return self.url.replace("http", "ws", 1) + f"/ws/chat/{key}/"

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # its children die with it (PR_SET_PDEATHSIG)
            self.process.wait()


def demo_key(page: str) -> str:
    found = re.search(r'data-bot="([^"]+)"', page)
    assert found, page[:2000]
    return found.group(1)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read().decode()


async def frame(ws: Any) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), WAIT))


async def converse(ws_url: str, origin: str, question: str = QUESTION) -> list[dict[str, Any]]:
    """A new visitor asks one question; the frames up to its reply.end."""
    async with websockets.connect(ws_url, origin=origin) as ws:
        await ws.send(json.dumps({"type": "hello", "visitor": None, "page": origin + "/demo/", "lang": "en"}))
        welcome = await frame(ws)
        assert welcome["type"] == "welcome", welcome
        await ws.send(json.dumps({"type": "message", "text": question, "client_id": "c1"}))
        frames = [await frame(ws)]
        while frames[-1]["type"] != "reply.end":
            frames.append(await frame(ws))
        return frames


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (nginx's own workers included)."""
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for parent in frontier for child in serve.children(parent)} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
