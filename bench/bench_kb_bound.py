"""How far re-scoring the shipped embedding models can go on banking77's false-answer target.

banking77 as bench_kb_quality.py builds it (10 phrasings per entry from train.csv, 15 of
the 77 intents out of the knowledge base, test.csv as the queries). For each shipped model
alone and for the mean of the cosines of two or three of them, and for scorers fitted on
the knowledge base's own samples (leave-one-out right/wrong, leave-the-entry-out wrong;
``knowledge.confidence.fit``) over more signals than the product's:

- top-1 accuracy of the in-scope queries;
- the coverage at the best threshold whose false-answer rate (out-of-scope queries
  answered) is at most 0.02, and at the best whose precision is at least 0.95: thresholds
  chosen **on the test labels**, so an upper bound on what any automatic threshold over
  that score can reach (the issue's target: coverage 0.70 with both).

Cosines here are plain (no whitening, no lexical blend): the product's own confidence is
in bench_kb_quality.py. Signals: best phrasing cosine, margin to the second entry, cosine to
the entry's mean, how tight the entry is (mean cosine of its phrasings to each other), the
share of the five nearest phrasings that belong to the best entry, the length of the query's
projection onto the span of the best entry's phrasings (how much of it they explain
together), and, for all-MiniLM-L6-v2 alone, token alignment: BERTScore-style F1 of the
query's and the best entry's phrasings' token vectors (each token matched to its most
similar token on the other side), at its best phrasing.

Run: .venv/bin/python bench/bench_kb_bound.py (about three minutes here)
"""

from __future__ import annotations

import itertools
import random
import time

import numpy as np
from _setup import setup

setup()

from bench_kb_quality import phrasings_by_intent, read_banking77  # noqa: E402

from knowledge import multilingual_models  # noqa: E402
from knowledge.confidence import fit  # noqa: E402
from knowledge.embeddings import DEFAULT_MODEL, get_encoder, trainable_model  # noqa: E402

MODELS = (DEFAULT_MODEL, multilingual_models.E5, multilingual_models.USE)
SHORT = {DEFAULT_MODEL: "MiniLM", multilingual_models.E5: "e5-small", multilingual_models.USE: "USE"}
FAR, PRECISION = 0.02, 0.95
ABSENT = -9.0


def banking77(k: int = 10) -> tuple[list[list[str]], list[str], np.ndarray]:
    train, test = read_banking77("train"), read_banking77("test")
    intents = sorted({r["category"] for r in train})
    left_out = set(random.Random(0).sample(intents, 15))
    kept = [i for i in intents if i not in left_out]
    by_intent = phrasings_by_intent(train)
    pick = random.Random(k)
    kb = [pick.sample(by_intent[i], k) for i in kept]
    expected = np.array([kept.index(r["category"]) if r["category"] in kept else -1 for r in test])
    return kb, [r["text"] for r in test], expected


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


class Space:
    """The knowledge base's phrasings in one model's space (or a mean of several)."""

    #: Singular values below this share of an entry's largest add no direction to its span.
    RANK_TOLERANCE = 1e-3

    def __init__(self, kb: list[list[str]], phrasings: np.ndarray) -> None:
        self.entry = np.array([n for n, texts in enumerate(kb) for _ in texts])
        self.count = len(kb)
        self.vectors = phrasings
        self.starts = np.flatnonzero(np.r_[True, np.diff(self.entry) != 0])
        self.centroids = unit(np.add.reduceat(phrasings, self.starts, axis=0))
        within = phrasings @ phrasings.T
        np.fill_diagonal(within, np.nan)  # a phrasing's cosine to itself says nothing
        self.tightness = np.array(
            [np.nanmean(within[np.ix_(self.entry == e, self.entry == e)]) for e in range(self.count)]
        )
        self.bases = [self.basis(np.flatnonzero(self.entry == e)) for e in range(self.count)]

    def basis(self, rows: np.ndarray) -> np.ndarray:
        """Orthonormal rows spanning the phrasings ``rows``."""
        _, values, directions = np.linalg.svd(self.vectors[rows], full_matrices=False)
        return directions[values > self.RANK_TOLERANCE * values[0]]

    def span(self, queries: np.ndarray, top: np.ndarray, without: np.ndarray | None = None) -> np.ndarray:
        """Length of each query's projection onto its best entry's span (``without``: the
        phrasing row each query is, left out of its own entry's span)."""
        lengths = np.empty(len(queries), dtype=np.float32)
        for n, (query, entry) in enumerate(zip(queries, top, strict=True)):
            rows = np.flatnonzero(self.entry == entry)
            basis = self.bases[entry]
            if without is not None and without[n] in rows:
                basis = self.basis(rows[rows != without[n]])
            lengths[n] = np.linalg.norm(basis @ query)
        return lengths


def signals(
    space: Space,
    queries: np.ndarray,
    cosines: np.ndarray,
    centroid: np.ndarray,
    without: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's best entry, and its signal row (best, margin, whole, tightness, vote,
    span); ``without`` as ``Space.span``."""
    best = np.maximum.reduceat(cosines, space.starts, axis=1)
    top = best.argmax(axis=1)
    ordered = np.sort(best, axis=1)
    rows = np.arange(len(best))
    nearest = np.argsort(-cosines, axis=1)[:, :5]
    vote = (space.entry[nearest] == top[:, None]).mean(axis=1)
    features = np.column_stack(
        [
            ordered[:, -1],
            ordered[:, -1] - ordered[:, -2],
            centroid[rows, top],
            space.tightness[top],
            vote,
            space.span(queries, top, without),
        ]
    )
    return top, features.astype(np.float32)


def own_samples(space: Space) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Leave-one-out (right when the own entry is first) and leave-the-entry-out (wrong):
    signal rows, labels, and each sample's best entry and phrasing row (the query)."""
    cosines = space.vectors @ space.vectors.T
    np.fill_diagonal(cosines, ABSENT)
    centroid = space.vectors @ space.centroids.T
    own = np.arange(len(space.vectors))
    top, kept = signals(space, space.vectors, cosines, centroid, without=own)
    cosines[space.entry[:, None] == space.entry[None, :]] = ABSENT
    centroid[own, space.entry] = ABSENT
    other, left = signals(space, space.vectors, cosines, centroid)
    labels = np.r_[top == space.entry, np.zeros(len(left), bool)]
    return np.vstack([kept, left]), labels, np.r_[top, other], np.r_[own, own]


class Tokens:
    """Token vectors (unit length, without [CLS] and [SEP]) of all-MiniLM-L6-v2."""

    def __init__(self) -> None:
        self.model = trainable_model(DEFAULT_MODEL)

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        rows = self.model.encode(
            texts, output_value="token_embeddings", batch_size=64, convert_to_numpy=False
        )
        return [unit(row.numpy()[1:-1] if len(row) > 2 else row.numpy()) for row in rows]


def alignment(query: np.ndarray, phrasing: np.ndarray) -> float:
    """BERTScore-style F1: each token's best match on the other side, averaged both ways."""
    similarity = query @ phrasing.T
    recall, precision = similarity.max(axis=1).mean(), similarity.max(axis=0).mean()
    return float(2 * recall * precision / max(recall + precision, 1e-9))


def aligned(
    space: Space,
    queries: list[np.ndarray],
    phrasings: list[np.ndarray],
    top: np.ndarray,
    own: np.ndarray | None,
) -> np.ndarray:
    """Each query's best token alignment with a phrasing of its best entry (not itself)."""
    best = np.empty(len(queries), dtype=np.float32)
    for n, (query, entry) in enumerate(zip(queries, top, strict=True)):
        rows = [r for r in np.flatnonzero(space.entry == entry) if own is None or r != own[n]]
        best[n] = max(alignment(query, phrasings[r]) for r in rows)
    return best


def bound(score: np.ndarray, correct: np.ndarray, in_scope: np.ndarray) -> tuple[float, float]:
    """Coverage at the best threshold with false answers <= FAR, and with precision >= PRECISION."""
    order = np.argsort(-score)
    right = np.cumsum(correct[order])
    false = np.cumsum(~in_scope[order])
    coverage = right / in_scope.sum()
    far = false / max((~in_scope).sum(), 1)
    precision = right / np.arange(1, len(order) + 1)
    at_far = coverage[far <= FAR].max(initial=0.0)
    return float(at_far), float(coverage[precision >= PRECISION].max(initial=0.0))


SCORERS = (
    ("best cosine", [0]),
    ("fitted: best, margin", [0, 1]),
    ("fitted: + whole", [0, 1, 2]),
    ("fitted: + whole, tightness, vote", [0, 1, 2, 3, 4]),
    ("span of the entry", [5]),
    ("fitted: best, margin, span", [0, 1, 5]),
)
TOKEN_SCORERS = (("token alignment", [6]), ("fitted: best, margin, alignment", [0, 1, 6]))


def report(name: str, score: np.ndarray, correct: np.ndarray, in_scope: np.ndarray) -> None:
    at_far, at_precision = bound(score, correct, in_scope)
    print(f"    {name:<34} coverage {at_far:.3f} (false answers) / {at_precision:.3f} (precision)")


def scored(x: np.ndarray, y: np.ndarray, features: np.ndarray, columns: list[int]) -> np.ndarray:
    """One signal as it is, or several combined by a fit on the knowledge base's own samples."""
    if len(columns) == 1:
        return features[:, columns[0]]
    return fit(x[:, columns], y).probability(features[:, columns])


def main() -> None:
    started = time.perf_counter()
    kb, queries, expected = banking77()
    texts = [t for entry in kb for t in entry]
    in_scope = expected >= 0
    print(
        f"banking77: {len(kb)} entries x 10 phrasings, {len(queries)} queries "
        f"({int(in_scope.sum())} in scope); coverage at false answers <= {FAR} / at precision "
        f">= {PRECISION}, thresholds chosen on the test labels"
    )
    phrasings, asked = {}, {}
    for name in MODELS:
        encoder = get_encoder(name)
        phrasings[name], asked[name] = unit(encoder.encode(texts)), unit(encoder.encode(queries))
    combos = [c for r in (1, 2, 3) for c in itertools.combinations(MODELS, r)]
    for combo in combos:
        # The mean of the models' cosines is the cosine of their concatenated unit vectors.
        scale = 1 / np.sqrt(len(combo))
        space = Space(kb, np.hstack([phrasings[m] for m in combo]) * scale)
        query = np.hstack([asked[m] for m in combo]) * scale
        top, features = signals(space, query, query @ space.vectors.T, query @ space.centroids.T)
        correct = (top == expected) & in_scope
        x, y, own_top, own_rows = own_samples(space)
        label = " + ".join(SHORT[m] for m in combo)
        print(f"  {label:<32} top1 {correct.sum() / in_scope.sum():.3f}")
        scorers = SCORERS
        if combo == (DEFAULT_MODEL,):
            tokens = Tokens()
            kb_tokens, query_tokens = tokens.encode(texts), tokens.encode(queries)
            features = np.column_stack([features, aligned(space, query_tokens, kb_tokens, top, None)])
            own_tokens = [kb_tokens[r] for r in own_rows]
            leave_one_out = np.r_[own_rows[: len(texts)], np.full(len(texts), -1)]
            x = np.column_stack([x, aligned(space, own_tokens, kb_tokens, own_top, leave_one_out)])
            scorers = SCORERS + TOKEN_SCORERS
        for name, columns in scorers:
            report(name, scored(x, y, features, columns), correct, in_scope)
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
