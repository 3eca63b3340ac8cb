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
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import conftest as live
from tests.deploy.conftest import serve_missing_reason
from tests.deploy.serving import SERVE, Served, alive, converse, demo_key, descendants, get, postgres_database


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with postgres_database() as database:
        # Hashed static names as in production (DEBUG=0 turns them on by itself).
        run = Served(run_dir=tmp_path / "serve", database_url=database, env={"STATIC_HASHED": "1"})
        try:
            yield run
        finally:
            run.kill()


@pytest.mark.skipif(serve_missing_reason() is not None, reason=str(serve_missing_reason()))
async def test_two_workers_behind_nginx_serve_the_demo_and_stop_together(served: Served) -> None:
    page = await asyncio.to_thread(served.wait_for_demo)
    key = demo_key(page)
    script = re.search(r'<script src="([^"]+)" data-bot=', page).group(1)

    # The widget comes from nginx itself, under the stable URL companies embed, revalidated
    # on each use: unchanged, a 304 and no body.
    assert script == "/static/chatbot/widget.js"
    status, headers, body = await asyncio.to_thread(get, served.url + script)
    assert status == 200 and "WebSocket" in body
    assert headers["server"].startswith("nginx") and headers["cache-control"] == "no-cache"
    assert headers["x-content-type-options"] == "nosniff"
    with pytest.raises(urllib.error.HTTPError) as unchanged:
        await asyncio.to_thread(get, served.url + script, {"If-None-Match": headers["etag"]})
    assert unchanged.value.code == 304

    # Files under hashed names, which browsers keep a year. (Pages link them with DEBUG=0;
    # under DEBUG, as here, Django links the plain names, so the manifest says which.)
    manifest = json.loads((live.ROOT / "staticfiles" / "staticfiles.json").read_text())
    hashed = manifest["paths"]["demo/shop.css"]
    assert re.fullmatch(r"demo/shop\.[0-9a-f]{12}\.css", hashed), hashed
    status, headers, body = await asyncio.to_thread(get, f"{served.url}/static/{hashed}")
    assert status == 200 and body and headers["server"].startswith("nginx")
    assert headers["cache-control"] == "public, max-age=31536000, immutable"

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
