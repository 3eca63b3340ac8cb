from __future__ import annotations

import pytest

from chatbot.llm.errors import ConfigurationError
from chatbot.llm.params import validate_request
from chatbot.llm.providers import PROVIDERS
from chatbot.llm.types import ChatMessage, ChatRequest

MESSAGES = (ChatMessage("user", "hi"),)


def check(provider: str = "openai", model: str = "m", **params: object) -> None:
    request = ChatRequest(messages=MESSAGES, **params)  # type: ignore[arg-type]
    validate_request(request, model=model, provider=provider, limits=PROVIDERS[provider].limits)


@pytest.mark.parametrize(
    ("provider", "params"),
    [
        ("openai", {"temperature": 0, "top_p": 0, "max_tokens": 1, "stop": ("a", "b", "c", "d")}),
        ("openai", {"temperature": 2.0, "top_p": 1.0, "max_tokens": 32768}),
        ("dashscope", {"temperature": 1.99, "top_p": 1.0}),
        ("zhipu", {"temperature": 1.0, "top_p": 0.5, "stop": ("END",)}),
        ("zhipu", {}),
    ],
)
def test_it_accepts_parameters_in_range(provider: str, params: dict[str, object]) -> None:
    check(provider, **params)


@pytest.mark.parametrize(
    ("provider", "model", "params", "message"),
    [
        ("openai", "", {}, "no model"),
        ("openai", "gpt 4", {}, "model must be a name without spaces"),
        ("openai", "m", {"temperature": 2.5}, r"temperature must be in \[0, 2\] for openai, got 2.5"),
        ("openai", "m", {"temperature": -0.1}, "temperature must be in"),
        ("openai", "m", {"temperature": float("nan")}, "temperature must be a number"),
        ("openai", "m", {"temperature": True}, "temperature must be a number"),
        ("openai", "m", {"top_p": 1.5}, "top_p must be in"),
        ("dashscope", "m", {"temperature": 2.0}, r"temperature must be in \[0, 2\) for dashscope"),
        ("dashscope", "m", {"top_p": 0.0}, r"top_p must be in \(0, 1\] for dashscope"),
        ("zhipu", "m", {"temperature": 1.2}, r"temperature must be in \[0, 1\] for zhipu"),
        ("openai", "m", {"max_tokens": 0}, "max_tokens must be an integer from 1 to 32768, got 0"),
        ("openai", "m", {"max_tokens": 40000}, "max_tokens must be an integer"),
        ("openai", "m", {"max_tokens": 1.5}, "max_tokens must be an integer"),
        ("openai", "m", {"stop": ("a", "b", "c", "d", "e")}, "at most 4 stop sequence"),
        ("zhipu", "m", {"stop": ("a", "b")}, "zhipu accepts at most 1 stop sequence"),
        ("openai", "m", {"stop": ("",)}, "each stop sequence must be a string"),
    ],
)
def test_it_rejects_bad_parameters_naming_them(
    provider: str, model: str, params: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        check(provider, model, **params)


def test_it_rejects_a_request_without_messages() -> None:
    with pytest.raises(ConfigurationError, match="no messages"):
        validate_request(
            ChatRequest(messages=()), model="m", provider="openai", limits=PROVIDERS["openai"].limits
        )
