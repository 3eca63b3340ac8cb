from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable

import pytest

from chatbot.llm import AuthenticationError
from chatbot.llm.providers import zhipu
from devtools.fake_llm.server import FakeLLMServer
from tests.chatbot.llm.helpers import ask, collect, failure
from tests.fixtures.llm import KEYS


def unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_the_jwt_has_the_fields_zhipu_expects() -> None:
    token = zhipu.make_jwt("my-id.my-secret", now=1_700_000_000.5, ttl=600)
    head, payload, signature = token.split(".")
    assert json.loads(unb64(head)) == {"alg": "HS256", "sign_type": "SIGN"}
    assert json.loads(unb64(payload)) == {
        "api_key": "my-id",
        "exp": 1_700_000_600_500,
        "timestamp": 1_700_000_000_500,
    }
    expected = hmac.new(b"my-secret", f"{head}.{payload}".encode(), hashlib.sha256).digest()
    assert unb64(signature) == expected
    assert "=" not in token


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_token_is_cached_until_shortly_before_it_expires() -> None:
    clock = Clock(1_000_000.0)
    first = zhipu.bearer_token("cache-id.cache-secret", clock=clock)
    clock.now += zhipu.TOKEN_TTL - zhipu.TOKEN_REFRESH_MARGIN - 1
    assert zhipu.bearer_token("cache-id.cache-secret", clock=clock) == first
    clock.now += 1
    renewed = zhipu.bearer_token("cache-id.cache-secret", clock=clock)
    assert renewed != first
    assert json.loads(unb64(renewed.split(".")[1]))["timestamp"] == int(clock.now * 1000)


@pytest.mark.parametrize("key", ["plain-api-key-without-dot", "a.b.c", ".secret", "id."])
def test_a_key_that_is_not_id_dot_secret_is_sent_as_it_is(key: str) -> None:
    assert zhipu.bearer_token(key) == key


async def test_the_fake_server_accepts_our_jwt(llm: Callable[..., None], fake: FakeLLMServer) -> None:
    llm("zhipu")
    fake.api_key = KEYS["zhipu"]
    _, result = await collect(ask("hi"))
    assert result.text == "You said: hi"


async def test_a_wrong_secret_is_an_authentication_error_without_retry_or_key_in_the_message(
    llm: Callable[..., None], fake: FakeLLMServer
) -> None:
    llm("zhipu", LLM_API_KEY="zhipu-id.wrong-secret")
    fake.api_key = KEYS["zhipu"]
    _, err = await failure(ask("hi"))
    assert isinstance(err, AuthenticationError)
    assert "bad signature" in str(err)
    assert len(fake.requests) == 1


async def test_an_echoed_key_is_redacted(llm: Callable[..., None], fake: FakeLLMServer) -> None:
    llm("openai", LLM_API_KEY="sk-wrong-key-987654321")
    fake.api_key = KEYS["openai"]
    _, err = await failure(ask("hi"))
    assert isinstance(err, AuthenticationError)
    assert "sk-wrong-key-987654321" not in str(err)
    assert "Incorrect API key provided: ***" in str(err)
