"""The configured cache, channel layer and database really work (Redis / PostgreSQL on CI)."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache
from django.db import connection


def test_the_cache_round_trips_a_value() -> None:
    key = f"test:{uuid.uuid4()}"
    cache.set(key, {"n": 1}, timeout=30)
    assert cache.get(key) == {"n": 1}
    counter = key + ":count"
    assert cache.add(counter, 0) is True
    assert cache.incr(counter) == 1
    cache.delete_many([key, counter])
    assert cache.get(key) is None


def test_the_cache_backend_follows_redis_url() -> None:
    expected = "RedisCache" if os.environ.get("REDIS_URL") else "LocMemCache"
    assert settings.CACHES["default"]["BACKEND"].endswith(expected)


async def test_the_channel_layer_delivers_a_group_message() -> None:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    group = f"test-{uuid.uuid4().hex}"
    await layer.group_add(group, channel)
    await layer.group_send(group, {"type": "chat.message", "text": "hi"})
    assert await layer.receive(channel) == {"type": "chat.message", "text": "hi"}
    await layer.group_discard(group, channel)
    expected = "ResilientRedisChannelLayer" if os.environ.get("REDIS_URL") else "InMemoryChannelLayer"
    assert type(layer).__name__ == expected


async def test_a_cancelled_channel_layer_read_always_stops() -> None:
    """A websocket that closes cancels its channel-layer reader. With a client socket
    timeout, redis-py sends through asyncio.wait_for, which on Python 3.11 can swallow that
    cancellation at some points of the connection handshake; the reader then polled Redis
    forever (and hung test teardown). Cancel at every early step and require an end."""
    stuck = []
    for steps in range(40):
        layer = get_channel_layer()
        reader = asyncio.ensure_future(layer.receive(await layer.new_channel()))
        for _ in range(steps):
            await asyncio.sleep(0)
        reader.cancel()
        done, _ = await asyncio.wait([reader], timeout=2)
        if not done:
            stuck.append(steps)
            await asyncio.wait([reader], timeout=10)  # let it die before the next round
    assert stuck == []


@pytest.mark.django_db
def test_the_database_is_the_configured_one() -> None:
    expected = "postgresql" if os.environ.get("DATABASE_URL", "").startswith("postgres") else "sqlite"
    assert connection.vendor == expected
