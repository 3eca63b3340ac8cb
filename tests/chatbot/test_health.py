"""Liveness (/healthz), readiness (/readyz) and the chat socket's start-up gate (4013).

The embedding model is never really loaded here: a stand-in ``Encoder`` "loads" when the
test lets the preload thread go, in the test's own runtime (``fresh_runtime``)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from django.db import OperationalError
from django.test import AsyncClient, Client

from chatbot import closecodes, readiness
from chatbot.runtime import Runtime
from knowledge import embeddings
from knowledge.embeddings import Models
from tests.chatbot.ws_client import WAIT, closed_with, communicator, connected, db, hello
from tests.factories import make_bot


@pytest.fixture
def loaded_models() -> dict[str, Any]:
    """No model loaded, and the stand-in never carried into other tests' runtimes."""
    return {}


@pytest.fixture(autouse=True)
def local_model(settings: Any) -> None:
    settings.EMBEDDING_PROVIDER = "local"


class StandInEncoder:
    def __init__(self, name: str) -> None:
        self.name = name


def broken_cursor() -> Any:
    return mock.patch(
        "django.db.backends.base.base.BaseDatabaseWrapper.cursor",
        side_effect=OperationalError("connection refused"),
    )


def wait_for_preload() -> None:
    deadline = time.monotonic() + WAIT
    while embeddings.preload_under_way():
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.fixture
def loading(monkeypatch: pytest.MonkeyPatch, fresh_runtime: Runtime) -> Iterator[threading.Event]:
    """A preload under way (as chatbot.asgi starts it); the model loads once the event is set."""
    go = threading.Event()
    monkeypatch.setattr(embeddings, "Encoder", StandInEncoder)

    def load(name: str | None = None) -> None:
        assert go.wait(WAIT)
        fresh_runtime.part(Models).get(name or embeddings.settings.EMBEDDING_MODEL)

    monkeypatch.setattr(embeddings, "get_batcher", load)
    embeddings.preload()
    yield go
    go.set()
    wait_for_preload()


# --- /healthz -------------------------------------------------------------------------------


def test_it_answers_liveness_without_the_database(client: Client) -> None:
    with broken_cursor() as cursor:
        response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    assert cursor.call_count == 0


# --- /readyz --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_it_is_not_ready_until_the_model_is_loaded(loading: threading.Event) -> None:
    response = await AsyncClient().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"]["embedding_model"]["ok"] is False
    assert "loading" in body["checks"]["embedding_model"]["detail"]
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["channel_layer"]["ok"] is True

    loading.set()
    await asyncio.to_thread(wait_for_preload)
    response = await AsyncClient().get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert all(check["ok"] for check in body["checks"].values()), body
    assert "loaded" in body["checks"]["embedding_model"]["detail"]
    assert body["checks"]["database"]["detail"] in ("sqlite", "postgresql")  # the one it asked


@pytest.mark.django_db(transaction=True)
async def test_it_is_ready_without_a_preload_since_the_model_loads_at_first_use() -> None:
    response = await AsyncClient().get("/readyz")
    assert response.status_code == 200
    assert "first use" in response.json()["checks"]["embedding_model"]["detail"]
    assert embeddings.runtime().part(Models).loaded() == {}  # asking did not load it


@pytest.mark.django_db(transaction=True)
async def test_it_names_a_failed_preload(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(name: str | None = None) -> None:
        raise FileNotFoundError("no model files")

    monkeypatch.setattr(embeddings, "get_batcher", fail)
    embeddings.preload()
    await asyncio.to_thread(wait_for_preload)
    response = await AsyncClient().get("/readyz")
    assert response.status_code == 503
    assert "no model files" in response.json()["checks"]["embedding_model"]["detail"]
    assert readiness.accepting_chats()  # as without a preload: the first query tries again


@pytest.mark.django_db(transaction=True)
async def test_it_names_the_database_when_it_fails() -> None:
    with broken_cursor():
        response = await AsyncClient().get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == {"ok": False, "detail": "OperationalError: connection refused"}
    assert checks["channel_layer"]["ok"] is True and checks["embedding_model"]["ok"] is True


async def test_the_channel_layer_check_round_trips_a_message() -> None:
    check = await readiness.channel_layer_check()
    assert check.ok, check.detail


async def test_the_channel_layer_check_fails_when_nothing_comes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    from channels.layers import get_channel_layer

    layer = get_channel_layer()

    async def never(channel: str) -> dict[str, Any]:
        await asyncio.sleep(60)
        raise AssertionError("not reached")

    monkeypatch.setattr(layer, "receive", never)
    monkeypatch.setattr(readiness, "CHECK_TIMEOUT", 0.05)
    check = await readiness.channel_layer_check()
    assert (check.ok, check.detail) == (False, "no round trip within 0.05s")


async def test_the_channel_layer_check_names_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from channels.layers import get_channel_layer

    layer = get_channel_layer()

    async def refused(channel: str, message: dict[str, Any]) -> None:
        raise ConnectionError("redis is down")

    monkeypatch.setattr(layer, "send", refused)
    check = await readiness.channel_layer_check()
    assert (check.ok, check.detail) == (False, "ConnectionError: redis is down")


# --- The chat socket while starting -----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_chat_is_turned_away_with_starting_until_the_model_is_loaded(
    loading: threading.Event,
) -> None:
    bot = await db(make_bot)
    comm = communicator(bot)
    assert (await comm.connect(timeout=WAIT))[0] is True  # accepted, then closed: browsers see the code
    assert await closed_with(comm) == closecodes.STARTING
    assert closecodes.REASONS[closecodes.STARTING]

    loading.set()
    await asyncio.to_thread(wait_for_preload)
    async with connected(bot) as comm:
        assert (await hello(comm))["type"] == "welcome"
