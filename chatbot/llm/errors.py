"""One error tree for every provider, and the one mapper from HTTP status / error body to it.

Every error keeps the provider's name and request id (for support tickets) and, when the
stream broke after text had reached the visitor, that text (``partial_text``) so the
caller can store the reply as partial. Messages never contain the API key: the mapper
redacts it in case a provider echoes it back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from chatbot.llm.types import ChatResult


class LLMError(Exception):
    #: Worth another attempt (only ever made before the first delta).
    retryable: ClassVar[bool] = False
    #: Says something about the provider's health, so it counts towards opening the breaker.
    breaker_failure: ClassVar[bool] = True
    #: Worth trying the fallback provider (when the primary failed before any delta).
    fallback_ok: ClassVar[bool] = True

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        request_id: str = "",
        status_code: int | None = None,
        code: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.request_id = request_id
        self.status_code = status_code
        self.code = code
        self.retry_after = retry_after
        #: Set when the stream broke after some text: what the visitor already saw.
        self.partial: ChatResult | None = None

    @property
    def partial_text(self) -> str:
        return self.partial.text if self.partial else ""

    def __str__(self) -> str:
        where = f"[{self.provider}] " if self.provider else ""
        extra = f" (request id {self.request_id})" if self.request_id else ""
        return f"{where}{self.message}{extra}"


class ConfigurationError(LLMError):
    """No provider, model or key; a parameter out of range. Our side: fix the settings."""

    breaker_failure = False


class CircuitOpenError(LLMError):
    """The provider failed repeatedly; calls fail fast until a probe succeeds."""

    breaker_failure = False


class AuthenticationError(LLMError):
    """Bad key, no permission, or an account without quota/balance. Permanent."""


class InvalidRequestError(LLMError):
    """The provider rejected the request (unknown model, prompt too long ...). Permanent."""


class ContentRefusedError(LLMError):
    """The provider's content filter refused the prompt or the reply."""

    breaker_failure = False
    fallback_ok = False


class RateLimitError(LLMError):
    retryable = True


class ServerError(LLMError):
    retryable = True


class APIConnectionError(LLMError):
    """Could not connect, or the connection broke (also mid-stream)."""

    retryable = True


class APITimeoutError(APIConnectionError):
    """Connect timeout, a stall between chunks longer than the read timeout, or the total timeout."""


class BadResponseError(LLMError):
    """Malformed SSE or JSON, or a stream that ended without finishing."""


# Provider error codes that say more than the HTTP status. OpenAI uses strings in
# error.code/type, DashScope a top-level "code", Zhipu numeric strings in error.code.
_CODE_ERRORS: dict[str, type[LLMError]] = {
    "content_filter": ContentRefusedError,
    "content_policy_violation": ContentRefusedError,
    "DataInspectionFailed": ContentRefusedError,
    "data_inspection_failed": ContentRefusedError,
    "1301": ContentRefusedError,
    "invalid_api_key": AuthenticationError,
    "insufficient_quota": AuthenticationError,
    "InvalidApiKey": AuthenticationError,
    "Arrearage": AuthenticationError,
    "AccessDenied": AuthenticationError,
    "1000": AuthenticationError,
    "1001": AuthenticationError,
    "1002": AuthenticationError,
    "1003": AuthenticationError,
    "1004": AuthenticationError,
    "1113": AuthenticationError,
    "rate_limit_exceeded": RateLimitError,
    "Throttling": RateLimitError,
    "1302": RateLimitError,
    "1303": RateLimitError,
    "1305": RateLimitError,
}


def _status_error(status: int | None) -> type[LLMError]:
    if status is None:
        return ServerError  # an in-band error event without a known code
    if status in (401, 403):
        return AuthenticationError
    if status == 429:
        return RateLimitError
    if status == 408:
        return APITimeoutError
    if status == 409 or status >= 500:
        return ServerError
    return InvalidRequestError


def _code_error(code: str) -> type[LLMError] | None:
    if code in _CODE_ERRORS:
        return _CODE_ERRORS[code]
    head = code.split(".", 1)[0]  # DashScope: Throttling.RateQuota, Throttling.AllocationQuota
    return _CODE_ERRORS.get(head)


def error_fields(body: Any) -> tuple[str, str, str]:
    """(code, message, request_id) from any of the three providers' error bodies."""
    if not isinstance(body, Mapping):
        return "", "", ""
    inner = body.get("error")
    source: Mapping[str, Any] = inner if isinstance(inner, Mapping) else body
    code = source.get("code") or source.get("type") or ""
    message = source.get("message") or (inner if isinstance(inner, str) else "")
    request_id = body.get("request_id") or source.get("request_id") or ""
    return str(code), str(message), str(request_id)


def parse_error_body(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8", errors="replace"))
    except ValueError:
        return None


def map_error(
    *,
    provider: str,
    status: int | None,
    body: Any = None,
    request_id: str = "",
    retry_after: float | None = None,
    secrets: tuple[str, ...] = (),
) -> LLMError:
    """The one mapper: HTTP status and/or a provider's error body to an error of the tree."""
    code, message, body_request_id = error_fields(body)
    cls = _code_error(code) or _status_error(status)
    if not message:
        message = f"HTTP {status}" if status else "error event in the stream"
    message = redact(message[:300], secrets)
    if code:
        message = f"{message} [{code}]"
    return cls(
        message,
        provider=provider,
        request_id=request_id or body_request_id,
        status_code=status,
        code=code,
        retry_after=retry_after,
    )


def redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 6:
            text = text.replace(secret, "***")
    return text
