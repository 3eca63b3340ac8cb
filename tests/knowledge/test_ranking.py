from __future__ import annotations

import numpy as np

from knowledge.embeddings import get_encoder
from knowledge.ranking import NULL_SCORE, Ranker, whitening


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
