"""The knowledge base's encoder over a provider's embeddings API (EMBEDDING_PROVIDER other
than ``local``): the same interface as ``knowledge.embeddings.Encoder``, so the query
batcher, indexing and evaluation use it unchanged. Requests, retries, breaker and the
vector cache are ``chatbot.llm.embedding_client``'s."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from chatbot.llm.embedding_client import EmbeddingClient, default_client
from chatbot.llm.errors import LLMError
from chatbot.llm.profiles import embedding_profile
from chatbot.llm.types import EmbeddingProfile
from chatbot.runtime import runtime

# Encoded once when the vector length is asked for before anything was encoded, and
# neither EMBEDDING_API_DIMENSIONS nor an earlier call says it.
DIMENSION_PROBE = "dimension probe"


class EmbeddingUnavailable(Exception):
    """The provider failed after its retries, its breaker is open, or the settings are
    incomplete. Chained from the ``LLMError`` that says which."""


class ApiEncoder:
    """``encode(texts)`` -> L2-normalised float32 rows from the provider's API.

    ``name`` keys stored vectors: ``provider:model``, plus ``@dimensions`` when
    EMBEDDING_API_DIMENSIONS is set, since vectors of another length are not comparable.
    ``dim`` is EMBEDDING_API_DIMENSIONS when set; otherwise the length of the vectors the
    first call returned; asked before any call, it encodes ``DIMENSION_PROBE`` to learn it.

    ``encode`` blocks the calling thread (the knowledge base encodes on worker threads)
    and must not be called from async code: see ``EmbeddingClient.embed_sync``.
    """

    def __init__(
        self, profile: EmbeddingProfile | None = None, *, client: EmbeddingClient | None = None
    ) -> None:
        try:
            self.profile = profile or embedding_profile()
        except LLMError as err:
            raise EmbeddingUnavailable(str(err)) from err
        self.name = self.profile.name
        self._client = client or default_client()
        self._dim: int | None = self.profile.dimensions

    @property
    def dim(self) -> int:
        if self._dim is None:
            self.encode([DIMENSION_PROBE])
        assert self._dim is not None
        return self._dim

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """``batch_size`` is the local model's knob and is ignored: how many texts go in
        one request is the provider's limit (EMBEDDING_API_BATCH)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        try:
            vectors = self._client.embed_sync(list(texts), profile=self.profile)
        except (LLMError, TimeoutError) as err:
            raise EmbeddingUnavailable(f"embeddings from {self.name} unavailable: {err}") from err
        self._dim = int(vectors.shape[1])
        return vectors

    def unknown_fraction(self, text: str) -> float:
        # The API's models read every language; nothing is "unknown" as [UNK] is locally.
        return 0.0


class ApiEncoders:
    """The runtime's encoders, one per embedding profile (a runtime part): a settings change
    makes another profile, and with it a new encoder."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_profile: dict[EmbeddingProfile, ApiEncoder] = {}

    def get(self, profile: EmbeddingProfile) -> ApiEncoder:
        with self._lock:
            encoder = self._by_profile.get(profile)
            if encoder is None:
                encoder = self._by_profile[profile] = ApiEncoder(profile)
            return encoder


def get_api_encoder() -> ApiEncoder:
    """The process's encoder for the current EMBEDDING_* settings."""
    try:
        profile = embedding_profile()
    except LLMError as err:
        raise EmbeddingUnavailable(str(err)) from err
    return runtime().part(ApiEncoders).get(profile)
