"""Any OpenAI-compatible ``POST {base}/chat/completions`` with ``stream: true``: OpenAI,
DashScope compatible mode, DeepSeek, Moonshot, vLLM, Ollama ..."""

from __future__ import annotations

from typing import Any, ClassVar

from chatbot.llm.errors import BadResponseError, map_error
from chatbot.llm.params import Limits, Range
from chatbot.llm.providers.base import (
    Chunk,
    HttpCall,
    Provider,
    int_or_none,
    load_json,
    messages_payload,
    sampling,
)
from chatbot.llm.sse import SSEEvent
from chatbot.llm.types import ChatRequest, Profile


class OpenAICompatible(Provider):
    name = "openai"
    default_base_url = "https://api.openai.com/v1"
    limits: ClassVar[Limits] = Limits(temperature=Range(0.0, 2.0), top_p=Range(0.0, 1.0), max_stop=4)
    needs_key = False

    def build_call(
        self, request: ChatRequest, profile: Profile, *, model: str, stream_usage: bool
    ) -> HttpCall:
        body: dict[str, Any] = {"model": model, "messages": messages_payload(request), "stream": True}
        if stream_usage:
            body["stream_options"] = {"include_usage": True}
        body.update(sampling(request))
        return HttpCall(
            url=f"{profile.base_url}/chat/completions",
            headers=self.auth_headers(profile),
            body=body,
            secrets=self.secrets(profile),
        )

    def auth_headers(self, profile: Profile) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if profile.api_key:
            headers["Authorization"] = f"Bearer {profile.api_key}"
        return headers

    def parse_event(self, event: SSEEvent) -> Chunk | None:
        if event.data == "[DONE]":
            return Chunk(done=True)
        payload = load_json(event.data, provider=self.name)
        if payload.get("error"):
            raise map_error(provider=self.name, status=None, body=payload)
        chunk = Chunk(request_id=str(payload.get("request_id") or payload.get("id") or ""))
        choices = payload.get("choices")
        if choices:
            if not isinstance(choices, list) or not isinstance(choices[0], dict):
                raise BadResponseError(
                    f"unexpected choices in the stream: {choices!r:.80}", provider=self.name
                )
            delta = choices[0].get("delta") or {}
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str):
                chunk.text = content
            finish = choices[0].get("finish_reason")
            if isinstance(finish, str) and finish:
                chunk.finish_reason = finish
        usage = payload.get("usage")
        if isinstance(usage, dict):
            chunk.prompt_tokens = int_or_none(usage.get("prompt_tokens"))
            chunk.completion_tokens = int_or_none(usage.get("completion_tokens"))
        return chunk
