from __future__ import annotations

from email.utils import formatdate

import pytest

from chatbot.llm.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadResponseError,
    CircuitOpenError,
    ConfigurationError,
    ContentRefusedError,
    InvalidRequestError,
    LLMError,
    RateLimitError,
    ServerError,
)
from chatbot.llm.retry import RetryPolicy, parse_retry_after, retry_delay, should_retry

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": " 1.5 "}, 1.5),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "nan", "retry-after": "2"}, 2.0),
        ({"retry-after": formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"retry-after": formatdate(NOW - 30, usegmt=True)}, 0.0),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "-inf"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "-5"}, None),
        ({"retry-after-ms": "-1"}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after": ""}, None),
        ({"retry-after": "Wed, 99 Foo 2026 99:99:99 GMT"}, None),
        ({"retry-after": "86400000"}, 86400000.0),
        ({"retry-after": "1e308"}, 1e308),
    ],
)
def test_it_parses_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, now=NOW) == expected


POLICY = RetryPolicy(max_retries=2, initial_delay=0.5, max_delay=8.0, max_wait=5.0)


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (RateLimitError("429"), True),
        (ServerError("500"), True),
        (APIConnectionError("refused"), True),
        (APITimeoutError("stall"), True),
        (AuthenticationError("401"), False),
        (InvalidRequestError("400"), False),
        (ContentRefusedError("filtered"), False),
        (BadResponseError("garbage"), False),
        (ConfigurationError("no key"), False),
        (CircuitOpenError("open"), False),
        (RateLimitError("429", retry_after=2.0), True),
        (RateLimitError("429", retry_after=5.0), True),
        (RateLimitError("429", retry_after=3600.0), False),
        (ServerError("503", retry_after=1e308), False),
    ],
)
def test_the_retry_matrix_before_the_first_delta(error: LLMError, retried: bool) -> None:
    assert should_retry(error, attempt=0, policy=POLICY, delivered=False) is retried


@pytest.mark.parametrize("error", [RateLimitError("429"), ServerError("500"), APIConnectionError("dropped")])
def test_it_never_retries_once_text_was_delivered(error: LLMError) -> None:
    assert should_retry(error, attempt=0, policy=POLICY, delivered=True) is False


def test_it_stops_after_the_maximum_number_of_retries() -> None:
    error = ServerError("500")
    assert should_retry(error, attempt=1, policy=POLICY, delivered=False)
    assert not should_retry(error, attempt=2, policy=POLICY, delivered=False)
    assert not should_retry(error, attempt=0, policy=RetryPolicy(max_retries=0), delivered=False)


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [(0, 0.0, 0.5), (1, 0.0, 1.0), (2, 0.0, 2.0), (0, 1.0, 0.375), (5, 0.0, 8.0), (10, 0.5, 7.0)],
)
def test_it_backs_off_exponentially_with_jitter_and_a_cap(attempt: int, rand: float, expected: float) -> None:
    delay = retry_delay(ServerError("500"), attempt=attempt, policy=POLICY, rand=lambda: rand)
    assert delay == pytest.approx(expected)


def test_it_waits_what_the_server_asked() -> None:
    assert retry_delay(RateLimitError("429", retry_after=1.25), attempt=3, policy=POLICY) == 1.25
    assert retry_delay(RateLimitError("429", retry_after=0.0), attempt=0, policy=POLICY) == 0.0
