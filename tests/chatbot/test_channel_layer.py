"""The Redis channel layer riding out Redis going away (chatbot.channel_layer), against a
private redis-server that keeps nothing on disk: readers survive a restart, groups come
back, sends wait for Redis up to their limit and then fail with ChannelLayerUnavailable."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis

from chatbot import channel_layer
from chatbot.channel_layer import ChannelLayerUnavailable, ResilientRedisChannelLayer
from tests.deploy.private_servers import REDIS_SERVER, PrivateRedis, wait_until

pytestmark = pytest.mark.skipif(not os.access(REDIS_SERVER, os.X_OK), reason=f"no {REDIS_SERVER}")

WAIT = 10  # seconds for one message


def layer_on(server: PrivateRedis) -> ResilientRedisChannelLayer:
    """One server process's layer (each process has its own)."""
    return ResilientRedisChannelLayer(hosts=[{"address": server.url}], prefix="test:asgi")


class Reader:
    """A consumer's channel, read without end, as a websocket consumer does."""

    def __init__(self, layer: ResilientRedisChannelLayer, channel: str) -> None:
        self.layer = layer
        self.channel = channel
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            await self.received.put(await self.layer.receive(self.channel))

    async def next(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.received.get(), WAIT)


@pytest.fixture
async def reader(private_redis: PrivateRedis) -> AsyncIterator[Reader]:
    layer = layer_on(private_redis)
    channel = await layer.new_channel()
    await layer.group_add("conversation.1", channel)
    found = Reader(layer, channel)
    try:
        yield found
    finally:
        found.task.cancel()
        await asyncio.gather(found.task, return_exceptions=True)


async def test_it_keeps_reading_through_a_restart_and_puts_its_channels_back_in_their_groups(
    private_redis: PrivateRedis, reader: Reader
) -> None:
    other = layer_on(private_redis)  # another process, sending
    await other.group_send("conversation.1", {"type": "chat.frame", "n": 1})
    assert (await reader.next())["n"] == 1

    await asyncio.to_thread(private_redis.stop)
    await asyncio.to_thread(private_redis.start)  # empty: no groups
    await other.group_send("conversation.1", {"type": "chat.frame", "n": 2})

    assert (await reader.next())["n"] == 2
    assert not reader.task.done()


async def test_it_puts_its_channels_back_when_redis_lost_its_data_without_a_broken_connection(
    private_redis: PrivateRedis, reader: Reader, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(channel_layer, "CHECK_SECONDS", 0.0)
    reader.layer.brpop_timeout = 1  # the reader passes its check at least every second
    await reader.layer.send(reader.channel, {"type": "ping"})  # past its first check
    await reader.next()
    client = redis.Redis.from_url(private_redis.url)
    client.flushall()  # as a restart between two reads would

    def restored() -> bool:
        return any(client.scan_iter(match="test:asgi*group*conversation.1"))

    await asyncio.to_thread(wait_until, restored, "the group back in Redis", WAIT)
    await layer_on(private_redis).group_send("conversation.1", {"type": "chat.frame", "n": 3})
    assert (await reader.next())["n"] == 3


async def test_a_send_waits_for_redis_up_to_its_limit_then_fails_and_a_join_meanwhile_is_kept(
    private_redis: PrivateRedis, reader: Reader, settings: Any
) -> None:
    settings.CHANNEL_LAYER_OUTAGE_SECONDS = 0.5
    other = layer_on(private_redis)
    channel = await other.new_channel()
    await asyncio.to_thread(private_redis.stop)

    with pytest.raises(ChannelLayerUnavailable):
        await other.group_send("conversation.1", {"type": "chat.frame"})
    with pytest.raises(ChannelLayerUnavailable):
        await other.group_add("conversation.2", channel)  # the caller hears of it ...
    joined = Reader(other, channel)
    try:
        await asyncio.to_thread(private_redis.start)
        await reader.layer.group_send("conversation.2", {"type": "chat.frame", "n": 4})
        assert (await joined.next())["n"] == 4  # ... and the membership came back with Redis
    finally:
        joined.task.cancel()
        await asyncio.gather(joined.task, return_exceptions=True)
