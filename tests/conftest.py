from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.conf import settings

from chatbot.runtime import Runtime, install

if TYPE_CHECKING:
    from tests.deploy.private_servers import PrivateRedis

# Fixtures shared across folders: the fake LLM server and knowledge-base stand-in, chat.
pytest_plugins = ["tests.fixtures.llm", "tests.fixtures.chat"]

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")


def chromium_missing_reason() -> str | None:
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        return f"Chromium not found at {CHROMIUM} (apt-get install -y chromium fonts-wqy-microhei)"
    return None


@pytest.fixture(scope="session")
def loaded_models() -> dict[str, Any]:
    """Local embedding models loaded by earlier tests, by name. Read-only weights, and
    seconds to load: the one thing carried from one test's runtime to the next."""
    return {}


@pytest.fixture(autouse=True)
async def fresh_runtime(loaded_models: dict[str, Any]) -> AsyncIterator[Runtime]:
    """Every test gets a runtime of its own (HTTP sessions, breakers, limits, indexes,
    batchers, the keeper...), closed after it on the test's event loop, where its sessions
    and tasks live."""
    from knowledge.embeddings import Models

    mine = Runtime()
    mine.adopt(Models(loaded_models))
    previous = install(mine)
    try:
        yield mine
    finally:
        models = mine.peek(Models)
        if models is not None:
            loaded_models.update(models.loaded())
        await mine.aclose()
        # A runtime made after the test closed its own (a lifespan shutdown) goes too.
        left = install(previous)
        if left is not None and left is not mine:
            await left.aclose()


@pytest.fixture(autouse=True)
def fresh_channel_layer() -> Any:
    """Each test runs on its own event loop (pytest-asyncio), but a channel layer is a
    process-wide object whose Redis connection pools belong to the loop that made them:
    give every test a new one so no test inherits another loop's connections."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


def pytest_report_header(config: pytest.Config) -> list[str]:
    db = settings.DATABASES["default"]
    lines = [
        f"database: {db['ENGINE'].rsplit('.', 1)[-1]} ({db.get('HOST') or db['NAME']})",
        f"redis: {settings.REDIS_URL or 'not set: in-memory channel layer, local-memory cache'}",
    ]
    reason = chromium_missing_reason()
    lines.append(f"browser tests: {'SKIPPED - ' + reason if reason else 'Chromium at ' + CHROMIUM}")
    return lines


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    reason = chromium_missing_reason()
    if reason:
        terminalreporter.write_sep("!", f"BROWSER TESTS SKIPPED: {reason}", yellow=True)
    if not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        terminalreporter.write_sep(
            "-", "This run used SQLite; .ci/run repeats the suite on PostgreSQL and Redis when they answer."
        )


@pytest.fixture(autouse=True)
def no_background_calibration(request: pytest.FixtureRequest) -> Any:
    """Calibration runs on a background thread of its own in production; tests that want
    it mark themselves ``auto_calibrate`` (the thread needs a transactional database)."""
    from django.test import override_settings

    enabled = request.node.get_closest_marker("auto_calibrate") is not None
    with override_settings(KB_AUTO_CALIBRATE=enabled):
        yield
    if enabled:  # longer than closing the runtime waits: nothing runs on into the next test
        from knowledge.calibration_services import runner

        runner().wait(30)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server of the test's own on a free port, stopped after it (fault tests)."""
    from tests.deploy.private_servers import PrivateRedis  # it imports this module

    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
