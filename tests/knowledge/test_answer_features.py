"""The answer features of the confidence (knowledge.confidence.ENTRY_FEATURES): the cosine
between a question and an entry's answer, its margin over the other entries' answers, and
how the automatic calibration learns them without leaking the left-out entry's answer."""

from __future__ import annotations

import numpy as np
import pytest

from knowledge.calibration import Reference, calibrate, leave_out
from knowledge.confidence import ENTRY_FEATURES, FEATURES, MARGIN_CLIP
from knowledge.ranking import Ranker

DIM = 16
ANSWER = ENTRY_FEATURES.index("answer")
ANSWER_MARGIN = ENTRY_FEATURES.index("answer_margin")


def axis(*pairs: tuple[int, float]) -> np.ndarray:
    vector = np.zeros(DIM, dtype=np.float32)
    for index, weight in pairs:
        vector[index] = weight
    return vector / np.linalg.norm(vector)


def shop(*, answers: bool = True, entries: int = 6, noise: float = 0.15) -> Ranker:
    """``entries`` entries of four phrasings each along axes 0..entries-1; entry e's answer
    lies between its axis and an axis of its own (8 + e), where no phrasing is."""
    rng = np.random.default_rng(3)
    ids, texts, vectors = [], [], []
    for entry in range(entries):
        for n in range(4):
            vector = axis((entry, 1.0))
            vector[:entries] += noise * rng.normal(size=entries).astype(np.float32)
            ids.append(entry)
            texts.append(f"entry {entry} phrasing {n}")
            vectors.append(vector / np.linalg.norm(vector))
    vectors_by_entry = {e: axis((e, 1.0), (8 + e, 1.0)) for e in range(entries)}
    return Ranker(
        np.array(ids),
        texts,
        np.stack(vectors),
        mode="vector",
        whiten=False,
        answers=vectors_by_entry if answers else None,
    )


def far_reference(n: int = 20) -> Reference:
    """Out-of-scope questions on axes 6-7 and 14-15: near no phrasing and no answer."""
    rng = np.random.default_rng(0)
    negatives = np.zeros((n, DIM), dtype=np.float32)
    negatives[:, [6, 7, 14, 15]] = rng.normal(size=(n, 4))
    negatives /= np.linalg.norm(negatives, axis=1, keepdims=True)
    empty = np.zeros((0, DIM), dtype=np.float32)
    return Reference(negatives, [f"unrelated {i}" for i in range(n)], empty, empty, [])


def no_unknown(text: str) -> float:
    return 0.0


def test_a_ranked_entry_carries_its_answer_cosine_and_the_margin_over_the_other_answers() -> None:
    ranker = shop()
    query = axis((2, 1.0), (10, 0.5))
    ranked = ranker.rank(query, "question", 3)
    assert ranked[0].entry_id == 2
    own = float(query @ axis((2, 1.0), (10, 1.0)))
    best_other = max(float(query @ axis((e, 1.0), (8 + e, 1.0))) for e in range(6) if e != 2)
    assert ranked[0].features[ANSWER] == pytest.approx(own, abs=1e-3)
    assert ranked[0].features[ANSWER_MARGIN] == pytest.approx(min(own - best_other, MARGIN_CLIP), abs=1e-3)
    # The runner-up's margin is against the best answer of all, entry 2's: negative.
    assert ranked[1].features[ANSWER_MARGIN] < 0


def test_answers_count_only_when_every_entry_has_one() -> None:
    full = shop()
    partial = Ranker(full.entry_ids, full.texts, full.vectors, answers={0: axis((0, 1.0))})
    assert full.answer_matrix is not None and full.answer_matrix.shape == (6, DIM)
    assert partial.answer_matrix is None
    ranked = partial.rank(axis((0, 1.0)), "question", 2)
    assert len(ranked[0].features) == len(ENTRY_FEATURES)
    assert ranked[0].features[ANSWER] == ranked[0].features[ANSWER_MARGIN] == 0


def test_a_question_left_without_its_entry_is_not_measured_against_that_entrys_answer() -> None:
    ranker = shop()
    _, not_answered, _ = leave_out(ranker, np.zeros(24, np.float32), np.arange(24))
    features, _, _ = not_answered.arrays()
    # Each phrasing's own answer would beat every other answer by far (cosine about 0.7
    # against about 0.1): had it stayed, every margin would sit at -MARGIN_CLIP.
    assert (features[:, ANSWER_MARGIN] > -MARGIN_CLIP + 0.05).all()


def test_the_other_scripts_answers_do_not_count_in_a_bilingual_knowledge_base() -> None:
    english, chinese = axis((0, 1.0)), axis((0, 0.9), (1, 0.1))
    twin_answer = axis((0, 1.0), (8, 1.0))
    ranker = Ranker(
        np.array([0, 0, 1, 1, 2, 2]),
        [
            "Where is my order?",
            "Track my parcel",
            "我的订单到哪了",
            "查一下物流",
            "Reset password",
            "Forgot password",
        ],
        np.stack([english, english, chinese, chinese, axis((3, 1.0)), axis((3, 1.0))]),
        mode="vector",
        whiten=False,
        answers={0: twin_answer, 1: twin_answer, 2: axis((3, 1.0), (11, 1.0))},
    )
    ranked = ranker.rank(axis((0, 1.0), (8, 0.5)), "where is my package", 2)
    assert ranked[0].entry_id == 0
    # Its Chinese twin has the same answer; were it counted, the margin would be 0.
    assert ranked[0].features[ANSWER_MARGIN] > 0.2


def test_the_calibration_learns_the_answer_features_only_when_every_entry_has_an_answer() -> None:
    with_answers = calibrate(shop(), unknown=no_unknown, reference=far_reference(), target=0.9)
    without = calibrate(shop(answers=False), unknown=no_unknown, reference=far_reference(), target=0.9)
    assert with_answers.calibrator.features == ENTRY_FEATURES
    assert without.calibrator.features == FEATURES
    assert with_answers.calibrator.coef[ANSWER_MARGIN] > 0  # a clear lead in answers means right


def test_a_question_worded_between_two_entries_is_answered_when_one_answer_fits_it() -> None:
    """Known outcome: the phrasings alone can't tell entries 2 and 3 well apart for this
    question; entry 2's answer speaks to it, so with the answers its confidence is far
    higher, and reaches the calibration's own answer threshold."""
    question = axis((2, 0.8), (3, 0.6), (10, 0.9))
    confidences, thresholds = {}, {}
    for answers in (True, False):
        ranker = shop(answers=answers)
        fitted = calibrate(ranker, unknown=no_unknown, reference=far_reference(), target=0.9)
        ranker.calibrator = fitted.calibrator
        ranked = ranker.rank(question, "question", 3)
        assert ranked[0].entry_id == 2
        confidences[answers], thresholds[answers] = ranked[0].confidence, fitted.answer_threshold
    assert confidences[True] > confidences[False] + 0.5
    assert thresholds[True] is not None and confidences[True] >= thresholds[True]
