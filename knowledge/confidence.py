"""A calibrated confidence: the probability that an entry is the right answer to a query.

Each (query, entry) pair is described by a few signals the ranker computes anyway
(``FEATURES``); a logistic model maps them to a probability. The model is fitted per
knowledge base by ``knowledge.calibration`` from the knowledge base itself (its own
phrasings as queries, and questions it should not answer), so the same number means the
same thing for a 20-entry shop and a 5,000-entry bank: a threshold of 0.9 answers when
about nine in ten such answers are right.

Pure numpy: fitting is a few Newton steps on at most tens of thousands of rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# Per (query, entry):
# - best: the entry's best phrasing (cosine after whitening, blended with the lexical
#   score as the ranker blends it);
# - whole: the cosine to the entry's centroid (agreement of its phrasings);
# - margin: the entry's score minus the best other entry's (negative below the top);
# - lexical: the share of the query's words found in the entry's best phrasing (BM25);
# - unknown: the share of the query the embedding model can't read.
FEATURES = ("best", "whole", "margin", "lexical", "unknown")
# Entries have two more, from the entry's answer (encoded as a passage):
# - answer: the cosine between the query and the entry's answer;
# - answer_margin: that cosine minus the best other entry's answer cosine.
# A visitor's wording may be far from every stored phrasing yet close to what the answer
# says ("how long is the return window?" / "You can return most items within 30 days"),
# and a question that only looks like a sibling entry's phrasings is usually answered
# better by some other answer than by that sibling's. Both are 0 for a knowledge base
# without answer vectors. Passages (knowledge.docs) use FEATURES alone.
ENTRY_FEATURES = (*FEATURES, "answer", "answer_margin")
MARGIN_CLIP = 0.3
RIDGE = 1e-2  # L2 penalty on standardised coefficients: keeps a small fit from overreaching
NEWTON_STEPS = 50


def entry_features(
    best: np.ndarray,
    whole: np.ndarray,
    score: np.ndarray,
    lexical: np.ndarray,
    unknown: float,
    rows: np.ndarray,
    answer: np.ndarray | None = None,
) -> np.ndarray:
    """One row of ``ENTRY_FEATURES`` for each entry in ``rows`` of one query (the arrays are
    indexed by entry; the margins are against the best of all the other entries; ``answer``
    None: the knowledge base has no answer vectors, its columns are 0)."""
    n = len(score)
    if n > 1:
        top_two = np.partition(score, n - 2)[n - 2 :]
        second, first = float(top_two[0]), float(top_two[1])
        other_best = np.where(score[rows] >= first, second, first)
    else:
        other_best = np.zeros(len(rows), dtype=np.float32)
    margin = np.clip(score[rows] - other_best, -MARGIN_CLIP, MARGIN_CLIP)
    flags = np.full(len(rows), unknown, dtype=np.float32)
    own, answer_margin = answer_parts(None if answer is None else answer[None, :], rows[None, :])
    columns = [best[rows], whole[rows], margin, lexical[rows], flags, own[0], answer_margin[0]]
    return np.column_stack(columns).astype(np.float32)


def answer_parts(answer: np.ndarray | None, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For queries x entries answer cosines (``answer``) and queries x k entry positions
    (``rows``): each entry's answer cosine and its margin over the best other entry's, both
    queries x k (``answer`` None: zeros)."""
    if answer is None:
        zeros = np.zeros(rows.shape, dtype=np.float32)
        return zeros, zeros
    own = np.take_along_axis(answer, rows, axis=1)
    n = answer.shape[1]
    if n > 1:
        top_two = np.partition(answer, n - 2, axis=1)[:, n - 2 :]
        second, first = top_two[:, :1], top_two[:, 1:]
        other = np.where(own >= first, second, first)
    else:
        other = np.zeros(own.shape, dtype=np.float32)
    return own, np.clip(own - other, -MARGIN_CLIP, MARGIN_CLIP)


@dataclass(frozen=True)
class Calibrator:
    """``p = sigmoid(intercept + coef . (x - mean) / scale)`` over the first ``len(coef)``
    columns of ``ENTRY_FEATURES``: ``FEATURES``, or all of them (with the answer)."""

    coef: tuple[float, ...]
    intercept: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]

    @property
    def features(self) -> tuple[str, ...]:
        return ENTRY_FEATURES[: len(self.coef)]

    def probability(self, features: np.ndarray) -> np.ndarray:
        """For rows of at least ``self.features``' columns (further ones are not read)."""
        x = np.asarray(features, dtype=np.float64)[..., : len(self.coef)]
        z = (x - self.mean) / self.scale
        return _sigmoid(z @ np.asarray(self.coef) + self.intercept)

    def as_dict(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "mean": list(self.mean),
            "scale": list(self.scale),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator | None:
        """None when ``data`` was fitted on other features (an older version)."""
        names = list(data.get("features", [])) if data else []
        if names not in (list(FEATURES), list(ENTRY_FEATURES)):
            return None
        return cls(
            tuple(float(v) for v in data["coef"]),
            float(data["intercept"]),
            tuple(float(v) for v in data["mean"]),
            tuple(float(v) for v in data["scale"]),
        )


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


def fit(features: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> Calibrator:
    """Weighted logistic regression (ridge on standardised features), by Newton's method."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum() * len(y)  # the ridge means the same whatever the weights' scale
    mean = np.average(x, axis=0, weights=w)
    scale = np.sqrt(np.average((x - mean) ** 2, axis=0, weights=w))
    scale = np.where(scale > 1e-6, scale, 1.0)
    z = np.column_stack([np.ones(len(y)), (x - mean) / scale])
    theta = np.zeros(z.shape[1])
    penalty = RIDGE * len(y) * np.eye(z.shape[1])
    penalty[0, 0] = 0.0  # the intercept is not shrunk
    for _ in range(NEWTON_STEPS):
        p = _sigmoid(z @ theta)
        gradient = z.T @ (w * (p - y)) + penalty @ theta
        hessian = (z * (w * p * (1 - p))[:, None]).T @ z + penalty
        step = np.linalg.solve(hessian + 1e-9 * np.eye(len(theta)), gradient)
        theta -= step
        if np.abs(step).max() < 1e-7:
            break
    return Calibrator(
        tuple(float(v) for v in theta[1:]),
        float(theta[0]),
        tuple(float(v) for v in mean),
        tuple(float(v) for v in scale),
    )
