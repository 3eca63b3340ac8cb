from __future__ import annotations

from decimal import Decimal

import pytest

from chatbot.llm.pricing import cost_of
from chatbot.llm.tokens import MESSAGE_OVERHEAD, estimate_message_tokens, estimate_tokens
from chatbot.llm.types import ChatMessage


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("a", 1),
        ("abcd", 1),
        ("abcde", 2),
        ("Hello, how are you?", 5),
        ("你好", 2),
        ("退货政策是什么？", 8),
        ("我想退货 order 12345", 4 + 3),  # 4 CJK + 12 other characters
        ("こんにちは", 5),
        ("안녕하세요", 5),
    ],
)
def test_it_estimates_tokens_with_cjk_about_one_each(text: str, tokens: int) -> None:
    assert estimate_tokens(text) == tokens


def test_it_adds_the_framing_of_each_message() -> None:
    messages = [ChatMessage("system", "abcd"), ChatMessage("user", "你好")]
    assert estimate_message_tokens(messages) == 1 + 2 + 2 * MESSAGE_OVERHEAD


PRICES = {"gpt-4o-mini": (Decimal("0.15"), Decimal("0.60")), "qwen-plus": (Decimal("0.8"), Decimal("2"))}


@pytest.mark.parametrize(
    ("model", "prompt", "completion", "cost"),
    [
        ("gpt-4o-mini", 1_000_000, 0, Decimal("0.150000")),
        ("gpt-4o-mini", 1000, 500, Decimal("0.000450")),
        ("qwen-plus", 1234, 567, Decimal("0.002121")),  # 0.0009872 + 0.001134 = 0.0021212
        ("qwen-plus", 1, 1, Decimal("0.000003")),  # 0.0000028 rounds half up
        ("qwen-plus", 0, 0, Decimal("0.000000")),
        ("unknown-model", 1000, 1000, None),
    ],
)
def test_it_computes_cost_per_million_tokens(
    model: str, prompt: int, completion: int, cost: Decimal | None
) -> None:
    assert cost_of(model, prompt, completion, PRICES) == cost
