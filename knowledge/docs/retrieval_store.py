"""The database side of passage retrieval: each bot's passages in memory, and their fit.

Each process keeps one ``Searchable`` per bot in the runtime (``PassageIndexes``), tagged
with the revision of what it serves (``served_revision``: the bot's documents revision,
bumped whenever its passages or their vectors change, and the settings the fit depends
on); a search reads that revision and rebuilds the index only when it changed. The first
fit is made with the first index; later ones run on a background thread (``PassageFits``)
while the previous fit serves. Every stored passage is served: passages exist only once
their source was indexed, and a source that fails to re-fetch keeps its previous ones.
Sync functions: async callers run them with ``database_sync_to_async``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, replace

import numpy as np
from django.conf import settings
from django.db.models import Count

from chatbot.models import Bot
from chatbot.runtime import runtime
from knowledge import calibration_services, embeddings
from knowledge.calibration_services import Runner
from knowledge.docs.retrieval_fit import Fits, fit_passages
from knowledge.docs.retrieval_index import (
    PASSAGE_NULL_SCORE,
    PassageHit,
    PassageIndex,
    PassageRow,
    features,
    hit,
    top_rows,
    uncalibrated,
)
from knowledge.docs.services_index import documents_model
from knowledge.document_models import Passage, PassageEmbedding
from knowledge.query_batcher import QueryVector

log = logging.getLogger(__name__)

# The bot's documents revision, its model setting, the default model, the target precision.
Revision = tuple[int, str, str, float]
TARGET = 3
# Without a fit: the softmax share a page needs (likelier than none of them).
UNCALIBRATED_THRESHOLD = 0.5


@dataclass(frozen=True)
class Searchable:
    """One bot's passages as of ``revision``, and the fit that judges them."""

    bot_id: int
    revision: Revision
    model: str
    index: PassageIndex
    fitted: Fits | None  # None: no passages, or not fitted yet

    def hits(self, query: QueryVector | None, text: str, limit: int) -> list[PassageHit]:
        """The passages judged relevant to ``text`` (None: its vector failed; words alone)."""
        index = self.index
        vectors = None if query is None else np.asarray(query.vector)[None, :]
        scored = index.scored(vectors, [text], [query.unknown if query is not None else 1.0])
        rows = top_rows(scored.score, limit)
        fits = self.fitted
        fitted = fits.for_text(text) if fits is not None else None
        if fitted is not None:
            confidence = fitted.calibrator.probability(features(index, scored, rows)[0])
            threshold = fitted.threshold
        else:  # a page must then be likelier than none
            null = fits.null_for(text) if fits is not None else None
            confidence = uncalibrated(index, scored, rows, null or PASSAGE_NULL_SCORE)[0]
            threshold = UNCALIBRATED_THRESHOLD
        rows, score = rows[0], scored.score[0]
        if not len(rows) or rows[0] < 0 or confidence[0] < threshold:
            return []  # judged on the best passage, as a question is on its best entry
        return [
            hit(index.rows[row], float(score[row]), float(confidence[n]))
            for n, row in enumerate(rows)
            if row >= 0 and confidence[n] >= threshold
        ]


class PassageIndexes:
    """The runtime's passage index of each bot (a runtime part)."""

    def __init__(self) -> None:
        self.by_bot: dict[int, Searchable] = {}
        self.reads: dict[tuple[int, int], asyncio.Task[Searchable]] = {}
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, bot_id: int) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(bot_id, threading.Lock())


class PassageFits(Runner):
    """Passage fits after the first, one at a time on a background thread (a runtime part)."""


def _indexes() -> PassageIndexes:
    return runtime().part(PassageIndexes)


def served_revision(bot_id: int) -> Revision:
    """What the bot's served passages and their fit depend on (one indexed read)."""
    docs, configured, target = (
        Bot.objects.filter(pk=bot_id)
        .values_list("docs_revision", "embedding_model", "target_precision")
        .get()
    )
    return (docs, configured, embeddings.model_name(), target)


def searchable_for(bot_id: int) -> Searchable:
    """The bot's index at its current revision: the one in memory, or a new one."""
    revision = served_revision(bot_id)
    indexes = _indexes()
    found = indexes.by_bot.get(bot_id)
    if found is not None and found.revision == revision:
        return found
    with indexes.lock(bot_id):  # one build per bot at a time; the others wait and reuse it
        found = indexes.by_bot.get(bot_id)
        if found is not None and found.revision == revision:
            return found
        built = _build(bot_id, revision)
        first = found is None or found.fitted is None or found.model != built.model
        if len(built.index) and (first or not settings.KB_AUTO_CALIBRATE):
            built = replace(built, fitted=_fit_or_none(built))
        elif len(built.index):  # the previous fit serves until the new one is made
            built = replace(built, fitted=found.fitted)
            runtime().part(PassageFits).schedule(bot_id, lambda: _refit(built))
        indexes.by_bot[bot_id] = built
        return built


def fit(searchable: Searchable, *, target: float) -> Fits:
    """The fits of ``searchable``'s passages (bounded: about a second for 5,000)."""
    encoder = embeddings.get_encoder(searchable.model)
    fitted = fit_passages(
        searchable.index,
        encode=lambda texts: embeddings.encode_documents(texts, searchable.model),
        unknown=encoder.unknown_fraction,
        reference=calibration_services.reference_for(searchable.model),
        target=target,
    )
    for cjk, one in fitted.by_script.items():
        log.info(
            "passages of bot %s calibrated (%s) in %.2fs: threshold %.3f %s",
            searchable.bot_id,
            "CJK" if cjk else "other scripts",
            one.seconds,
            one.threshold,
            one.counts,
        )
    return fitted


def _fit_or_none(searchable: Searchable) -> Fits | None:
    """``fit``, or None if the model fails (searches then judge by the default null)."""
    try:
        return fit(searchable, target=searchable.revision[TARGET])
    except Exception:  # the model could not load or encode: search anyway, by words if need be
        log.warning("fitting the passages of bot %s failed", searchable.bot_id, exc_info=True)
        return None


def _refit(searchable: Searchable) -> None:
    fitted = fit(searchable, target=searchable.revision[TARGET])
    indexes = _indexes()
    with indexes.lock(searchable.bot_id):
        current = indexes.by_bot.get(searchable.bot_id)
        if current is not None and current.index is searchable.index:  # not rebuilt meanwhile
            indexes.by_bot[searchable.bot_id] = replace(current, fitted=fitted)


def _build(bot_id: int, revision: Revision) -> Searchable:
    passages = list(
        Passage.objects.filter(bot_id=bot_id)
        .order_by("source_id", "position")
        .values_list(
            "id", "source_id", "title", "headings", "text", "source__url", "source__title", "source__filename"
        )
    )
    rows = [
        PassageRow(pid, sid, title or source_title or filename or url, url, tuple(headings or ()), text)
        for pid, sid, title, headings, text, url, source_title, filename in passages
    ]
    model = _model(bot_id)
    blobs = dict(
        PassageEmbedding.objects.filter(passage__bot_id=bot_id, model_name=model).values_list(
            "passage_id", "vector"
        )
    )
    dim = next((len(bytes(b)) // 4 for b in blobs.values()), 0)  # 0: none yet, words alone
    vectors = np.zeros((len(rows), dim), dtype=np.float32)
    for n, row in enumerate(rows):  # a passage without a vector yet is found by its words alone
        blob = blobs.get(row.passage_id)
        if blob is not None and len(blob) == dim * 4:
            vectors[n] = np.frombuffer(bytes(blob), dtype="<f4")
    index = PassageIndex(rows, vectors, mode=settings.KB_MATCH_MODE)
    return Searchable(bot_id, revision, model, index, None)


def _model(bot_id: int) -> str:
    """The model the passages were embedded with: the bot's passage model
    (``documents_model``) if they have its vectors, else the one most of them have (until
    they are embedded again)."""
    preferred = documents_model(bot_id)
    stored = (
        PassageEmbedding.objects.filter(passage__bot_id=bot_id)
        .values("model_name")
        .annotate(n=Count("id"))
        .order_by("-n")
    )
    names = [row["model_name"] for row in stored]
    return preferred if not names or preferred in names else names[0]
