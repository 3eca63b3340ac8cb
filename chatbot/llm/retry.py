"""Retry policy as data; the decision and the delay are separate, testable functions.

Only attempts that failed before the first delta are ever retried: the visitor must not
see text twice. A server's Retry-After is honoured when it fits under ``max_wait``; a
longer one is not waited for (the visitor would give up first), so the error goes up at
once and the fallback provider, if any, gets its chance.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from chatbot.llm.errors import LLMError


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 8.0
    #: The longest server-requested wait we accept.
    max_wait: float = 5.0


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date).

    None when absent or unusable (negative, ``nan``, ``inf``, garbage); 0 for a past date.
    """
    millis = _finite(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    raw = headers.get("retry-after")
    if raw is None:
        return None
    seconds = _finite(raw)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _finite(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    if math.isnan(value) or math.isinf(value) or value < 0:
        return None
    return value


def should_retry(error: LLMError, *, attempt: int, policy: RetryPolicy, delivered: bool) -> bool:
    """``attempt`` counts the retries already made; ``delivered``: text reached the visitor."""
    if delivered or not error.retryable or attempt >= policy.max_retries:
        return False
    return error.retry_after is None or error.retry_after <= policy.max_wait


def retry_delay(
    error: LLMError, *, attempt: int, policy: RetryPolicy, rand: Callable[[], float] = random.random
) -> float:
    if error.retry_after is not None:
        return min(error.retry_after, policy.max_wait)
    backoff = min(policy.initial_delay * 2**attempt, policy.max_delay)
    return backoff * (1 - 0.25 * rand())
