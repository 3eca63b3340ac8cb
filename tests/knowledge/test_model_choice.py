"""Which embedding model a knowledge base gets, and the multilingual models themselves."""

from __future__ import annotations

import numpy as np
import pytest

from chatbot.models import Bot
from knowledge import embeddings, matching, multilingual_models
from knowledge.models import Embedding
from knowledge.ranking import Ranker
from knowledge.services import bot_embedding_model, entries_embed, entry_upsert
from tests.factories import make_bot

ENGLISH = [
    "Where is my order?",
    "How do I get a refund?",
    "Do you ship abroad?",
    "How do I reset my password?",
]


def test_an_english_knowledge_base_keeps_the_default_model(settings: object) -> None:
    assert embeddings.model_for("", ENGLISH) == embeddings.DEFAULT_MODEL


def test_one_question_in_ten_in_chinese_brings_the_cjk_model(settings: object) -> None:
    mixed = ENGLISH * 2 + ["退货政策是什么？"]  # 1 of 9
    assert embeddings.model_for("", mixed) == multilingual_models.E5
    assert embeddings.model_for("", ENGLISH * 3 + ["退货政策是什么？"]) == embeddings.DEFAULT_MODEL  # 1 of 13


def test_a_bots_own_setting_wins_and_an_empty_cjk_setting_means_the_default(settings: object) -> None:
    assert embeddings.model_for(multilingual_models.USE, ENGLISH) == multilingual_models.USE
    settings.EMBEDDING_MODEL_CJK = ""  # type: ignore[attr-defined]
    assert embeddings.model_for("", ["我的订单到哪了？"]) == embeddings.DEFAULT_MODEL


@pytest.mark.parametrize("name", multilingual_models.NAMES)
def test_the_multilingual_models_read_chinese_and_english_offline(name: str) -> None:
    encoder = embeddings.get_encoder(name)
    assert isinstance(encoder, multilingual_models.MultilingualEncoder)
    vectors = encoder.encode(
        ["我的快递到哪了", "我的订单到哪了？", "今天天气怎么样", "where is my parcel", ""]
    )
    assert vectors.shape == (5, encoder.dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    same, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert same > unrelated + 0.05
    assert encoder.unknown_fraction("我的快递到哪了") < 0.2
    assert encoder.unknown_fraction("") == 1.0
    assert name in multilingual_models.fingerprint(name) and "==" in multilingual_models.fingerprint(name)


def test_an_unknown_multilingual_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown multilingual model"):
        multilingual_models.MultilingualEncoder("no-such-model")


@pytest.mark.django_db
def test_a_bots_phrasings_are_embedded_with_its_model() -> None:
    english, chinese = make_bot(name="en"), make_bot(name="zh")
    entry_upsert(bot=english, question="Where is my order?", answer="a", alternatives=["track my parcel"])
    entry_upsert(bot=chinese, question="我的订单到哪了？", answer="b", alternatives=["查一下物流"])
    assert bot_embedding_model(english.pk) == embeddings.DEFAULT_MODEL
    assert bot_embedding_model(chinese.pk) == multilingual_models.E5
    assert entries_embed(bot=english) == 2 and entries_embed(bot=chinese) == 2
    stored = dict(Embedding.objects.values_list("entry__bot__name", "model_name").distinct())
    assert stored == {"en": embeddings.DEFAULT_MODEL, "zh": multilingual_models.E5}
    # The bot's own setting takes over: its vectors are made again with that model.
    Bot.objects.filter(pk=english.pk).update(embedding_model=multilingual_models.USE)
    assert entries_embed(bot=english) == 2
    assert set(Embedding.objects.filter(entry__bot=english).values_list("dim", flat=True)) == {512}


@pytest.mark.django_db
def test_matching_uses_the_bots_model_for_the_question_too() -> None:
    bot = make_bot()
    entry_upsert(
        bot=bot, question="我的订单到哪了？", answer="查物流", alternatives=["快递到哪了", "查一下物流"]
    )
    entry_upsert(
        bot=bot, question="怎么申请退货？", answer="退货", alternatives=["我要退货", "东西怎么寄回去"]
    )
    result = matching.match(bot, "我的包裹现在在哪")
    assert matching.snapshot_for(bot.pk).model == multilingual_models.E5
    assert result.best is not None and result.best.question == "我的订单到哪了？"


def test_a_bilingual_knowledge_base_matches_a_question_against_entries_in_its_script() -> None:
    texts = ["Where is my order?", "track my parcel", "我的订单到哪了？", "查一下物流"]
    rng = np.random.default_rng(0)
    shared = rng.normal(size=8).astype(np.float32)
    vectors = np.stack([shared + 0.01 * rng.normal(size=8).astype(np.float32) for _ in texts])
    ranker = Ranker(np.array([1, 1, 2, 2]), texts, vectors, mode="vector")
    assert ranker.bilingual and ranker.entry_cjk.tolist() == [False, True]
    english = ranker.rank(shared, "where is my parcel", 5)
    chinese = ranker.rank(shared, "我的快递到哪了", 5)
    assert [r.entry_id for r in english] == [1] and [r.entry_id for r in chinese] == [2]
    one_language = Ranker(np.array([1, 1, 2, 2]), ["a", "b", "c", "d"], vectors, mode="vector")
    assert not one_language.bilingual and len(one_language.rank(shared, "anything", 5)) == 2
