"""One HTTP attempt: send the request, check the status, decode the event stream into
deltas and one final result. Transport and protocol failures become errors of the tree;
after the first delta they carry the partial result."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from chatbot.llm import http
from chatbot.llm.errors import (
    APIConnectionError,
    APITimeoutError,
    BadResponseError,
    ContentRefusedError,
    LLMError,
    map_error,
    parse_error_body,
)
from chatbot.llm.http import timeouts
from chatbot.llm.pricing import cost_of
from chatbot.llm.profiles import Policy
from chatbot.llm.providers import HttpCall, Provider
from chatbot.llm.retry import parse_retry_after
from chatbot.llm.sse import SSEDecoder
from chatbot.llm.tokens import estimate_message_tokens, estimate_tokens
from chatbot.llm.types import ChatRequest, ChatResult, Delta, Profile

REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-dashscope-request-id", "x-log-id")
MAX_ERROR_BODY = 64 * 1024
DRAIN_TIMEOUT = 1.0


@dataclass(frozen=True)
class Attempt:
    impl: Provider
    profile: Profile
    policy: Policy
    request: ChatRequest
    call: HttpCall
    started: float  # perf_counter() when the caller asked: ttft and total count from here
    deadline: float
    number: int = 1

    def remaining(self) -> float:
        return self.deadline - time.perf_counter()


def _request_id(headers: Mapping[str, str]) -> str:
    for name in REQUEST_ID_HEADERS:
        if value := headers.get(name):
            return value
    return ""


def _transport_error(err: Exception, attempt: Attempt, *, reading: bool) -> LLMError:
    provider = attempt.profile.provider
    policy = attempt.policy
    # aiohttp's timeouts are TimeoutErrors too: the specific ones first.
    if isinstance(err, http.ConnectionTimeoutError):
        return APITimeoutError(f"no connection within {policy.connect_timeout:g} s", provider=provider)
    if isinstance(err, http.SocketTimeoutError):
        return APITimeoutError(f"no data for {policy.read_timeout:g} s", provider=provider)
    if isinstance(err, TimeoutError):
        return APITimeoutError(f"no complete reply within {policy.total_timeout:g} s", provider=provider)
    what = "the connection broke mid-stream" if reading else "could not connect or send the request"
    return APIConnectionError(f"{what}: {type(err).__name__}", provider=provider)


async def open_stream(attempt: Attempt, session: http.ClientSession) -> http.ClientResponse:
    policy = attempt.policy
    try:
        async with asyncio.timeout(attempt.remaining()):
            response = await session.post(
                attempt.call.url,
                json=attempt.call.body,
                headers=attempt.call.headers,
                timeout=timeouts(connect=policy.connect_timeout, read=policy.read_timeout),
                allow_redirects=False,
            )
    except (TimeoutError, http.ClientError) as err:
        raise _transport_error(err, attempt, reading=False) from err
    content_type = response.headers.get("content-type", "")
    if response.status == 200 and content_type.startswith("text/event-stream"):
        return response
    try:
        raise await _error_from(response, attempt)
    finally:
        response.release()


async def _error_from(response: http.ClientResponse, attempt: Attempt) -> LLMError:
    body = b""
    try:
        async with asyncio.timeout(min(attempt.remaining(), attempt.policy.read_timeout)):
            async for part in response.content.iter_any():
                body += part
                if len(body) > MAX_ERROR_BODY:
                    break
    except (TimeoutError, http.ClientError):
        pass  # the status alone still says what happened
    provider = attempt.profile.provider
    parsed = parse_error_body(body)
    status: int | None = response.status
    if status == 200:
        if not (isinstance(parsed, dict) and (parsed.get("error") or parsed.get("code"))):
            content_type = response.headers.get("content-type", "none")
            return BadResponseError(f"expected an event stream, got {content_type}", provider=provider)
        status = None
    return map_error(
        provider=provider,
        status=status,
        body=parsed,
        request_id=_request_id(response.headers),
        retry_after=parse_retry_after(response.headers),
        secrets=attempt.call.secrets,
    )


async def _next_chunk(chunks: AsyncIterator[bytes], attempt: Attempt) -> bytes | None:
    remaining = attempt.remaining()
    try:
        if remaining > attempt.policy.read_timeout:
            # The session's read timeout ends this read before the deadline: no timer needed.
            return await anext(chunks)
        async with asyncio.timeout(remaining):
            return await anext(chunks)
    except StopAsyncIteration:
        return None
    except (TimeoutError, http.ClientError) as err:
        raise _transport_error(err, attempt, reading=True) from err


class _Reply:
    """What the stream has said so far."""

    def __init__(self, attempt: Attempt, request_id: str) -> None:
        self.attempt = attempt
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.request_id = request_id
        self.ttft_ms: int | None = None

    def result(self, finish_reason: str) -> ChatResult:
        attempt = self.attempt
        text = "".join(self.parts)
        prompt, completion = self.prompt_tokens, self.completion_tokens
        estimated = prompt is None or completion is None
        if prompt is None:
            prompt = estimate_message_tokens(attempt.request.messages)
        if completion is None:
            completion = estimate_tokens(text)
        model = attempt.profile.model
        return ChatResult(
            text=text,
            finish_reason=finish_reason,
            prompt_tokens=prompt,
            completion_tokens=completion,
            tokens_estimated=estimated,
            cost=cost_of(model, prompt, completion, attempt.policy.prices),
            ttft_ms=self.ttft_ms,
            total_ms=round((time.perf_counter() - attempt.started) * 1000),
            model=model,
            provider=attempt.profile.provider,
            request_id=self.request_id,
            attempts=attempt.number,
        )

    def fail(self, err: LLMError) -> None:
        err.request_id = err.request_id or self.request_id
        if self.parts:
            err.partial = self.result("error")


async def read_stream(response: http.ClientResponse, attempt: Attempt) -> AsyncIterator[Delta | ChatResult]:
    """Deltas as they arrive, then the result. Closing the response is the caller's job."""
    impl = attempt.impl
    reply = _Reply(attempt, _request_id(response.headers))
    decoder = SSEDecoder()
    chunks = response.content.iter_any()
    done = False
    try:
        while not done:
            raw = await _next_chunk(chunks, attempt)
            for event in decoder.feed(raw) if raw is not None else decoder.close():
                chunk = impl.parse_event(event)
                if chunk is None:
                    continue
                reply.request_id = reply.request_id or chunk.request_id
                reply.finish_reason = chunk.finish_reason or reply.finish_reason
                if chunk.prompt_tokens is not None:
                    reply.prompt_tokens = chunk.prompt_tokens
                if chunk.completion_tokens is not None:
                    reply.completion_tokens = chunk.completion_tokens
                if chunk.text:
                    if reply.ttft_ms is None:
                        reply.ttft_ms = round((time.perf_counter() - attempt.started) * 1000)
                    reply.parts.append(chunk.text)
                    yield Delta(chunk.text)
                if chunk.done:
                    done = True
                    break
            if raw is None:
                break
        if reply.finish_reason in impl.refusal_finish_reasons:
            raise ContentRefusedError(f"reply stopped by the content filter ({reply.finish_reason})")
        if not done and reply.finish_reason is None:
            raise BadResponseError("the stream ended before the reply finished")
    except LLMError as err:
        err.provider = err.provider or attempt.profile.provider
        reply.fail(err)
        raise
    if done:
        await _drain(chunks)
    yield reply.result(reply.finish_reason or "unknown")


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read the end of the body so the connection can be reused for the next reply."""
    try:
        async with asyncio.timeout(DRAIN_TIMEOUT):
            async for _ in chunks:
                pass
    except (TimeoutError, http.ClientError):
        pass
