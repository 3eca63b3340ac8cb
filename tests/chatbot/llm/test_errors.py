from __future__ import annotations

import pytest

from chatbot.llm.errors import (
    APITimeoutError,
    AuthenticationError,
    ContentRefusedError,
    InvalidRequestError,
    LLMError,
    RateLimitError,
    ServerError,
    map_error,
)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, None, AuthenticationError),
        (403, {"error": {"message": "no"}}, AuthenticationError),
        (429, {"error": {"code": "rate_limit_exceeded", "message": "slow down"}}, RateLimitError),
        (429, {"error": {"code": "insufficient_quota", "message": "pay"}}, AuthenticationError),
        (400, {"error": {"code": "content_filter", "message": "no"}}, ContentRefusedError),
        (400, {"error": {"code": "model_not_found"}}, InvalidRequestError),
        (404, None, InvalidRequestError),
        (408, None, APITimeoutError),
        (409, None, ServerError),
        (500, None, ServerError),
        (503, {"code": "ServiceUnavailable"}, ServerError),
        (
            400,
            {"code": "DataInspectionFailed", "message": "inappropriate", "request_id": "r1"},
            ContentRefusedError,
        ),
        (429, {"code": "Throttling.RateQuota", "message": "rate"}, RateLimitError),
        (400, {"code": "Throttling.AllocationQuota"}, RateLimitError),
        (401, {"code": "InvalidApiKey"}, AuthenticationError),
        (400, {"code": "Arrearage"}, AuthenticationError),
        (400, {"error": {"code": "1301", "message": "敏感内容"}}, ContentRefusedError),
        (429, {"error": {"code": "1302", "message": "并发"}}, RateLimitError),
        (401, {"error": {"code": "1002", "message": "token"}}, AuthenticationError),
        (400, {"error": {"code": "1113"}}, AuthenticationError),
        (None, {"code": "InternalError"}, ServerError),
        (None, {"error": {"code": "1301"}}, ContentRefusedError),
    ],
)
def test_it_maps_status_and_provider_codes_to_one_tree(
    status: int | None, body: object, expected: type[LLMError]
) -> None:
    error = map_error(provider="p", status=status, body=body)
    assert type(error) is expected


def test_it_keeps_the_request_id_code_status_and_retry_after() -> None:
    error = map_error(
        provider="dashscope",
        status=429,
        body={"code": "Throttling", "message": "Requests rate limit exceeded", "request_id": "abc-1"},
        retry_after=2.0,
    )
    assert (error.provider, error.request_id, error.code, error.status_code, error.retry_after) == (
        "dashscope",
        "abc-1",
        "Throttling",
        429,
        2.0,
    )
    assert str(error) == "[dashscope] Requests rate limit exceeded [Throttling] (request id abc-1)"


def test_a_header_request_id_wins_over_the_body() -> None:
    error = map_error(provider="p", status=500, body={"request_id": "body"}, request_id="header")
    assert error.request_id == "header"


def test_it_never_repeats_the_api_key() -> None:
    body = {"error": {"message": "Incorrect API key provided: sk-secret-123456789. Check it."}}
    error = map_error(provider="openai", status=401, body=body, secrets=("sk-secret-123456789",))
    assert "sk-secret" not in str(error)
    assert "***" in str(error)


def test_it_falls_back_to_the_status_when_the_body_is_not_json() -> None:
    error = map_error(provider="p", status=502, body=None)
    assert isinstance(error, ServerError)
    assert error.message == "HTTP 502"
