from __future__ import annotations

import pytest

from chatbot.llm.breaker import CircuitBreaker, State
from chatbot.llm.errors import CircuitOpenError
from chatbot.llm.limits import MinuteBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(threshold: int = 3, cooldown: float = 10.0) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    return CircuitBreaker("openai", threshold, cooldown, clock=clock), clock


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.acquire()
        breaker.failure()


def test_it_opens_after_n_consecutive_failures() -> None:
    breaker, _ = make(threshold=3)
    fail(breaker, 2)
    assert breaker.state is State.CLOSED
    fail(breaker, 1)
    assert breaker.state is State.OPEN
    with pytest.raises(CircuitOpenError, match="circuit open after 3 consecutive failures") as info:
        breaker.acquire()
    assert info.value.provider == "openai"
    assert info.value.retry_after == pytest.approx(10.0)


def test_a_success_resets_the_count() -> None:
    breaker, _ = make(threshold=3)
    fail(breaker, 2)
    breaker.acquire()
    breaker.success()
    fail(breaker, 2)
    assert breaker.state is State.CLOSED


def test_it_lets_one_probe_through_after_the_cooldown() -> None:
    breaker, clock = make(threshold=1, cooldown=10.0)
    fail(breaker, 1)
    clock.now += 9.9
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    clock.now += 0.1
    breaker.acquire()  # the probe
    assert breaker.state is State.HALF_OPEN
    with pytest.raises(CircuitOpenError):
        breaker.acquire()  # a second caller while the probe is out


def test_a_successful_probe_closes_it() -> None:
    breaker, clock = make(threshold=1)
    fail(breaker, 1)
    clock.now += 10
    breaker.acquire()
    breaker.success()
    assert (breaker.state, breaker.failures) == (State.CLOSED, 0)
    breaker.acquire()


def test_a_failed_probe_opens_it_again_for_a_new_cooldown() -> None:
    breaker, clock = make(threshold=3, cooldown=10.0)
    fail(breaker, 3)
    clock.now += 10
    breaker.acquire()
    breaker.failure()
    assert breaker.state is State.OPEN
    clock.now += 9
    with pytest.raises(CircuitOpenError):
        breaker.acquire()


def test_a_probe_that_ended_without_a_verdict_lets_the_next_one_through() -> None:
    breaker, clock = make(threshold=1)
    fail(breaker, 1)
    clock.now += 10
    breaker.acquire()
    breaker.release()
    breaker.acquire()


def test_a_zero_threshold_disables_it() -> None:
    breaker, _ = make(threshold=0)
    fail(breaker, 50)
    breaker.acquire()


def test_the_minute_bucket_allows_rpm_requests_then_asks_to_wait() -> None:
    clock = Clock()
    bucket = MinuteBucket(rpm=3, clock=clock)
    assert [bucket.wait_time() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.wait_time() == pytest.approx(20.0)  # one request every 20 s refills
    clock.now += 60
    assert bucket.wait_time() == 0.0
