from __future__ import annotations

import socket
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from chatbot.llm.breaker import reset_breakers
from chatbot.llm.fake_server import FakeLLMServer, Script
from chatbot.llm.limits import reset_limits
from chatbot.llm.providers import zhipu
from chatbot.models import Message

BASES = {"openai": "/v1", "dashscope": "/api/v1", "zhipu": "/api/paas/v4"}
KEYS = {
    "openai": "sk-test-openai-0001",
    "dashscope": "sk-test-dashscope-01",
    "zhipu": "zhipu-id.zhipu-secret-01",
}
PROVIDERS = list(BASES)


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(defaults=Script(delay_ms=0)).running_in_thread() as server:
        yield server


@pytest.fixture
def fake(fake_server: FakeLLMServer) -> Iterator[FakeLLMServer]:
    defaults = fake_server.defaults
    fake_server.reset()
    fake_server.api_key = ""
    yield fake_server
    fake_server.reset()
    fake_server.api_key = ""
    fake_server.defaults = defaults


@pytest.fixture(autouse=True)
def _fresh_policy_state() -> Iterator[None]:
    reset_breakers()
    reset_limits()
    zhipu._tokens.clear()
    yield
    reset_breakers()
    reset_limits()


@pytest.fixture
def llm(settings: Any, fake: FakeLLMServer) -> Callable[..., None]:
    """Point the LLM settings at the fake server: ``llm("dashscope", LLM_MAX_RETRIES=0)``."""

    def configure(provider: str = "openai", **overrides: Any) -> None:
        settings.LLM_PROVIDER = provider
        settings.LLM_BASE_URL = fake.url + BASES[provider]
        settings.LLM_API_KEY = KEYS[provider]
        settings.LLM_MODEL = f"{provider}-test-model"
        settings.LLM_CONNECT_TIMEOUT = 2.0
        settings.LLM_READ_TIMEOUT = 5.0
        settings.LLM_TOTAL_TIMEOUT = 20.0
        settings.LLM_MAX_RETRIES = 2
        settings.LLM_RETRY_MAX_WAIT = 5.0
        settings.LLM_BREAKER_FAILURES = 5
        settings.LLM_BREAKER_COOLDOWN = 30.0
        settings.LLM_MAX_CONCURRENT = 100
        settings.LLM_RPM = 0
        settings.LLM_STREAM_USAGE = True
        settings.LLM_PRICES = {}
        settings.LLM_FALLBACK_PROVIDER = ""
        settings.LLM_FALLBACK_BASE_URL = ""
        settings.LLM_FALLBACK_API_KEY = ""
        settings.LLM_FALLBACK_MODEL = ""
        for name, value in overrides.items():
            setattr(settings, name, value)

    configure()
    return configure


@dataclass
class Candidate:
    entry_id: int
    question: str
    answer: str
    score: float


@dataclass
class MatchResult:
    decision: str = "none"
    candidates: list[Candidate] = field(default_factory=list)


@dataclass
class StandIn:
    """knowledge.matching as the pipeline sees it: amatch(bot, text) -> MatchResult."""

    result: MatchResult = field(default_factory=MatchResult)
    calls: list[tuple[int, str, int]] = field(default_factory=list)  # (bot id, text, visitor messages then)
    error: Exception | None = None

    async def amatch(self, bot: Any, text: str, *, fresh_revision: bool = False) -> MatchResult:
        stored = await sync_to_async(Message.objects.filter(role="visitor", text=text).count)()
        self.calls.append((bot.pk, text, stored))
        if self.error:
            raise self.error
        return self.result


@pytest.fixture
def kb(monkeypatch: pytest.MonkeyPatch) -> StandIn:
    stand_in = StandIn()
    module = types.ModuleType("knowledge.matching")
    module.amatch = stand_in.amatch  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "knowledge.matching", module)
    return stand_in


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
