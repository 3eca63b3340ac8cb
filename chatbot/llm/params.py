"""Validation of model and sampling parameters, with errors that name the parameter."""

from __future__ import annotations

import math
from dataclasses import dataclass

from chatbot.llm.errors import ConfigurationError
from chatbot.llm.types import ChatRequest

MAX_TOKENS_LIMIT = 32768
MAX_STOP_LENGTH = 100


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    low_inclusive: bool = True
    high_inclusive: bool = True

    def __contains__(self, value: float) -> bool:
        above = value >= self.low if self.low_inclusive else value > self.low
        below = value <= self.high if self.high_inclusive else value < self.high
        return above and below

    def __str__(self) -> str:
        left = "[" if self.low_inclusive else "("
        right = "]" if self.high_inclusive else ")"
        return f"{left}{self.low:g}, {self.high:g}{right}"


@dataclass(frozen=True)
class Limits:
    temperature: Range = Range(0.0, 2.0)
    top_p: Range = Range(0.0, 1.0)
    max_stop: int = 4


def validate_request(request: ChatRequest, *, model: str, provider: str, limits: Limits) -> None:
    def fail(message: str) -> None:
        raise ConfigurationError(message, provider=provider)

    if not model:
        fail("no model: set LLM_MODEL or the bot's model")
    if len(model) > 200 or any(c.isspace() or not c.isprintable() for c in model):
        fail(f"model must be a name without spaces, got {model!r}")
    if not request.messages:
        fail("the request has no messages")
    for name, value, allowed in (
        ("temperature", request.temperature, limits.temperature),
        ("top_p", request.top_p, limits.top_p),
    ):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            fail(f"{name} must be a number, got {value!r}")
        if value not in allowed:
            fail(f"{name} must be in {allowed} for {provider}, got {value:g}")
    tokens = request.max_tokens
    if tokens is not None and (
        isinstance(tokens, bool) or not isinstance(tokens, int) or not 1 <= tokens <= MAX_TOKENS_LIMIT
    ):
        fail(f"max_tokens must be an integer from 1 to {MAX_TOKENS_LIMIT}, got {tokens!r}")
    if len(request.stop) > limits.max_stop:
        fail(f"{provider} accepts at most {limits.max_stop} stop sequence(s), got {len(request.stop)}")
    for stop in request.stop:
        if not isinstance(stop, str) or not stop or len(stop) > MAX_STOP_LENGTH:
            fail(f"each stop sequence must be a string of 1 to {MAX_STOP_LENGTH} characters, got {stop!r}")
