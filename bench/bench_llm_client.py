"""LLM client overhead against the fake provider (run by ``make bench``; prints, asserts nothing).

1. Time to first token through ``stream_chat`` versus a bare httpx request, 200 of each,
   interleaved: median and p95, the ratio, and the added median (target: under 2 ms).
2. 200 concurrent streams of 40 deltas 10 ms apart in one process, bare (httpx; aiohttp,
   which our client uses) and through our client: all complete? wall time, per-stream
   totals, overhead ratio, client CPU.

The fake server runs as a separate process so it does not share our CPU time slice.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEQUENTIAL = 200
WARM_UP = 20
CONCURRENT = 200
ROUNDS = 3
SHORT = "[[fake: tokens=5 delay_ms=0]]"  # sequential runs: the first token is what we measure
LONG = "[[fake: tokens=40 delay_ms=10]]"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_fake(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.fake_llm.server", "--port", str(port), "--delay-ms", "0"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the fake LLM server did not start")


def configure(base_url: str) -> None:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="chatbot.settings",
        LLM_PROVIDER="openai",
        LLM_BASE_URL=base_url,
        LLM_MODEL="bench-model",
        LLM_API_KEY="sk-bench",
        LLM_MAX_CONCURRENT="1000",
        LLM_BREAKER_FAILURES="0",
        LOG_LEVEL="warning",
    )
    import django

    django.setup()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def body(text: str) -> dict[str, object]:
    return {
        "model": "bench-model",
        "messages": [{"role": "user", "content": text}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def bare(client: object, url: str, text: str) -> tuple[float, float]:
    import httpx

    assert isinstance(client, httpx.AsyncClient)
    started = time.perf_counter()
    first = 0.0
    headers = {"Authorization": "Bearer sk-bench", "Accept": "text/event-stream"}
    async with client.stream("POST", f"{url}/chat/completions", json=body(text), headers=headers) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line[6:])["choices"]  # a real client reads every event
            if not first and choices and choices[0]["delta"].get("content"):
                first = time.perf_counter() - started
    return first * 1000, (time.perf_counter() - started) * 1000


async def bare_aiohttp(session: object, url: str, text: str) -> tuple[float, float]:
    """The same as ``bare`` through aiohttp, the library our client is built on."""
    import aiohttp

    assert isinstance(session, aiohttp.ClientSession)
    started = time.perf_counter()
    first = 0.0
    headers = {"Authorization": "Bearer sk-bench", "Accept": "text/event-stream"}
    async with session.post(f"{url}/chat/completions", json=body(text), headers=headers) as response:
        async for raw in response.content:  # one line at a time
            line = raw.decode().rstrip("\r\n")
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line[6:])["choices"]
            if not first and choices and choices[0]["delta"].get("content"):
                first = time.perf_counter() - started
    return first * 1000, (time.perf_counter() - started) * 1000


async def ours(text: str) -> tuple[float, float]:
    from chatbot.llm import ChatMessage, ChatRequest, Delta, stream_chat

    started = time.perf_counter()
    first = 0.0
    async for item in stream_chat(ChatRequest(messages=(ChatMessage("user", text),))):
        if not first and isinstance(item, Delta):
            first = time.perf_counter() - started
    return first * 1000, (time.perf_counter() - started) * 1000


def line(label: str, values: list[float]) -> str:
    return f"  {label:<22} median {statistics.median(values):7.2f} ms   p95 {pct(values, 95):7.2f} ms"


async def sequential(client: object, url: str) -> None:
    bare_ttft: list[float] = []
    our_ttft: list[float] = []
    for n in range(WARM_UP + SEQUENTIAL):
        # Interleaved, so drift on a noisy machine hits both sides alike.
        a = (await bare(client, url, SHORT))[0]
        b = (await ours(SHORT))[0]
        if n >= WARM_UP:
            bare_ttft.append(a)
            our_ttft.append(b)
    added = statistics.median(our_ttft) - statistics.median(bare_ttft)
    print(f"Time to first token, {SEQUENTIAL} sequential requests (5 deltas, no delay):")
    print(line("bare httpx", bare_ttft))
    print(line("stream_chat", our_ttft))
    print(
        f"  ratio (median)         {statistics.median(our_ttft) / statistics.median(bare_ttft):7.2f} x"
        f"   added median {added:+.2f} ms (target < 2 ms)"
    )


async def concurrent(run: Callable[[int], Awaitable[tuple[float, float]]]) -> dict[str, float]:
    cpu = time.process_time()
    started = time.perf_counter()
    outcomes = await asyncio.gather(*(run(n) for n in range(CONCURRENT)), return_exceptions=True)
    done = [o for o in outcomes if isinstance(o, tuple)]
    failures = [o for o in outcomes if not isinstance(o, tuple)]
    if failures:
        print(f"  {len(failures)} streams failed, e.g. {failures[0]!r}")
    return {
        "complete": len(done),
        "wall": (time.perf_counter() - started) * 1000,
        "cpu": (time.process_time() - cpu) * 1000,
        "ttft": statistics.median(first for first, _ in done) if done else float("nan"),
        "total": statistics.median(total for _, total in done) if done else float("nan"),
    }


async def concurrency(url: str) -> None:
    import httpx

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=1000)
    one = httpx.AsyncClient(limits=limits)
    # The same spread as our client (8 streams per client), to isolate our own layers.
    many = [httpx.AsyncClient(limits=limits) for _ in range(CONCURRENT // 8)]
    import aiohttp

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    variants: dict[str, Callable[[int], Awaitable[tuple[float, float]]]] = {
        "bare httpx, 1 client": lambda n: bare(one, url, LONG),
        "bare httpx, 25 clients": lambda n: bare(many[n // 8], url, LONG),
        "bare aiohttp": lambda n: bare_aiohttp(session, url, LONG),
        "stream_chat": lambda n: ours(LONG),
    }
    print(f"{CONCURRENT} concurrent streams (40 deltas, 10 ms apart), one process, median of {ROUNDS} runs:")
    print(f"  {'':<24} complete   wall ms   client CPU ms   first token ms   stream total ms")
    rows: dict[str, dict[str, float]] = {}
    for name, run in variants.items():
        await concurrent(run)  # warm-up: connections open
        rounds = [await concurrent(run) for _ in range(ROUNDS)]
        row = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        row["complete"] = min(r["complete"] for r in rounds)
        rows[name] = row
        print(
            f"  {name:<24} {int(row['complete']):>4}/{CONCURRENT} {row['wall']:9.0f} {row['cpu']:15.0f}"
            f" {row['ttft']:16.1f} {row['total']:17.1f}"
        )
    for base in ("bare httpx, 1 client", "bare httpx, 25 clients", "bare aiohttp"):
        ratio = rows["stream_chat"]["total"] / rows[base]["total"]
        cpu = rows["stream_chat"]["cpu"] / rows[base]["cpu"]
        print(f"  stream_chat vs {base}: stream total {ratio:.2f} x, client CPU {cpu:.2f} x")
    await one.aclose()
    await asyncio.gather(*(client.aclose() for client in many))
    await session.close()


async def main(url: str) -> None:
    import httpx

    from chatbot.llm.http import close_shared_client

    async with httpx.AsyncClient() as client:
        await sequential(client, url)
    await concurrency(url)
    await close_shared_client()


if __name__ == "__main__":
    port = free_port()
    fake = start_fake(port)
    try:
        configure(f"http://127.0.0.1:{port}/v1")
        asyncio.run(main(f"http://127.0.0.1:{port}/v1"))
    finally:
        fake.terminate()
        fake.wait(10)
