"""Match a visitor's question against a bot's knowledge base.

``match`` (sync) and ``amatch`` (async, never touching the ORM on the event loop) return
the ranked candidates and a decision:

- ``answer``: best confidence >= the bot's answer threshold: reply with the stored answer;
- ``reference``: between the reference and answer thresholds: the top entries go to the
  LLM as reference material;
- ``none``: below the reference threshold.

Each process keeps one in-memory ``Ranker`` per bot (the runtime's ``Snapshots``), tagged
with the bot's ``kb_revision``; a search first reads that number (one indexed read) and
rebuilds the ranker only when another request, in any process, changed the knowledge base.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
from django.conf import settings

from chatbot.models import Bot
from chatbot.runtime import runtime
from knowledge import calibration_services, embeddings, shared_ranking
from knowledge.calibration_services import Calibrated, Thresholds, thresholds_for
from knowledge.models import AnswerEmbedding, Calibration, Embedding, Entry
from knowledge.ranking import Ranked, Ranker
from knowledge.services import entries_embed
from knowledge.shared_reads import shared_read

log = logging.getLogger(__name__)
Decision = Literal["answer", "reference", "none"]
MAX_QUERY_CHARS = 1000
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Candidate:
    entry_id: int
    question: str
    answer: str
    score: float  # confidence in [0, 1]: what the thresholds compare against
    similarity: float  # best phrasing cosine
    lexical: float


@dataclass(frozen=True)
class MatchResult:
    decision: Decision
    candidates: list[Candidate]
    took_ms: float
    thresholds: Thresholds | None = None
    lexical_only: bool = False  # the embedding model failed: matched on words alone

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None


@dataclass
class Snapshot:
    revision: int
    model: str
    ranker: Ranker  # with the calibration's calibrator, if there is one
    entries: dict[int, tuple[str, str]]  # id -> (question, answer)
    stamp: int = 0  # Bot.calibration_stamp it was made with
    calibrated: Calibrated | None = None
    configured: str = ""  # Bot.embedding_model it was built for
    default: str = ""  # the process's default model then (tests change it)
    bot_id: int = 0


class Snapshots:
    """The runtime's index of each bot, and the index checks under way (a runtime part)."""

    def __init__(self) -> None:
        self.by_bot: dict[int, Snapshot] = {}
        # Async callers share a check under way, per (event loop, bot): ``_snapshot_shared``.
        self.reads: dict[tuple[int, int], asyncio.Task[Snapshot]] = {}
        self._build_locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()

    def build_lock(self, bot_id: int) -> threading.Lock:
        with self._guard:
            return self._build_locks.setdefault(bot_id, threading.Lock())


def _snapshots() -> Snapshots:
    return runtime().part(Snapshots)


def normalise_query(text: str) -> str:
    return _SPACES.sub(" ", text).strip()[:MAX_QUERY_CHARS]


def decide(thresholds: Thresholds, confidence: float | None) -> Decision:
    if confidence is None:
        return "none"
    if confidence >= thresholds.answer:
        return "answer"
    if confidence >= thresholds.reference:
        return "reference"
    return "none"


def _current_revision(bot_id: int) -> tuple[int, int, str]:
    """The bot's knowledge-base revision, calibration stamp and model setting (one read)."""
    return (
        Bot.objects.filter(pk=bot_id).values_list("kb_revision", "calibration_stamp", "embedding_model").get()
    )


def _built(bot_id: int, revision: int, stamp: int, configured: str) -> Snapshot | None:
    """The bot's index if it was built at ``revision`` and ``stamp`` for the model setting."""
    snapshot = _snapshots().by_bot.get(bot_id)
    if (
        snapshot is not None
        and snapshot.revision == revision
        and snapshot.stamp == stamp
        and snapshot.configured == configured
        and snapshot.default == embeddings.model_name()
    ):
        return snapshot
    return None


def snapshot_for(bot_id: int) -> Snapshot:
    """The bot's ranker, rebuilt if its knowledge base changed since it was built, and
    given the newest calibration if only that changed."""
    revision, stamp, configured = _current_revision(bot_id)
    snapshot = _built(bot_id, revision, stamp, configured)
    if snapshot is not None:
        return snapshot
    snapshots = _snapshots()
    with snapshots.build_lock(bot_id):  # one rebuild per bot at a time; the others wait and reuse it
        snapshot = _built(bot_id, revision, stamp, configured)
        if snapshot is None:
            old = snapshots.by_bot.get(bot_id)
            if old is not None and _built(bot_id, revision, old.stamp, configured) is old:
                snapshot = _calibrated(old, stamp)
            else:
                snapshot = _calibrated(_build(bot_id, revision, configured), stamp)
            snapshots.by_bot[bot_id] = snapshot
        return snapshot


def _calibrated(snapshot: Snapshot, stamp: int) -> Snapshot:
    """``snapshot`` with the bot's stored calibration; asks for a new one in the background
    when none was made at its revision (the stored one serves meanwhile)."""
    bot_id, revision, model = snapshot.bot_id, snapshot.revision, snapshot.model
    calibrated = calibration_services.calibrated_read(bot_id, model)
    ranker = copy.copy(snapshot.ranker)  # shares the matrices; only the calibrator differs
    ranker.calibrator = calibrated.calibrator if calibrated is not None else None
    if settings.KB_AUTO_CALIBRATE and calibration_services.calibration_needed(bot_id, model, revision):
        job = calibration_services.calibration_job(bot_id, revision, model, ranker)
        calibration_services.runner().schedule(bot_id, job)
    return dataclasses.replace(snapshot, ranker=ranker, stamp=stamp, calibrated=calibrated)


def calibrate_soon(bot_id: int) -> None:
    """After a knowledge-base change: rebuild the bot's index and re-calibrate it on the
    background thread (the index build schedules the calibration)."""
    if settings.KB_AUTO_CALIBRATE:
        calibration_services.runner().schedule(bot_id, lambda: snapshot_for(bot_id) and None)


def calibrate_now(bot: Bot) -> Calibration:
    """Calibrate the bot on this thread (commands, the admin's button); the stored row."""
    snapshot = snapshot_for(bot.pk)
    row = calibration_services.bot_calibrate(
        bot_id=bot.pk, revision=snapshot.revision, model=snapshot.model, ranker=snapshot.ranker
    )
    return row


def _build(bot_id: int, revision: int, configured: str) -> Snapshot:
    entries = list(Entry.objects.filter(bot_id=bot_id, is_active=True).prefetch_related("alternatives"))
    model = embeddings.model_for(configured, [e.question for e in entries])
    entries_embed(entries=entries, model=model)  # fills in any phrasing that has no vector yet
    vectors = {
        (row["entry_id"], row["text_hash"]): row["vector"]
        for row in Embedding.objects.filter(entry__in=entries, model_name=model).values(
            "entry_id", "text_hash", "vector"
        )
    }
    ids: list[int] = []
    texts: list[str] = []
    rows: list[np.ndarray] = []
    for entry in entries:
        for text in entry.phrasings():
            blob = vectors.get((entry.pk, Embedding.hash_text(text)))
            if blob is not None:
                ids.append(entry.pk)
                texts.append(text)
                rows.append(np.frombuffer(bytes(blob), dtype="<f4"))
    dim = rows[0].shape[0] if rows else embeddings.get_encoder(model).dim
    matrix = np.vstack(rows) if rows else np.zeros((0, dim), dtype=np.float32)
    ranker = Ranker(
        np.array(ids, dtype=np.int64),
        texts,
        matrix,
        mode=settings.KB_MATCH_MODE,
        answers=_answer_vectors(entries, model),
    )
    return Snapshot(
        revision,
        model,
        ranker,
        {e.pk: (e.question, e.answer) for e in entries},
        configured=configured,
        default=embeddings.model_name(),
        bot_id=bot_id,
    )


def _answer_vectors(entries: list[Entry], model: str) -> dict[int, np.ndarray]:
    """Entry id -> its answer's vector by ``model``, for the entries that have one (the
    ranker uses them only when every entry does)."""
    rows = AnswerEmbedding.objects.filter(entry__in=entries, model_name=model).values_list(
        "entry_id", "vector"
    )
    return {entry_id: np.frombuffer(bytes(blob), dtype="<f4") for entry_id, blob in rows}


def _result(
    bot: Bot, snapshot: Snapshot, ranked: list[Ranked], started: float, *, lexical_only: bool = False
) -> MatchResult:
    candidates = [
        Candidate(
            entry_id=r.entry_id,
            question=snapshot.entries[r.entry_id][0],
            answer=snapshot.entries[r.entry_id][1],
            score=round(r.confidence, 4),
            similarity=round(r.similarity, 4),
            lexical=round(r.lexical, 4),
        )
        for r in ranked
    ]
    best = candidates[0].score if candidates else None
    thresholds = thresholds_for(bot, snapshot.calibrated)
    took = (time.perf_counter() - started) * 1000
    return MatchResult(decide(thresholds, best), candidates, took, thresholds, lexical_only)


def match(bot: Bot, text: str, *, k: int = 5) -> MatchResult:
    started = time.perf_counter()
    text = normalise_query(text)
    if not text:
        return MatchResult("none", [], 0.0)
    guess = _likely_model(bot.pk)
    vector = embeddings.get_batcher(guess).submit(text)  # encodes while the revision is read
    snapshot = snapshot_for(bot.pk)
    if snapshot.model != guess:  # the knowledge base changed language, or its first search
        vector = embeddings.get_batcher(snapshot.model).submit(text)
    try:
        query = vector.result()
    except Exception:
        log.warning("embedding the question failed; matching on its words alone", exc_info=True)
        return _result(bot, snapshot, snapshot.ranker.rank_lexical(text, k), started, lexical_only=True)
    ranked = snapshot.ranker.rank(query.vector, text, k, unknown=query.unknown)
    return _result(bot, snapshot, ranked, started)


async def amatch(bot: Bot, text: str, *, k: int = 5, fresh_revision: bool = False) -> MatchResult:
    """``match`` for async callers: the ORM runs in a worker thread, encoding on the
    batcher's thread (micro-batched with other concurrent queries), and the search is
    shared with the other queries of the same turn of the event loop.

    ``fresh_revision``: ``bot.kb_revision`` was read from the database just now (the reply
    pipeline reads the bot with the visitor's message), so an index built at that revision
    is used without asking the database again."""
    started = time.perf_counter()
    text = normalise_query(text)
    if not text:
        return MatchResult("none", [], 0.0)
    guess = _likely_model(bot.pk)
    vector = (await _batcher(guess)).submit(text)  # encodes while the revision is checked
    snapshot = (
        _built(bot.pk, bot.kb_revision, bot.calibration_stamp, bot.embedding_model)
        if fresh_revision
        else None
    )
    if snapshot is None:
        snapshot = await _snapshot_shared(bot.pk)
    if snapshot.model != guess:  # the knowledge base changed language, or its first search
        vector = (await _batcher(snapshot.model)).submit(text)
    # A cached query's vector is ready at once: taken directly, since wrapping a finished
    # future still wakes the event loop through its self-pipe (a system call per message).
    try:
        query = vector.result() if vector.done() else await asyncio.wrap_future(vector)
    except Exception:
        log.warning("embedding the question failed; matching on its words alone", exc_info=True)
        return _result(bot, snapshot, snapshot.ranker.rank_lexical(text, k), started, lexical_only=True)
    ranked = await shared_ranking.rank_with_others(
        snapshot.ranker, query.vector, text, k, unknown=query.unknown
    )
    return _result(bot, snapshot, ranked, started)


def _likely_model(bot_id: int) -> str:
    """The model the bot's last index was built with (the default before its first)."""
    snapshot = _snapshots().by_bot.get(bot_id)
    return snapshot.model if snapshot is not None else embeddings.model_name()


async def _batcher(model: str) -> embeddings.QueryBatcher:
    return embeddings.loaded_batcher(model) or await asyncio.to_thread(embeddings.get_batcher, model)


async def _snapshot_shared(bot_id: int) -> Snapshot:
    """``snapshot_for`` for concurrent async callers: callers that arrive while a check for
    the same bot is under way share its result instead of queueing a read each (the
    database thread is one thread). A shared read is at most one query's time old.

    The read runs as a task of its own, so the caller that started it can be cancelled
    (its visitor left) without failing the others waiting for it."""
    return await shared_read(_snapshots().reads, bot_id, snapshot_for)
