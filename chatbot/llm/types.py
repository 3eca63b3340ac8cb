"""The values that cross the package boundary: a request in, deltas and one result out."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What to ask. Empty ``provider``/``model`` mean the settings' LLM_PROVIDER/LLM_MODEL."""

    messages: tuple[ChatMessage, ...]
    provider: str = ""
    model: str = ""
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Delta:
    text: str


@dataclass(frozen=True, slots=True)
class ChatResult:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    tokens_estimated: bool
    cost: Decimal | None
    ttft_ms: int | None
    total_ms: int
    model: str
    provider: str
    request_id: str = ""
    attempts: int = 1


@dataclass(frozen=True)
class Profile:
    """Where and how to reach one provider (from the settings)."""

    provider: str
    base_url: str
    model: str
    api_key: str = field(default="", repr=False)

    @property
    def key(self) -> str:
        # Breakers and limits are per endpoint: two OpenAI-compatible servers are independent.
        return f"{self.provider} {self.base_url}"


@dataclass(frozen=True)
class EmbeddingProfile:
    """Where and how to reach one provider's embeddings endpoint (EMBEDDING_* settings)."""

    provider: str
    base_url: str
    model: str
    api_key: str = field(default="", repr=False)
    dimensions: int | None = None  # None: the model's own length, not sent
    batch_size: int = 10  # most texts in one request

    @property
    def name(self) -> str:
        """What stored vectors are keyed by: vectors of another name are not comparable."""
        suffix = f"@{self.dimensions}" if self.dimensions else ""
        return f"{self.provider}:{self.model}{suffix}"

    @property
    def key(self) -> str:
        # The breaker is the endpoint's own: a failing embeddings API says nothing about chat.
        return f"{self.provider} {self.base_url} embeddings"
