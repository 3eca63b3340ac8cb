"""Answer vectors: stored by entries_embed, replaced when stale, read into the live ranker."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.conf import settings
from django.core.management import call_command

from chatbot.models import Bot
from knowledge import embeddings, matching
from knowledge.answer_text import plain
from knowledge.confidence import ENTRY_FEATURES
from knowledge.models import AnswerEmbedding, Embedding, Entry
from knowledge.services import bot_embedding_model, entries_embed, entry_upsert
from tests.factories import make_bot

pytestmark = pytest.mark.django_db

ANSWER_COLUMN = ENTRY_FEATURES.index("answer")


@pytest.fixture
def shop() -> Bot:
    bot = make_bot(name="Shop")
    entry_upsert(
        bot=bot,
        question="How do I track my order?",
        answer="Use the **tracking page**: [track it here](https://shop.example/track).",
        alternatives=["Where is my parcel?"],
        external_id="track",
    )
    entry_upsert(
        bot=bot,
        question="How do I return an item?",
        answer="You can return most items within 30 days.",
        alternatives=["Can I send it back?"],
        external_id="returns",
    )
    return bot


def vector(row: AnswerEmbedding) -> np.ndarray:
    return np.frombuffer(bytes(row.vector), dtype="<f4")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Plain text stays.", "Plain text stays."),
        ("**Bold** and __strong__ words", "Bold and strong words"),
        ("See [the returns page](https://x.example/a_(b)).", "See the returns page."),
        ('[a link](https://x.example "Title") ![a picture](p.png)', "a link a picture"),
        ("**[bold link](https://x.example)**", "bold link"),
        ("2*3 = 6, a_b and *single* stay", "2*3 = 6, a_b and *single* stay"),
        ("[not a link] (x)", "[not a link] (x)"),
        ("  **  **  ", ""),
    ],
)
def test_it_makes_an_answer_plain_for_the_model(answer: str, expected: str) -> None:
    assert plain(answer) == expected


def test_it_stores_one_answer_vector_per_entry_with_the_bots_model(shop: Bot) -> None:
    assert entries_embed(bot=shop) == 4  # still the number of phrasings
    model = bot_embedding_model(shop.pk)
    assert model == settings.EMBEDDING_MODEL
    rows = {row.entry.external_id: row for row in AnswerEmbedding.objects.select_related("entry")}
    assert set(rows) == {"track", "returns"}
    track = rows["track"]
    text = "Use the tracking page: track it here."
    assert track.model_name == model
    assert track.text_hash == Embedding.hash_text(text)
    assert track.dim == len(vector(track)) == embeddings.get_encoder(model).dim
    assert np.linalg.norm(vector(track)) == pytest.approx(1.0, abs=1e-4)
    assert np.allclose(vector(track), embeddings.encode_passages([text], model)[0], atol=1e-5)


def test_an_unchanged_answer_is_not_encoded_again(shop: Bot) -> None:
    entries_embed(bot=shop)
    before = set(AnswerEmbedding.objects.values_list("pk", flat=True))
    assert entries_embed(bot=shop) == 0
    assert set(AnswerEmbedding.objects.values_list("pk", flat=True)) == before


def test_editing_the_answer_replaces_its_vector(shop: Bot) -> None:
    entries_embed(bot=shop)
    old = AnswerEmbedding.objects.get(entry__external_id="returns")
    entry, _ = entry_upsert(
        bot=shop,
        question="How do I return an item?",
        answer="Returns are free for 60 days; print the label from your account.",
        alternatives=["Can I send it back?"],
        external_id="returns",
    )
    assert entries_embed(entries=[entry]) == 0  # the phrasings did not change
    new = AnswerEmbedding.objects.get(entry=entry)
    assert new.pk != old.pk
    assert new.text_hash == Embedding.hash_text(entry.answer) != old.text_hash
    assert not np.allclose(vector(new), vector(old))
    assert AnswerEmbedding.objects.filter(entry__bot=shop).count() == 2


def test_an_entry_with_an_empty_answer_has_no_answer_vector(shop: Bot) -> None:
    empty = Entry.objects.create(bot=shop, question="Any news?", answer="**  **")
    entries_embed(bot=shop)
    assert not AnswerEmbedding.objects.filter(entry=empty).exists()
    assert Embedding.objects.filter(entry=empty).exists()  # its question is still embedded

    track = Entry.objects.get(external_id="track")
    track.answer = "  "
    track.save()
    entries_embed(bot=shop)
    assert not AnswerEmbedding.objects.filter(entry=track).exists()


def test_a_model_change_replaces_the_answer_vectors(shop: Bot) -> None:
    entries_embed(bot=shop)
    shop.embedding_model = settings.EMBEDDING_MODEL_CJK
    shop.save()
    entries_embed(bot=shop)
    assert set(AnswerEmbedding.objects.values_list("model_name", flat=True)) == {settings.EMBEDDING_MODEL_CJK}
    assert AnswerEmbedding.objects.count() == 2


def test_kb_reindex_force_encodes_the_answers_again(shop: Bot) -> None:
    entries_embed(bot=shop)
    before = set(AnswerEmbedding.objects.values_list("pk", flat=True))
    call_command(
        "kb_reindex", f"--bot={shop.public_key}", "--force", stdout=io.StringIO(), stderr=io.StringIO()
    )
    after = set(AnswerEmbedding.objects.values_list("pk", flat=True))
    assert len(after) == 2 and not after & before


def test_the_live_ranker_reads_the_answer_vectors(shop: Bot) -> None:
    snapshot = matching.snapshot_for(shop.pk)
    ranker = snapshot.ranker
    assert ranker.answer_matrix is not None
    assert ranker.answer_matrix.shape == (2, embeddings.get_encoder(snapshot.model).dim)
    text = "How long do I have to return something?"
    query = embeddings.get_encoder(snapshot.model).encode([text])[0]
    best = ranker.rank(query, text, k=2)[0]
    assert best.entry_id == Entry.objects.get(external_id="returns").pk
    assert len(best.features) == len(ENTRY_FEATURES) == 7
    assert best.features[ANSWER_COLUMN] > 0.1


def test_an_answer_edit_rebuilds_the_index_with_the_new_answer_vector(shop: Bot) -> None:
    entry = Entry.objects.get(external_id="returns")
    first = matching.snapshot_for(shop.pk)
    revision = Bot.objects.get(pk=shop.pk).kb_revision
    entry.answer = "We do not take anything back, sorry."
    entry.save()
    assert Bot.objects.get(pk=shop.pk).kb_revision > revision
    second = matching.snapshot_for(shop.pk)
    assert second is not first
    row = list(second.ranker.whitened.entries).index(entry.pk)
    stored = AnswerEmbedding.objects.get(entry=entry, model_name=second.model)
    assert stored.text_hash == Embedding.hash_text(entry.answer)
    assert np.allclose(second.ranker.answer_matrix[row], vector(stored), atol=1e-5)
    assert not np.allclose(first.ranker.answer_matrix[row], second.ranker.answer_matrix[row])


def test_without_an_answer_for_every_entry_the_answer_features_are_zero(shop: Bot) -> None:
    Entry.objects.create(bot=shop, question="Do you gift wrap?", answer="__ __")
    snapshot = matching.snapshot_for(shop.pk)
    assert AnswerEmbedding.objects.filter(entry__bot=shop).count() == 2
    assert snapshot.ranker.answer_matrix is None
    text = "Can I send it back?"
    query = embeddings.get_encoder(snapshot.model).encode([text])[0]
    features = snapshot.ranker.rank(query, text, k=1)[0].features
    assert features[ANSWER_COLUMN:] == (0.0, 0.0)
