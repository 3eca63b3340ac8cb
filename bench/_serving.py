"""The production topology for benchmarks: `deploy/serve.py` (nginx in front of N daphne
workers) over a fresh PostgreSQL database and the machine's Redis, with the fake LLM as its
own process; and the websocket clients the serve benchmark measures with (bursts of new
visitors, questions, idle sockets).

Needs nginx, PostgreSQL on 127.0.0.1:5432 (user postgres, trust) and Redis on
127.0.0.1:6379 (override with BENCH_POSTGRES / BENCH_REDIS_URL).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import websockets

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
POSTGRES = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
FAKE_TOKENS, FAKE_DELAY_MS, FAKE_FIRST_MS = 20, 10, 50  # the fake provider's stream


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read().decode()
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {seconds:.0f} s")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def memory_kb(pid: int) -> dict[str, int]:
    """RSS, and from smaps_rollup PSS and USS (private clean + dirty), in KB."""
    values: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            name, _, rest = line.partition(":")
            if rest.strip().endswith("kB"):
                values[name] = int(rest.split()[0])
    except OSError:
        return {}
    return {
        "rss": values.get("Rss", 0),
        "pss": values.get("Pss", 0),
        "uss": values.get("Private_Clean", 0) + values.get("Private_Dirty", 0),
    }


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_role(stack: Stack) -> dict[str, float]:
    """CPU seconds used so far by the workers, nginx, PostgreSQL, Redis, the fake LLM and
    this client (PostgreSQL and Redis: all of the machine's, shared with whatever else runs)."""
    assert stack.serve is not None and stack.fake is not None
    workers = stack.worker_pids()
    nginx = [pid for pid in descendants(stack.serve.pid) if pid not in workers]
    spent = {
        "workers": sum(map(cpu_seconds, workers)),
        "nginx": sum(map(cpu_seconds, nginx)),
        "postgres": sum(map(cpu_seconds, by_name("postgres"))),
        "redis": sum(map(cpu_seconds, by_name("redis-server"))),
        "fake LLM": cpu_seconds(stack.fake.pid),
        "client": cpu_seconds(os.getpid()),
    }
    return spent


def by_name(name: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def descendants(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        frontier = [child for parent in frontier for child in children(parent)]
        found += frontier
    return found


class Stack:
    """fake LLM + `deploy/serve.py --workers N` over a database of its own; stop() undoes all."""

    def __init__(self, *, workers: int, run_root: Path, env: dict[str, str] | None = None) -> None:
        self.workers = workers
        self.run_dir = run_root / f"serve-{workers}w-{uuid.uuid4().hex[:6]}"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.database = f"bench_serve_{uuid.uuid4().hex[:10]}"
        self.port, self.fake_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": f"{POSTGRES.replace('postgresql://', 'postgres://')}/{self.database}",
            "REDIS_URL": REDIS_URL,
            "REDIS_KEY_PREFIX": f"benchserve{uuid.uuid4().hex[:8]}",
            "DEBUG": "0",
            "SECRET_KEY": "bench-" + "x" * 44,
            "SECURE_COOKIES": "0",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LLM_PROVIDER": "openai",
            "LLM_BASE_URL": f"http://127.0.0.1:{self.fake_port}/v1",
            "LLM_API_KEY": "bench",
            "LLM_MODEL": "fake",
            "LOG_LEVEL": "warning",
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            "CHAT_RATE_VISITOR": "100000/60",
            "CHAT_RATE_IP": "1000000/60",
            **(env or {}),
        }
        self.log = self.run_dir / "serve.log"
        self.fake: subprocess.Popen[bytes] | None = None
        self.serve: subprocess.Popen[bytes] | None = None
        self.key = ""

    def start(self) -> Stack:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Stack:
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{self.database}"')
        stream = ["--tokens", str(FAKE_TOKENS), "--delay-ms", str(FAKE_DELAY_MS)]
        stream += ["--first-delay-ms", str(FAKE_FIRST_MS)]
        self.fake = subprocess.Popen(
            [PY, "manage.py", "fake_llm", "--port", str(self.fake_port), *stream],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        serve = os.environ.get("BENCH_SERVE_SCRIPT", "deploy/serve.py")
        argv = [PY, serve, "--workers", str(self.workers), "--port", str(self.port)]
        with self.log.open("wb") as out:
            self.serve = subprocess.Popen(
                [*argv, "--run-dir", str(self.run_dir)], cwd=ROOT, env=self.env, stdout=out, stderr=out
            )
        wait_http(f"http://127.0.0.1:{self.fake_port}/health", 60)
        page = self._wait_demo()
        found = re.search(r'data-bot="([^"]+)"', page)
        assert found, page[:500]
        self.key = found.group(1)
        # LLM questions must reach the fake: the demo bot answers only from its knowledge.
        code = (
            "from chatbot.models import Bot; Bot.objects.filter("
            f"public_key={self.key!r}).update(answer_only_from_knowledge=False)"
        )
        subprocess.run(
            [PY, "manage.py", "shell", "-c", code], cwd=ROOT, env=self.env, check=True, capture_output=True
        )
        return self

    def _wait_demo(self) -> str:
        """The demo page through nginx once serve.py says every worker is ready."""
        assert self.serve is not None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.serve.poll() is not None:
                raise RuntimeError(f"serve.py exited with {self.serve.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/demo/", timeout=5) as response:
                    return response.read().decode()
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("serve.py: no demo page within 300 s")

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/chat/{self.key}/"

    def worker_pids(self) -> list[int]:
        assert self.serve is not None
        pids = []
        for pid in children(self.serve.pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"daphne" in cmdline or b"worker" in cmdline:
                pids.append(pid)
        return sorted(pids)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        for process in (self.serve, self.fake):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in (self.serve, self.fake):
            if process is not None:
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if self.serve is not None and self.serve.returncode not in (0, None):
            print(self.output()[-2000:], file=sys.stderr)
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


# --- Clients ------------------------------------------------------------------------------


def hello_frame() -> str:
    return json.dumps({"type": "hello", "visitor": None, "page": "http://bench/", "lang": "en"})


async def hello(url: str, open_timeout: float = 60) -> websockets.ClientConnection:
    ws = await websockets.connect(url, origin=None, open_timeout=open_timeout, max_size=2**22)
    await ws.send(hello_frame())
    while json.loads(await ws.recv())["type"] != "welcome":
        pass
    return ws


async def ask(ws: websockets.ClientConnection, text: str) -> tuple[float, float, str]:
    """(ms to the first reply.delta, ms to reply.end, source)."""
    started = time.perf_counter()
    first = None
    await ws.send(json.dumps({"type": "message", "text": text, "client_id": uuid.uuid4().hex}))
    while True:
        frame = json.loads(await ws.recv())
        if frame["type"] == "reply.delta" and first is None:
            first = time.perf_counter() - started
        elif frame["type"] == "reply.end":
            end = time.perf_counter() - started
            return (first or end) * 1000, end * 1000, frame["source"]
        elif frame["type"] == "error":
            raise RuntimeError(frame)


@dataclass
class Burst:
    """What N new visitors, opening sockets at R per second, each got."""

    sockets: int
    rate: float
    outcomes: Counter[str] = field(default_factory=Counter)
    latency: list[float] = field(default_factory=list)  # ms, connect -> welcome

    @property
    def welcomed(self) -> int:
        return self.outcomes["welcome"]

    @property
    def shed(self) -> int:
        return self.outcomes["close 1013"]

    @property
    def dropped(self) -> int:
        """Neither welcomed nor told to come back later (1013): what a visitor just loses."""
        return self.sockets - self.welcomed - self.shed


async def burst(url: str, *, sockets: int, rate: float, wait: float = 30.0) -> Burst:
    """Open ``sockets`` websockets at ``rate`` per second, each sends hello and waits for its
    welcome (at most ``wait`` s from the start of its connect). Every socket stays open until
    all have their outcome, as visitors would."""
    result = Burst(sockets, rate)
    opened: list[websockets.ClientConnection] = []
    start = time.perf_counter() + 0.1

    async def visitor(i: int) -> None:
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        began = time.perf_counter()
        try:
            async with asyncio.timeout(wait):
                ws = await websockets.connect(url, origin=None, open_timeout=None, max_size=2**22)
                opened.append(ws)
                await ws.send(hello_frame())
                while json.loads(await ws.recv())["type"] != "welcome":
                    pass
        except TimeoutError:
            result.outcomes["timeout"] += 1
        except websockets.ConnectionClosed as err:
            code = err.rcvd.code if err.rcvd is not None else 1006
            result.outcomes[f"close {code}"] += 1
        except websockets.InvalidStatus as err:
            result.outcomes[f"http {err.response.status_code}"] += 1
        except (OSError, websockets.InvalidHandshake) as err:
            result.outcomes[type(err).__name__] += 1
        else:
            result.outcomes["welcome"] += 1
            result.latency.append((time.perf_counter() - began) * 1000)

    await asyncio.gather(*(visitor(i) for i in range(sockets)))
    await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
    return result
