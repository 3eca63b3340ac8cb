"""Token buckets in the Django cache (Redis when ``REDIS_URL`` is set, so a limit holds across
server processes; local memory otherwise).

A bucket holds up to ``capacity`` tokens and refills at ``capacity / per`` tokens a second;
each message takes one. A ``Rate`` of (10, 60.0) allows a burst of 10 messages, then one
every 6 seconds. ``take`` consumes from several buckets at once (a visitor's and their IP
address's) only when every one of them has a token, and otherwise says how long to wait.

Within a process the check is exact (one lock: the runtime's ``Exact``). The cache offers
no compare-and-set, so two processes checking the same bucket at the same instant may both
pass: across processes a limit can be exceeded by the number of such simultaneous requests,
never made stricter.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.core.cache import cache, caches
from django.core.cache.backends.locmem import LocMemCache

from chatbot.runtime import runtime

log = logging.getLogger(__name__)

KEY_PREFIX = "ratelimit:"

Rate = tuple[int, float]  # (capacity, per seconds)


@dataclass(frozen=True)
class Bucket:
    key: str
    rate: Rate


class Exact:
    """The lock that makes a read and write of the buckets one step within the process (a
    runtime part)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()


def take(buckets: Sequence[Bucket], *, now: Callable[[], float] = time.time) -> float:
    """Take one token from every bucket if each has one: returns 0.0. Otherwise takes none and
    returns the seconds until all of them will have one."""
    if not buckets:
        return 0.0
    try:
        with runtime().part(Exact).lock:
            return _take(buckets, now)
    except Exception as err:  # the cache (Redis) is unreachable: a restart, a failover
        # Fails open: the limits are a courtesy, and an outage of the cache must not turn
        # every visitor's message away (chatbot.channel_layer rides the same outage out).
        log.warning("rate limits not applied: the cache is unreachable (%s: %s)", type(err).__name__, err)
        return 0.0


def _take(buckets: Sequence[Bucket], now: Callable[[], float]) -> float:
    keys = [KEY_PREFIX + b.key for b in buckets]
    stored = cache.get_many(keys)
    moment = now()
    updates: dict[str, tuple[float, float]] = {}
    wait = 0.0
    for key, bucket in zip(keys, buckets, strict=True):
        capacity, per = bucket.rate
        refill = capacity / per  # tokens per second
        tokens, updated = stored.get(key, (float(capacity), moment))
        tokens = min(float(capacity), tokens + max(0.0, moment - updated) * refill)
        if tokens < 1.0:
            wait = max(wait, (1.0 - tokens) / refill)
        updates[key] = (tokens - 1.0, moment)
    if wait > 0:
        return wait
    # Kept until the bucket would be full again; an expired key is a full bucket.
    timeout = max(math.ceil(b.rate[1]) for b in buckets) + 1
    cache.set_many(updates, timeout=timeout)
    return 0.0


async def atake(buckets: Sequence[Bucket]) -> float:
    """``take`` off the event loop when the cache is over the network (Redis); on the
    event loop itself when it is this process's memory (microseconds, no thread hop)."""
    if isinstance(caches["default"], LocMemCache):
        return take(buckets)
    return await sync_to_async(take, thread_sensitive=False)(buckets)


def retry_after_seconds(wait: float) -> int:
    """Whole seconds to tell a client, never 0 for a refusal."""
    return max(1, math.ceil(wait))
