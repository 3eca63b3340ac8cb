from __future__ import annotations

import numpy as np
import pytest

from knowledge.lexical import BM25, tokenize


def test_it_splits_chinese_into_characters_and_bigrams_and_drops_english_stop_words() -> None:
    assert tokenize("Where is MY order?") == ["order"]
    tokens = tokenize("快递到了")
    assert {"快", "递", "快递", "递到", "到了"} <= set(tokens)


def test_full_width_forms_are_folded() -> None:
    assert tokenize("ＯＲＤＥＲ") == ["order"]


def test_a_rare_shared_word_outweighs_a_common_one() -> None:
    bm25 = BM25(["refund my order", "track my order", "change my order", "cancel my order"])
    scores, total = bm25.scores("refund order")
    assert scores.argmax() == 0
    assert 0 < scores[1] < scores[0]
    assert total > 0


def test_unknown_words_lower_the_normalised_score() -> None:
    bm25 = BM25(["refund my order", "track my order"])
    known, known_total = bm25.scores("refund")
    mixed, mixed_total = bm25.scores("refund bicycle")
    assert known[0] == mixed[0]
    assert mixed[0] / mixed_total < known[0] / known_total


def test_the_dense_and_sparse_paths_score_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = ["refund my order", "track my parcel", "怎么退货", "退货要多久", "change my delivery address"]
    dense = BM25(docs)
    monkeypatch.setattr("knowledge.lexical.DENSE_MAX_CELLS", 0)
    sparse_only = BM25(docs)
    assert dense.dense is not None and sparse_only.dense is None
    for query in ["refund order", "退货", "address change please", "nothing known"]:
        (a, idf_a), (b, idf_b) = dense.scores(query), sparse_only.scores(query)
        assert np.allclose(a, b) and idf_a == idf_b and a.dtype == b.dtype == np.float32
