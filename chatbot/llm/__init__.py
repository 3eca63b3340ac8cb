"""Large-language-model client: the only package that speaks HTTP to model providers.

    async for item in stream_chat(request):
        if isinstance(item, Delta): send(item.text)
        else: store(item)            # ChatResult: text, usage, cost, timings

Errors are ``LLMError`` subclasses (``chatbot.llm.errors``).
"""

from __future__ import annotations

from chatbot.llm.client import complete, stream_chat
from chatbot.llm.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadResponseError,
    CircuitOpenError,
    ConfigurationError,
    ContentRefusedError,
    InvalidRequestError,
    LLMError,
    RateLimitError,
    ServerError,
)
from chatbot.llm.profiles import is_configured
from chatbot.llm.tokens import estimate_tokens
from chatbot.llm.types import ChatMessage, ChatRequest, ChatResult, Delta

__all__ = [
    "APIConnectionError",
    "APITimeoutError",
    "AuthenticationError",
    "BadResponseError",
    "ChatMessage",
    "ChatRequest",
    "ChatResult",
    "CircuitOpenError",
    "ConfigurationError",
    "ContentRefusedError",
    "Delta",
    "InvalidRequestError",
    "LLMError",
    "RateLimitError",
    "ServerError",
    "complete",
    "estimate_tokens",
    "is_configured",
    "stream_chat",
]
