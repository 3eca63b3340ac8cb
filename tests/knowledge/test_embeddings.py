from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from django.test import override_settings

from chatbot.runtime import Runtime, install, runtime
from knowledge.embeddings import (
    DEFAULT_MODEL,
    Encoder,
    Models,
    QueryBatcher,
    get_batcher,
    get_encoder,
    length_groups,
    row_cosines,
)
from knowledge.onnx_models import quantized_file

ROOT = Path(__file__).resolve().parents[2]


def test_it_encodes_to_normalised_384_dimensional_float32_rows() -> None:
    vectors = get_encoder().encode(["Where is my order?", "我的快递到哪了", "x" * 3000])
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_the_fast_path_gives_the_same_vectors_as_sentence_transformers() -> None:
    encoder = get_encoder()
    texts = ["How do I return an item?", "a", "Can I pay with Alipay or WeChat Pay when I order from abroad?"]
    assert np.allclose(encoder.encode(texts), encoder._reference(texts), atol=1e-4)


def test_length_groups_keep_similar_lengths_together_and_every_row_once() -> None:
    lengths = [12, 80, 11, 13, 12, 79, 12]
    groups = length_groups(lengths, max_batch=64, call_cost=12)
    assert [sorted(lengths[i] for i in group) for group in groups] == [[11, 12, 12, 12, 13], [79, 80]]
    assert sorted(i for group in groups for i in group) == list(range(len(lengths)))


def test_length_groups_make_one_call_when_lengths_are_alike_and_respect_the_batch_size() -> None:
    assert length_groups([10, 11, 10, 12], max_batch=64) == [[0, 2, 1, 3]]
    groups = length_groups([10] * 10, max_batch=4)
    assert [len(group) for group in groups] == [2, 4, 4]  # least calls, none over 4
    # A lone long row is worth its own call only when the call costs less than its padding.
    assert len(length_groups([10, 10, 14], max_batch=64, call_cost=12)) == 1
    assert len(length_groups([10, 10, 40], max_batch=64, call_cost=12)) == 2
    assert length_groups([], max_batch=8) == []


def test_a_long_question_in_a_batch_of_short_ones_gets_its_own_call_and_the_same_vectors() -> None:
    encoder = get_encoder()
    texts = [f"where is order {n}?" for n in range(12)]
    texts.insert(5, "I ordered a blue jacket three weeks ago, paid extra for express delivery, " * 3)
    calls: list[tuple[int, int]] = []
    pooled = encoder._pooled

    def spy(features: dict[str, np.ndarray]) -> np.ndarray:
        calls.append(features["input_ids"].shape)
        return pooled(features)

    with mock.patch.object(encoder, "_pooled", spy):
        vectors = encoder.encode(texts)
    assert len(calls) == 2 and sorted(rows for rows, _ in calls) == [1, 12]
    assert np.allclose(vectors, encoder._reference(texts), atol=1e-4)


def test_paraphrases_are_closer_than_unrelated_questions() -> None:
    a, b, c = get_encoder().encode(
        ["How do I track my parcel?", "Where is my package?", "What is your refund policy?"]
    )
    assert float(a @ b) > float(a @ c) + 0.1


def test_chinese_is_mostly_unknown_to_the_english_model() -> None:
    encoder = get_encoder()
    assert encoder.unknown_fraction("where is my order") == 0.0
    assert encoder.unknown_fraction("我的快递到哪了") > 0.5


def test_the_model_loads_once_per_process_even_when_many_threads_ask_at_once() -> None:
    code = """
import threading, django
django.setup()
import sentence_transformers
loads = []
original = sentence_transformers.SentenceTransformer.__init__
def counting(self, *a, **k):
    loads.append(1)
    original(self, *a, **k)
sentence_transformers.SentenceTransformer.__init__ = counting
from knowledge import embeddings
threads = [threading.Thread(target=lambda: embeddings.get_batcher().encode("hi")) for _ in range(8)]
[t.start() for t in threads]; [t.join() for t in threads]
embeddings.get_encoder(); embeddings.encode_documents(["again"])
print("loads", len(loads))
"""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "chatbot.settings", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "loads 1" in result.stdout


class SlowEncoder:
    """Stands in for the model: 30 ms a batch, vectors that encode the text's length."""

    dim = 2

    def __init__(self) -> None:
        self.batches: list[int] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.batches.append(len(texts))
        time.sleep(0.03)
        return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)

    def unknown_fraction(self, text: str) -> float:
        return 0.0


def test_queries_that_arrive_together_share_a_batch() -> None:
    encoder = SlowEncoder()
    batcher = QueryBatcher(encoder, max_batch=64, wait_ms=0, cache_size=0)
    futures = [batcher.submit("q" * n) for n in range(1, 33)]
    results = [f.result(timeout=10) for f in futures]
    assert [r.vector[0] for r in results] == list(range(1, 33))
    assert sum(encoder.batches) == 32
    assert len(encoder.batches) <= 4  # 32 queries in a handful of forward passes, not 32


def test_a_lone_query_is_not_held_back_waiting_for_company() -> None:
    encoder = SlowEncoder()
    batcher = QueryBatcher(encoder, max_batch=64, wait_ms=0, cache_size=0)
    assert batcher.encode("alone").vector[0] == 5
    assert encoder.batches == [1]


def test_an_encoding_failure_reaches_every_waiting_caller_and_the_worker_survives() -> None:
    class FailsOnce(SlowEncoder):
        def encode(self, texts: Sequence[str]) -> np.ndarray:
            if not self.batches:
                self.batches.append(-1)
                time.sleep(0.03)  # let the other queries queue up behind the failing batch
                raise RuntimeError("model crashed")
            return super().encode(texts)

    batcher = QueryBatcher(FailsOnce(), max_batch=1, wait_ms=0, cache_size=0)
    first = batcher.submit("q1")
    with pytest.raises(RuntimeError, match="model crashed"):
        first.result(timeout=5)
    assert batcher.encode("later").vector[0] == 5


def test_a_query_whose_caller_gave_up_is_skipped_and_the_worker_survives() -> None:
    # A visitor who leaves cancels their task, and asyncio cancels the query's future; the
    # worker once died delivering to it (InvalidStateError), and every later match hung.
    encoder = SlowEncoder()
    batcher = QueryBatcher(encoder, max_batch=64, wait_ms=0, cache_size=0)
    busy = batcher.submit("keeps the worker busy")
    abandoned, kept = batcher.submit("abandoned"), batcher.submit("kept")
    assert abandoned.cancel()
    assert busy.result(timeout=5).vector[0] == 21
    assert kept.result(timeout=5).vector[0] == 4
    assert batcher.encode("later").vector[0] == 5
    assert sum(encoder.batches) == 3  # the abandoned query was never encoded


def test_repeated_questions_come_from_the_cache() -> None:
    encoder = SlowEncoder()
    batcher = QueryBatcher(encoder, max_batch=8, wait_ms=0, cache_size=2)
    first = batcher.encode("same question")
    again = batcher.encode("same question")
    assert again is first and encoder.batches == [1]
    batcher.encode("b")
    batcher.encode("c")  # evicts "same question" (cache of two)
    batcher.encode("same question")
    assert len(encoder.batches) == 4


def test_the_shared_batcher_uses_the_real_model() -> None:
    vector = get_batcher().encode("Where is my order?")
    assert vector.vector.shape == (384,)
    assert not vector.vector.flags.writeable  # shared through the cache: read-only


def test_a_closed_batcher_answers_what_was_asked_before_and_refuses_the_rest() -> None:
    before = set(threading.enumerate())
    encoder = SlowEncoder()
    batcher = QueryBatcher(encoder, max_batch=1, wait_ms=0, cache_size=0)
    (worker,) = set(threading.enumerate()) - before
    asked = [batcher.submit("q" * n) for n in (1, 2, 3)]
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit("too late").result(timeout=5)
    assert [f.result(timeout=5).vector[0] for f in asked] == [1, 2, 3]
    worker.join(5)
    assert not worker.is_alive()


def test_the_runtime_keeps_the_models_and_its_batchers_stop_with_it() -> None:
    get_encoder()  # loaded once, in this test's runtime
    mine = Runtime()
    mine.adopt(Models(runtime().part(Models).loaded()))  # carried, as from test to test
    previous = install(mine)
    try:
        batcher = get_batcher()
        assert get_batcher() is batcher and get_encoder() is batcher.encoder
    finally:
        install(previous)
    mine.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.encode("after the runtime closed")
    assert get_batcher() is not batcher  # this test's runtime has its own


def test_tokenizing_from_two_threads_at_once_keeps_batches_padded() -> None:
    # The tokenizer is shared state: a batch tokenized while another thread tokenized a
    # single query once came back unpadded (ragged). Hammer both paths together.
    encoder = get_encoder()
    batch = ["short", "a much longer sentence so that this batch needs padding", "中文问题"]
    failures: list[BaseException] = []
    stop = threading.Event()

    def singles() -> None:
        while not stop.is_set():
            encoder.unknown_fraction("where is my order")

    thread = threading.Thread(target=singles)
    thread.start()
    try:
        for _ in range(400):
            try:
                features = encoder._tokenize(batch)
                assert features["input_ids"].shape[0] == 3
            except BaseException as err:
                failures.append(err)
                break
    finally:
        stop.set()
        thread.join()
    assert failures == []
    assert np.allclose(encoder.encode(batch), encoder._reference(batch), atol=1e-4)


@pytest.fixture(scope="module")
def int8_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private cache holding the float ONNX model and its int8 copy (not the shared one)."""
    return tmp_path_factory.mktemp("embeddings")


@pytest.fixture(scope="module")
def int8_encoder(int8_cache: Path) -> Encoder:
    with override_settings(EMBEDDING_QUANTIZE=True, EMBEDDING_CACHE_DIR=str(int8_cache)):
        return Encoder(DEFAULT_MODEL)


def cached_files(cache: Path) -> tuple[Path, Path]:
    """The float model and its int8 copy, and nothing else (no temporary file left)."""
    float_file, int8_file = sorted(cache.iterdir(), key=lambda path: len(path.name))
    assert int8_file == quantized_file(float_file)
    return float_file, int8_file


def test_it_encodes_with_the_int8_model_close_to_the_float_vectors(int8_encoder: Encoder) -> None:
    texts = [
        "Where is my order?",
        "How do I return an item?",
        "a",
        "我的快递到哪了",
        "Can I pay with Alipay or WeChat Pay when I order from abroad, and is there a fee for that?",
    ]
    vectors = int8_encoder.encode([*texts, "x" * 3000])
    assert int8_encoder.fast and int8_encoder.quantized
    assert vectors.shape == (6, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    float_vectors = int8_encoder._reference(texts)  # the float ONNX path matches these to 1e-4
    assert row_cosines(vectors[:5], float_vectors).min() > 0.98
    assert not np.allclose(vectors[:5], float_vectors, atol=1e-4)  # really the int8 model


def test_the_int8_model_is_written_once_next_to_the_float_one_and_reused(
    int8_encoder: Encoder, int8_cache: Path, settings: Any
) -> None:
    float_file, int8_file = cached_files(int8_cache)
    assert float_file.suffix == int8_file.suffix == ".onnx"
    written = int8_file.stat().st_mtime_ns
    settings.EMBEDDING_QUANTIZE = True
    settings.EMBEDDING_CACHE_DIR = str(int8_cache)
    with mock.patch("knowledge.onnx_models.quantize", side_effect=AssertionError("quantized again")):
        again = Encoder(DEFAULT_MODEL)
    assert again.quantized
    assert int8_file.stat().st_mtime_ns == written
    assert np.array_equal(again.encode(["Where is my order?"]), int8_encoder.encode(["Where is my order?"]))


def test_an_int8_model_that_disagrees_with_sentence_transformers_is_not_used(
    int8_cache: Path, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.EMBEDDING_QUANTIZE = True
    settings.EMBEDDING_CACHE_DIR = str(int8_cache)
    with (
        mock.patch("knowledge.embeddings.QUANTIZED_MIN_COSINE", 1.0),  # int8 never reaches 1.0
        caplog.at_level(logging.WARNING, logger="knowledge.embeddings"),
    ):
        encoder = Encoder(DEFAULT_MODEL)
    assert encoder.fast and not encoder.quantized
    assert "int8 embedding model disagrees with sentence-transformers" in caplog.text
    texts = ["Where is my order?", "我的快递到哪了"]
    assert np.allclose(encoder.encode(texts), encoder._reference(texts), atol=1e-4)


def test_a_broken_int8_file_falls_back_to_the_float_model(
    int8_encoder: Encoder, int8_cache: Path, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _, int8_file = cached_files(int8_cache)
    original = int8_file.read_bytes()
    int8_file.write_bytes(b"not an onnx model" * 100)
    settings.EMBEDDING_QUANTIZE = True
    settings.EMBEDDING_CACHE_DIR = str(int8_cache)
    try:
        with caplog.at_level(logging.WARNING, logger="knowledge.embeddings"):
            encoder = Encoder(DEFAULT_MODEL)
    finally:
        int8_file.write_bytes(original)
    assert encoder.fast and not encoder.quantized
    assert "could not start the int8 embedding model" in caplog.text
    texts = ["How do I return an item?", "我的快递到哪了"]
    assert np.allclose(encoder.encode(texts), encoder._reference(texts), atol=1e-4)
