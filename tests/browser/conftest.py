"""A real daphne process on a free port, sharing the test database, and a real Chromium."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import pytest_asyncio
from django.db import connection

from tests.conftest import CHROMIUM, chromium_missing_reason

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
FAKE_LLM_DEFAULTS = ["--delay-ms", "10"]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = chromium_missing_reason()
    for item in items:
        if "tests/browser/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.browser)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return "sqlite:///" + str(Path(db["NAME"]).resolve())
    auth = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        auth += ":" + quote(db["PASSWORD"], safe="")
    host = db["HOST"] or "127.0.0.1"
    return f"postgres://{auth}@{host}:{db['PORT'] or 5432}/{quote(db['NAME'])}"


def wait_until_up(process: subprocess.Popen[bytes], url: str, log: Path, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer within 30 s")


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class LiveServer:
    """daphne on a free port; its output goes to test-artifacts/daphne.log (a pipe nobody
    reads would fill up and stall it)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        ARTIFACTS.mkdir(exist_ok=True)
        self.log = ARTIFACTS / "daphne.log"
        self.log.write_text("")

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "daphne",
                    "-b",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "chatbot.asgi:application",
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        # Ready, not just up: until the model has loaded, chat sockets are turned away (4013).
        wait_until_up(self.process, self.url + "/readyz", self.log, "daphne")

    def stop(self) -> None:
        stop_process(self.process)

    def restart(self) -> None:
        """Stop, then start again on the same port (open websockets are dropped)."""
        self.stop()
        self.start()


class FakeLLM:
    """The fake LLM provider (devtools/fake_llm/server.py) as a separate process."""

    def __init__(self, args: list[str] | None = None, log_name: str = "fake-llm.log") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        ARTIFACTS.mkdir(exist_ok=True)
        self.log = ARTIFACTS / log_name
        options = FAKE_LLM_DEFAULTS if args is None else args
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "fake_llm", "--port", str(self.port), *options],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until_up(self.process, self.url + "/health", self.log, "fake_llm")
        except RuntimeError:
            stop_process(self.process)
            raise

    def env(self) -> dict[str, str]:
        return {
            "LLM_PROVIDER": "openai",
            "LLM_BASE_URL": self.url + "/v1",
            "LLM_API_KEY": "test",
            "LLM_MODEL": "fake",
            "LLM_FALLBACK_PROVIDER": "",
        }


@pytest.fixture(scope="session")
def fake_llm_process() -> Iterator[FakeLLM]:
    fake = FakeLLM()
    yield fake
    stop_process(fake.process)


@pytest.fixture(scope="session")
def live_server_process(
    django_db_setup: Any, django_db_blocker: Any, fake_llm_process: FakeLLM
) -> Iterator[LiveServer]:
    with django_db_blocker.unblock():
        url = test_database_url()
    env = {**os.environ, "DATABASE_URL": url, "DEBUG": "1", "PYTHONUNBUFFERED": "1", **fake_llm_process.env()}
    server = LiveServer(env)
    server.start()
    yield server
    server.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        await instance.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: Any) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    yield page
    await context.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest_asyncio.fixture(autouse=True, loop_scope="session")
async def close_thread_connections() -> AsyncIterator[None]:
    """ORM calls made through sync_to_async run on a worker thread whose connection
    would otherwise stay open and block dropping the test database on PostgreSQL."""
    yield
    from asgiref.sync import sync_to_async
    from django.db import connections

    await sync_to_async(connections.close_all)()
