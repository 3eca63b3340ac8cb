"""Vector search behind a small interface.

``PhrasingMatrix`` is the in-process backend: one float32 matrix of normalised phrasing
vectors per bot, searched exactly with one matrix-vector product; an entry's score is
its best phrasing's score. A database backend (pgvector) can implement the same
``search`` contract later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class EntryScores:
    """Scores of every entry for one query, best first."""

    entry_ids: np.ndarray  # int64, sorted by score descending
    scores: np.ndarray  # float32, best phrasing cosine per entry


class VectorIndex(Protocol):
    def __len__(self) -> int: ...

    def search(self, query: np.ndarray, k: int) -> EntryScores: ...


class PhrasingMatrix:
    """Exact top-k over phrasing vectors grouped by entry."""

    def __init__(self, entry_ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(entry_ids) != len(vectors):
            raise ValueError("one entry id per vector")
        order = np.argsort(entry_ids, kind="stable")
        self.entry_of_row = np.ascontiguousarray(entry_ids[order], dtype=np.int64)
        self.matrix = np.ascontiguousarray(vectors[order], dtype=np.float32)
        if len(self.entry_of_row):
            boundaries = np.flatnonzero(np.diff(self.entry_of_row)) + 1
            self.group_starts = np.concatenate(([0], boundaries)).astype(np.int64)
        else:
            self.group_starts = np.zeros(0, dtype=np.int64)
        self.entries = self.entry_of_row[self.group_starts]
        # Phrasings per entry.
        self.group_sizes = np.diff(np.append(self.group_starts, len(self.entry_of_row)))
        self.dim = self.matrix.shape[1] if self.matrix.ndim == 2 else 0

    def __len__(self) -> int:
        return len(self.matrix)

    @property
    def entry_count(self) -> int:
        return len(self.entries)

    def phrasing_scores(self, query: np.ndarray) -> np.ndarray:
        return self.matrix @ query.astype(np.float32, copy=False)

    def search(self, query: np.ndarray, k: int) -> EntryScores:
        if not len(self.matrix):
            empty = np.zeros(0)
            return EntryScores(empty.astype(np.int64), empty.astype(np.float32))
        sims = self.phrasing_scores(query)
        best = np.maximum.reduceat(sims, self.group_starts)
        k = min(k, len(best))
        top = np.argpartition(-best, k - 1)[:k] if k < len(best) else np.arange(len(best))
        top = top[np.argsort(-best[top], kind="stable")]
        return EntryScores(self.entries[top], best[top])
