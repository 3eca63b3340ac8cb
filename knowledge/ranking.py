"""From a query to ranked entries with a confidence (pure numpy; no database).

Scores: each entry's best phrasing cosine, computed after a within-entry whitening
learned from the knowledge base's own phrasings (it stretches the directions in which
entries differ and shrinks those in which one entry's phrasings vary), optionally
blended with a BM25 lexical score.

Confidence: a softmax over entry scores that includes a virtual "none of these"
competitor at score ``NULL_SCORE``. A best entry far ahead of the rest *and* well above
the null gets a confidence near 1; a query close to several entries, or to none, gets a
low one. Thresholds (Bot.answer_threshold / reference_threshold) are on this scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from knowledge.index import PhrasingMatrix
from knowledge.lexical import BM25

Mode = Literal["vector", "lexical", "blend"]

TEMPERATURE = 0.05
NULL_SCORE = 0.5
WHITENING_SHRINK = 0.5
# Blend weight of the lexical score: this much always, plus the share of the query the
# embedding model can't read. 0 measured best on English (bench/bench_kb_quality.py).
LEXICAL_WEIGHT = 0.0


@dataclass(frozen=True)
class Ranked:
    entry_id: int
    score: float  # the blended similarity (cosine scale)
    similarity: float  # best-phrasing cosine, before whitening
    lexical: float  # BM25 / query idf, clipped to [0, 1]
    confidence: float  # softmax share, the value thresholds apply to


def whitening(entry_ids: np.ndarray, vectors: np.ndarray, shrink: float = WHITENING_SHRINK) -> np.ndarray:
    """A symmetric matrix W = (Sw + shrink * mean_eig * I)^-1/2 from within-entry scatter.

    With one phrasing per entry the scatter is zero and W is a multiple of the identity,
    i.e. no change after normalisation.
    """
    dim = vectors.shape[1]
    if len(vectors) == 0:
        return np.eye(dim, dtype=np.float32)
    uniques, inverse = np.unique(entry_ids, return_inverse=True)
    sums = np.zeros((len(uniques), dim), dtype=np.float64)
    np.add.at(sums, inverse, vectors)
    counts = np.bincount(inverse).astype(np.float64)[:, None]
    residuals = vectors - (sums / counts)[inverse]
    scatter = residuals.T @ residuals / len(vectors)
    eigenvalues, eigenvectors = np.linalg.eigh(scatter)
    eigenvalues = np.clip(eigenvalues, 0, None)
    ridge = shrink * max(float(eigenvalues.mean()), 1e-6)
    return ((eigenvectors / np.sqrt(eigenvalues + ridge)) @ eigenvectors.T).astype(np.float32)


def _normalise(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


@dataclass
class Ranker:
    """Everything needed to rank one knowledge base's entries for a query."""

    entry_ids: np.ndarray
    texts: list[str]
    vectors: np.ndarray
    mode: Mode = "vector"
    whiten: bool = True
    transform: np.ndarray = field(init=False)
    plain: PhrasingMatrix = field(init=False)
    whitened: PhrasingMatrix = field(init=False)
    bm25: BM25 | None = field(init=False)

    def __post_init__(self) -> None:
        self.entry_ids = np.asarray(self.entry_ids, dtype=np.int64)
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim != 2:  # e.g. a flat list; an empty (0, dim) matrix stays as it is
            self.vectors = self.vectors.reshape(len(self.entry_ids), -1)
        self.plain = PhrasingMatrix(self.entry_ids, self.vectors)
        dim = self.vectors.shape[1]
        self.transform = (
            whitening(self.entry_ids, self.vectors) if self.whiten else np.eye(dim, dtype=np.float32)
        )
        self.whitened = PhrasingMatrix(self.entry_ids, _normalise(self.vectors @ self.transform))
        # Rows of the BM25 matrix follow the plain matrix's (entry-sorted) row order.
        order = np.argsort(self.entry_ids, kind="stable")
        self.bm25 = BM25([self.texts[i] for i in order]) if self.mode != "vector" and self.texts else None

    @property
    def entry_count(self) -> int:
        return self.plain.entry_count

    def rank(self, query: np.ndarray, text: str, k: int = 5, *, unknown: float = 0.0) -> list[Ranked]:
        """Top ``k`` entries. ``unknown`` is the share of the query the embedding model
        could not read ([UNK] tokens); in blend mode it shifts weight to the lexical score."""
        matrix = self.whitened
        if not len(matrix):
            return []
        whitened = matrix.phrasing_scores(_normalise(query @ self.transform))
        weight = LEXICAL_WEIGHT + (1 - LEXICAL_WEIGHT) * min(max(unknown, 0.0), 1.0)
        lexical = self._lexical(text, len(whitened))
        if self.mode == "vector":
            combined = whitened
        elif self.mode == "lexical":
            combined = lexical
        else:
            combined = (1 - weight) * whitened + weight * lexical if weight > 0 else whitened
        starts = matrix.group_starts
        entry_scores = np.maximum.reduceat(combined, starts)
        confidence = self._confidence(entry_scores)
        k = min(k, len(entry_scores))
        top = np.argpartition(-entry_scores, k - 1)[:k] if k < len(entry_scores) else np.arange(k)
        top = top[np.argsort(-entry_scores[top], kind="stable")]
        ends = np.append(starts[1:], len(combined))
        return [
            Ranked(
                entry_id=int(matrix.entries[g]),
                score=float(entry_scores[g]),
                # Plain cosine, for people reading scores: only for the few entries returned.
                similarity=float((self.plain.matrix[starts[g] : ends[g]] @ query).max()),
                lexical=float(lexical[starts[g] : ends[g]].max()),
                confidence=float(confidence[g]),
            )
            for g in top
        ]

    def _lexical(self, text: str, rows: int) -> np.ndarray:
        if self.bm25 is None:
            return np.zeros(rows, dtype=np.float32)
        scores, total_idf = self.bm25.scores(text)
        return np.clip(scores / max(total_idf, 1e-6), 0.0, 1.0).astype(np.float32)

    @staticmethod
    def _confidence(entry_scores: np.ndarray) -> np.ndarray:
        top = max(float(entry_scores.max()), NULL_SCORE)
        weights = np.exp((entry_scores - top) / TEMPERATURE)
        null = np.exp((NULL_SCORE - top) / TEMPERATURE)
        return weights / (weights.sum() + null)
