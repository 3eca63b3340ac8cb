"""One bot's passages in memory, scored for queries (pure numpy; no database).

A passage is scored as an entry's phrasing is (``knowledge.ranking``): its cosine to the
question, blended with the BM25 score by the same weight (``Ranker.lexical_weight``: the
share of the question the model can't read, in blend mode), and a question in a
bilingual help center meets only the passages in its own script.

The confidence features are ``knowledge.confidence.FEATURES``, read for passages:

- best: the passage's blended score;
- whole: its page's centroid (the mean of the page's passages), blended the same way:
  how much the page as a whole is about the question;
- margin: the passage's score minus the best passage of any *other* page. Consecutive
  passages of one page overlap, so a margin to the next passage would call every
  well-matched section ambiguous;
- lexical, unknown: as for entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from knowledge.confidence import MARGIN_CLIP
from knowledge.lexical import BM25, is_cjk
from knowledge.ranking import ABSENT, LEXICAL_NULL_SCORE, LEXICAL_WEIGHT, Mode, softmax_share

# When a script's passages are too few to fit on: a softmax share against a virtual "none"
# page scoring what unrelated questions score (``retrieval_fit``), else this cosine (a
# question and the passage answering it score about 0.5-0.7 with all-MiniLM-L6-v2,
# unrelated ones 0.0-0.25; other models' scales differ, hence the measured null).
PASSAGE_NULL_SCORE = 0.45
CHUNK = 256  # queries scored at once when calibrating (256 x 100,000 floats: 100 MB)


@dataclass(frozen=True)
class PassageRow:
    """What a search returns of a passage (kept in memory with its vector)."""

    passage_id: int
    source_id: int
    title: str
    url: str
    headings: tuple[str, ...]
    text: str

    def lexical_text(self) -> str:
        return " ".join([self.title, *self.headings, self.text])


@dataclass(frozen=True)
class PassageHit:
    passage_id: int
    source_id: int
    title: str
    url: str
    headings: tuple[str, ...]
    text: str
    score: float  # blended similarity (cosine scale)
    confidence: float  # calibrated probability that the passage's page answers the question


def hit(row: PassageRow, score: float, confidence: float) -> PassageHit:
    return PassageHit(
        passage_id=row.passage_id,
        source_id=row.source_id,
        title=row.title,
        url=row.url,
        headings=row.headings,
        text=row.text,
        score=round(score, 4),
        confidence=round(confidence, 4),
    )


@dataclass(frozen=True)
class Scored:
    """Scores of a block of queries against every passage."""

    score: np.ndarray  # queries x passages, blended (ABSENT: left out)
    lexical: np.ndarray  # queries x passages, in [0, 1]
    whole: np.ndarray  # queries x pages, the page centroid blended
    unknowns: np.ndarray  # per query


class PassageIndex:
    """A bot's passages (rows grouped by page, in the order given) and their vectors."""

    def __init__(self, rows: Sequence[PassageRow], vectors: np.ndarray, *, mode: Mode = "blend") -> None:
        order = sorted(range(len(rows)), key=lambda i: rows[i].source_id)  # stable: positions kept
        self.rows = [rows[i] for i in order]
        dim = vectors.shape[1] if vectors.ndim == 2 else 0
        matrix = np.asarray(vectors, dtype=np.float32).reshape(len(rows), dim)[order]
        self.matrix = np.ascontiguousarray(_normalise(matrix))
        self.mode = mode
        sources = np.array([r.source_id for r in self.rows], dtype=np.int64)
        if len(sources):
            self.page_starts = np.concatenate(([0], np.flatnonzero(np.diff(sources)) + 1)).astype(np.int64)
        else:
            self.page_starts = np.zeros(0, dtype=np.int64)
        self.page_of_row = np.repeat(
            np.arange(len(self.page_starts)), np.diff([*self.page_starts, len(sources)])
        )
        sums = np.add.reduceat(self.matrix, self.page_starts, axis=0) if len(sources) else self.matrix[:0]
        self.centroids = np.ascontiguousarray(_normalise(sums), dtype=np.float32)
        self.row_cjk = np.array([is_cjk(r.text) for r in self.rows], dtype=bool)
        self.bilingual = bool(self.row_cjk.any() and not self.row_cjk.all())
        texts = [r.lexical_text() for r in self.rows]
        self.bm25 = BM25(texts) if mode != "vector" and texts else None
        self._body_bm25: BM25 | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def dim(self) -> int:
        return self.matrix.shape[1]

    @property
    def page_count(self) -> int:
        return len(self.page_starts)

    def lexical_weight(self, unknown: float) -> float:
        if self.mode != "blend":
            return 0.0 if self.mode == "vector" else 1.0
        return LEXICAL_WEIGHT + (1 - LEXICAL_WEIGHT) * min(max(unknown, 0.0), 1.0)

    def scored(
        self,
        queries: np.ndarray | None,
        texts: Sequence[str],
        unknowns: Sequence[float],
        *,
        body_only: bool = False,
    ) -> Scored:
        """Scores of ``texts`` (vectors: rows of ``queries``; None: words alone, as if the
        model could read none of them). ``body_only``: the lexical score against the
        passages' text without their titles and headings (for questions made of those)."""
        n = len(texts)
        words_alone = queries is None or self.dim == 0
        unknown = np.ones(n, np.float32) if words_alone else np.asarray(unknowns, np.float32)
        lexical = self._lexical(texts, self.body_bm25() if body_only else self.bm25)
        weights = np.array([self.lexical_weight(u) for u in unknown], dtype=np.float32)[:, None]
        if words_alone:  # no question vector, or no passage vectors
            cosine = np.zeros((n, len(self)), np.float32)
            centroid = np.zeros((n, self.page_count), np.float32)
        else:
            queries = _normalise(np.asarray(queries, dtype=np.float32).reshape(n, -1))
            cosine, centroid = queries @ self.matrix.T, queries @ self.centroids.T
        score = (1 - weights) * cosine + weights * lexical
        whole = (1 - weights) * centroid + weights * np.maximum.reduceat(lexical, self.page_starts, axis=1)
        if self.bilingual:  # each question against the passages in its own script
            other = self.row_cjk[None, :] != np.array([is_cjk(t) for t in texts])[:, None]
            score[other] = ABSENT
        return Scored(score, lexical, whole, unknown)

    def body_bm25(self) -> BM25 | None:
        if self._body_bm25 is None and self.bm25 is not None:
            self._body_bm25 = BM25([r.text for r in self.rows])
        return self._body_bm25

    def _lexical(self, texts: Sequence[str], bm25: BM25 | None) -> np.ndarray:
        if bm25 is None:
            return np.zeros((len(texts), len(self)), np.float32)
        scores, totals = bm25.scores_many(texts)
        return np.clip(scores / np.maximum(totals, 1e-6)[:, None], 0.0, 1.0).astype(np.float32)


def top_rows(score: np.ndarray, k: int) -> np.ndarray:
    """Per query, the ``k`` best passages (row indices), best first; ABSENT ones as -1."""
    k = min(k, score.shape[1])
    if k == 0:
        return np.zeros((len(score), 0), dtype=np.int64)
    part = (
        np.argpartition(-score, k - 1, axis=1)[:, :k]
        if k < score.shape[1]
        else np.tile(np.arange(k), (len(score), 1))
    )
    picked = np.take_along_axis(score, part, axis=1)
    order = np.argsort(-picked, axis=1, kind="stable")
    rows = np.take_along_axis(part, order, axis=1)
    return np.where(np.take_along_axis(score, rows, axis=1) > ABSENT / 2, rows, -1)


def features(index: PassageIndex, scored: Scored, rows: np.ndarray) -> np.ndarray:
    """``FEATURES`` of the passages ``rows`` (queries x k, -1 for none) of each query:
    queries x k x 5 (zeros where there is no passage)."""
    n, k = rows.shape
    out = np.zeros((n, k, 5), dtype=np.float32)
    if not len(index) or k == 0:
        return out
    page_best = np.maximum.reduceat(scored.score, index.page_starts, axis=1)
    if page_best.shape[1] > 1:
        top_two = np.sort(np.partition(page_best, page_best.shape[1] - 2, axis=1)[:, -2:], axis=1)
    else:
        top_two = np.column_stack([np.zeros(n), page_best[:, 0]])
    safe = np.where(rows >= 0, rows, 0)
    pages = index.page_of_row[safe]
    score = np.take_along_axis(scored.score, safe, axis=1)
    own_page_best = np.take_along_axis(page_best, pages, axis=1)
    other = np.where(own_page_best >= top_two[:, 1:2], top_two[:, 0:1], top_two[:, 1:2])
    other = np.where(other > ABSENT / 2, other, 0.0)  # no other page in the question's script
    out[..., 0] = score
    out[..., 1] = np.take_along_axis(scored.whole, pages, axis=1)
    out[..., 2] = np.clip(score - other, -MARGIN_CLIP, MARGIN_CLIP)
    out[..., 3] = np.take_along_axis(scored.lexical, safe, axis=1)
    out[..., 4] = scored.unknowns[:, None]
    return np.where((rows >= 0)[..., None], out, 0.0)


def uncalibrated(
    index: PassageIndex, scored: Scored, rows: np.ndarray, null_score: float = PASSAGE_NULL_SCORE
) -> np.ndarray:
    """Confidence without a fit: each page's share of a softmax over the pages' best
    passages and a virtual "none" page at ``null_score`` (``knowledge.ranking.softmax_share``)."""
    page_best = np.maximum.reduceat(scored.score, index.page_starts, axis=1)
    out = np.zeros(rows.shape, dtype=np.float64)
    for q in range(len(rows)):
        weight = index.lexical_weight(float(scored.unknowns[q]))
        null = (1 - weight) * null_score + weight * LEXICAL_NULL_SCORE
        share = softmax_share(page_best[q], null)
        valid = rows[q] >= 0
        out[q, valid] = share[index.page_of_row[rows[q][valid]]]
    return out


def _normalise(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)
