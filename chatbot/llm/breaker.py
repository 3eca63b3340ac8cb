"""Per-provider circuit breaker: closed -> open after N consecutive failures -> one probe
after the cool-down (half-open) -> closed on success, open again on failure."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from chatbot.llm.errors import CircuitOpenError
from chatbot.runtime import runtime


class State(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class CircuitBreaker:
    provider: str
    failure_threshold: int = 5  # 0 disables the breaker
    cooldown: float = 30.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    state: State = State.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = False

    def acquire(self) -> None:
        """Before each attempt: raise CircuitOpenError while open, or while a probe is out."""
        if self.failure_threshold <= 0 or self.state is State.CLOSED:
            return
        remaining = self.opened_at + self.cooldown - self.clock()
        if self.state is State.OPEN and remaining <= 0:
            self.state = State.HALF_OPEN
        if self.state is State.HALF_OPEN and not self.probing:
            self.probing = True
            return
        raise CircuitOpenError(
            f"circuit open after {self.failures} consecutive failures;"
            f" next probe in {max(remaining, 0):.1f} s",
            provider=self.provider,
            retry_after=max(remaining, 0.0),
        )

    def success(self) -> None:
        self.state = State.CLOSED
        self.failures = 0
        self.probing = False

    def failure(self) -> None:
        self.failures += 1
        self.probing = False
        if self.failure_threshold > 0 and (
            self.state is State.HALF_OPEN or self.failures >= self.failure_threshold
        ):
            self.state = State.OPEN
            self.opened_at = self.clock()

    def release(self) -> None:
        """The attempt ended without a verdict (the caller went away): let another probe through."""
        self.probing = False


class Breakers:
    """The runtime's circuit breakers, one per provider endpoint (a runtime part)."""

    def __init__(self) -> None:
        self.by_key: dict[str, CircuitBreaker] = {}

    def get(self, key: str, *, provider: str, failure_threshold: int, cooldown: float) -> CircuitBreaker:
        breaker = self.by_key.get(key)
        if breaker is None:
            breaker = self.by_key[key] = CircuitBreaker(provider, failure_threshold, cooldown)
        else:
            # Settings may change (tests, reloads); keep the state, follow the numbers.
            breaker.failure_threshold, breaker.cooldown = failure_threshold, cooldown
        return breaker


def breaker_for(key: str, *, provider: str, failure_threshold: int, cooldown: float) -> CircuitBreaker:
    """The process's breaker for ``key`` (an endpoint: provider, base URL and key)."""
    breakers = runtime().part(Breakers)
    return breakers.get(key, provider=provider, failure_threshold=failure_threshold, cooldown=cooldown)
