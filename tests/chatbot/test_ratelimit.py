"""Token buckets in the Django cache, and the CHAT_RATE_* setting format."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from chatbot import ratelimit
from chatbot.ratelimit import Bucket, retry_after_seconds, take
from chatbot.settings import _rate


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def key() -> Iterator[str]:
    yield f"test:{uuid.uuid4().hex}"


def test_it_allows_a_burst_of_capacity_then_refuses(clock: Clock, key: str) -> None:
    bucket = Bucket(key, (3, 60.0))
    assert [take([bucket], now=clock) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = take([bucket], now=clock)
    assert wait == pytest.approx(20.0)  # one token every 60/3 seconds


def test_it_refills_at_capacity_per_period(clock: Clock, key: str) -> None:
    bucket = Bucket(key, (3, 60.0))
    for _ in range(3):
        take([bucket], now=clock)
    clock.now += 15.0
    assert take([bucket], now=clock) == pytest.approx(5.0)
    clock.now += 5.0
    assert take([bucket], now=clock) == 0.0
    assert take([bucket], now=clock) == pytest.approx(20.0)


def test_a_refusal_takes_nothing(clock: Clock, key: str) -> None:
    bucket = Bucket(key, (1, 10.0))
    take([bucket], now=clock)
    for _ in range(5):
        take([bucket], now=clock)  # refused: must not push the refill further away
    clock.now += 10.0
    assert take([bucket], now=clock) == 0.0


def test_an_idle_bucket_holds_no_more_than_its_capacity(clock: Clock, key: str) -> None:
    bucket = Bucket(key, (2, 10.0))
    take([bucket], now=clock)
    clock.now += 3600.0
    assert [take([bucket], now=clock) > 0 for _ in range(3)] == [False, False, True]


def test_several_buckets_are_taken_from_only_when_all_have_a_token(clock: Clock, key: str) -> None:
    visitor, address = Bucket(key + ":v", (5, 60.0)), Bucket(key + ":ip", (1, 60.0))
    assert take([visitor, address], now=clock) == 0.0
    assert take([visitor, address], now=clock) == pytest.approx(60.0)
    # The visitor's bucket lost only the one token both took: four are left.
    assert [take([visitor], now=clock) for _ in range(5)][-1] > 0
    assert take([], now=clock) == 0.0


def test_buckets_are_shared_through_the_cache(clock: Clock, key: str) -> None:
    assert take([Bucket(key, (1, 60.0))], now=clock) == 0.0
    assert take([Bucket(key, (1, 60.0))], now=clock) > 0  # a new Bucket object, the same stored state


@pytest.mark.parametrize(("wait", "seconds"), [(0.01, 1), (1.0, 1), (1.2, 2), (59.5, 60)])
def test_retry_after_is_whole_seconds_never_zero(wait: float, seconds: int) -> None:
    assert retry_after_seconds(wait) == seconds


@pytest.mark.parametrize(
    ("value", "rate"),
    [("10/60", (10, 60.0)), ("1/0.5", (1, 0.5)), ("3/10", (3, 10.0)), ("0", None), ("off", None)],
)
def test_the_rate_setting_format(value: str, rate: tuple[int, float] | None) -> None:
    assert _rate("CHAT_RATE_VISITOR", value) == rate


@pytest.mark.parametrize(
    "value", ["10", "10/", "/60", "0/60", "-1/60", "10/0", "10/-5", "ten/60", "10/inf", "10/nan"]
)
def test_a_bad_rate_setting_names_the_variable(value: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="CHAT_RATE_IP"):
        _rate("CHAT_RATE_IP", value)


@pytest.mark.parametrize(
    ("backend", "on_the_loop"),
    [
        ("django.core.cache.backends.locmem.LocMemCache", True),
        ("django.core.cache.backends.dummy.DummyCache", False),  # stands for Redis: may block
    ],
)
async def test_atake_leaves_the_event_loop_only_for_a_cache_over_the_network(
    settings: Any, monkeypatch: pytest.MonkeyPatch, key: str, backend: str, on_the_loop: bool
) -> None:
    settings.CACHES = {"default": {"BACKEND": backend}}
    threads: list[int] = []
    real = ratelimit.take

    def spy(buckets: list[Bucket]) -> float:
        threads.append(threading.get_ident())
        return real(buckets)

    monkeypatch.setattr(ratelimit, "take", spy)
    assert await ratelimit.atake([Bucket(key, (1, 60.0))]) == 0.0
    assert (threads == [threading.get_ident()]) is on_the_loop


def test_it_lets_messages_through_while_the_cache_is_unreachable(
    clock: Clock, key: str, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # A Redis cache where nothing listens (Redis restarting): the limits fail open, logged.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
        }
    }
    bucket = Bucket(key, (1, 60.0))
    assert [take([bucket], now=clock) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert "rate limits not applied: the cache is unreachable" in caplog.text
