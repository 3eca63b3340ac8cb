"""Every failure mode over real HTTP: retries, no retry after the first delta, timeouts,
broken streams, the fallback provider, the circuit breaker and the local limits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import aclosing

import pytest

from chatbot.llm import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadResponseError,
    CircuitOpenError,
    ConfigurationError,
    ContentRefusedError,
    Delta,
    InvalidRequestError,
    RateLimitError,
    ServerError,
    stream_chat,
)
from chatbot.llm.breaker import Breakers
from chatbot.runtime import runtime
from devtools.fake_llm.server import FakeLLMServer
from tests.chatbot.llm.helpers import ask, collect, failure
from tests.fixtures.llm import BASES, KEYS, PROVIDERS, free_port


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_it_retries_a_429_after_the_servers_retry_after(
    provider: str, llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm(provider)
    _, result = await collect(ask(f"[[fake: status=429 retry_after=0.01 times=1 id={provider}]]"))
    assert result.attempts == 2
    assert len(fake.requests) == 2


async def test_it_honours_retry_after_ms(llm: Callable[..., None], fake: FakeLLMServer) -> None:
    llm()
    _, result = await collect(ask("[[fake: status=503 retry_after_ms=5 times=2]]"))
    assert result.attempts == 3


async def test_it_gives_up_after_the_retries(llm: Callable[..., None], fake: FakeLLMServer) -> None:
    llm(LLM_MAX_RETRIES=2)
    _, err = await failure(ask("[[fake: status=500 retry_after_ms=1]]"))
    assert isinstance(err, ServerError)
    assert err.request_id == f"fake-{fake._serial}"
    assert len(fake.requests) == 3


async def test_it_backs_off_without_retry_after(llm: Callable[..., None], fake: FakeLLMServer) -> None:
    llm(LLM_MAX_RETRIES=1)
    _, result = await collect(ask("[[fake: status=502 times=1]]"))
    assert result.attempts == 2


async def test_it_does_not_wait_a_retry_after_longer_than_the_cap(
    llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm(LLM_RETRY_MAX_WAIT=5.0)
    _, err = await failure(ask("[[fake: status=429 retry_after=3600]]"))
    assert isinstance(err, RateLimitError)
    assert err.retry_after == 3600.0
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    ("status", "error"), [(401, AuthenticationError), (400, InvalidRequestError), (404, InvalidRequestError)]
)
async def test_it_does_not_retry_permanent_errors(
    status: int, error: type[Exception], llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm()
    _, err = await failure(ask(f"[[fake: status={status}]]"))
    assert isinstance(err, error)
    assert err.status_code == status
    assert len(fake.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_stall_before_the_first_delta_times_out_and_is_retried(
    provider: str, llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm(provider, LLM_READ_TIMEOUT=0.2, LLM_MAX_RETRIES=1)
    _, result = await collect(ask(f"[[fake: stall_ms=3000 times=1 id={provider}]]"))
    assert result.attempts == 2


async def test_slow_response_headers_time_out(llm: Callable[..., None], fake: FakeLLMServer) -> None:
    llm(LLM_READ_TIMEOUT=0.2, LLM_MAX_RETRIES=0)
    _, err = await failure(ask("[[fake: headers_delay_ms=3000]]"))
    assert isinstance(err, APITimeoutError)
    assert "no data for 0.2 s" in str(err)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_stall_after_the_first_delta_is_not_retried(
    provider: str, llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm(provider, LLM_READ_TIMEOUT=0.2)
    deltas, err = await failure(ask("[[fake: tokens=4 stall_after=2 stall_ms=3000]]"))
    assert isinstance(err, APITimeoutError)
    assert deltas == ["tok1 ", "tok2 "]
    assert err.partial_text == "tok1 tok2 "
    assert err.partial is not None and err.partial.finish_reason == "error"
    assert len(fake.requests) == 1


async def test_the_total_timeout_bounds_a_slow_stream(llm: Callable[..., None], fake: FakeLLMServer) -> None:
    llm(LLM_TOTAL_TIMEOUT=0.5)
    deltas, err = await failure(ask("[[fake: tokens=50 delay_ms=50]]"))
    assert isinstance(err, APITimeoutError)
    assert "no complete reply within 0.5 s" in str(err)
    assert 0 < len(deltas) < 50
    assert len(fake.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_malformed_chunk_is_a_bad_response(
    provider: str, llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm(provider)
    deltas, err = await failure(ask("[[fake: tokens=3 malformed_after=0]]"))
    assert isinstance(err, BadResponseError)
    assert (deltas, err.partial, len(fake.requests)) == ([], None, 1)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_connection_dropped_mid_stream_keeps_the_partial_text(
    provider: str, llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm(provider)
    deltas, err = await failure(ask("[[fake: tokens=5 drop_after=2]]"))
    assert isinstance(err, APIConnectionError)
    assert err.partial_text == "tok1 tok2 " == "".join(deltas)
    assert err.request_id.startswith("fake-")
    assert len(fake.requests) == 1


async def test_a_connection_dropped_before_any_text_is_retried(
    llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm()
    deltas, result = await collect(ask("[[fake: tokens=2 drop_after=0 times=1]]"))
    assert deltas == ["tok1 ", "tok2 "]
    assert result.attempts == 2


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_in_band_error_before_any_text_is_mapped_and_retried(
    provider: str, llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm(provider)
    _, result = await collect(ask(f"[[fake: tokens=2 error_after=0 status=429 times=1 id={provider}]]"))
    assert result.attempts == 2


async def test_an_in_band_error_after_text_is_not_retried(
    llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm("dashscope")
    deltas, err = await failure(ask("[[fake: tokens=3 error_after=1 status=500]]"))
    assert isinstance(err, ServerError)
    assert (deltas, len(fake.requests)) == (["tok1 "], 1)


async def test_a_refused_connection_is_a_connection_error(llm: Callable[..., None], settings: object) -> None:
    llm(LLM_BASE_URL=f"http://127.0.0.1:{free_port()}/v1", LLM_MAX_RETRIES=1)
    _, err = await failure(ask("hi"))
    assert isinstance(err, APIConnectionError) and not isinstance(err, APITimeoutError)
    assert "could not connect" in str(err)


def fallback_to(provider: str, fake: FakeLLMServer) -> dict[str, str]:
    return {
        "LLM_FALLBACK_PROVIDER": provider,
        "LLM_FALLBACK_BASE_URL": fake.url + BASES[provider],
        "LLM_FALLBACK_API_KEY": KEYS[provider],
        "LLM_FALLBACK_MODEL": "fallback-model",
    }


async def test_the_fallback_provider_answers_when_the_primary_fails_first(
    llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm("openai", LLM_MAX_RETRIES=0, **fallback_to("dashscope", fake))
    _, result = await collect(ask("[[fake: status=500 times=1]]"))
    assert (result.provider, result.model) == ("dashscope", "fallback-model")
    assert [r.path for r in fake.requests] == [
        "/v1/chat/completions",
        "/api/v1/services/aigc/text-generation/generation",
    ]


async def test_the_fallback_is_not_used_after_text_was_sent(
    llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm("openai", **fallback_to("zhipu", fake))
    _, err = await failure(ask("[[fake: tokens=3 drop_after=1 times=1]]"))
    assert err.partial_text == "tok1 "
    assert len(fake.requests) == 1


async def test_the_fallback_is_not_used_for_refused_content(
    llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm("openai", **fallback_to("zhipu", fake))
    _, err = await failure(ask("[[fake: status=400 code=content_filter]]"))
    assert isinstance(err, ContentRefusedError)
    assert len(fake.requests) == 1


async def test_a_bot_can_choose_the_fallback_providers_profile(
    llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm("openai", **fallback_to("zhipu", fake))
    _, result = await collect(ask("hi", provider="zhipu", model="glm-4-flash"))
    assert (result.provider, result.model) == ("zhipu", "glm-4-flash")


async def test_the_breaker_opens_fails_fast_and_closes_after_a_good_probe(
    llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm(LLM_MAX_RETRIES=0, LLM_BREAKER_FAILURES=2)
    for _ in range(2):
        await failure(ask("[[fake: status=500]]"))
    _, err = await failure(ask("hi"))
    assert isinstance(err, CircuitOpenError)
    assert len(fake.requests) == 2  # failed fast, nothing sent
    (breaker,) = runtime().part(Breakers).by_key.values()
    breaker.opened_at -= 31  # the cool-down has passed
    _, result = await collect(ask("hi"))
    assert result.text == "You said: hi"
    assert breaker.state.value == "closed"


async def test_an_open_breaker_sends_the_request_to_the_fallback(
    llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm("openai", LLM_MAX_RETRIES=0, LLM_BREAKER_FAILURES=1, **fallback_to("dashscope", fake))
    await collect(ask("[[fake: status=500 times=1]]"))  # the primary fails, the fallback answers
    fake.reset()
    _, result = await collect(ask("hi"))
    assert result.provider == "dashscope"
    assert len(fake.requests) == 1


async def test_refused_content_does_not_open_the_breaker(
    llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm(LLM_BREAKER_FAILURES=1)
    await failure(ask("[[fake: status=400 code=content_filter]]"))
    await collect(ask("hi"))


async def test_concurrent_streams_stay_within_the_limit(
    llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm(LLM_MAX_CONCURRENT=2)
    results = await asyncio.gather(*(collect(ask("[[fake: tokens=3 delay_ms=20]]")) for _ in range(6)))
    assert [r.text for _, r in results] == ["tok1 tok2 tok3 "] * 6
    assert 1 <= fake.max_active <= 2


async def test_the_minute_limit_refuses_without_sending(
    llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm(LLM_RPM=1)
    await collect(ask("hi"))
    _, err = await failure(ask("hi"))
    assert isinstance(err, RateLimitError)
    assert "LLM_RPM=1" in str(err)
    assert len(fake.requests) == 1


async def test_a_caller_that_stops_reading_frees_its_slot(
    llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm(LLM_MAX_CONCURRENT=1, LLM_BREAKER_FAILURES=1)
    async with aclosing(stream_chat(ask("[[fake: tokens=50 delay_ms=20]]"))) as items:
        async for item in items:
            assert isinstance(item, Delta)
            break
    _, result = await collect(ask("[[fake: tokens=1]]"))
    assert result.text == "tok1 "


async def test_it_explains_a_missing_configuration(llm: Callable[..., None]) -> None:
    llm("dashscope", LLM_API_KEY="")
    with pytest.raises(ConfigurationError, match="no API key"):
        await collect(ask("hi"))
    llm("openai", LLM_PROVIDER="")
    with pytest.raises(ConfigurationError, match="no LLM is configured"):
        await collect(ask("hi"))
    llm("openai")
    with pytest.raises(ConfigurationError, match="zhipu is not configured"):
        await collect(ask("hi", provider="zhipu"))
    with pytest.raises(ConfigurationError, match="temperature must be in"):
        await collect(ask("hi", temperature=3.0))
