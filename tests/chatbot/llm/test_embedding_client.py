"""The embeddings client over real HTTP against the fake server: each provider's request,
batching, the cache, retries, the breaker, bad vectors and the synchronous entry point."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from chatbot.checks import check_embedding_settings
from chatbot.llm import (
    AuthenticationError,
    BadResponseError,
    CircuitOpenError,
    ConfigurationError,
    RateLimitError,
    ServerError,
)
from chatbot.llm.embedding_client import EmbeddingClient
from chatbot.llm.profiles import embedding_profile
from chatbot.llm.providers.embeddings import parse_embeddings
from devtools.fake_llm.embeddings import FAKE_DIM, fake_vector
from devtools.fake_llm.server import FakeLLMServer, check_zhipu_jwt
from tests.fixtures.llm import EMBEDDING_BASES, KEYS, PROVIDERS


def expected(texts: list[str], dim: int = FAKE_DIM) -> np.ndarray:
    rows = np.array([fake_vector(t, dim) for t in texts], dtype=np.float64)
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def sent_inputs(fake: FakeLLMServer) -> list[list[str]]:
    return [r.body["input"] for r in fake.requests]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_it_sends_each_providers_request(
    provider: str, embedding_api: Callable[..., None], embedder: EmbeddingClient, fake: FakeLLMServer
) -> None:
    embedding_api(provider, EMBEDDING_API_DIMENSIONS=512)
    fake.api_key = KEYS[provider]  # the fake now refuses any other key (Zhipu: a JWT made from it)
    vectors = await embedder.embed(["Where is my order?", "退货怎么办"])
    assert vectors.shape == (2, 512)
    [sent] = fake.requests
    assert (sent.method, sent.path) == ("POST", f"{EMBEDDING_BASES[provider]}/embeddings")
    body: dict[str, Any] = {"model": f"{provider}-embed", "input": ["Where is my order?", "退货怎么办"]}
    if provider != "zhipu":  # Zhipu's API has no encoding_format
        body["encoding_format"] = "float"
    assert sent.body == {**body, "dimensions": 512}
    token = sent.headers["authorization"].removeprefix("Bearer ")
    if provider == "zhipu":
        assert token != KEYS["zhipu"] and check_zhipu_jwt(token, KEYS["zhipu"]) == ""
    else:
        assert token == KEYS[provider]


async def test_it_sends_no_dimensions_unless_set_and_learns_the_length(
    embedding_api: Callable[..., None], embedder: EmbeddingClient, fake: FakeLLMServer
) -> None:
    embedding_api("openai")
    vectors = await embedder.embed(["hello"])
    assert "dimensions" not in fake.requests[0].body
    assert vectors.shape == (1, FAKE_DIM)


@pytest.mark.parametrize(
    ("provider", "batch", "count", "sizes"),
    [("dashscope", 0, 25, [10, 10, 5]), ("zhipu", 0, 70, [64, 6]), ("openai", 4, 10, [4, 4, 2])],
)
async def test_it_splits_texts_into_requests_of_the_batch_size_and_keeps_their_order(
    provider: str,
    batch: int,
    count: int,
    sizes: list[int],
    embedding_api: Callable[..., None],
    embedder: EmbeddingClient,
    fake: FakeLLMServer,
) -> None:
    embedding_api(provider, EMBEDDING_API_BATCH=batch)
    texts = [f"question number {n}" for n in range(count)]
    vectors = await embedder.embed(texts)
    assert sorted(len(inputs) for inputs in sent_inputs(fake)) == sorted(sizes)
    assert sorted(t for inputs in sent_inputs(fake) for t in inputs) == sorted(texts)
    # The fake lists each response's vectors in reverse: the rows follow "index", not the list.
    assert np.allclose(vectors, expected(texts), atol=1e-6)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


async def test_a_second_call_is_answered_from_the_cache(
    embedding_api: Callable[..., None], embedder: EmbeddingClient, fake: FakeLLMServer
) -> None:
    embedding_api()
    first = await embedder.embed(["a", "b", "a"])
    assert sent_inputs(fake) == [["a", "b"]]  # a text twice in one call is sent once
    again = await embedder.embed(["b", "a"])
    assert len(fake.requests) == 1
    assert np.array_equal(again, first[[1, 0]])
    await embedder.embed(["a", "c"])
    assert sent_inputs(fake)[1:] == [["c"]]  # only what the cache lacks


async def test_the_cache_is_per_model_and_dimensions(
    embedding_api: Callable[..., None], embedder: EmbeddingClient, fake: FakeLLMServer
) -> None:
    embedding_api()
    await embedder.embed(["a"])
    embedding_api(EMBEDDING_API_DIMENSIONS=64)
    assert (await embedder.embed(["a"])).shape == (1, 64)
    embedding_api(EMBEDDING_API_MODEL="other-model")
    await embedder.embed(["a"])
    assert len(fake.requests) == 3


async def test_the_cache_keeps_only_the_most_recent_texts(
    embedding_api: Callable[..., None], embedder: EmbeddingClient, fake: FakeLLMServer
) -> None:
    embedding_api(EMBEDDING_API_CACHE=2)
    await embedder.embed(["a", "b"])
    await embedder.embed(["a"])  # a is now the most recent
    await embedder.embed(["c"])  # evicts b
    await embedder.embed(["a"])
    await embedder.embed(["b"])
    assert sent_inputs(fake) == [["a", "b"], ["c"], ["b"]]
    assert len(embedder.cache) == 2


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("status", [429, 500, 503])
async def test_it_retries_rate_limits_and_server_errors_then_succeeds(
    provider: str,
    status: int,
    embedding_api: Callable[..., None],
    embedder: EmbeddingClient,
    fake: FakeLLMServer,
) -> None:
    embedding_api(provider, LLM_MAX_RETRIES=2)
    fake.defaults = replace(fake.defaults, status=status, retry_after_ms="1", times=2)
    vectors = await embedder.embed(["where is my parcel"])
    assert len(fake.requests) == 3
    assert np.allclose(vectors, expected(["where is my parcel"]), atol=1e-6)


async def test_it_retries_a_request_that_timed_out(
    embedding_api: Callable[..., None], embedder: EmbeddingClient, fake: FakeLLMServer
) -> None:
    embedding_api(EMBEDDING_API_TIMEOUT=0.2)
    fake.defaults = replace(fake.defaults, headers_delay_ms=2000, times=1)
    vectors = await embedder.embed(["slow"])
    assert len(fake.requests) == 2
    assert vectors.shape == (1, FAKE_DIM)


async def test_it_gives_up_after_the_retries(
    embedding_api: Callable[..., None], embedder: EmbeddingClient, fake: FakeLLMServer
) -> None:
    embedding_api(LLM_MAX_RETRIES=2)
    fake.defaults = replace(fake.defaults, status=500, retry_after_ms="1")
    with pytest.raises(ServerError) as caught:
        await embedder.embed(["x"])
    assert len(fake.requests) == 3
    assert caught.value.request_id == f"fake-{fake._serial}"
    assert len(embedder.cache) == 0


async def test_a_retry_after_longer_than_the_cap_is_not_waited_for(
    embedding_api: Callable[..., None], embedder: EmbeddingClient, fake: FakeLLMServer
) -> None:
    embedding_api()
    fake.defaults = replace(fake.defaults, status=429, retry_after="3600")
    with pytest.raises(RateLimitError):
        await embedder.embed(["x"])
    assert len(fake.requests) == 1


async def test_a_bad_key_is_not_retried_and_not_repeated_in_the_error(
    embedding_api: Callable[..., None], embedder: EmbeddingClient, fake: FakeLLMServer
) -> None:
    embedding_api("dashscope", EMBEDDING_API_KEY="sk-wrong-key-123456")
    fake.api_key = KEYS["dashscope"]
    with pytest.raises(AuthenticationError) as caught:
        await embedder.embed(["x"])
    assert len(fake.requests) == 1
    assert "sk-wrong-key-123456" not in str(caught.value)


async def test_the_breaker_opens_and_then_no_request_is_made(
    embedding_api: Callable[..., None], embedder: EmbeddingClient, fake: FakeLLMServer
) -> None:
    embedding_api(LLM_MAX_RETRIES=0, LLM_BREAKER_FAILURES=2)
    fake.defaults = replace(fake.defaults, status=500)
    for text in ("one", "two"):
        with pytest.raises(ServerError):
            await embedder.embed([text])
    fake.defaults = replace(fake.defaults, status=200)
    with pytest.raises(CircuitOpenError):
        await embedder.embed(["three"])
    assert len(fake.requests) == 2


async def test_a_body_that_is_not_json_is_an_error_and_not_retried(
    embedding_api: Callable[..., None], embedder: EmbeddingClient, fake: FakeLLMServer
) -> None:
    embedding_api()
    fake.defaults = replace(fake.defaults, malformed_after=0)
    with pytest.raises(BadResponseError, match="not JSON"):
        await embedder.embed(["x"])
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        ("nan", "non-finite"),
        ("short", r"different lengths \[255, 256\]"),
        ("missing", "1 vectors for 2 texts"),
        ("index", "twice"),
        ("zero", "zero vector"),
    ],
)
async def test_bad_vectors_are_rejected_and_not_cached(
    spoil: str,
    message: str,
    embedding_api: Callable[..., None],
    embedder: EmbeddingClient,
    fake: FakeLLMServer,
) -> None:
    embedding_api()
    fake.defaults = replace(fake.defaults, bad_vector=spoil, times=1)
    with pytest.raises(BadResponseError, match=message):
        await embedder.embed(["first text", "second text"])
    assert len(embedder.cache) == 0
    vectors = await embedder.embed(["first text", "second text"])  # the fake behaves again
    assert len(fake.requests) == 2
    assert np.allclose(vectors, expected(["first text", "second text"]), atol=1e-6)


async def test_a_vector_of_another_length_than_before_is_rejected(
    embedding_api: Callable[..., None], embedder: EmbeddingClient, fake: FakeLLMServer
) -> None:
    embedding_api()
    await embedder.embed(["first"])
    profile = replace(embedding_profile(), model="openai-embed")  # same name, so same length expected
    fake.defaults = replace(fake.defaults, bad_vector="short")
    with pytest.raises(BadResponseError, match="expected 256"):
        await embedder.embed(["only one"], profile=profile)


BAD_PAYLOADS = [
    (None, "no data list"),
    ({"data": "x"}, "no data list"),
    ({"data": [{"index": 1, "embedding": [1.0]}]}, "index 1 out of range"),
    ({"data": [{"index": True, "embedding": [1.0]}]}, "index True out of range"),
    ({"data": [{"index": 0}]}, "no embedding at index 0"),
    ({"data": [{"index": 0, "embedding": []}]}, "no embedding at index 0"),
    ({"data": [{"index": 0, "embedding": ["1.0"]}]}, "non-numeric"),
    ({"data": [{"index": 0, "embedding": [True]}]}, "non-numeric"),
    ({"data": [{"index": 0, "embedding": [1.0, float("inf"), 2.0]}]}, "non-finite"),
    ({"data": [{"index": 0, "embedding": [1.0, 2.0]}]}, "has 2 values, expected 3"),
]


@pytest.mark.parametrize(("payload", "message"), BAD_PAYLOADS)
def test_parse_embeddings_rejects(payload: Any, message: str) -> None:
    with pytest.raises(BadResponseError, match=message):
        parse_embeddings(payload, count=1, dim=3, provider="openai")


def test_parse_embeddings_orders_by_index_and_normalises() -> None:
    payload = {"data": [{"index": 1, "embedding": [0, 2]}, {"index": 0, "embedding": [3, 4]}]}
    rows = parse_embeddings(payload, count=2, dim=None, provider="openai")
    assert rows.dtype == np.float32
    assert np.allclose(rows, [[0.6, 0.8], [0.0, 1.0]])


async def test_nothing_to_embed_makes_no_request(
    embedding_api: Callable[..., None], embedder: EmbeddingClient, fake: FakeLLMServer
) -> None:
    embedding_api(EMBEDDING_API_DIMENSIONS=64)
    assert (await embedder.embed([])).shape == (0, 64)
    assert fake.requests == []


async def test_the_sync_entry_point_works_from_threads_while_the_event_loop_runs(
    embedding_api: Callable[..., None], embedder: EmbeddingClient, fake: FakeLLMServer
) -> None:
    embedding_api("dashscope")
    fake.defaults = replace(fake.defaults, headers_delay_ms=50)
    ticks = 0
    done = asyncio.Event()

    async def tick() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    ticker = asyncio.create_task(tick())
    texts = [[f"thread {n} text {i}" for i in range(12)] for n in range(6)]
    results = await asyncio.gather(*(asyncio.to_thread(embedder.embed_sync, t) for t in texts))
    done.set()
    await ticker
    for batch, vectors in zip(texts, results, strict=True):
        assert np.allclose(vectors, expected(batch), atol=1e-6)
    assert len(fake.requests) == 6 * 2  # 12 texts: 10 + 2 per thread
    assert ticks >= 5  # this loop kept running while the threads waited


async def test_the_sync_entry_point_refuses_a_thread_running_an_event_loop(
    embedding_api: Callable[..., None], embedder: EmbeddingClient, fake: FakeLLMServer
) -> None:
    embedding_api()
    with pytest.raises(RuntimeError, match="from async code"):
        embedder.embed_sync(["x"])
    assert fake.requests == []


def test_the_sync_entry_point_from_plain_threads_reuses_one_connection(
    embedding_api: Callable[..., None], embedder: EmbeddingClient, fake: FakeLLMServer
) -> None:
    embedding_api()
    out: list[np.ndarray] = []
    for n in range(3):
        thread = threading.Thread(target=lambda n=n: out.append(embedder.embed_sync([f"text {n}"])))
        thread.start()
        thread.join()
    assert [len(v) for v in out] == [1, 1, 1]
    assert len(fake.requests) == 3
    assert fake.connections == 1  # the private loop's session keeps the connection alive


def test_the_key_and_base_url_come_from_the_llm_settings_of_the_same_provider(
    embedding_api: Callable[..., None], settings: Any, fake: FakeLLMServer
) -> None:
    embedding_api("dashscope")  # LLM_BASE_URL is the native API: .../api/v1
    profile = embedding_profile()
    assert (profile.base_url, profile.api_key) == (fake.url + "/compatible-mode/v1", KEYS["dashscope"])
    assert (profile.batch_size, profile.dimensions, profile.name) == (10, None, "dashscope:dashscope-embed")
    settings.LLM_BASE_URL = ""
    assert embedding_profile().base_url == "https://dashscope.aliyuncs.com/compatible-mode/v1"
    settings.LLM_BASE_URL = "https://dashscope-intl.aliyuncs.com/api/v1"
    assert embedding_profile().base_url == "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"
    settings.EMBEDDING_API_BASE_URL = "http://embed.example/v1/"
    settings.EMBEDDING_API_KEY = "sk-own-key"
    settings.EMBEDDING_API_DIMENSIONS = 512
    profile = embedding_profile()
    assert (profile.base_url, profile.api_key, profile.name) == (
        "http://embed.example/v1",
        "sk-own-key",
        "dashscope:dashscope-embed@512",
    )
    settings.LLM_PROVIDER = "openai"  # another provider: nothing of its is borrowed
    settings.EMBEDDING_API_BASE_URL = settings.EMBEDDING_API_KEY = ""
    profile = embedding_profile()
    assert (profile.base_url, profile.api_key) == ("https://dashscope.aliyuncs.com/compatible-mode/v1", "")


async def test_a_missing_model_is_a_configuration_error_before_any_request(
    embedding_api: Callable[..., None], embedder: EmbeddingClient, fake: FakeLLMServer
) -> None:
    embedding_api(EMBEDDING_API_MODEL="")
    with pytest.raises(ConfigurationError, match="EMBEDDING_API_MODEL"):
        await embedder.embed(["x"])
    assert fake.requests == []


def test_the_system_checks_name_a_missing_model_key_or_an_oversized_batch(settings: Any) -> None:
    settings.LLM_PROVIDER = ""
    settings.EMBEDDING_PROVIDER = "local"
    assert check_embedding_settings() == []
    settings.EMBEDDING_PROVIDER = "zhipu"
    settings.EMBEDDING_API_MODEL = settings.EMBEDDING_API_KEY = settings.EMBEDDING_API_BASE_URL = ""
    settings.EMBEDDING_API_BATCH = 100
    assert [p.id for p in check_embedding_settings()] == ["chatbot.E003", "chatbot.E004", "chatbot.W002"]
    settings.EMBEDDING_API_MODEL, settings.EMBEDDING_API_KEY = "embedding-3", "id.secret"
    settings.EMBEDDING_API_BATCH = 0
    assert check_embedding_settings() == []
    # OpenAI itself needs a key; a local OpenAI-compatible server may not.
    settings.EMBEDDING_PROVIDER, settings.EMBEDDING_API_KEY = "openai", ""
    assert [p.id for p in check_embedding_settings()] == ["chatbot.E004"]
    settings.EMBEDDING_API_BASE_URL = "http://127.0.0.1:11434/v1"
    assert check_embedding_settings() == []
