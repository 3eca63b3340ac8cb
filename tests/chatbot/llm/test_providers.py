"""Each provider's request and response handling, over real HTTP against the fake server."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal

import pytest

from chatbot.llm import ContentRefusedError
from chatbot.llm.providers.zhipu import make_jwt
from devtools.fake_llm.server import FakeLLMServer
from devtools.fake_llm.wire import fake_prompt_tokens
from tests.chatbot.llm.helpers import ask, collect, failure
from tests.fixtures.llm import KEYS, PROVIDERS


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_it_streams_deltas_then_one_result(
    provider: str, llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm(provider)
    deltas, result = await collect(ask("Where is my order 42?"))
    assert deltas == ["You ", "said: ", "Where ", "is ", "my ", "order ", "42?"]
    assert result.text == "You said: Where is my order 42?"
    assert (result.provider, result.model, result.finish_reason) == (
        provider,
        f"{provider}-test-model",
        "stop",
    )
    assert result.request_id == f"fake-{fake._serial}"
    assert result.prompt_tokens == fake_prompt_tokens(fake.requests[-1].body)
    assert (result.completion_tokens, result.tokens_estimated, result.attempts) == (7, False, 1)
    assert result.ttft_ms is not None and result.ttft_ms <= result.total_ms


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_it_streams_chinese_text_intact(provider: str, llm: Callable[..., None]) -> None:
    llm(provider)
    deltas, result = await collect(ask('你好 [[fake: text="您好！请问 有什么 可以帮您？"]]'))
    assert deltas == ["您好！请问 ", "有什么 ", "可以帮您？"]
    assert result.text == "您好！请问 有什么 可以帮您？"


async def test_the_openai_request(llm: Callable[..., None], fake: FakeLLMServer) -> None:
    llm("openai")
    await collect(ask("hi", temperature=0.3, top_p=0.9, max_tokens=64, stop=("END",)))
    sent = fake.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEYS['openai']}"
    assert sent.headers["accept"] == "text/event-stream"
    assert sent.body == {
        "model": "openai-test-model",
        "messages": [{"role": "system", "content": "You are a test."}, {"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.3,
        "top_p": 0.9,
        "max_tokens": 64,
        "stop": ["END"],
    }


async def test_an_openai_compatible_server_without_a_key_gets_no_authorization(
    llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm("openai", LLM_API_KEY="")
    await collect(ask("hi"))
    assert "authorization" not in fake.requests[-1].headers


async def test_the_dashscope_request(llm: Callable[..., None], fake: FakeLLMServer) -> None:
    llm("dashscope")
    await collect(ask("hi", temperature=0.7, top_p=0.8, max_tokens=100, stop=("##",)))
    sent = fake.requests[-1]
    assert sent.path == "/api/v1/services/aigc/text-generation/generation"
    assert sent.headers["x-dashscope-sse"] == "enable"
    assert sent.headers["authorization"] == f"Bearer {KEYS['dashscope']}"
    assert sent.body == {
        "model": "dashscope-test-model",
        "input": {
            "messages": [{"role": "system", "content": "You are a test."}, {"role": "user", "content": "hi"}]
        },
        "parameters": {
            "result_format": "message",
            "incremental_output": True,
            "temperature": 0.7,
            "top_p": 0.8,
            "max_tokens": 100,
            "stop": ["##"],
        },
    }


async def test_the_zhipu_request(llm: Callable[..., None], fake: FakeLLMServer) -> None:
    llm("zhipu")
    await collect(ask("hi", temperature=0.5, max_tokens=10))
    sent = fake.requests[-1]
    assert sent.path == "/api/paas/v4/chat/completions"
    assert sent.body == {
        "model": "zhipu-test-model",
        "messages": [{"role": "system", "content": "You are a test."}, {"role": "user", "content": "hi"}],
        "stream": True,
        "temperature": 0.5,
        "max_tokens": 10,
    }
    token = sent.headers["authorization"].removeprefix("Bearer ")
    assert token.count(".") == 2 and KEYS["zhipu"] not in token


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_it_estimates_tokens_when_the_provider_reports_none(
    provider: str, llm: Callable[..., None]
) -> None:
    llm(provider)
    _, result = await collect(ask('hi [[fake: usage=0 text="one two three"]]'))
    assert result.tokens_estimated is True
    assert result.completion_tokens == 4  # "one two three": 13 characters
    assert result.prompt_tokens > 0


async def test_openai_usage_is_only_asked_for_when_enabled(
    llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm("openai", LLM_STREAM_USAGE=False)
    _, result = await collect(ask("hi"))
    assert "stream_options" not in fake.requests[-1].body
    assert result.tokens_estimated is True


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_it_prices_the_reply_from_the_table(provider: str, llm: Callable[..., None]) -> None:
    llm(provider, LLM_PRICES={f"{provider}-test-model": (Decimal("1000"), Decimal("2000"))})
    _, result = await collect(ask("[[fake: tokens=3]]"))
    expected = (Decimal(1000) * result.prompt_tokens + Decimal(2000) * 3) / 1_000_000
    assert result.cost == expected.quantize(Decimal("0.000001"))


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_it_reports_the_finish_reason(provider: str, llm: Callable[..., None]) -> None:
    llm(provider)
    _, result = await collect(ask("[[fake: tokens=2 finish=length]]"))
    assert result.finish_reason == "length"


@pytest.mark.parametrize(
    ("provider", "script"),
    [
        ("openai", "tokens=0 finish=content_filter"),
        ("zhipu", "tokens=0 finish=sensitive"),
        ("openai", "status=400 code=content_filter"),
        ("dashscope", "status=400 code=DataInspectionFailed"),
        ("zhipu", "status=400 code=1301"),
        ("dashscope", "tokens=2 error_after=0 status=400 code=DataInspectionFailed"),
    ],
)
async def test_it_reports_content_the_provider_refused(
    provider: str, script: str, llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm(provider)
    deltas, err = await failure(ask(f"something bad [[fake: {script}]]"))
    assert isinstance(err, ContentRefusedError)
    assert (deltas, err.partial_text, len(fake.requests)) == ([], "", 1)


async def test_a_refusal_after_some_text_keeps_the_partial_text(llm: Callable[..., None]) -> None:
    llm("zhipu")
    deltas, err = await failure(ask("[[fake: tokens=2 finish=sensitive]]"))
    assert isinstance(err, ContentRefusedError)
    assert err.partial_text == "tok1 tok2 " == "".join(deltas)


async def test_the_fake_rejects_a_dashscope_request_without_the_sse_header(fake: FakeLLMServer) -> None:
    import httpx

    async with httpx.AsyncClient() as client:
        body = {"model": "m", "input": {"messages": [{"role": "user", "content": "hi"}]}, "parameters": {}}
        response = await client.post(f"{fake.url}/api/v1/services/aigc/text-generation/generation", json=body)
    assert response.status_code == 400
    assert "X-DashScope-SSE" in json.loads(response.text)["message"]


def test_a_jwt_from_the_zhipu_module_passes_the_fake_servers_check() -> None:
    from devtools.fake_llm.server import check_zhipu_jwt

    token = make_jwt("abc.secret", now=1000.0)
    assert check_zhipu_jwt(token, "abc.secret", now=1000.0) == ""
    assert check_zhipu_jwt(token, "abc.other", now=1000.0) == "bad signature"
    assert check_zhipu_jwt(token, "abc.secret", now=1000.0 + 3600) == "expired"
