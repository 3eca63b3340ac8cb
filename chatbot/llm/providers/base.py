"""What a provider adapter does: build the HTTP call, and turn one SSE event into a chunk."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from chatbot.llm.errors import BadResponseError
from chatbot.llm.params import Limits
from chatbot.llm.sse import SSEEvent
from chatbot.llm.types import ChatRequest, Profile


@dataclass(frozen=True, slots=True)
class HttpCall:
    url: str
    headers: dict[str, str] = field(repr=False)  # Authorization: never in a log line
    body: dict[str, Any] = field(repr=False)
    #: Strings that must never appear in an error message (the key, a token made from it).
    secrets: tuple[str, ...] = field(default=(), repr=False)


@dataclass(slots=True)
class Chunk:
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    request_id: str = ""
    #: The provider says the stream is over (OpenAI's [DONE], DashScope's finish reason).
    done: bool = False


class Provider:
    name: ClassVar[str]
    default_base_url: ClassVar[str]
    limits: ClassVar[Limits] = Limits()
    #: Finish reasons that mean the provider's content filter cut the reply.
    refusal_finish_reasons: ClassVar[frozenset[str]] = frozenset({"content_filter"})
    #: An API key is required (OpenAI-compatible local servers often need none).
    needs_key: ClassVar[bool] = True

    def build_call(
        self, request: ChatRequest, profile: Profile, *, model: str, stream_usage: bool
    ) -> HttpCall:
        raise NotImplementedError

    def parse_event(self, event: SSEEvent) -> Chunk | None:
        raise NotImplementedError

    def secrets(self, profile: Profile) -> tuple[str, ...]:
        return (profile.api_key,) if profile.api_key else ()


def messages_payload(request: ChatRequest) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in request.messages]


def sampling(request: ChatRequest) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if request.temperature is not None:
        params["temperature"] = request.temperature
    if request.top_p is not None:
        params["top_p"] = request.top_p
    if request.max_tokens is not None:
        params["max_tokens"] = request.max_tokens
    if request.stop:
        params["stop"] = list(request.stop)
    return params


def load_json(data: str, *, provider: str) -> dict[str, Any]:
    try:
        payload = json.loads(data)
    except ValueError:
        raise BadResponseError(f"malformed JSON in the stream: {data[:80]!r}", provider=provider) from None
    if not isinstance(payload, dict):
        raise BadResponseError(f"expected a JSON object in the stream, got {data[:80]!r}", provider=provider)
    return payload


def int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
