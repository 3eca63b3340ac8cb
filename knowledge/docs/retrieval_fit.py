"""Calibrate a bot's passage confidence from its documents alone, as entries are
(``knowledge.calibration``): made-up questions, a logistic fit (``knowledge.confidence``),
and the lowest threshold whose estimated precision reaches the bot's target.

- **in scope**: each section's innermost heading and each page's title, asked against all
  the passages: right when a passage of its own page comes first (a hit's confidence is
  that its page answers: the LLM is given the passage under its page's title). A
  passage's own sentences would make too easy a question (its words and meaning are the
  passage's); headings are what help centers write their questions as;
- **in-domain, not answered**: the same questions asked without their own page: a
  question of the company's kind whose page is missing. Its best passage is wrong;
- **runner-up**: each in-scope question's best passage on a page other than its best
  passage's page: a search returns those after the best one, judged by the same fit;
- **elsewhere**: the shipped out-of-scope questions (``knowledge/data/out_of_scope``), in
  the scripts the documents are written in.

Weighted as entries' calibration weighs them (``IN_SCOPE_SHARE``, ``NOT_ANSWERED_SHARE``).
Bounded: at most ``MAX_QUESTIONS`` made-up questions are encoded and scored (about a
second for 5,000 passages with all-MiniLM-L6-v2 on two cores).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from knowledge.calibration import (
    IN_SCOPE_SHARE,
    MIN_IN_SCOPE,
    NOT_ANSWERED_SHARE,
    CalibrationImpossible,
    Reference,
    choose_threshold,
    estimated,
)
from knowledge.confidence import Calibrator, fit
from knowledge.docs.retrieval_index import CHUNK, PassageIndex, Scored, features, top_rows
from knowledge.lexical import is_cjk
from knowledge.ranking import ABSENT

MAX_QUESTIONS = 600
# Without a fit, a page must beat what this share of unrelated questions score.
NULL_QUANTILE = 0.95
# The weight of the runner-ups (each question's best passage on another page than its
# best one), against the in-scope questions' best passages.
RUNNER_UP_SHARE = 0.25
NEVER = 1.01  # a threshold no confidence reaches: no target-precision threshold exists
MAX_QUESTION_CHARS = 200

log = logging.getLogger(__name__)
Encode = Callable[[Sequence[str]], np.ndarray]
Unknown = Callable[[str], float]


@dataclass(frozen=True)
class Fitted:
    calibrator: Calibrator
    threshold: float  # a passage this confident is relevant (NEVER: none is)
    counts: dict[str, int] = field(default_factory=dict)
    estimated: dict[str, float] = field(default_factory=dict)  # at the threshold
    seconds: float = 0.0


def made_up_questions(index: PassageIndex, *, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """In-scope questions (each section's innermost heading and each page's title, when
    found on one page only) and the page (``index.page_of_row``) each asks about."""
    pages: dict[str, set[int]] = {}
    for row, passage in enumerate(index.rows):
        page = int(index.page_of_row[row])
        heading = passage.headings[-1].strip() if passage.headings else ""
        for text in (heading, passage.title.strip()):
            if text:
                pages.setdefault(text[:MAX_QUESTION_CHARS], set()).add(page)
    unique = [(text, next(iter(found))) for text, found in pages.items() if len(found) == 1]
    if len(unique) > MAX_QUESTIONS:
        chosen = np.sort(np.random.default_rng(seed).choice(len(unique), MAX_QUESTIONS, replace=False))
        unique = [unique[i] for i in chosen]
    return [text for text, _ in unique], np.array([page for _, page in unique], dtype=np.int64)


@dataclass
class _Group:
    features: np.ndarray
    right: np.ndarray
    in_scope: bool
    share: float = 0.0


def _best(index: PassageIndex, scored: Scored) -> tuple[np.ndarray, np.ndarray]:
    """Each query's best passage (row, -1 for none) and its features."""
    rows = top_rows(scored.score, 1)
    return rows[:, 0], features(index, scored, rows)[:, 0, :]


def _runner_up(index: PassageIndex, scored: Scored, best: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each query's best passage on another page than its best passage's, and its features
    as a search sees them (its margin to that best page is negative)."""
    top_page = index.page_of_row[np.where(best >= 0, best, 0)]
    without = np.where(index.page_of_row[None, :] == top_page[:, None], ABSENT, scored.score)
    rows = top_rows(without, 1)
    rows[best < 0] = -1
    return rows[:, 0], features(index, scored, rows)[:, 0, :]


def _own_and_left_out(
    index: PassageIndex,
    vectors: np.ndarray,
    texts: list[str],
    pages: np.ndarray,
    unknowns: np.ndarray,
) -> tuple[_Group, _Group, _Group]:
    """The in-scope questions' best passages, the best passages of another page (shown
    after the best one), and the best passages when their own page is left out."""
    own: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    second: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    left_out: list[np.ndarray] = []
    for begin in range(0, len(texts), CHUNK):
        end = begin + CHUNK
        # The words of a heading are in its passages' lexical text: the lexical score is
        # taken against their bodies, as a visitor's question meets them.
        scored = index.scored(vectors[begin:end], texts[begin:end], unknowns[begin:end], body_only=True)
        asked = pages[begin:end]
        best = _best(index, scored)
        for group, (rows, x) in ((own, best), (second, _runner_up(index, scored, best[0]))):
            keep = rows >= 0
            group[0].append(x[keep])
            group[1].append(index.page_of_row[rows[keep]] == asked[keep])
        without = np.where(index.page_of_row[None, :] == asked[:, None], ABSENT, scored.score)
        rows, x = _best(index, replace(scored, score=without))
        left_out.append(x[rows >= 0])
    empty_x, empty_y = np.zeros((0, 5), np.float32), np.zeros(0, bool)
    return (
        _Group(np.vstack([empty_x, *own[0]]), np.concatenate([empty_y, *own[1]]), True),
        _Group(np.vstack([empty_x, *second[0]]), np.concatenate([empty_y, *second[1]]), True),
        _Group(np.vstack([empty_x, *left_out]), np.zeros(sum(len(x) for x in left_out), bool), False),
    )


def _elsewhere(index: PassageIndex, vectors: np.ndarray, texts: list[str], unknown: Unknown) -> _Group:
    x = [np.zeros((0, 5), np.float32)]
    for b in range(0, len(texts), CHUNK):
        chunk = texts[b : b + CHUNK]
        x.append(_best(index, index.scored(vectors[b : b + CHUNK], chunk, [unknown(t) for t in chunk]))[1])
    features_ = np.vstack(x)
    return _Group(features_, np.zeros(len(features_), bool), False)


@dataclass(frozen=True)
class Fits:
    """The fit of each script: in a bilingual help center a question meets only the
    passages in its own script, and a model's cosines differ between scripts (those of
    multilingual-e5-small run higher in Chinese), so each script is fitted apart."""

    by_script: dict[bool, Fitted]  # is CJK -> its fit (none for a script too small to fit)
    nulls: dict[bool, float]  # is CJK -> what unrelated questions' best passages score
    bilingual: bool

    def script(self, text: str) -> bool | None:
        """The script whose fit and null apply to ``text`` (None: the only one)."""
        return is_cjk(text) if self.bilingual else None

    def for_text(self, text: str) -> Fitted | None:
        script = self.script(text)
        return next(iter(self.by_script.values()), None) if script is None else self.by_script.get(script)

    def null_for(self, text: str) -> float | None:
        script = self.script(text)
        return next(iter(self.nulls.values()), None) if script is None else self.nulls.get(script)


def fit_passages(
    index: PassageIndex,
    *,
    encode: Encode,
    unknown: Unknown,
    reference: Reference,
    target: float,
    seed: int = 0,
) -> Fits:
    """Fit ``index``'s confidence and choose its relevance threshold for ``target``
    precision, per script; a script with too few passages to fit on gets only its null
    (``Fits.nulls``). ``reference``: the shipped texts encoded by the index's model."""
    started = time.perf_counter()
    texts, pages = made_up_questions(index, seed=seed)
    vectors = encode(texts) if texts else np.zeros((0, index.dim), np.float32)
    unknowns = np.array([unknown(t) for t in texts], dtype=np.float32)
    scripts = [False, True] if index.bilingual else [bool(index.row_cjk.mean() > 0.5)]
    fits: dict[bool, Fitted] = {}
    nulls: dict[bool, float] = {}
    for script in scripts:
        mine = np.array([not index.bilingual or is_cjk(t) == script for t in texts], dtype=bool)
        negatives = np.array([is_cjk(t) == script for t in reference.negative_texts], dtype=bool)
        elsewhere = _elsewhere(
            index,
            reference.negatives[negatives],
            [t for t, keep in zip(reference.negative_texts, negatives, strict=True) if keep],
            unknown,
        )
        if len(elsewhere.features):
            nulls[script] = float(np.quantile(elsewhere.features[:, 0], NULL_QUANTILE))
        try:
            fits[script] = _fit_one(
                index,
                [t for t, keep in zip(texts, mine, strict=True) if keep],
                vectors[mine],
                pages[mine],
                unknowns[mine],
                elsewhere,
                target=target,
            )
        except CalibrationImpossible as err:
            log.info("%s passages not calibrated: %s", "CJK" if script else "non-CJK", err)
    seconds = time.perf_counter() - started
    return Fits({k: replace(f, seconds=seconds) for k, f in fits.items()}, nulls, index.bilingual)


def _fit_one(
    index: PassageIndex,
    texts: list[str],
    vectors: np.ndarray,
    pages: np.ndarray,
    unknowns: np.ndarray,
    elsewhere: _Group,
    *,
    target: float,
) -> Fitted:
    if len(texts) < MIN_IN_SCOPE:
        raise CalibrationImpossible(f"{len(texts)} made-up questions: too few passages to calibrate on")
    own, second, left_out = _own_and_left_out(index, vectors, texts, pages, unknowns)
    if not own.right.any():
        raise CalibrationImpossible("no made-up question found its own page: nothing to learn from")
    own.share = IN_SCOPE_SHARE
    out = [g for g in (left_out, elsewhere) if len(g.features)]
    left_out.share, elsewhere.share = NOT_ANSWERED_SHARE, 1 - NOT_ANSWERED_SHARE
    for group in out:
        group.share = (1 - IN_SCOPE_SHARE) * (group.share if len(out) == 2 else 1.0)
    groups = [own, *out]
    x = np.vstack([g.features for g in groups])
    right = np.concatenate([g.right for g in groups])
    is_in = np.concatenate([np.full(len(g.features), g.in_scope) for g in groups])
    weights = np.concatenate([np.full(len(g.features), g.share / len(g.features)) for g in groups])
    # The runner-ups teach the fit what a passage shown after the best one looks like;
    # the threshold is chosen on the best passages alone, as searches judge them.
    share = IN_SCOPE_SHARE * RUNNER_UP_SHARE / max(len(second.features), 1)
    calibrator = fit(
        np.vstack([x, second.features]),
        np.concatenate([right, second.right]),
        np.concatenate([weights, np.full(len(second.features), share)]),
    )
    probability = calibrator.probability(x)
    threshold = choose_threshold(probability, right, is_in, weights, target)
    return Fitted(
        calibrator=calibrator,
        threshold=NEVER if threshold is None else threshold,
        counts={
            "in_scope": len(own.features),
            "in_scope_right": int(own.right.sum()),
            "runner_up": len(second.features),
            "runner_up_right": int(second.right.sum()),
            "not_answered": len(left_out.features),
            "elsewhere": len(elsewhere.features),
        },
        estimated={} if threshold is None else estimated(probability, right, is_in, weights, threshold),
    )
