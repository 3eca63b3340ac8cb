"""The knowledge base's encoder over a provider's embeddings API (EMBEDDING_PROVIDER), over
real HTTP against the fake server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from chatbot.llm import CircuitOpenError, ConfigurationError, ServerError
from chatbot.llm.embedding_client import EmbeddingClient
from devtools.fake_llm.embeddings import FAKE_DIM, fake_vector
from devtools.fake_llm.server import FakeLLMServer
from knowledge import embeddings
from knowledge.api_encoder import DIMENSION_PROBE, ApiEncoder, EmbeddingUnavailable
from knowledge.embeddings import QueryBatcher
from knowledge.models import AnswerEmbedding, Embedding
from knowledge.services import entries_embed, entry_upsert
from tests.factories import make_bot


@pytest.fixture
def encoder(embedding_api: Callable[..., None], embedder: EmbeddingClient) -> ApiEncoder:
    embedding_api("openai")
    return ApiEncoder(client=embedder)


def test_its_name_says_provider_model_and_dimensions(embedding_api: Callable[..., None]) -> None:
    embedding_api("zhipu")
    assert ApiEncoder().name == "zhipu:zhipu-embed"
    embedding_api("zhipu", EMBEDDING_API_DIMENSIONS=512)
    assert ApiEncoder().name == "zhipu:zhipu-embed@512"


def test_get_encoder_and_model_name_follow_embedding_provider(
    embedding_api: Callable[..., None], settings: Any
) -> None:
    embedding_api("dashscope", EMBEDDING_API_DIMENSIONS=256)
    encoder = embeddings.get_encoder()
    assert isinstance(encoder, ApiEncoder)
    assert embeddings.model_name() == encoder.name == "dashscope:dashscope-embed@256"
    # get_batcher() asks by EMBEDDING_MODEL and the index by model_name(): both the API's.
    assert embeddings.get_encoder(settings.EMBEDDING_MODEL) is encoder
    assert embeddings.get_encoder(encoder.name) is encoder
    settings.EMBEDDING_PROVIDER = "local"
    assert embeddings.model_name() == settings.EMBEDDING_MODEL


def test_it_encodes_to_normalised_float32_rows_in_order(encoder: ApiEncoder, fake: FakeLLMServer) -> None:
    texts = ["Where is my order?", "我的快递到哪了", "x" * 3000]
    vectors = encoder.encode(texts)
    assert vectors.shape == (3, FAKE_DIM) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    raw = np.array([fake_vector(t) for t in texts])
    assert np.allclose(vectors, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)
    assert fake.requests[0].body["input"] == texts
    assert encoder.unknown_fraction("我的快递到哪了") == 0.0


def test_paraphrases_are_closer_than_unrelated_questions(encoder: ApiEncoder) -> None:
    a, b, c = encoder.encode(["How do I track my parcel?", "How can I track my package?", "Refund policy"])
    assert float(a @ b) > float(a @ c) + 0.2


def test_dim_comes_from_the_settings_without_a_request(
    embedding_api: Callable[..., None], embedder: EmbeddingClient, fake: FakeLLMServer
) -> None:
    embedding_api("openai", EMBEDDING_API_DIMENSIONS=128)
    encoder = ApiEncoder(client=embedder)
    assert encoder.dim == 128
    assert encoder.encode([]).shape == (0, 128)
    assert fake.requests == []


def test_dim_is_learnt_from_the_first_call_or_a_probe(encoder: ApiEncoder, fake: FakeLLMServer) -> None:
    assert encoder.dim == FAKE_DIM  # nothing encoded yet: one probe request
    assert [r.body["input"] for r in fake.requests] == [[DIMENSION_PROBE]]
    encoder.encode(["hello"])
    assert encoder.dim == FAKE_DIM
    assert len(fake.requests) == 2


def test_a_provider_failure_after_retries_is_embedding_unavailable(
    encoder: ApiEncoder, settings: Any, fake: FakeLLMServer
) -> None:
    settings.LLM_MAX_RETRIES = 1
    fake.defaults = replace(fake.defaults, status=503, retry_after_ms="1")
    with pytest.raises(EmbeddingUnavailable, match=r"openai:openai-embed") as caught:
        encoder.encode(["where is my parcel"])
    assert isinstance(caught.value.__cause__, ServerError)
    assert len(fake.requests) == 2


def test_an_open_breaker_is_embedding_unavailable_without_a_request(
    encoder: ApiEncoder, settings: Any, fake: FakeLLMServer
) -> None:
    settings.LLM_MAX_RETRIES = 0
    settings.LLM_BREAKER_FAILURES = 1
    fake.defaults = replace(fake.defaults, status=500)
    with pytest.raises(EmbeddingUnavailable):
        encoder.encode(["first"])
    with pytest.raises(EmbeddingUnavailable) as caught:
        encoder.encode(["second"])
    assert isinstance(caught.value.__cause__, CircuitOpenError)
    assert len(fake.requests) == 1


def test_incomplete_settings_are_embedding_unavailable(
    embedding_api: Callable[..., None], embedder: EmbeddingClient, fake: FakeLLMServer
) -> None:
    embedding_api("zhipu", EMBEDDING_API_MODEL="")
    with pytest.raises(EmbeddingUnavailable) as caught:
        ApiEncoder(client=embedder).encode(["x"])
    assert isinstance(caught.value.__cause__, ConfigurationError)
    assert fake.requests == []


def test_the_query_batcher_hands_a_failure_to_every_waiting_caller(
    encoder: ApiEncoder, settings: Any, fake: FakeLLMServer
) -> None:
    settings.LLM_MAX_RETRIES = 0
    fake.defaults = replace(fake.defaults, status=500)
    batcher = QueryBatcher(encoder, max_batch=64, wait_ms=20, cache_size=0)
    futures = [batcher.submit(f"question {n}") for n in range(3)]
    errors = [f.exception(timeout=10) for f in futures]
    assert all(isinstance(e, EmbeddingUnavailable) for e in errors)
    assert 1 <= len(fake.requests) <= 3
    # The provider is back: the same batcher answers.
    fake.defaults = replace(fake.defaults, status=200)
    vector = batcher.encode("question 0").vector
    assert vector.shape == (FAKE_DIM,) and vector.dtype == np.float32
    assert batcher.encode("question 0").unknown == 0.0


async def test_it_encodes_on_worker_threads_while_the_event_loop_runs(
    encoder: ApiEncoder, fake: FakeLLMServer
) -> None:
    texts = [f"phrasing {n}" for n in range(5)]
    results = await asyncio.gather(*(asyncio.to_thread(encoder.encode, [t]) for t in texts))
    assert [r.shape for r in results] == [(1, FAKE_DIM)] * 5
    assert sorted(r.body["input"][0] for r in fake.requests) == texts


@pytest.mark.django_db
def test_knowledge_base_phrasings_are_stored_under_the_api_models_name(
    embedding_api: Callable[..., None], fake: FakeLLMServer
) -> None:
    embedding_api("zhipu", EMBEDDING_API_DIMENSIONS=256)
    entry, _ = entry_upsert(
        bot=make_bot(),
        external_id="",
        question="Where is my parcel?",
        answer="Track it under Orders.",
        alternatives=["track my package"],
        tags=[],
    )
    assert entries_embed(entries=[entry]) == 2
    rows = Embedding.objects.filter(entry=entry).order_by("text")
    assert [(r.text, r.model_name, r.dim) for r in rows] == [
        ("Where is my parcel?", "zhipu:zhipu-embed@256", 256),
        ("track my package", "zhipu:zhipu-embed@256", 256),
    ]
    stored = np.frombuffer(bytes(rows[0].vector), dtype="<f4")
    assert np.allclose(np.linalg.norm(stored), 1.0, atol=1e-6)
    answer = AnswerEmbedding.objects.get(entry=entry)
    assert (answer.model_name, answer.dim) == ("zhipu:zhipu-embed@256", 256)
    # One request for the phrasings, one for the answer (the confidence's answer features).
    assert [r.path for r in fake.requests] == ["/api/paas/v4/embeddings"] * 2
    assert fake.requests[1].body["input"] == ["Track it under Orders."]
