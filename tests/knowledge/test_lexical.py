from __future__ import annotations

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
