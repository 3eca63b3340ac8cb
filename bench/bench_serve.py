"""The production topology under load: `deploy/serve.py` (nginx in front of 1, then 2
daphne workers) over PostgreSQL and Redis, the fake LLM as its own process; this process is
the client, over real websockets through nginx, on the same two cores (so every figure
also pays for the client).

For 1 and for 2 workers:
1. knowledge-base answers per second, closed loop (each visitor asks again as soon as it
   has its answer), and the 2/1 ratio (aim >= 1.6);
2. LLM streams: the largest number of concurrent streams (closed loop) at which the p95
   ADDED time to first token stays <= 100 ms: the visitor's first reply.delta minus the
   fake provider's own first chunk called directly;
3. memory: each worker's RSS, PSS and USS once its model is loaded, and per idle websocket
   (K sockets that said hello, the workers' RSS delta / K);
4. bursts of new visitors: 500 sockets opened at 50, 100, 200, 400 per second, each says
   hello and waits for its welcome: welcomed, shed with 1013 (the widget retries with
   backoff), dropped (anything else: 502, a timeout); the largest rate absorbed (all
   welcomed) and the largest with no drop;
5. a rolling restart (SIGHUP to serve.py, each worker drained and replaced in turn) under a
   small load: its time (serve.py's own "rolling restart done in"), the visitors' reconnects
   (1012) and errors.

The machine is shared: figures move from run to run; compare within one run.

Run: .venv/bin/python bench/bench_serve.py   (about 8-10 minutes)
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._serving import ROOT, Burst, Stack, ask, burst, cpu_by_role, hello, memory_kb

KB_QUESTIONS = [
    "Where is my order?",
    "How do I track my parcel?",
    "How do I return an item?",
    "How long does delivery take?",
    "Can I get an invoice?",
    "我的快递到哪了",
]
KB_CLIENTS, KB_SECONDS = 48, 10.0
LLM_STEPS, LLM_SECONDS, LLM_ADDED_MAX = (2, 4, 8, 16, 32, 64), 5.0, 100.0
IDLE_SOCKETS = 400
BURST_SOCKETS, BURST_RATES = 500, (50, 100, 200, 400)
RESTART_CLIENTS = 8


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- 1. Knowledge-base answers --------------------------------------------------------------


async def kb_rate(stack: Stack) -> dict[str, float]:
    sockets = [await hello(stack.ws_url) for _ in range(KB_CLIENTS)]
    stop_at = time.perf_counter() + KB_SECONDS
    latencies: list[float] = []

    async def visitor(i: int, ws: websockets.ClientConnection) -> int:
        answered = 0
        while time.perf_counter() < stop_at:
            _, end, source = await ask(ws, KB_QUESTIONS[(i + answered) % len(KB_QUESTIONS)])
            if source == "knowledge":
                answered += 1
                latencies.append(end)
        return answered

    started, cpu_before = time.perf_counter(), cpu_by_role(stack)
    answered = sum(await asyncio.gather(*(visitor(i, ws) for i, ws in enumerate(sockets))))
    wall = time.perf_counter() - started
    cpu = {role: (spent - cpu_before.get(role, 0.0)) / wall for role, spent in cpu_by_role(stack).items()}
    await asyncio.gather(*(ws.close() for ws in sockets))
    return {
        "rate": answered / wall,
        "p50": statistics.median(latencies),
        "p95": pct(latencies, 0.95),
        "cpu": cpu,
    }


# --- 2. LLM streams -------------------------------------------------------------------------


async def fake_first_chunk(stack: Stack, n: int = 20) -> float:
    """The fake provider's own time to first chunk (ms, median), called directly, one at a time."""
    body = {"model": "fake", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    url = f"http://127.0.0.1:{stack.fake_port}/v1/chat/completions"
    times = []
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(n):
            started = time.perf_counter()
            async with client.stream("POST", url, json=body) as response:
                async for chunk in response.aiter_bytes():
                    if b"tok" in chunk:  # its first delta ("tok1 "), not the role chunk before it
                        times.append((time.perf_counter() - started) * 1000)
                        break
    return statistics.median(times)


async def llm_step(stack: Stack, concurrency: int, direct: float) -> dict[str, float]:
    sockets = await asyncio.gather(*(hello(stack.ws_url) for _ in range(concurrency)))
    stop_at = time.perf_counter() + LLM_SECONDS
    added: list[float] = []

    async def visitor(i: int, ws: websockets.ClientConnection) -> int:
        done = 0
        while time.perf_counter() < stop_at:
            first, _, source = await ask(ws, f"Tell me a story about ships, visitor {i} number {done}")
            assert source == "llm", source
            added.append(first - direct)
            done += 1
        return done

    started = time.perf_counter()
    streams = sum(await asyncio.gather(*(visitor(i, ws) for i, ws in enumerate(sockets))))
    wall = time.perf_counter() - started
    await asyncio.gather(*(ws.close() for ws in sockets))
    return {
        "c": concurrency,
        "rate": streams / wall,
        "p50": statistics.median(added),
        "p95": pct(added, 0.95),
    }


async def llm_capacity(stack: Stack) -> dict[str, Any]:
    direct = await fake_first_chunk(stack)
    steps, best = [], None
    for concurrency in LLM_STEPS:
        step = await llm_step(stack, concurrency, direct)
        steps.append(step)
        if step["p95"] <= LLM_ADDED_MAX:
            best = step  # the largest within the target (one noisy step does not end the climb)
        elif step["p95"] > 3 * LLM_ADDED_MAX:
            break
    return {"direct": direct, "steps": steps, "best": best}


# --- 3. Memory -----------------------------------------------------------------------------


async def memory(stack: Stack) -> dict[str, Any]:
    pids = stack.worker_pids()
    workers = [memory_kb(pid) for pid in pids]
    before = sum(m["rss"] for m in workers)
    sockets = []
    for start in range(0, IDLE_SOCKETS, 25):  # a few at a time: no burst to shed
        sockets += await asyncio.gather(*(hello(stack.ws_url) for _ in range(min(25, IDLE_SOCKETS - start))))
    await asyncio.sleep(2)
    after = sum(memory_kb(pid)["rss"] for pid in pids)
    await asyncio.gather(*(ws.close() for ws in sockets))
    return {"workers": workers, "per_socket_kb": (after - before) / IDLE_SOCKETS}


# --- 4. Bursts ------------------------------------------------------------------------------


async def bursts(stack: Stack) -> list[Burst]:
    done = []
    for rate in BURST_RATES:
        done.append(await burst(stack.ws_url, sockets=BURST_SOCKETS, rate=rate))
        await asyncio.sleep(3)  # the sockets' disconnects settle
    return done


# --- 5. Rolling restart ---------------------------------------------------------------------


def restart_supported() -> bool:
    script = Path(os.environ.get("BENCH_SERVE_SCRIPT", ROOT / "deploy" / "serve.py"))
    return "rolling restart done in" in (ROOT / script).read_text()


async def rolling_restart(stack: Stack) -> dict[str, Any]:
    """SIGHUP under RESTART_CLIENTS visitors asking knowledge-base questions in a loop; a
    visitor closed with 1012/1013 reconnects (as the widget does) and asks again."""
    assert stack.serve is not None
    mark = len(stack.output())
    counts = {"answers": 0, "reconnects": 0, "errors": 0}
    errors: list[str] = []
    done = asyncio.Event()

    async def visitor(i: int) -> None:
        token = None
        while not done.is_set():
            try:
                async with websockets.connect(stack.ws_url, origin=None, open_timeout=30) as ws:
                    await ws.send(json.dumps({"type": "hello", "visitor": token, "page": "http://bench/"}))
                    welcome = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    assert welcome["type"] == "welcome", welcome
                    token = welcome["visitor"]
                    while not done.is_set():
                        await asyncio.wait_for(ask(ws, KB_QUESTIONS[i % len(KB_QUESTIONS)]), 30)
                        counts["answers"] += 1
                        await asyncio.sleep(0.2)
            except websockets.ConnectionClosed as err:
                code = err.rcvd.code if err.rcvd is not None else 1006
                if code in (1012, 1013):
                    counts["reconnects"] += 1
                else:
                    counts["errors"] += 1
                    errors.append(f"close {code}")
            except Exception as err:  # a handshake refused, a timeout: what a visitor would see
                counts["errors"] += 1
                errors.append(type(err).__name__)
                await asyncio.sleep(0.5)

    tasks = [asyncio.create_task(visitor(i)) for i in range(RESTART_CLIENTS)]
    await asyncio.sleep(2)
    stack.serve.send_signal(signal.SIGHUP)
    deadline, seconds = time.monotonic() + 300, None
    while time.monotonic() < deadline and seconds is None:
        await asyncio.sleep(0.5)
        found = re.search(r"rolling restart done in ([\d.]+) s", stack.output()[mark:])
        seconds = float(found.group(1)) if found else None
    await asyncio.sleep(2)
    done.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"seconds": seconds, **counts, "kinds": sorted(set(errors))}


# --- Report ---------------------------------------------------------------------------------


async def measure(workers: int, run_root: Path) -> dict[str, Any]:
    stack = Stack(workers=workers, run_root=run_root)
    started = time.perf_counter()
    stack.start()
    figures: dict[str, Any] = {"start": time.perf_counter() - started}
    try:
        ws = await hello(stack.ws_url)
        await ask(ws, KB_QUESTIONS[0])
        await ask(ws, "warm up the language model path")
        await ws.close()
        figures["kb"] = await kb_rate(stack)
        figures["llm"] = await llm_capacity(stack)
        figures["memory"] = await memory(stack)
        await asyncio.sleep(5)  # the idle sockets' disconnects settle before the bursts
        figures["bursts"] = await bursts(stack)
        figures["restart"] = await rolling_restart(stack) if restart_supported() else None
    finally:
        stack.stop()
    return figures


def row(label: str, one: str, two: str, extra: str = "") -> None:
    print(f"  {label:<44} {one:>22} {two:>22}  {extra}")


def report(by: dict[int, dict[str, Any]]) -> None:
    one, two = by[1], by[2]
    print(
        f"serve benchmark through nginx, {sys.platform}, shared 2-core machine (noisy: compare within a run)"
    )
    row("", "1 worker", "2 workers", "2/1")
    row("start (migrate, demo, model, ready)", f"{one['start']:.0f} s", f"{two['start']:.0f} s")
    kb1, kb2 = one["kb"], two["kb"]
    row(
        f"KB answers/s, closed loop, {KB_CLIENTS} visitors",
        f"{kb1['rate']:.0f} (p95 {kb1['p95']:.0f} ms)",
        f"{kb2['rate']:.0f} (p95 {kb2['p95']:.0f} ms)",
        f"{kb2['rate'] / kb1['rate']:.2f} (aim >= 1.6)",
    )

    def llm(f: dict[str, Any]) -> str:
        best = f["llm"]["best"]
        return f"{best['c']} streams, {best['rate']:.0f}/s" if best else "none"

    for workers, f in by.items():
        split = ", ".join(f"{role} {cores:.2f}" for role, cores in f["kb"]["cpu"].items())
        print(f"    {workers}w cores busy during it: {split}")
    row(f"LLM: most streams, p95 added TTFT <= {LLM_ADDED_MAX:.0f} ms", llm(one), llm(two))
    for workers, f in by.items():
        steps = ", ".join(
            f"{s['c']}: {s['rate']:.0f}/s +{s['p50']:.0f}/+{s['p95']:.0f} ms" for s in f["llm"]["steps"]
        )
        direct = f["llm"]["direct"]
        print(f"    {workers}w concurrent: streams/s, added TTFT p50/p95 (fake's {direct:.0f} ms): {steps}")

    def mem(f: dict[str, Any], key: str) -> str:
        return "/".join(f"{m[key] / 1024:.0f}" for m in f["memory"]["workers"]) + " MB"

    for key in ("rss", "pss", "uss"):
        row(f"worker {key.upper()} after the model loaded", mem(one, key), mem(two, key))
    row(
        f"per idle websocket ({IDLE_SOCKETS} sockets, RSS delta)",
        f"{one['memory']['per_socket_kb']:.1f} KB",
        f"{two['memory']['per_socket_kb']:.1f} KB",
    )

    def absorbed(f: dict[str, Any], clean: bool) -> str:
        ok = [b.rate for b in f["bursts"] if (b.welcomed == b.sockets if clean else b.dropped == 0)]
        return f"{max(ok):.0f}/s" if ok else f"< {BURST_RATES[0]}/s"

    row(f"burst absorbed: all {BURST_SOCKETS} welcomed, up to", absorbed(one, True), absorbed(two, True))
    row("burst with no drop (1013 allowed), up to", absorbed(one, False), absorbed(two, False))
    for workers, f in by.items():
        for b in f["bursts"]:
            others = {k: v for k, v in b.outcomes.items() if k not in ("welcome", "close 1013")}
            print(
                f"    {workers}w {b.sockets}@{b.rate:.0f}/s: welcomed {b.welcomed}, 1013 {b.shed}, "
                f"dropped {b.dropped} {others or ''} welcome p50 {pct(b.latency, 0.5):.0f} ms "
                f"p95 {pct(b.latency, 0.95):.0f} ms"
            )

    def restart(f: dict[str, Any]) -> str:
        r = f["restart"]
        if r is None:
            return "TODO"
        took = f"{r['seconds']:.1f} s" if r["seconds"] is not None else "not done"
        return f"{took}, {r['errors']} err"

    # One worker: nothing answers while it restarts, so its visitors do see errors (502).
    row(f"rolling restart, {RESTART_CLIENTS} visitors asking", restart(one), restart(two))
    for workers, f in by.items():
        if f["restart"] is not None:
            r = f["restart"]
            print(
                f"    {workers}w: {r['answers']} answers, {r['reconnects']} reconnects after 1012/1013, "
                f"{r['errors']} errors {r['kinds'] or ''}"
            )
    if one["restart"] is None:
        print("  TODO rolling restart: deploy/serve.py has no SIGHUP rolling restart yet (restart_supported)")


def missing() -> str | None:
    """Why this machine cannot run the topology (nginx, PostgreSQL, Redis), or None."""
    if not os.access(os.environ.get("NGINX", "/usr/sbin/nginx"), os.X_OK):
        return "nginx not found (apt-get install -y nginx, or set NGINX)"
    for name, port in (("PostgreSQL", 5432), ("Redis", 6379)):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return f"{name} does not answer on 127.0.0.1:{port}"
    return None


def main() -> None:
    if why := missing():
        print(f"bench_serve skipped: {why}")
        return
    run_root = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    by = {workers: asyncio.run(measure(workers, run_root)) for workers in (1, 2)}
    report(by)
    shutil.rmtree(run_root, ignore_errors=True)  # kept when something failed: serve.log, nginx's


if __name__ == "__main__":
    main()
