"""Provider adapters by name (the values of LLM_PROVIDER and Bot.llm_provider)."""

from __future__ import annotations

from chatbot.llm.providers.base import Chunk, HttpCall, Provider
from chatbot.llm.providers.dashscope import DashScope
from chatbot.llm.providers.openai_compatible import OpenAICompatible
from chatbot.llm.providers.zhipu import Zhipu

PROVIDERS: dict[str, Provider] = {p.name: p for p in (OpenAICompatible(), DashScope(), Zhipu())}

__all__ = ["PROVIDERS", "Chunk", "HttpCall", "Provider"]
