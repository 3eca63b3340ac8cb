"""Calibrate a knowledge base's confidence from the knowledge base itself.

No labelled visitor question is needed. Three kinds of queries are made up:

- **in scope** (leave one out): each phrasing of an entry that has others, asked against
  the knowledge base without that phrasing: right when its own entry comes first. When
  some entries have a single phrasing, the shipped paraphrase pairs stand in for them
  (``knowledge/data/paraphrases``): their FAQ questions join the knowledge base and
  their paraphrases are asked against it.
- **in-domain, not answered** (leave the entry out): each phrasing asked against the
  knowledge base without its whole entry, i.e. a question of the company's own kind
  whose answer is not there. Its best entry is always wrong.
- **elsewhere**: the generic out-of-scope questions shipped in ``knowledge/data``
  (chit-chat, other domains, other businesses' questions, English and Chinese).

A logistic model (``knowledge.confidence``) is fitted on these, weighting in-scope
questions as ``IN_SCOPE_SHARE`` of traffic (leave-one-out and paraphrases in proportion
to the entries they stand for) and the two kinds of unanswerable ones as the rest, half
each. Reference texts are used only in the scripts the knowledge base is written in.

The answer threshold is the lowest confidence at which the estimated precision reaches
the bot's target; the reference threshold lets the company's answer reach the LLM for
``REFERENCE_RECALL`` of the in-scope questions whose right entry is among the first three.
Pure numpy over a ``Ranker``; the database side is ``knowledge.calibration_services``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from knowledge.confidence import ENTRY_FEATURES, FEATURES, MARGIN_CLIP, Calibrator, answer_parts, fit
from knowledge.lexical import is_cjk, plain_text
from knowledge.ranking import ABSENT, PHRASING_WEIGHT, Ranker

IN_SCOPE_SHARE = 0.5
NOT_ANSWERED_SHARE = 0.5  # of the questions it should not answer: in-domain ones (left out)
REFERENCE_RECALL = 0.9
MIN_IN_SCOPE = 10  # in-scope queries needed before a fit means anything
MIN_LEFT_OUT = 40  # below this many leave-one-out queries, the paraphrases fill in
OPTIMISTIC_SHARE = 0.5  # of entries with a single phrasing: the estimate is flagged (optimism_warning)
# Share of in-scope visitors assumed to type nearly a stored phrasing (a word short, in
# other case): leave-one-out has no such question, where no phrasing has a twin.
VERBATIM_SHARE = 0.1
MAX_VERBATIM = 100  # near-copies encoded (about 3 s with multilingual-e5-small here)
MAX_QUERIES = 10_000  # leave-one-out queries beyond this are sampled (bounds the time)
CHUNK = 512
GRID = sorted({round(0.01 * i, 2) for i in range(1, 100)} | {round(0.99 + 0.001 * i, 3) for i in range(10)})
CURVE_POINTS = [round(0.05 * i, 2) for i in range(1, 20)] + [0.99]
OUT_OF_SCOPE_DIR = Path(__file__).resolve().parent / "data" / "out_of_scope"

Encode = Callable[[Sequence[str]], np.ndarray]
Unknown = Callable[[str], float]


class CalibrationImpossible(ValueError):
    """The knowledge base is too small to learn anything from."""


@dataclass
class Calibration:
    calibrator: Calibrator
    answer_threshold: float | None  # None: no threshold reaches the target precision
    reference_threshold: float
    target_precision: float
    curve: list[dict[str, float]]  # threshold -> estimated precision and coverage
    confused: list[dict[str, Any]]  # pairs of entries whose phrasings rank the other first
    counts: dict[str, int]
    seconds: float = 0.0
    estimated: dict[str, float] = field(default_factory=dict)  # at the answer threshold


def out_of_scope_questions() -> list[str]:
    """The shipped generic out-of-scope questions (see knowledge/data/out_of_scope/SOURCE.md)."""
    texts: list[str] = []
    for path in sorted(OUT_OF_SCOPE_DIR.glob("*.txt")):
        texts.extend(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return texts


PARAPHRASES_DIR = Path(__file__).resolve().parent / "data" / "paraphrases"
LANGUAGE_SHARE = 0.1  # a script this common among the phrasings brings its reference texts


def paraphrase_pairs() -> list[tuple[str, str]]:
    """The shipped (FAQ question, visitor paraphrase) pairs (knowledge/data/paraphrases)."""
    pairs: list[tuple[str, str]] = []
    for path in sorted(PARAPHRASES_DIR.glob("*.tsv")):
        for line in path.read_text(encoding="utf-8").splitlines():
            question, _, paraphrase = line.partition("\t")
            if question.strip() and paraphrase.strip():
                pairs.append((question.strip(), paraphrase.strip()))
    return pairs


@dataclass(frozen=True)
class Reference:
    """The shipped texts, encoded by the model being calibrated: out-of-scope questions
    (negatives) and paraphrase pairs (in-scope examples for single-phrasing entries)."""

    negatives: np.ndarray
    negative_texts: list[str]
    questions: np.ndarray
    paraphrases: np.ndarray
    pairs: list[tuple[str, str]]

    @classmethod
    def encode(cls, encode: Encode) -> Reference:
        negatives, pairs = out_of_scope_questions(), paraphrase_pairs()
        vectors = encode([*negatives, *(q for q, _ in pairs), *(p for _, p in pairs)])
        return cls.from_vectors(vectors, negatives, pairs)

    @classmethod
    def from_vectors(
        cls, vectors: np.ndarray, negatives: list[str], pairs: list[tuple[str, str]]
    ) -> Reference:
        """From the vectors of the negatives, then the pairs' questions, then their paraphrases."""
        n, m = len(negatives), len(pairs)
        return cls(vectors[:n], negatives, vectors[n : n + m], vectors[n + m :], pairs)

    def for_languages(self, texts: Sequence[str]) -> Reference:
        """Only the reference texts in the scripts the knowledge base is written in."""
        share = float(np.mean([is_cjk(t) for t in texts])) if texts else 0.0
        wanted = ({True} if share >= LANGUAGE_SHARE else set()) | (
            {False} if share <= 1 - LANGUAGE_SHARE else set()
        )
        keep_neg = np.array([is_cjk(t) in wanted for t in self.negative_texts], dtype=bool)
        keep_pair = np.array([is_cjk(q) in wanted for q, _ in self.pairs], dtype=bool)
        return Reference(
            self.negatives[keep_neg],
            [t for t, k in zip(self.negative_texts, keep_neg, strict=True) if k],
            self.questions[keep_pair],
            self.paraphrases[keep_pair],
            [p for p, k in zip(self.pairs, keep_pair, strict=True) if k],
        )


@dataclass
class _Samples:
    features: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    top3: list[np.ndarray] = field(default_factory=list)

    def add(self, features: np.ndarray, labels: np.ndarray, top3: np.ndarray | None = None) -> None:
        self.features.append(features)
        self.labels.append(labels)
        self.top3.append(labels if top3 is None else top3)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.features:
            return np.zeros((0, len(ENTRY_FEATURES)), np.float32), np.zeros(0), np.zeros(0, bool)
        return np.vstack(self.features), np.concatenate(self.labels), np.concatenate(self.top3)


def _top_features(
    rows: np.ndarray,
    best: np.ndarray,
    whole: np.ndarray,
    lexical: np.ndarray,
    unknown: np.ndarray,
    answer: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """For the queries ``rows`` (a mask over the arrays' rows): each one's best entry, and its
    ENTRY_FEATURES row, as ``entry_features`` has it."""
    best, whole, lexical, unknown = best[rows], whole[rows], lexical[rows], unknown[rows]
    answer = None if answer is None else answer[rows]
    score = PHRASING_WEIGHT * best + (1 - PHRASING_WEIGHT) * whole
    order = np.argsort(-score, axis=1)[:, :3]
    rows = np.arange(len(score))
    top, second = order[:, 0], order[:, 1] if score.shape[1] > 1 else order[:, 0]
    margin = score[rows, top] - (score[rows, second] if score.shape[1] > 1 else 0.0)
    features = np.column_stack(
        [
            best[rows, top],
            whole[rows, top],
            np.clip(margin, -MARGIN_CLIP, MARGIN_CLIP),
            lexical[rows, top],
            unknown,
            *(column[:, 0] for column in answer_parts(answer, top[:, None])),
        ]
    ).astype(np.float32)
    return order, features


def leave_out(
    ranker: Ranker, unknowns: np.ndarray, rows: np.ndarray
) -> tuple[_Samples, _Samples, dict[tuple[int, int], list[int]]]:
    """Leave-one-out (in scope) and leave-the-entry-out (not answered) samples for
    ``rows`` (indices into the ranker's entry-sorted phrasings); confused entry pairs."""
    matrix = ranker.whitened.matrix
    starts = ranker.whitened.group_starts
    entry_of_row = np.repeat(np.arange(len(starts)), ranker.whitened.group_sizes)
    counts = ranker.whitened.group_sizes
    sums = np.add.reduceat(matrix, starts, axis=0).astype(np.float64)
    norms = np.linalg.norm(sums, axis=1)
    centroids = (sums / np.maximum(norms, 1e-12)[:, None]).astype(np.float32)
    texts = ranker.sorted_texts
    in_scope, not_answered = _Samples(), _Samples()
    confused: dict[tuple[int, int], list[int]] = {}  # (entry, entry ranked first) -> phrasing rows
    for begin in range(0, len(rows), CHUNK):
        chunk = rows[begin : begin + CHUNK]
        own = entry_of_row[chunk]
        local = np.arange(len(chunk))
        queries = matrix[chunk]
        phrasing = queries @ matrix.T
        # The query itself is not in the knowledge base. (A finite "minus infinity": blending
        # with a lexical weight of 0 must not give NaN.)
        phrasing[local, chunk] = ABSENT
        centroid = queries @ centroids.T
        answer = ranker.answer_similarity(ranker.plain.matrix[chunk])
        # The own entry's centroid without the query: (q.S - 1) / |S - q|.
        q_dot_sum = (queries.astype(np.float64) * sums[own]).sum(axis=1)
        rest = np.sqrt(np.maximum(norms[own] ** 2 - 2 * q_dot_sum + 1, 1e-12))
        centroid[local, own] = np.where(counts[own] > 1, (q_dot_sum - 1) / rest, ABSENT)
        lexical = _lexical(ranker, [texts[i] for i in chunk])
        if lexical is not None:
            lexical[local, chunk] = 0.0
        best, whole, lexical_best = _parts(ranker, phrasing, centroid, lexical, unknowns[chunk])
        if ranker.bilingual:  # each query against the entries in its own script, as live
            other = ranker.entry_cjk[None, :] != ranker.entry_cjk[own][:, None]
            best[other] = whole[other] = ABSENT
            if answer is not None:
                answer[other] = ABSENT
        keep = counts[own] > 1
        if keep.any():
            order, features = _top_features(keep, best, whole, lexical_best, unknowns[chunk], answer)
            right = order[:, 0] == own[keep]
            in_scope.add(features, right, (order == own[keep][:, None]).any(axis=1))
            wrong = zip(own[keep][~right], order[~right, 0], chunk[keep][~right], strict=True)
            for source, guessed, row in wrong:
                confused.setdefault((int(source), int(guessed)), []).append(int(row))
        best[local, own] = whole[local, own] = ABSENT  # now without the whole entry
        if answer is not None:
            answer[local, own] = ABSENT
        left = (best > ABSENT / 2).any(axis=1)  # some entry is left to be taken for it
        if left.any():
            _, features = _top_features(left, best, whole, lexical_best, unknowns[chunk], answer)
            not_answered.add(features, np.zeros(int(left.sum())))
    return in_scope, not_answered, confused


def _lexical(ranker: Ranker, texts: list[str]) -> np.ndarray | None:
    if ranker.bm25 is None:
        return None
    scores, totals = ranker.bm25.scores_many(texts)
    return np.clip(scores / np.maximum(totals, 1e-6)[:, None], 0.0, 1.0)


def _parts(
    ranker: Ranker,
    phrasing: np.ndarray,
    centroid: np.ndarray,
    lexical: np.ndarray | None,
    unknowns: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``Ranker.entry_parts`` for a block of queries, and the lexical score per entry."""
    starts = ranker.whitened.group_starts
    lexical = np.zeros_like(phrasing) if lexical is None else lexical
    lexical_best = np.maximum.reduceat(lexical, starts, axis=1)
    weights = np.array([ranker.lexical_weight(u) for u in unknowns], dtype=np.float32)[:, None]
    if ranker.mode == "lexical":
        return lexical_best, lexical_best.copy(), lexical_best
    best = np.maximum.reduceat((1 - weights) * phrasing + weights * lexical, starts, axis=1)
    whole = (1 - weights) * centroid + weights * lexical_best
    return best, whole, lexical_best


def _ranked_samples(ranker: Ranker, vectors: np.ndarray, texts: Sequence[str], unknowns: Sequence[float]):
    """Features of the best entry, and the entries ranked first to third, for live-style queries."""
    results = ranker.rank_many(vectors, texts, 3, unknowns=unknowns)
    features = np.array([r[0].features for r in results], dtype=np.float32)
    ranked = [[x.entry_id for x in r] for r in results]
    return features, ranked


def _paraphrase_samples(ranker: Ranker, reference: Reference, unknown: Unknown) -> _Samples:
    """In-scope samples for knowledge bases with single-phrasing entries: the shipped FAQ
    questions join the knowledge base as entries of their own, and their paraphrases are
    asked against it (right when their own question comes first, not one of the bot's)."""
    samples = _Samples()
    if not reference.pairs:
        return samples
    base = int(ranker.entry_ids.max()) + 1 if len(ranker.entry_ids) else 0
    synthetic = np.arange(base, base + len(reference.pairs), dtype=np.int64)
    joined = Ranker(
        np.concatenate([ranker.entry_ids, synthetic]),
        [*ranker.texts, *(q for q, _ in reference.pairs)],
        np.vstack([ranker.vectors, reference.questions]),
        mode=ranker.mode,
        fixed_transform=ranker.transform,  # the bot's own whitening, not one skewed by these
    )
    texts = [p for _, p in reference.pairs]
    features, ranked = _ranked_samples(joined, reference.paraphrases, texts, [unknown(t) for t in texts])
    right = np.array([r[0] == e for r, e in zip(ranked, synthetic, strict=True)])
    top3 = np.array([e in r for r, e in zip(ranked, synthetic, strict=True)])
    samples.add(features, right, top3)
    return samples


def _weights(groups: Sequence[tuple[int, float]]) -> np.ndarray:
    """Each group's share of traffic, spread evenly over its samples: ``(count, share)``."""
    return np.concatenate([np.full(n, share / n) for n, share in groups if n])


def estimated(
    probability: np.ndarray, right: np.ndarray, in_scope: np.ndarray, weights: np.ndarray, threshold: float
) -> dict[str, float]:
    """Weighted precision, coverage and false-answer rate when answering at ``threshold``."""
    answered = probability >= threshold
    answered_mass = float(weights[answered].sum())
    right_mass = float(weights[answered & right].sum())
    in_mass = float(weights[in_scope].sum())
    out_mass = float(weights[~in_scope].sum())
    return {
        "threshold": threshold,
        "precision": right_mass / answered_mass if answered_mass else 1.0,
        "coverage": right_mass / in_mass if in_mass else 0.0,
        "false_answer_rate": float(weights[answered & ~in_scope].sum()) / out_mass if out_mass else 0.0,
    }


def choose_threshold(
    probability: np.ndarray, right: np.ndarray, in_scope: np.ndarray, weights: np.ndarray, target: float
) -> float | None:
    """The lowest threshold whose estimated precision reaches ``target`` (None: none does)."""
    for threshold in GRID:
        figures = estimated(probability, right, in_scope, weights, threshold)
        if figures["coverage"] > 0 and figures["precision"] >= target:
            return threshold
    return None


def reference_threshold(probability: np.ndarray, top3: np.ndarray, answer: float | None) -> float:
    """The confidence that ``REFERENCE_RECALL`` of the in-scope queries whose right entry is
    in the first three reach; never above the answer threshold."""
    ceiling = 1.0 if answer is None else answer
    if not top3.any():
        return round(min(0.5, ceiling), 3)
    level = float(np.quantile(probability[top3], 1 - REFERENCE_RECALL))
    return round(min(max(np.floor(level * 100) / 100, 0.01), ceiling), 3)


@dataclass
class _Group:
    """Samples of one kind, and the share of traffic they stand for."""

    features: np.ndarray
    right: np.ndarray
    top3: np.ndarray
    in_scope: bool
    share: float = 0.0

    @classmethod
    def of(cls, samples: _Samples, *, in_scope: bool) -> _Group:
        features, right, top3 = samples.arrays()
        return cls(features, right.astype(bool), top3.astype(bool), in_scope)


def _in_scope_groups(
    ranker: Ranker,
    unknowns: np.ndarray,
    rows: np.ndarray,
    reference: Reference,
    unknown: Unknown,
    encode: Encode | None,
    seed: int,
) -> tuple[list[_Group], _Group, dict[tuple[int, int], list[int]]]:
    """The in-scope groups (leave-one-out, paraphrases, near-verbatim) with their shares,
    the leave-the-entry-out group and the confused pairs."""
    in_scope, not_answered, confused = leave_out(ranker, unknowns, rows)
    loo = _Group.of(in_scope, in_scope=True)
    counts = ranker.whitened.group_sizes
    # The paraphrases stand in for single-phrasing entries, and fill in for a knowledge base
    # too small to learn much from its own phrasings.
    paraphrase_share = max(float((counts == 1).mean()), 1 - len(loo.features) / MIN_LEFT_OUT)
    para = _Group.of(
        _paraphrase_samples(ranker, reference, unknown) if paraphrase_share > 0 else _Samples(), in_scope=True
    )
    verbatim = _Group.of(_verbatim_samples(ranker, encode, unknown, seed), in_scope=True)
    rest = 1 - (VERBATIM_SHARE if len(verbatim.features) else 0.0)
    if len(loo.features) and len(para.features):
        loo.share, para.share = rest * (1 - paraphrase_share), rest * paraphrase_share
    else:
        loo.share = para.share = rest
    verbatim.share = VERBATIM_SHARE
    return [loo, para, verbatim], _Group.of(not_answered, in_scope=False), confused


def _verbatim_samples(ranker: Ranker, encode: Encode | None, unknown: Unknown, seed: int) -> _Samples:
    """Visitors who type nearly a stored phrasing: a sample of phrasings with their last
    word (or, in Chinese, last character) dropped and made plain, asked against the whole
    knowledge base."""
    samples = _Samples()
    if encode is None:
        return samples
    starts = ranker.whitened.group_starts
    shortened = [(row, _shortened(text)) for row, text in enumerate(ranker.sorted_texts)]
    shortened = [(row, text) for row, text in shortened if text]
    if not shortened:
        return samples
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(shortened), min(MAX_VERBATIM, len(shortened)), replace=False))
    picked = [shortened[i] for i in chosen]
    texts = [text for _, text in picked]
    features, ranked = _ranked_samples(ranker, encode(texts), texts, [unknown(t) for t in texts])
    own = ranker.whitened.entries[np.searchsorted(starts, [row for row, _ in picked], side="right") - 1]
    samples.add(
        features,
        np.array([r[0] == e for r, e in zip(ranked, own, strict=True)]),
        np.array([e in r for r, e in zip(ranked, own, strict=True)]),
    )
    return samples


def _shortened(text: str) -> str:
    """The phrasing made plain, without its last word (a near-copy, not an exact match)."""
    plain = plain_text(text)
    if is_cjk(plain):
        return plain[:-1] if len(plain) > 3 else ""
    words = plain.split()
    return " ".join(words[:-1]) if len(words) > 2 else ""


def calibrate(
    ranker: Ranker,
    *,
    unknown: Unknown,
    reference: Reference,
    encode: Encode | None = None,
    target: float = 0.95,
    seed: int = 0,
) -> Calibration:
    """Fit ``ranker``'s confidence and choose its thresholds for ``target`` precision.

    ``unknown`` is the embedding model's share of a text it can't read; ``reference``
    the shipped texts encoded by the same model (``Reference.encode``); ``encode`` the
    model itself, for near-copies of the phrasings (none without it). (A question that is
    a stored phrasing typed another way needs no calibration: ``Ranker`` answers it.)"""
    started = time.perf_counter()
    if ranker.entry_count < 2:
        raise CalibrationImpossible("at least two entries are needed")
    total = len(ranker.whitened)
    reference = reference.for_languages(ranker.sorted_texts)
    unknowns = np.array([unknown(t) for t in ranker.sorted_texts], dtype=np.float32)
    rows = np.arange(total)
    if total > MAX_QUERIES:
        rows = np.sort(np.random.default_rng(seed).choice(total, MAX_QUERIES, replace=False))
    positives, leo, confused = _in_scope_groups(ranker, unknowns, rows, reference, unknown, encode, seed)
    loo, para, verbatim = positives
    if len(loo.features) + len(para.features) < MIN_IN_SCOPE or not (loo.right.any() or para.right.any()):
        raise CalibrationImpossible(
            f"{len(loo.features) + len(para.features)} in-scope samples: too few to calibrate; "
            "add entries, or alternative phrasings to them"
        )
    negatives = reference.negative_texts
    elsewhere_x, _ = _ranked_samples(ranker, reference.negatives, negatives, [unknown(t) for t in negatives])
    elsewhere = _Group(elsewhere_x, np.zeros(len(elsewhere_x), bool), np.zeros(len(elsewhere_x), bool), False)
    leo.share, elsewhere.share = NOT_ANSWERED_SHARE, 1 - NOT_ANSWERED_SHARE
    out = [g for g in (leo, elsewhere) if len(g.features)]
    if len(out) == 1:
        out[0].share = 1.0
    groups = [g for g in (*positives, *out) if len(g.features)]
    x = np.vstack([g.features for g in groups])
    right = np.concatenate([g.right for g in groups])
    is_in = np.concatenate([np.full(len(g.features), g.in_scope) for g in groups])
    weights = _weights(
        [(len(g.features), g.share * (IN_SCOPE_SHARE if g.in_scope else 1 - IN_SCOPE_SHARE)) for g in groups]
    )
    # The answer signal only where every in-scope sample has it: the shipped paraphrases
    # join as entries without answers.
    uses_answers = ranker.answer_matrix is not None and not len(para.features)
    x = x[:, : len(ENTRY_FEATURES) if uses_answers else len(FEATURES)]
    calibrator = fit(x, right, weights)
    probability = calibrator.probability(x)
    answer = choose_threshold(probability, right, is_in, weights, target)
    n_in = int(is_in.sum())
    top3 = np.concatenate([g.top3 for g in groups if g.in_scope])
    return Calibration(
        calibrator=calibrator,
        answer_threshold=answer,
        reference_threshold=reference_threshold(probability[:n_in], top3, answer),
        target_precision=target,
        curve=[estimated(probability, right, is_in, weights, t) for t in CURVE_POINTS],
        confused=_confused_pairs(ranker, confused),
        counts={
            "in_scope": len(loo.features),
            "in_scope_right": int(loo.right.sum()),
            "paraphrases": len(para.features),
            "paraphrases_right": int(para.right.sum()),
            "verbatim": len(verbatim.features),
            "not_answered": len(leo.features),
            "elsewhere": len(elsewhere.features),
            "entries": ranker.entry_count,
            "single_phrasing": int((ranker.whitened.group_sizes == 1).sum()),
        },
        seconds=time.perf_counter() - started,
        estimated=estimated(probability, right, is_in, weights, answer) if answer is not None else {},
    )


def optimism_warning(counts: Mapping[str, int]) -> str | None:
    """What to tell an editor when at least ``OPTIMISTIC_SHARE`` of the entries have a single
    phrasing: the shipped paraphrases that stand in for their visitors are easier to match
    than real visitors' questions, so the estimate overstates the precision (None: it holds)."""
    entries, single = counts.get("entries", 0), counts.get("single_phrasing", 0)
    if not entries or single < OPTIMISTIC_SHARE * entries:
        return None
    return (
        f"{single} of {entries} entries have a single phrasing, so the estimate leans on shipped "
        "paraphrases, which are easier to match than real visitors' questions: the precision it "
        "promises is optimistic (with one phrasing per entry, banking77 was estimated at 0.95 and "
        "measured at 0.82). Add two or three alternative phrasings to each entry, or set the "
        "thresholds from labelled questions (kb_calibrate)."
    )


def _confused_pairs(
    ranker: Ranker, confused: dict[tuple[int, int], list[int]], limit: int = 50
) -> list[dict[str, Any]]:
    """Entry pairs (by the ranker's entry ids) whose phrasings rank the other first, most
    first, with up to three of those phrasings: what an editor should look at."""
    entries = ranker.whitened.entries
    pairs = sorted(confused.items(), key=lambda item: (-len(item[1]), item[0]))[:limit]
    return [
        {
            "entry": int(entries[source]),
            "confused_with": int(entries[guessed]),
            "phrasings": len(rows),
            "examples": [ranker.sorted_texts[row] for row in rows[:3]],
        }
        for (source, guessed), rows in pairs
    ]
