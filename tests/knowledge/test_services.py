from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from knowledge.models import Entry
from knowledge.services import entry_upsert
from tests.factories import make_bot

pytestmark = pytest.mark.django_db


def test_it_creates_then_updates_an_entry_by_external_id() -> None:
    bot = make_bot()
    entry, created = entry_upsert(
        bot=bot,
        external_id="ship-1",
        question="How long is shipping?",
        answer="3 days.",
        alternatives=["delivery time?", "delivery time?", " ", "How long is shipping?"],
        tags=["Shipping"],
    )
    assert created
    assert [a.text for a in entry.alternatives.all()] == ["delivery time?"]
    assert entry.phrasings() == ["How long is shipping?", "delivery time?"]
    assert [t.name for t in entry.tags.all()] == ["shipping"]

    again, created = entry_upsert(
        bot=bot,
        external_id="ship-1",
        question="How long does shipping take?",
        answer="2-3 days.",
        alternatives=["when will it arrive?"],
        tags=[],
    )
    assert not created and again.pk == entry.pk
    assert Entry.objects.count() == 1
    assert [a.text for a in again.alternatives.all()] == ["when will it arrive?"]
    assert again.tags.count() == 0


def test_it_refuses_an_entry_without_an_answer() -> None:
    with pytest.raises(ValueError, match="question and an answer"):
        entry_upsert(bot=make_bot(), question="Q?", answer="  ")
    assert not Entry.objects.exists()


def test_external_ids_are_unique_per_bot_but_blank_ids_may_repeat() -> None:
    bot = make_bot()
    Entry.objects.create(bot=bot, question="a", answer="b")
    Entry.objects.create(bot=bot, question="c", answer="d")
    Entry.objects.create(bot=bot, question="e", answer="f", external_id="x")
    Entry.objects.create(bot=make_bot(), question="e", answer="f", external_id="x")
    with pytest.raises(IntegrityError), transaction.atomic():
        Entry.objects.create(bot=bot, question="g", answer="h", external_id="x")
