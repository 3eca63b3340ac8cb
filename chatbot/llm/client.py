"""``stream_chat``: the entry point. Picks the provider, then for each attempt applies the
policy: concurrency and minute limits, the circuit breaker, retries with backoff (only
before the first delta), and the fallback provider (only before the first delta)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing

from chatbot.llm.breaker import CircuitBreaker, breaker_for
from chatbot.llm.errors import LLMError
from chatbot.llm.http import shared_session
from chatbot.llm.limits import provider_slot
from chatbot.llm.params import validate_request
from chatbot.llm.profiles import Policy, check_profile, current_policy, resolve
from chatbot.llm.providers import PROVIDERS
from chatbot.llm.retry import retry_delay, should_retry
from chatbot.llm.stream import Attempt, open_stream, read_stream
from chatbot.llm.types import ChatRequest, ChatResult, Delta, Profile

log = logging.getLogger(__name__)


async def stream_chat(
    request: ChatRequest, *, provider: str | None = None, fallback: bool = True
) -> AsyncIterator[Delta | ChatResult]:
    """Yield text deltas, then exactly one ChatResult.

    Raises an ``LLMError``: before any delta after retries and the fallback provider were
    tried; after some deltas at once, with ``err.partial`` (``err.partial_text``) set.
    ``CircuitOpenError`` comes fast, without a request, while the provider is known bad.
    """
    started = time.perf_counter()
    policy = current_policy()
    profiles = resolve(provider or request.provider, request.model, fallback=fallback)
    deadline = started + policy.total_timeout
    delivered = False
    for index, profile in enumerate(profiles):
        try:
            async with aclosing(_stream_profile(request, profile, policy, started, deadline)) as items:
                async for item in items:
                    delivered = True
                    yield item
            return
        except LLMError as err:
            if delivered or err.partial is not None or not err.fallback_ok or index == len(profiles) - 1:
                raise
            log.warning(
                "LLM %s failed before replying (%s); trying %s", profile.provider, err, profiles[-1].provider
            )


async def _stream_profile(
    request: ChatRequest, profile: Profile, policy: Policy, started: float, deadline: float
) -> AsyncIterator[Delta | ChatResult]:
    impl = PROVIDERS[profile.provider]
    check_profile(profile)
    validate_request(request, model=profile.model, provider=profile.provider, limits=impl.limits)
    call = impl.build_call(request, profile, model=profile.model, stream_usage=policy.stream_usage)
    breaker = breaker_for(
        profile.key,
        provider=profile.provider,
        failure_threshold=policy.breaker_failures,
        cooldown=policy.breaker_cooldown,
    )
    retries = 0
    delivered = False
    while True:
        attempt = Attempt(impl, profile, policy, request, call, started, deadline, number=retries + 1)
        try:
            async with aclosing(_attempt(attempt, breaker)) as items:
                async for item in items:
                    delivered = True
                    yield item
            return
        except LLMError as err:
            delivered = delivered or err.partial is not None
            if not should_retry(err, attempt=retries, policy=policy.retry, delivered=delivered):
                raise
            delay = retry_delay(err, attempt=retries, policy=policy.retry)
            if delay >= attempt.remaining():
                raise
            log.info(
                "LLM %s attempt %d failed (%s); retrying in %.2f s", profile.provider, retries + 1, err, delay
            )
            retries += 1
            await asyncio.sleep(delay)


async def _attempt(attempt: Attempt, breaker: CircuitBreaker) -> AsyncIterator[Delta | ChatResult]:
    policy, profile = attempt.policy, attempt.profile
    # Local limits say nothing about the provider's health: outside the breaker's accounting.
    async with provider_slot(
        profile.key,
        provider=profile.provider,
        max_concurrent=policy.max_concurrent,
        rpm=policy.rpm,
        max_wait=policy.retry.max_wait,
        within=attempt.remaining(),
    ):
        breaker.acquire()
        answered = False
        try:
            response = await open_stream(attempt, shared_session())
            try:
                async with aclosing(read_stream(response, attempt)) as items:
                    async for item in items:
                        if not answered:
                            answered = True
                            breaker.success()  # the provider is alive, whatever happens next
                        yield item
            finally:
                response.release()  # back to the pool if read to the end, else closed
        except LLMError as err:
            if err.breaker_failure:
                breaker.failure()
            raise
        finally:
            if not answered:
                breaker.release()


async def complete(request: ChatRequest, *, provider: str | None = None, fallback: bool = True) -> ChatResult:
    """The whole reply at once (background jobs such as the summary, ``llm_check``)."""
    async with aclosing(stream_chat(request, provider=provider, fallback=fallback)) as items:
        async for item in items:
            if isinstance(item, ChatResult):
                return item
    raise AssertionError("stream_chat ended without a result")  # pragma: no cover
