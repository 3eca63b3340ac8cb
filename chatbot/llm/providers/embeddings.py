"""Embedding endpoints by provider name (the values of EMBEDDING_PROVIDER but ``local``).

All three speak OpenAI's shape, ``POST {base}/embeddings`` with ``{"model", "input": [...]}``
answered by ``{"data": [{"index", "embedding"}], "usage"}``; they differ in the most texts a
request may carry, in auth, and in which optional fields they accept. DashScope is reached
through its OpenAI-compatible mode (the native API has another body and response shape).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from chatbot.llm.errors import BadResponseError
from chatbot.llm.providers.base import HttpCall
from chatbot.llm.providers.dashscope import DashScope
from chatbot.llm.providers.openai_compatible import OpenAICompatible
from chatbot.llm.providers.zhipu import Zhipu, bearer_token
from chatbot.llm.types import EmbeddingProfile

NUMBERS = {float, int}  # what JSON numbers decode to; not bool, str or None


class EmbeddingProvider:
    name: ClassVar[str]
    default_base_url: ClassVar[str]
    #: Most texts in one request: the provider's documented limit (EMBEDDING_API_BATCH's default).
    max_batch: ClassVar[int]
    needs_key: ClassVar[bool] = True
    #: Send ``encoding_format: float`` (OpenAI's SDK default is base64; Zhipu knows no such field).
    send_encoding_format: ClassVar[bool] = True

    def base_url_from_chat(self, url: str) -> str:
        """The embeddings base for the chat provider's base URL (LLM_BASE_URL)."""
        return url

    def build_call(self, texts: list[str], profile: EmbeddingProfile) -> HttpCall:
        body: dict[str, Any] = {"model": profile.model, "input": texts}
        if self.send_encoding_format:
            body["encoding_format"] = "float"
        if profile.dimensions:
            body["dimensions"] = profile.dimensions
        token = self.token(profile.api_key)
        return HttpCall(
            url=f"{profile.base_url}/embeddings",
            headers={"Authorization": f"Bearer {token}"} if token else {},
            body=body,
            secrets=tuple(s for s in (profile.api_key, token) if s),
        )

    def token(self, api_key: str) -> str:
        return api_key


class OpenAIEmbeddings(EmbeddingProvider):
    name = "openai"
    default_base_url = OpenAICompatible.default_base_url
    # OpenAI takes up to 2,048 inputs (and 300,000 tokens) a request; compatible servers
    # (vLLM, Ollama ...) often fewer. 256 knowledge-base phrasings are far under both.
    max_batch = 256
    needs_key = False  # local OpenAI-compatible servers often need none


class DashScopeEmbeddings(EmbeddingProvider):
    name = "dashscope"
    default_base_url = "https://dashscope.aliyuncs.com/compatible-mode/v1"
    max_batch = 10  # text-embedding-v3 and v4 (v1 and v2: 25)

    def base_url_from_chat(self, url: str) -> str:
        # The chat provider speaks the native API (.../api/v1); embeddings go to the
        # compatible mode of the same region (dashscope-intl for international accounts).
        native = DashScope.default_base_url.removeprefix("https://dashscope.aliyuncs.com")
        if url.endswith(native):
            return url.removesuffix(native) + "/compatible-mode/v1"
        return url


class ZhipuEmbeddings(EmbeddingProvider):
    name = "zhipu"
    default_base_url = Zhipu.default_base_url
    max_batch = 64  # embedding-3: at most 64 texts in the input array
    send_encoding_format = False

    def token(self, api_key: str) -> str:
        return bearer_token(api_key)  # id.secret keys become a signed JWT, like chat

    def build_call(self, texts: list[str], profile: EmbeddingProfile) -> HttpCall:
        call = super().build_call(texts, profile)
        parts = tuple(p for p in profile.api_key.split(".") if p)
        return HttpCall(call.url, call.headers, call.body, (*call.secrets, *parts))


EMBEDDING_PROVIDERS: dict[str, EmbeddingProvider] = {
    p.name: p for p in (OpenAIEmbeddings(), DashScopeEmbeddings(), ZhipuEmbeddings())
}


def parse_embeddings(payload: Any, *, count: int, dim: int | None, provider: str) -> np.ndarray:
    """``count`` L2-normalised float32 rows in input order (by each item's ``index``).

    Anything else than one finite, non-zero vector of one length (``dim`` when known) per
    input is a ``BadResponseError``: a wrong vector would silently rank the wrong answer.
    """

    def bad(why: str) -> BadResponseError:
        return BadResponseError(f"bad embeddings response: {why}", provider=provider)

    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        raise bad("no data list")
    if len(data) != count:
        raise bad(f"{len(data)} vectors for {count} texts")
    rows: list[list[float] | None] = [None] * count
    for item in data:
        index = item.get("index") if isinstance(item, dict) else None
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
            raise bad(f"index {index!r} out of range")
        if rows[index] is not None:
            raise bad(f"index {index} twice")
        vector = item.get("embedding")
        if not isinstance(vector, list) or not vector:
            raise bad(f"no embedding at index {index}")
        # One C-level pass over the types, finiteness in numpy below: parsing 256 x 1,536
        # values took 44 ms here, against 170 ms checking each value in Python.
        if not set(map(type, vector)) <= NUMBERS:
            raise bad(f"non-numeric value in the embedding at index {index}")
        if dim is not None and len(vector) != dim:
            raise bad(f"embedding at index {index} has {len(vector)} values, expected {dim}")
        rows[index] = vector
    lengths = sorted({len(row) for row in rows if row is not None})
    if len(lengths) > 1:
        raise bad(f"embeddings of different lengths {lengths}")
    matrix = np.asarray(rows, dtype=np.float64)
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        raise bad(f"non-finite value in the embedding at index {int(np.argmin(finite))}")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if not np.all(norms > 0):
        raise bad("a zero vector")
    return (matrix / norms).astype(np.float32)
