from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from chatbot.llm import http
from chatbot.llm.fake_server import FakeLLMServer
from tests.chatbot.llm.helpers import ask, collect


async def test_one_client_serves_light_traffic_and_keeps_its_connection(
    llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm()
    for _ in range(3):
        await collect(ask("hi"))
    clients = http._loops[asyncio.get_running_loop()]
    assert len(clients.clients) == 1 and clients.busy == [0]
    await http.close_shared_client()


async def test_a_burst_is_spread_over_a_few_clients(
    llm: Callable[..., None], fake: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm()
    monkeypatch.setattr(http, "STREAMS_PER_CLIENT", 2)
    results = await asyncio.gather(*(collect(ask("[[fake: tokens=3 delay_ms=20]]")) for _ in range(5)))
    assert len(results) == 5
    clients = http._loops[asyncio.get_running_loop()]
    assert len(clients.clients) == 3
    assert clients.busy == [0, 0, 0]
    await http.close_shared_client()
    assert all(client.is_closed for client in clients.clients)
