"""Queries encoded on one worker thread that takes every request waiting in its queue as
one batch, so callers never block the event loop and concurrent queries share a forward
pass (micro-batching). The runtime keeps one batcher per model (``knowledge.embeddings``).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class QueryEncoder(Protocol):
    """What a batcher needs of an encoder (``knowledge.embeddings.Encoder`` and the others)."""

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray: ...

    def unknown_fraction(self, text: str) -> float: ...


@dataclass(frozen=True)
class QueryVector:
    vector: np.ndarray
    unknown: float  # share of [UNK] tokens: how little the model understood


@dataclass
class _Request:
    text: str
    future: Future[QueryVector]


class QueryBatcher:
    """Encodes queries on one worker thread, batching whatever is waiting.

    With one caller a query is encoded at once (no waiting window by default); under
    load, queries that arrive while the model is busy are encoded together next.
    """

    def __init__(self, encoder: QueryEncoder, *, max_batch: int, wait_ms: float, cache_size: int) -> None:
        self.encoder = encoder
        self.max_batch = max_batch
        self.wait = wait_ms / 1000
        self.cache_size = cache_size
        self._cache: OrderedDict[str, QueryVector] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()  # None: stop
        self._closed = False
        self._closing_lock = threading.Lock()  # no request enters the queue behind the stop
        self.batches = 0
        self.encoded = 0
        threading.Thread(target=self._run, name="embedding-batcher", daemon=True).start()

    def submit(self, text: str) -> Future[QueryVector]:
        future: Future[QueryVector] = Future()
        cached = self._cached(text)
        if cached is not None:
            future.set_result(cached)
            return future
        with self._closing_lock:
            if self._closed:
                future.set_exception(RuntimeError("the query batcher is closed"))
            else:
                self._queue.put(_Request(text, future))
        return future

    def close(self) -> None:
        """Stop the worker thread once it has encoded what was asked before."""
        with self._closing_lock:
            if not self._closed:
                self._closed = True
                self._queue.put(None)

    def encode(self, text: str) -> QueryVector:
        return self.submit(text).result()

    def _cached(self, text: str) -> QueryVector | None:
        with self._cache_lock:
            vector = self._cache.get(text)
            if vector is not None:
                self._cache.move_to_end(text)
            return vector

    def _remember(self, text: str, vector: QueryVector) -> None:
        if self.cache_size <= 0:
            return
        with self._cache_lock:
            self._cache[text] = vector
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def _take_batch(self) -> tuple[list[_Request], bool]:
        """The requests waiting (at most ``max_batch``), and whether the stop came with them."""
        first = self._queue.get()
        if first is None:
            return [], True
        batch = [first]
        deadline = time.monotonic() + self.wait
        while len(batch) < self.max_batch:
            try:
                remaining = deadline - time.monotonic()
                request = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if request is None:
                return batch, True
            batch.append(request)
        return batch, False

    def _run(self) -> None:
        stop = False
        while not stop:
            taken, stop = self._take_batch()
            # A caller that gave up (its task was cancelled) has cancelled its future: skip
            # it. The others can no longer be cancelled, so delivering to them can't fail.
            batch = [r for r in taken if r.future.set_running_or_notify_cancel()]
            if batch:
                self._encode(batch)

    def _encode(self, batch: list[_Request]) -> None:
        texts = list(dict.fromkeys(request.text for request in batch))
        try:
            encoded = self.encoder.encode(texts)
            encoded.setflags(write=False)
            vectors = {
                text: QueryVector(row, self.encoder.unknown_fraction(text))
                for text, row in zip(texts, encoded, strict=True)
            }
        except Exception as err:  # deliver the failure to every waiting caller
            for request in batch:
                request.future.set_exception(err)
            return
        self.batches += 1
        self.encoded += len(texts)
        for text, vector in vectors.items():
            self._remember(text, vector)
        for request in batch:
            request.future.set_result(vectors[request.text])
