"""Automatic calibration, pure part: leave-one-out samples, the fit, threshold choice."""

from __future__ import annotations

import numpy as np
import pytest

from knowledge import calibration
from knowledge.calibration import CalibrationImpossible, Reference, calibrate, leave_out
from knowledge.confidence import ENTRY_FEATURES, FEATURES, Calibrator, fit
from knowledge.ranking import Ranker

DIM = 8


def unit(*weights: float) -> np.ndarray:
    vector = np.zeros(DIM, dtype=np.float32)
    vector[: len(weights)] = weights
    return vector / np.linalg.norm(vector)


def tiny_ranker() -> Ranker:
    """Three entries of two phrasings each, along axes 0, 1 and 2; entry 0's second
    phrasing ("odd one") lies closer to entry 1's phrasings than to its sibling."""
    rows = [
        (0, "track my parcel", unit(1, 0.1)),
        (0, "odd one", unit(0.45, 1, 0.05)),
        (1, "refund please", unit(0.1, 1)),
        (1, "money back", unit(0, 1, 0.1)),
        (2, "reset password", unit(0, 0.1, 1)),
        (2, "forgot password", unit(0.1, 0, 1)),
    ]
    return Ranker(
        np.array([r[0] for r in rows]),
        [r[1] for r in rows],
        np.stack([r[2] for r in rows]),
        mode="vector",
        whiten=False,
    )


def far_reference(n: int = 20) -> Reference:
    """Out-of-scope questions along axes 5-7, far from every entry; no paraphrase pairs."""
    rng = np.random.default_rng(0)
    negatives = rng.normal(size=(n, DIM)).astype(np.float32)
    negatives[:, :3] = 0
    negatives /= np.linalg.norm(negatives, axis=1, keepdims=True)
    empty = np.zeros((0, DIM), dtype=np.float32)
    return Reference(negatives, [f"unrelated {i}" for i in range(n)], empty, empty, [])


def no_unknown(text: str) -> float:
    return 0.0


def test_leave_one_out_asks_each_phrasing_without_itself_and_without_its_entry() -> None:
    ranker = tiny_ranker()
    in_scope, not_answered, confused = leave_out(ranker, np.zeros(6, np.float32), np.arange(6))
    features, right, top3 = in_scope.arrays()
    assert features.shape == (6, len(ENTRY_FEATURES))
    # Every phrasing but "odd one" finds its own entry through its sibling.
    assert right.tolist() == [True, False, True, True, True, True]
    assert top3.all()  # with three entries, the right one is always among the first three
    # "odd one", asked without itself, is taken for entry 1: the pair an editor should fix.
    assert list(confused) == [(0, 1)]
    assert calibration._confused_pairs(ranker, confused) == [
        {"entry": 0, "confused_with": 1, "phrasings": 1, "examples": ["odd one"]}
    ]
    # Without their whole entry, all six still get a best entry: always a wrong one.
    negatives, labels, _ = not_answered.arrays()
    assert negatives.shape == (6, len(ENTRY_FEATURES)) and not labels.any()
    # Without answer vectors the answer columns are zeros.
    assert not features[:, len(FEATURES) :].any() and not negatives[:, len(FEATURES) :].any()


def test_the_query_itself_does_not_count_towards_its_entry() -> None:
    ranker = tiny_ranker()
    in_scope, _, _ = leave_out(ranker, np.zeros(6, np.float32), np.arange(6))
    features, _, _ = in_scope.arrays()
    best = features[:, FEATURES.index("best")]
    assert (best < 0.999).all()  # a phrasing compared with itself would score 1.0


def bigger_ranker() -> Ranker:
    """Six entries along axes 0-5, four phrasings each, a little noise around the axis."""
    rng = np.random.default_rng(3)
    ids, texts, vectors = [], [], []
    for entry in range(6):
        for n in range(4):
            vector = np.zeros(DIM, dtype=np.float32)
            vector[entry] = 1
            vector[:6] += 0.15 * rng.normal(size=6).astype(np.float32)
            ids.append(entry)
            texts.append(f"entry {entry} phrasing {n}")
            vectors.append(vector / np.linalg.norm(vector))
    return Ranker(np.array(ids), texts, np.stack(vectors), mode="vector", whiten=False)


def test_calibrate_gives_in_scope_questions_high_confidence_and_unrelated_ones_low() -> None:
    ranker = bigger_ranker()
    result = calibrate(ranker, unknown=no_unknown, reference=far_reference(), target=0.9)
    ranker.calibrator = result.calibrator
    near_entry_2 = ranker.rank(unit(0.05, 0.05, 1), "password", 3)
    unrelated = ranker.rank(unit(0, 0, 0, 0, 0, 0, 1, 1), "weather", 3)
    assert near_entry_2[0].entry_id == 2
    assert near_entry_2[0].confidence > 0.9 > unrelated[0].confidence
    assert result.answer_threshold is not None and 0 < result.answer_threshold <= 0.9
    assert result.reference_threshold <= result.answer_threshold
    assert result.counts == {
        "in_scope": 24,
        "in_scope_right": 24,
        "paraphrases": 0,  # the reference has none to fill in with
        "paraphrases_right": 0,
        "verbatim": 0,  # no encoder given: no near-copies
        "not_answered": 24,
        "elsewhere": 20,
        "entries": 6,
        "single_phrasing": 0,
    }
    assert calibration.optimism_warning(result.counts) is None


def test_too_few_phrasings_and_no_paraphrases_cannot_be_calibrated() -> None:
    with pytest.raises(CalibrationImpossible, match="too few"):
        calibrate(tiny_ranker(), unknown=no_unknown, reference=far_reference())


def test_a_knowledge_base_of_one_entry_cannot_be_calibrated() -> None:
    ranker = Ranker(np.array([0, 0]), ["a", "b"], np.stack([unit(1), unit(1, 0.1)]), mode="vector")
    with pytest.raises(CalibrationImpossible, match="two entries"):
        calibrate(ranker, unknown=no_unknown, reference=far_reference())


def test_single_phrasing_entries_are_calibrated_with_the_shipped_paraphrases() -> None:
    vectors = np.stack([unit(1), unit(0, 1), unit(0, 0, 1)])
    ranker = Ranker(np.arange(3), ["a", "b", "c"], vectors, mode="vector", whiten=False)
    pairs = [(f"faq {i}", f"visitor {i}") for i in range(12)]
    rng = np.random.default_rng(1)
    questions = rng.normal(size=(12, DIM)).astype(np.float32)
    questions /= np.linalg.norm(questions, axis=1, keepdims=True)
    paraphrases = questions + 0.1 * rng.normal(size=questions.shape).astype(np.float32)
    reference = Reference(
        far_reference().negatives, far_reference().negative_texts, questions, paraphrases, pairs
    )
    result = calibrate(ranker, unknown=no_unknown, reference=reference)
    assert result.counts["in_scope"] == 0  # nothing to leave out
    assert result.counts["paraphrases"] == 12 and result.counts["paraphrases_right"] >= 10
    assert (result.counts["entries"], result.counts["single_phrasing"]) == (3, 3)
    warning = calibration.optimism_warning(result.counts)
    assert warning is not None and warning.startswith("3 of 3 entries have a single phrasing")


def test_the_estimate_is_flagged_once_half_the_entries_have_a_single_phrasing() -> None:
    warn = calibration.optimism_warning
    assert warn({"entries": 10, "single_phrasing": 5}) is not None
    assert warn({"entries": 10, "single_phrasing": 4}) is None
    assert warn({"entries": 0, "single_phrasing": 0}) is None
    assert warn({"in_scope": 40}) is None  # a calibration stored before these counts existed


def test_reference_texts_follow_the_knowledge_base_scripts() -> None:
    empty = np.zeros((0, DIM), dtype=np.float32)
    negatives = np.zeros((3, DIM), dtype=np.float32)
    reference = Reference(
        negatives, ["what time is it", "今天天气怎么样", "tell me a joke"], empty, empty, []
    )
    assert reference.for_languages(["where is my order"]).negative_texts == [
        "what time is it",
        "tell me a joke",
    ]
    assert reference.for_languages(["我的订单到哪了"]).negative_texts == ["今天天气怎么样"]
    both = reference.for_languages(["where is my order", "我的订单到哪了"])
    assert len(both.negative_texts) == 3


def test_the_shipped_reference_texts_load() -> None:
    negatives = calibration.out_of_scope_questions()
    pairs = calibration.paraphrase_pairs()
    assert len(negatives) >= 800 and any(calibration.is_cjk(t) for t in negatives)
    assert len(pairs) >= 500 and all(q and p and q != p for q, p in pairs)


# --- Threshold choice ------------------------------------------------------------------


def test_the_answer_threshold_is_the_lowest_whose_estimated_precision_reaches_the_target() -> None:
    probability = np.array([0.97, 0.93, 0.85, 0.6, 0.5, 0.2])
    right = np.array([True, True, False, True, False, False])
    in_scope = np.array([True, True, True, True, False, False])
    weights = np.full(6, 1 / 6)
    # At 0.86 .. 0.93 two answers, both right; at 0.85 a wrong one joins (2/3 < 0.9).
    assert calibration.choose_threshold(probability, right, in_scope, weights, 0.9) == 0.86
    # Down to 0.21, five answers of which three are right: precision 0.6.
    assert calibration.choose_threshold(probability, right, in_scope, weights, 0.6) == 0.21
    figures = calibration.estimated(probability, right, in_scope, weights, 0.21)
    assert figures["precision"] == pytest.approx(0.6)
    assert figures["coverage"] == pytest.approx(3 / 4)
    assert figures["false_answer_rate"] == pytest.approx(1 / 2)


def test_no_threshold_when_nothing_reaches_the_target() -> None:
    probability = np.array([0.9, 0.8])
    right = np.array([False, True])
    assert calibration.choose_threshold(probability, right, np.ones(2, bool), np.ones(2), 0.95) is None


def test_the_reference_threshold_keeps_most_right_in_top_three_answers_and_stays_below_the_answer() -> None:
    probability = np.linspace(0.05, 0.95, 10)
    top3 = np.ones(10, bool)
    assert calibration.reference_threshold(probability, top3, 0.9) == pytest.approx(0.13)
    assert calibration.reference_threshold(probability, top3, 0.1) == pytest.approx(0.1)


# --- The logistic model ----------------------------------------------------------------


def test_the_fit_orders_confidence_by_the_signals_and_round_trips() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, len(FEATURES))).astype(np.float32)
    labels = (x[:, 0] + 0.5 * x[:, 2] + 0.3 * rng.normal(size=400)) > 0
    model = fit(x, labels)
    p = model.probability(x)
    assert ((p > 0.5) == labels).mean() > 0.9
    assert model.coef[0] > 0 and model.coef[2] > 0
    again = Calibrator.from_dict(model.as_dict())
    assert again is not None and np.allclose(again.probability(x), p)


def test_a_calibrator_stored_for_other_features_is_not_used() -> None:
    stored = fit(np.eye(len(FEATURES)), np.arange(len(FEATURES)) % 2).as_dict()
    stored["features"] = ["best", "margin"]
    assert Calibrator.from_dict(stored) is None
    assert Calibrator.from_dict({}) is None


def test_a_phrasing_typed_another_way_is_its_entry_whatever_the_calibration_says() -> None:
    ranker = bigger_ranker()
    result = calibrate(ranker, unknown=no_unknown, reference=far_reference())
    ranker.calibrator = result.calibrator
    # A query vector far from everything, but its text is entry 4's phrasing in other case.
    exact = ranker.rank(unit(0, 0, 0, 0, 0, 0, 1), "ENTRY 4 PHRASING 2!", 3)
    assert exact[0].entry_id == 4 and exact[0].confidence >= 0.99
    assert ranker.rank(unit(0, 0, 0, 0, 0, 0, 1), "entry 4 phrasing", 3)[0].confidence < 0.5


def test_a_text_shared_by_two_entries_is_no_exact_match() -> None:
    vectors = np.stack([unit(1), unit(1, 0.2), unit(0, 1), unit(0.2, 1)])
    ranker = Ranker(
        np.array([0, 0, 1, 1]), ["refund", "money back", "refund", "cancel"], vectors, mode="vector"
    )
    assert "refund" not in ranker.exact and ranker.exact["money back"] == 0


def test_near_copies_of_the_phrasings_stand_for_visitors_who_type_nearly_them() -> None:
    ranker = bigger_ranker()
    asked: list[str] = []
    # Phrasings of four words, as a company writes them; a near-copy drops the last word.
    ranker.sorted_texts[:] = [
        f"Entry {t.split()[1]} Phrasing Number {t.split()[3]}?" for t in ranker.sorted_texts
    ]

    def encode(texts: list[str]) -> np.ndarray:
        asked.extend(texts)
        return np.stack([unit(*([0] * int(t.split()[1]) + [1])) for t in texts])  # its entry's axis

    result = calibrate(ranker, unknown=no_unknown, reference=far_reference(), encode=encode)
    assert result.counts["verbatim"] == 24
    assert sorted(asked)[0] == "entry 0 phrasing number"  # plain, and a word short
    assert all(text == text.lower() and "?" not in text and len(text.split()) == 4 for text in asked)
