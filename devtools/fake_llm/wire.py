"""The fake provider's wire level: a minimal HTTP/1.1 reader and writer (keep-alive,
chunked streaming), request validation and the three providers' events and error bodies.
Strict on purpose: a request our client builds wrongly is answered with 400."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devtools.fake_llm.script import Script

ROLES = {"system", "user", "assistant"}
SAMPLING = {"temperature", "top_p", "max_tokens", "stop"}
ALLOWED = {
    "openai": {"model", "messages", "stream", "stream_options"} | SAMPLING,
    "zhipu": {"model", "messages", "stream"} | SAMPLING,
    "dashscope": {"model", "input", "parameters"},
}
DEFAULT_CODES = {
    "openai": {400: "invalid_request_error", 401: "invalid_api_key", 429: "rate_limit_exceeded"},
    "dashscope": {400: "InvalidParameter", 401: "InvalidApiKey", 429: "Throttling.RateQuota"},
    "zhipu": {400: "1214", 401: "1002", 429: "1302"},
}
STATUS_TEXT = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests"}


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as err:
        if err.partial.strip():
            raise
        return None
    except asyncio.LimitOverrunError:
        raise ConnectionError("request head too large") from None
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length") or 0)
    body = await reader.readexactly(length) if length else b""
    keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    return Request(method, target.split("?", 1)[0], headers, body, keep_alive)


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {STATUS_TEXT.get(status, 'Error')}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def send_json(writer: asyncio.StreamWriter, status: int, payload: Any, headers: dict[str, str]) -> None:
    await send_raw(writer, status, json.dumps(payload, ensure_ascii=False).encode(), headers)


async def send_raw(writer: asyncio.StreamWriter, status: int, body: bytes, headers: dict[str, str]) -> None:
    """``body`` as it is, labelled JSON (the fake's malformed bodies too)."""
    all_headers = {"content-type": "application/json", "content-length": str(len(body)), **headers}
    writer.write(_head(status, all_headers) + body)
    await writer.drain()


async def send_stream_head(writer: asyncio.StreamWriter, headers: dict[str, str]) -> None:
    all_headers = {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-cache",
        "transfer-encoding": "chunked",
        **headers,
    }
    writer.write(_head(200, all_headers))
    await writer.drain()


async def send_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    """One chunk of the chunked body; empty ``data`` ends the body."""
    writer.write(b"%x\r\n%s\r\n" % (len(data), data) if data else b"0\r\n\r\n")
    await writer.drain()


def format_for(path: str) -> str | None:
    if path.endswith("/services/aigc/text-generation/generation"):
        return "dashscope"
    if path.endswith("/chat/completions"):
        return "zhipu" if "/paas/" in path or "zhipu" in path else "openai"
    return None


def json_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def messages_of(body: Any) -> list[Any]:
    if not isinstance(body, dict):
        return []
    holder = body.get("input") if "input" in body else body
    messages = holder.get("messages") if isinstance(holder, dict) else None
    return messages if isinstance(messages, list) else []


def last_user_text(body: Any) -> str:
    for message in reversed(messages_of(body)):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else ""
    return ""


def body_problem(body: Any, allowed: set[str] | frozenset[str]) -> tuple[int, str] | None:
    """(400, why) when a request body is no JSON object, has fields the provider doesn't
    know, or names no model: what every fake endpoint checks first."""
    if not isinstance(body, dict):
        return 400, "the body is not a JSON object"
    unknown = set(body) - allowed
    if unknown:
        return 400, f"unknown fields {sorted(unknown)}"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return 400, "model is required"
    return None


def validate(fmt: str, headers: dict[str, str], body: Any) -> tuple[int, str] | None:
    """(400, why) when the request is not what the real provider accepts."""
    problem = body_problem(body, ALLOWED[fmt])
    if problem:
        return problem
    messages = messages_of(body)
    if not messages or not all(
        isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in messages
    ):
        return 400, "messages must be a non-empty list of {role, content}"
    params = body.get("parameters") if fmt == "dashscope" else body
    if fmt == "dashscope":
        if headers.get("x-dashscope-sse") != "enable":
            return 400, "X-DashScope-SSE: enable is required for streaming"
        if not isinstance(params, dict) or set(params) - SAMPLING - {"result_format", "incremental_output"}:
            return 400, "parameters has unknown fields"
        if params.get("result_format") != "message" or params.get("incremental_output") is not True:
            return 400, "parameters.result_format must be message and incremental_output true"
    elif body.get("stream") is not True:
        return 400, "stream must be true"
    return _validate_sampling(params)


def _validate_sampling(params: dict[str, Any]) -> tuple[int, str] | None:
    for name in ("temperature", "top_p"):
        value = params.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            return 400, f"{name} must be a number"
    tokens = params.get("max_tokens")
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1):
        return 400, "max_tokens must be a positive integer"
    stop = params.get("stop")
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        return 400, "stop must be a list of strings"
    return None


def error_body(fmt: str, status: int, code: str, message: str, request_id: str) -> dict[str, Any]:
    code = code or DEFAULT_CODES[fmt].get(status, "server_error" if fmt == "openai" else str(status))
    if fmt == "dashscope":
        return {"code": code, "message": message, "request_id": request_id}
    if fmt == "zhipu":
        return {"error": {"code": code, "message": message}}
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "code": code}}


def fake_prompt_tokens(body: Any) -> int:
    return sum(len(m["content"]) for m in messages_of(body)) // 4 + 1


def events(
    fmt: str, body: Any, pieces: list[str], script: Script, rid: str
) -> Iterator[tuple[bool, bytes | None]]:
    """(is_delta, SSE bytes) pairs for a scripted reply; None means: drop the connection."""
    writer = _Events(fmt, body, rid, script.usage)
    if fmt == "openai":
        yield False, writer.openai_chunk({"role": "assistant", "content": ""}, None)
    for index in range(len(pieces) + 1):
        if script.drop_after == index:
            yield False, None
            return
        if script.malformed_after == index:
            yield False, b'data: {"choices": [{"delta": {"content": "bro\n\n'
            return
        if script.error_after == index:
            status = script.status if script.status != 200 else 500
            yield False, writer.error(status, script.code)
            return
        if index < len(pieces):
            yield True, writer.delta(pieces[index])
    yield False, writer.finish(script.finish, len(pieces))
    if fmt == "openai" and writer.usage and (body.get("stream_options") or {}).get("include_usage"):
        yield (
            False,
            writer.sse(
                {"id": rid, "object": "chat.completion.chunk", "choices": [], **writer.usage_of(len(pieces))}
            ),
        )
    if fmt != "dashscope":
        yield False, b"data: [DONE]\n\n"


class _Events:
    def __init__(self, fmt: str, body: Any, rid: str, usage: bool) -> None:
        self.fmt, self.rid, self.usage = fmt, rid, usage
        self.model = body.get("model", "")
        self.prompt_tokens = fake_prompt_tokens(body)
        self.serial = 0
        self.sent = 0

    def sse(self, payload: dict[str, Any], *, event: str = "") -> bytes:
        data = json.dumps(payload, ensure_ascii=False)
        if self.fmt != "dashscope":
            return f"data: {data}\n\n".encode()
        self.serial += 1
        status = payload.get("status_code", 200)
        return f"id:{self.serial}\nevent:{event or 'result'}\n:HTTP_STATUS/{status}\ndata:{data}\n\n".encode()

    def usage_of(self, completion: int) -> dict[str, Any]:
        if self.fmt == "dashscope":
            total = self.prompt_tokens + completion
            return {
                "usage": {
                    "input_tokens": self.prompt_tokens,
                    "output_tokens": completion,
                    "total_tokens": total,
                }
            }
        total = self.prompt_tokens + completion
        return {
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": total,
            }
        }

    def openai_chunk(self, delta: dict[str, Any], finish: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        payload = {
            "id": self.rid,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
        }
        return self.sse({**payload, "choices": [choice]})

    def dashscope_event(self, content: str, finish: str) -> bytes:
        choice = {"message": {"role": "assistant", "content": content}, "finish_reason": finish}
        payload: dict[str, Any] = {"output": {"choices": [choice]}, "request_id": self.rid}
        if self.usage:
            payload.update(self.usage_of(self.sent))
        return self.sse(payload)

    def delta(self, text: str) -> bytes:
        self.sent += 1
        if self.fmt == "dashscope":
            return self.dashscope_event(text, "null")
        return self.openai_chunk(
            {"role": "assistant", "content": text} if self.fmt == "zhipu" else {"content": text}, None
        )

    def finish(self, reason: str, completion: int) -> bytes:
        if self.fmt == "dashscope":
            return self.dashscope_event("", reason)
        if self.fmt == "openai":
            return self.openai_chunk({}, reason)
        choice = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": reason}
        payload: dict[str, Any] = {
            "id": self.rid,
            "request_id": self.rid,
            "model": self.model,
            "choices": [choice],
        }
        if self.usage:
            payload.update(self.usage_of(completion))
        return self.sse(payload)

    def error(self, status: int, code: str) -> bytes:
        body = error_body(self.fmt, status, code, f"fake in-stream error {status}", self.rid)
        if self.fmt == "dashscope":
            return self.sse({**body, "status_code": status}, event="error")
        return self.sse(body)
