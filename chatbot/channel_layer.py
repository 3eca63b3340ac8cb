"""The Redis channel layer, made to ride out a Redis restart (``CHANNEL_LAYERS`` in settings).

channels-redis alone does not: the consumer whose channel reader is waiting on Redis when
it goes away gets the ``ConnectionError`` out of ``receive``, which ends the consumer and
daphne closes its websocket (1011), and so on for the next reader, one socket after the
other, while Redis is down. And a Redis that keeps nothing on disk comes back empty: every
group (``conversation.<id>``, the agents' groups) is gone, so tabs, agents and visitors no
longer hear each other although every socket is still open.

Here:

- reading retries (backoff up to ``RETRY_CAP``) until Redis answers again: the sockets stay
  open and nothing they are doing is interrupted;
- sending, joining and leaving a group retry for up to ``CHANNEL_LAYER_OUTAGE_SECONDS``
  before the error reaches the caller (a reply in progress waits for Redis, it does not fail);
- the layer remembers which of this process's channels are in which group, and adds them
  again after every outage it saw and whenever its marker key has vanished (Redis lost its
  data without this process noticing a broken connection; checked every ``CHECK_SECONDS``);
- after an outage, sends wait ``RESTORE_GRACE`` so the other processes, whose readers retry
  at least every ``RETRY_CAP``, have put their channels back in their groups first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from channels_redis.core import RedisChannelLayer
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Redis unreachable or its connection broken (refused, reset, closed by a shutdown, loading).
DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
RETRY_FIRST = 0.05  # seconds before the first retry, doubled each time ...
RETRY_CAP = 0.5  # ... up to this
RESTORE_GRACE = 2 * RETRY_CAP
CHECK_SECONDS = 5.0  # how often a reader checks the marker key
MARKER_SECONDS = 3600  # the marker outlives its process this long


class ChannelLayerUnavailable(ConnectionError):
    """Redis stayed unreachable for ``CHANNEL_LAYER_OUTAGE_SECONDS``: this send did not happen."""


class ResilientRedisChannelLayer(RedisChannelLayer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.members: dict[str, set[str]] = {}  # group -> this process's channels in it
        self.down_since: float | None = None  # an outage seen and not yet recovered from
        self.recovered_at = float("-inf")
        self.next_check = 0.0
        self.marked = False  # the marker key was set once (its absence then means data lost)
        self.marker = f"{self.prefix}:layer:{self.client_prefix}"

    # --- Retrying -------------------------------------------------------------------

    async def _retrying(
        self, operation: Callable[[], Awaitable[T]], *, limit: float | None, grace: bool = False
    ) -> T:
        """``operation`` until it succeeds; past ``limit`` seconds (None: never) its error.
        After an outage Redis is pinged until it answers, this process's groups are restored,
        and with ``grace`` (sends) the other processes are given ``RESTORE_GRACE`` for theirs."""
        delay = RETRY_FIRST
        started = time.monotonic()
        while True:
            try:
                if self.down_since is not None:
                    await self.connection(0).ping()
                    await self._recover()
                if grace:
                    await self._after_outage()
                return await operation()
            except DOWN as err:
                self._down(err)
                if limit is not None and time.monotonic() - started + delay > limit:
                    raise ChannelLayerUnavailable(f"Redis unreachable for {limit:g} s: {err}") from err
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_CAP)

    def _down(self, err: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning("channel layer: Redis unreachable (%s: %s); retrying", type(err).__name__, err)

    async def _recover(self, *, quiet: bool = False) -> None:
        down_since, self.down_since = self.down_since, None
        if down_since is None:  # another task is recovering, or did: its grace applies
            return
        if not quiet:  # the first check of this process: nothing was lost, no grace
            self.recovered_at = time.monotonic()  # sends from now on wait RESTORE_GRACE
        try:
            restored = await self._restore()
        except DOWN as err:
            self.down_since = down_since
            self._down(err)
            return
        if not quiet:
            log.warning(
                "channel layer: Redis back after %.1f s; %d group memberships restored",
                time.monotonic() - down_since,
                restored,
            )

    async def _restore(self) -> int:
        """Every membership of this process's channels, added again; then the marker."""
        for index in range(self.ring_size):
            # The pool's idle connections are to the Redis that went away: each would fail
            # once, and look like another outage.
            await self.connection(index).connection_pool.disconnect(inuse_connections=False)
        count = 0
        for group, channels in list(self.members.items()):
            for channel in list(channels):
                await super().group_add(group, channel)
                count += 1
        await self.connection(0).set(self.marker, "1", ex=MARKER_SECONDS)
        return count

    async def _after_outage(self) -> None:
        wait = self.recovered_at + RESTORE_GRACE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    def _limit(self) -> float:
        return float(settings.CHANNEL_LAYER_OUTAGE_SECONDS)

    # --- The channel layer API --------------------------------------------------------

    async def receive_single(self, channel: str) -> Any:
        return await self._retrying(
            lambda: super(ResilientRedisChannelLayer, self).receive_single(channel), limit=None
        )

    async def _brpop_with_clean(self, index: int, channel: str, timeout: int) -> Any:  # noqa: ASYNC109 (the parent's)
        # The reader passes here at least every brpop_timeout (5 s): a cheap place to notice
        # that Redis lost its data although no connection broke (a fast restart, a flush).
        now = time.monotonic()
        if now >= self.next_check:
            self.next_check = now + CHECK_SECONDS
            # Renewed in the same round trip; EXPIRE answers 0 when the key is gone, which
            # means Redis lost its data.
            if not await self.connection(0).expire(self.marker, MARKER_SECONDS):
                if self.marked:
                    log.warning("channel layer: Redis lost its data; restoring group memberships")
                self.down_since = self.down_since or now
                await self._recover(quiet=not self.marked)
                self.marked = True
        return await super()._brpop_with_clean(index, channel, timeout)

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        await self._retrying(
            lambda: super(ResilientRedisChannelLayer, self).send(channel, message),
            limit=self._limit(),
            grace=True,
        )

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await self._retrying(
            lambda: super(ResilientRedisChannelLayer, self).group_send(group, message),
            limit=self._limit(),
            grace=True,
        )

    async def group_add(self, group: str, channel: str) -> None:
        # Remembered first: if Redis is down past the limit, the membership still comes back
        # with Redis (the caller hears of the error, and the socket stays usable).
        self.members.setdefault(group, set()).add(channel)
        await self._retrying(
            lambda: super(ResilientRedisChannelLayer, self).group_add(group, channel), limit=self._limit()
        )

    async def group_discard(self, group: str, channel: str) -> None:
        channels = self.members.get(group)
        if channels is not None:
            channels.discard(channel)
            if not channels:
                del self.members[group]
        await self._retrying(
            lambda: super(ResilientRedisChannelLayer, self).group_discard(group, channel), limit=self._limit()
        )
