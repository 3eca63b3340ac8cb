"""`make serve`'s supervisor (deploy/serve.py) for real: nginx in front of two daphne
workers over a fresh PostgreSQL database and Redis; the demo page, a static file and a
conversation through nginx; SIGTERM stops every process it started."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import conftest as live
from tests.deploy.conftest import serve_missing_reason
from tests.deploy.serving import SERVE, Served, alive, converse, demo_key, descendants, get, postgres_database


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with postgres_database() as database:
        run = Served(run_dir=tmp_path / "serve", database_url=database)
        try:
            yield run
        finally:
            run.kill()


@pytest.mark.skipif(serve_missing_reason() is not None, reason=str(serve_missing_reason()))
async def test_two_workers_behind_nginx_serve_the_demo_and_stop_together(served: Served) -> None:
    page = await asyncio.to_thread(served.wait_for_demo)
    key = demo_key(page)
    script = re.search(r'<script src="([^"]+)" data-bot=', page).group(1)

    # The widget comes from nginx itself, with the lifetime its config gives static files.
    status, headers, body = await asyncio.to_thread(get, served.url + script)
    assert status == 200 and "WebSocket" in body
    assert headers["server"].startswith("nginx") and "expires" in headers
    assert "max-age=3600" in headers["cache-control"]

    frames = await converse(served.ws_url(key), served.url)
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
