"""Agent workspace pages on a workspace-sized history: 100,000 messages in ~20,000
conversations of two bots over 60 days (see _agent_data.py), on SQLite and PostgreSQL.

For each database a child process (its own DATABASE_URL, DEBUG=0, the deployment's
default of one database connection per request) migrates a fresh database, seeds it with
bulk_create, signs a staff user in with the Django test Client and renders each page once
to warm up, then ROUNDS times (3 when a page takes seconds), printing the HTTP status,
median and p95 against the 300 ms target. SQLite uses a temporary file; PostgreSQL a
temporary database bench_agent_<pid> on BENCH_PG (default postgres://postgres@127.0.0.1:5432),
created and dropped here, skipped with the reason when the server doesn't answer.

Run: .venv/bin/python bench/bench_agent.py
"""

from __future__ import annotations

import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from django.test import Client

ROOT = Path(__file__).resolve().parents[1]
PG_SERVER = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
ROUNDS = 15
TARGET_MS = 300
SLOW_S = 3.0
CHILD_ENV = {
    "DEBUG": "0",
    "SECRET_KEY": "bench-" + "x" * 40,
    "ALLOWED_HOSTS": "testserver",
    "LOG_LEVEL": "warning",
    "HF_HUB_OFFLINE": "1",
}


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def child() -> None:
    """Runs with DATABASE_URL already set: migrate, seed, measure."""
    sys.path.insert(0, str(Path(__file__).parent))
    from _setup import setup

    setup()
    from _agent_data import SEARCH_WORD, seed
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.urls import reverse

    call_command("migrate", verbosity=0)
    done = seed()
    engine = connection.vendor
    if engine == "postgresql":
        # What autovacuum does within a minute of a bulk load; a live database has statistics.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    print(
        f"[{engine}] seeded {done.messages:,} messages in {done.conversations:,} conversations "
        f"({done.replies:,} replies, {done.feedback:,} rated, {done.handoffs:,} handoffs, "
        f"'{SEARCH_WORD}' in {done.search_hits:,} messages) in {done.seconds:.1f} s"
    )
    client = Client()
    client.force_login(User.objects.create_user("bench-staff", password="x", is_staff=True))
    pages = [
        ("conversation list", reverse("agents:conversations")),
        (f"search q={SEARCH_WORD}", f"{reverse('agents:conversations')}?q={SEARCH_WORD}"),
        (f"statistics (last {settings.AGENT_STATS_DAYS} days)", reverse("agents:stats")),
        ("statistics (all 60 days)", f"{reverse('agents:stats')}?days=60"),
    ]
    for name, url in pages:
        page_measure(client=client, name=name, url=url)


def page_measure(*, client: Client, name: str, url: str) -> None:
    started = time.perf_counter()
    response = client.get(url)
    # A page that takes seconds is measured a few times only, so the run still ends.
    rounds = ROUNDS if time.perf_counter() - started < SLOW_S else 3
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        response = client.get(url)
        timings.append((time.perf_counter() - started) * 1000)
    median, p95 = statistics.median(timings), nearest_rank(timings, 0.95)
    verdict = "ok" if response.status_code == 200 and median <= TARGET_MS else "MISSES"
    print(
        f"  {name:<32} HTTP {response.status_code}  median {median:7.1f} ms  p95 {p95:7.1f} ms  "
        f"({len(response.content) // 1024} KB, {rounds} runs; target {TARGET_MS} ms median: {verdict})"
    )


def child_run(database_url: str) -> None:
    env = {**os.environ, **CHILD_ENV, "DATABASE_URL": database_url}
    done = subprocess.run([sys.executable, __file__, "--child"], cwd=ROOT, env=env, check=False)
    if done.returncode:
        print(f"  (the run above stopped with exit status {done.returncode})")


def sqlite_run() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        child_run(f"sqlite:///{tmp}/bench.sqlite3")


def postgres_run() -> None:
    import psycopg

    name = f"bench_agent_{os.getpid()}"
    try:
        admin = psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=3)
    except psycopg.Error as err:
        where = urlsplit(PG_SERVER)
        print(f"[postgresql] skipped: {where.hostname}:{where.port or 5432} did not answer ({err})")
        return
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            child_run(f"{PG_SERVER}/{name}")
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    if "--child" in sys.argv:
        child()
        return
    # Stopped from outside: still drop the temporary database (finally blocks run).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))
    sqlite_run()
    postgres_run()


if __name__ == "__main__":
    main()
