"""Embeddings from a provider's API: ``EmbeddingClient.embed`` (async) and ``embed_sync``
(from any thread that is not running an event loop).

Texts are looked up in a bounded LRU cache by (provider, model, dimensions, text); the
rest are sent in requests of at most the profile's batch size, a few at a time, each
under the LLM client's policy: the endpoint's circuit breaker, retries with backoff on
429/5xx/timeouts/broken connections (honouring Retry-After), errors of the one tree.
Returned rows are L2-normalised float32, in the order of the texts.

``embed_sync`` runs ``embed`` on the client's private event loop, on a thread of its own
(``chatbot.llm.loop_thread`` says why not ``asyncio.run`` or ``async_to_sync``), and blocks
the calling worker thread until the vectors are there: it never needs the caller's loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np

from chatbot.llm import http
from chatbot.llm.breaker import breaker_for
from chatbot.llm.errors import (
    APIConnectionError,
    APITimeoutError,
    BadResponseError,
    LLMError,
    map_error,
    parse_error_body,
)
from chatbot.llm.loop_thread import LoopThread
from chatbot.llm.profiles import (
    EmbeddingPolicy,
    check_embedding_profile,
    current_embedding_policy,
    embedding_profile,
)
from chatbot.llm.providers.base import HttpCall
from chatbot.llm.providers.embeddings import EMBEDDING_PROVIDERS, parse_embeddings
from chatbot.llm.retry import parse_retry_after, retry_delay, should_retry
from chatbot.llm.stream import REQUEST_ID_HEADERS
from chatbot.llm.types import EmbeddingProfile
from chatbot.runtime import runtime

log = logging.getLogger(__name__)

# Requests of one call in flight at once: a knowledge base of 1,000 phrasings is 100
# DashScope requests; four at a time takes a quarter of the time without looking like a
# burst to the provider's rate limiter.
PARALLEL_REQUESTS = 4


class VectorCache:
    """A thread-safe LRU of vectors by key; ``limit`` may change between calls (settings)."""

    def __init__(self) -> None:
        self._rows: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> np.ndarray | None:
        with self._lock:
            row = self._rows.get(key)
            if row is not None:
                self._rows.move_to_end(key)
            return row

    def put(self, key: tuple[str, str], row: np.ndarray, *, limit: int) -> None:
        if limit <= 0:
            return
        with self._lock:
            self._rows[key] = row
            self._rows.move_to_end(key)
            while len(self._rows) > limit:
                self._rows.popitem(last=False)

    def __len__(self) -> int:
        return len(self._rows)


class EmbeddingClient:
    """A runtime part (``default_client``), or a test's own. Owns the vector cache and the
    private event loop of ``embed_sync``, which closes with it."""

    def __init__(self) -> None:
        self.cache = VectorCache()
        self._runner = LoopThread("embedding-client")
        self._dims: dict[str, int] = {}  # profile name -> vector length seen

    async def embed(self, texts: Sequence[str], *, profile: EmbeddingProfile | None = None) -> np.ndarray:
        """Raises ``ConfigurationError``, ``CircuitOpenError`` or the last attempt's ``LLMError``."""
        profile = profile or embedding_profile()
        check_embedding_profile(profile)
        policy = current_embedding_policy()
        found = [self.cache.get((profile.name, text)) for text in texts]
        missing = list(dict.fromkeys(t for t, row in zip(texts, found, strict=True) if row is None))
        if missing:
            fresh = dict(zip(missing, await self._fetch(missing, profile, policy), strict=True))
            found = [row if row is not None else fresh[text] for text, row in zip(texts, found, strict=True)]
        if not found:
            return np.zeros((0, profile.dimensions or self._dims.get(profile.name, 0)), dtype=np.float32)
        return np.stack(found)

    def embed_sync(self, texts: Sequence[str], *, profile: EmbeddingProfile | None = None) -> np.ndarray:
        """``embed`` for worker threads: runs on this client's private event loop and waits.

        A thread that is itself running an event loop gets a ``RuntimeError`` (it would
        block its loop); it should ``await embed(...)`` instead. See ``loop_thread``.
        """
        profile = profile or embedding_profile()
        policy = current_embedding_policy()
        batches = -(-len(texts) // max(profile.batch_size, 1))
        rounds = -(-batches // PARALLEL_REQUESTS)
        # A safety net only: every request is bounded by the policy's own timeouts.
        limit = max(rounds, 1) * policy.total_timeout() + 5.0
        return self._runner.run(self.embed(texts, profile=profile), timeout=limit)

    def close(self) -> None:
        self._runner.close()

    async def _fetch(
        self, texts: list[str], profile: EmbeddingProfile, policy: EmbeddingPolicy
    ) -> np.ndarray:
        size = max(profile.batch_size, 1)
        batches = [texts[start : start + size] for start in range(0, len(texts), size)]
        gate = asyncio.Semaphore(PARALLEL_REQUESTS)

        async def one(batch: list[str]) -> np.ndarray:
            async with gate:
                return await self._batch(batch, profile, policy)

        tasks = [asyncio.ensure_future(one(batch)) for batch in batches]
        try:
            parts = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # one batch failed for good (or the caller left): stop the others
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        if len({part.shape[1] for part in parts}) > 1:
            widths = sorted({part.shape[1] for part in parts})
            raise BadResponseError(
                f"vectors of different lengths {widths} in one call", provider=profile.provider
            )
        rows = np.concatenate(parts)
        self._dims[profile.name] = rows.shape[1]
        for text, row in zip(texts, rows, strict=True):
            kept = row.copy()  # not a view: an evicted row must not keep its whole batch alive
            kept.setflags(write=False)
            self.cache.put((profile.name, text), kept, limit=policy.cache_size)
        return rows

    async def _batch(
        self, texts: list[str], profile: EmbeddingProfile, policy: EmbeddingPolicy
    ) -> np.ndarray:
        call = EMBEDDING_PROVIDERS[profile.provider].build_call(texts, profile)
        breaker = breaker_for(
            profile.key,
            provider=profile.provider,
            failure_threshold=policy.breaker_failures,
            cooldown=policy.breaker_cooldown,
        )
        retries = 0
        while True:
            breaker.acquire()  # while open: CircuitOpenError, and no request is made
            try:
                payload = await _attempt(call, profile, policy)
                dim = profile.dimensions or self._dims.get(profile.name)
                rows = parse_embeddings(payload, count=len(texts), dim=dim, provider=profile.provider)
            except LLMError as err:
                if err.breaker_failure:
                    breaker.failure()
                else:
                    breaker.release()
                if not should_retry(err, attempt=retries, policy=policy.retry, delivered=False):
                    raise
                delay = retry_delay(err, attempt=retries, policy=policy.retry)
                log.info(
                    "embeddings %s attempt %d failed (%s); retrying in %.2f s",
                    profile.provider,
                    retries + 1,
                    err,
                    delay,
                )
                retries += 1
                await asyncio.sleep(delay)
                continue
            except BaseException:
                breaker.release()  # cancelled: no verdict on the provider
                raise
            breaker.success()
            return rows


async def _attempt(call: HttpCall, profile: EmbeddingProfile, policy: EmbeddingPolicy) -> object:
    """One request: the parsed JSON body of a 200, or an error of the tree."""
    provider = profile.provider
    try:
        async with asyncio.timeout(policy.timeout):
            response = await http.shared_session().post(
                call.url,
                json=call.body,
                headers=call.headers,
                timeout=http.timeouts(connect=policy.connect_timeout, read=policy.timeout),
                allow_redirects=False,
            )
            try:
                raw = await response.read()
            finally:
                response.release()
    except http.ConnectionTimeoutError as err:
        raise APITimeoutError(
            f"no connection within {policy.connect_timeout:g} s", provider=provider
        ) from err
    except TimeoutError as err:
        raise APITimeoutError(f"no response within {policy.timeout:g} s", provider=provider) from err
    except http.ClientError as err:
        raise APIConnectionError(f"request failed: {type(err).__name__}", provider=provider) from err
    request_id = _request_id(response.headers)
    payload = parse_error_body(raw)
    if response.status != 200 or (isinstance(payload, dict) and payload.get("error")):
        raise map_error(
            provider=provider,
            status=response.status if response.status != 200 else None,
            body=payload,
            request_id=request_id,
            retry_after=parse_retry_after(response.headers),
            secrets=call.secrets,
        )
    if payload is None:
        raise BadResponseError(
            f"the response is not JSON: {raw[:80]!r}", provider=provider, request_id=request_id
        )
    return payload


def _request_id(headers: Mapping[str, str]) -> str:
    return next((value for name in REQUEST_ID_HEADERS if (value := headers.get(name))), "")


def default_client() -> EmbeddingClient:
    """The process's client: a part of its runtime (made on first use)."""
    return runtime().part(EmbeddingClient)
