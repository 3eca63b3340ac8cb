"""Qwen's native DashScope API: ``POST {base}/services/aigc/text-generation/generation``
with ``X-DashScope-SSE: enable`` and incremental output. The stream has no [DONE]: the
event with a finish reason other than "null" is the last one."""

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

PATH = "/services/aigc/text-generation/generation"


class DashScope(Provider):
    name = "dashscope"
    default_base_url = "https://dashscope.aliyuncs.com/api/v1"
    limits: ClassVar[Limits] = Limits(
        temperature=Range(0.0, 2.0, high_inclusive=False),
        top_p=Range(0.0, 1.0, low_inclusive=False),
        max_stop=4,
    )

    def build_call(
        self, request: ChatRequest, profile: Profile, *, model: str, stream_usage: bool
    ) -> HttpCall:
        parameters: dict[str, Any] = {"result_format": "message", "incremental_output": True}
        parameters.update(sampling(request))
        return HttpCall(
            url=f"{profile.base_url}{PATH}",
            headers={
                "Authorization": f"Bearer {profile.api_key}",
                "Accept": "text/event-stream",
                "X-DashScope-SSE": "enable",
            },
            body={"model": model, "input": {"messages": messages_payload(request)}, "parameters": parameters},
            secrets=self.secrets(profile),
        )

    def parse_event(self, event: SSEEvent) -> Chunk | None:
        payload = load_json(event.data, provider=self.name)
        if event.event == "error" or (payload.get("code") and "output" not in payload):
            raise map_error(provider=self.name, status=None, body=payload)
        chunk = Chunk(request_id=str(payload.get("request_id") or ""))
        output = payload.get("output")
        choices = output.get("choices") if isinstance(output, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise BadResponseError(f"no output.choices in the event: {event.data[:80]!r}", provider=self.name)
        message = choices[0].get("message") or {}
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chunk.text = content
        finish = choices[0].get("finish_reason")
        if isinstance(finish, str) and finish not in ("", "null"):
            chunk.finish_reason = finish
            chunk.done = True
        usage = payload.get("usage")
        if isinstance(usage, dict):
            chunk.prompt_tokens = int_or_none(usage.get("input_tokens"))
            chunk.completion_tokens = int_or_none(usage.get("output_tokens"))
        return chunk
