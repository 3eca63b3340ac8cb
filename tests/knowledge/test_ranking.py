from __future__ import annotations

import numpy as np

from knowledge.confidence import Calibrator
from knowledge.embeddings import get_encoder
from knowledge.ranking import NULL_SCORE, PHRASING_WEIGHT, Ranker, whitening


def test_whitening_changes_nothing_with_one_phrasing_per_entry() -> None:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(20, 8)).astype(np.float32)
    w = whitening(np.arange(20), vectors)
    assert np.allclose(w / w[0, 0], np.eye(8), atol=1e-5)


def test_whitening_shrinks_directions_in_which_an_entrys_phrasings_vary() -> None:
    # Two phrasings per entry differing only along axis 0; entries differ along axis 1.
    vectors = np.array([[1, 1, 0], [-1, 1, 0], [1, -1, 0], [-1, -1, 0]], dtype=np.float32)
    w = whitening(np.array([0, 0, 1, 1]), vectors)
    assert w[0, 0] < w[1, 1]


def make_ranker(texts_by_entry: dict[int, list[str]], mode: str = "blend") -> Ranker:
    ids = [entry for entry, texts in texts_by_entry.items() for _ in texts]
    texts = [text for group in texts_by_entry.values() for text in group]
    return Ranker(np.array(ids), texts, get_encoder().encode(texts), mode=mode)


def rank(ranker: Ranker, text: str):
    encoder = get_encoder()
    return ranker.rank(encoder.encode([text])[0], text, 3, unknown=encoder.unknown_fraction(text))


def test_a_known_phrasing_is_confident_and_an_unrelated_question_is_not() -> None:
    ranker = make_ranker(
        {1: ["How do I return an item?", "Can I send it back?"], 2: ["How long is delivery?"]}
    )
    assert rank(ranker, "Can I send it back?")[0].entry_id == 1
    assert rank(ranker, "Can I send it back?")[0].confidence > 0.9
    assert rank(ranker, "What's the capital of France?")[0].confidence < 0.2


def test_one_entry_alone_is_not_automatically_confident() -> None:
    # Without the virtual "none of these" competitor a single entry would always get 1.0.
    ranker = make_ranker({1: ["How do I reset my password?"]})
    assert rank(ranker, "Do you sell garden furniture?")[0].confidence < 0.5
    assert NULL_SCORE > 0


def test_chinese_questions_are_matched_through_the_lexical_signal() -> None:
    kb = {1: ["我的订单到哪了？", "查一下物流"], 2: ["怎么申请退货？", "我想退货"], 3: ["可以开发票吗？"]}
    blended = make_ranker(kb, mode="blend")
    assert rank(blended, "我的快递到哪了")[0].entry_id == 1
    assert rank(blended, "退货怎么弄")[0].entry_id == 2
    assert rank(blended, "能开发票吗")[0].entry_id == 3


def test_ranked_results_are_ordered_and_limited() -> None:
    ranker = make_ranker({n: [f"question number {n} about topic {n}"] for n in range(10)})
    results = rank(ranker, "question number 3 about topic 3")
    assert len(results) == 3
    assert results[0].entry_id == 3
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)


def unit(*pairs: tuple[int, float], dim: int = 8) -> np.ndarray:
    vector = np.zeros(dim, dtype=np.float32)
    for axis, value in pairs:
        vector[axis] = value
    return vector / np.linalg.norm(vector)


def test_an_entry_whose_phrasings_agree_beats_one_stray_closer_phrasing() -> None:
    # Entry 1: three phrasings, each at cosine 0.85 to the query, spread around it.
    # Entry 2: one phrasing at 0.9, the others about something else.
    vectors = np.stack(
        [
            unit((0, 0.85), (1, 0.527)),
            unit((0, 0.85), (2, 0.527)),
            unit((0, 0.85), (1, -0.527)),
            unit((0, 0.9), (3, 0.436)),
            unit((4, 1.0)),
            unit((5, 1.0)),
        ]
    )
    ranker = Ranker(np.array([1, 1, 1, 2, 2, 2]), ["x"] * 6, vectors, mode="vector", whiten=False)
    first, second = ranker.rank(unit((0, 1.0)), "x", 2)
    assert PHRASING_WEIGHT < 1
    assert (first.entry_id, second.entry_id) == (1, 2)
    assert second.similarity > first.similarity  # the best single phrasing was entry 2's


def test_once_calibrated_the_entry_likeliest_to_be_right_comes_first() -> None:
    # Entry 1's phrasing is closer to the query; entry 2's answer fits it far better.
    vectors = np.stack([unit((0, 0.9), (1, 0.436)), unit((0, 0.8), (2, 0.6))])
    answers = {1: unit((3, 1.0)), 2: unit((0, 0.95), (4, 0.312))}
    ranker = Ranker(np.array([1, 2]), ["x", "y"], vectors, mode="vector", whiten=False, answers=answers)
    query = unit((0, 1.0))
    assert [r.entry_id for r in ranker.rank(query, "q", 2)] == [1, 2]  # by score, uncalibrated

    # A fit that trusts the answer signal alone (ENTRY_FEATURES: best, whole, margin,
    # lexical, unknown, answer, answer_margin).
    ranker.calibrator = Calibrator((0, 0, 0, 0, 0, 8.0, 0), -4.0, (0.0,) * 7, (1.0,) * 7)
    first, second = ranker.rank(query, "q", 2)
    assert (first.entry_id, second.entry_id) == (2, 1)
    assert first.confidence > second.confidence and first.score < second.score


def test_with_one_phrasing_per_entry_the_score_is_that_phrasings_cosine() -> None:
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(10, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    query = vectors[3] + 0.3 * rng.normal(size=8).astype(np.float32)
    results = Ranker(np.arange(10), ["x"] * 10, vectors, mode="vector").rank(
        query / np.linalg.norm(query), "x", 10
    )
    assert results[0].entry_id == 3
    assert np.allclose([r.score for r in results], [r.similarity for r in results], atol=1e-5)


def test_an_unreadable_query_is_judged_as_in_lexical_mode_null_included() -> None:
    kb = {1: ["我的订单到哪了？", "查一下物流"], 2: ["怎么申请退货？", "我想退货"], 3: ["可以开发票吗？"]}
    query = get_encoder().encode(["退货怎么弄"])[0]
    blended = make_ranker(kb, mode="blend").rank(query, "退货怎么弄", 3, unknown=1.0)
    lexical = make_ranker(kb, mode="lexical").rank(query, "退货怎么弄", 3)
    assert [r.entry_id for r in blended] == [r.entry_id for r in lexical]
    assert np.allclose([r.confidence for r in blended], [r.confidence for r in lexical])
    assert blended[0].entry_id == 2


def test_an_empty_knowledge_base_ranks_nothing() -> None:
    ranker = Ranker(np.zeros(0, dtype=np.int64), [], np.zeros((0, 8), dtype=np.float32), mode="blend")
    assert ranker.rank(unit((0, 1.0)), "anything", 3) == []


def test_ranking_several_queries_at_once_gives_each_its_own_ranking() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(40, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = [f"phrasing {n} about topic {n // 4}" for n in range(40)]
    ranker = Ranker(np.arange(40) // 4, texts, vectors, mode="blend")
    queries = vectors[[0, 13, 27]] + 0.05 * rng.normal(size=(3, 8)).astype(np.float32)
    words = ["topic 0", "phrasing 13", "nothing known"]
    together = ranker.rank_many(queries, words, 4, unknowns=[0.0, 0.5, 1.0])
    alone = [ranker.rank(q, w, 4, unknown=u) for q, w, u in zip(queries, words, [0.0, 0.5, 1.0], strict=True)]
    assert [[r.entry_id for r in rows] for rows in together] == [[r.entry_id for r in rows] for rows in alone]
    for rows, single in zip(together, alone, strict=True):
        assert np.allclose([r.confidence for r in rows], [r.confidence for r in single], atol=1e-5)
        assert np.allclose([r.lexical for r in rows], [r.lexical for r in single])
    assert [rows[0].entry_id for rows in together[:2]] == [0, 3]
