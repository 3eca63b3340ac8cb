"""Writes on conversations: notes, labels, review state."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from agents.models import Label, Note
from agents.services import (
    conversation_labels_set,
    conversation_review_set,
    label_names_parse,
    note_create,
)
from chatbot.models import Conversation
from tests.agents.conftest import make_user
from tests.factories import make_conversation

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ("", []),
        (" , ,", []),
        ("Refund", ["refund"]),
        ("refund, REFUND,bug", ["refund", "bug"]),
        ("退款，投诉、bug", ["退款", "投诉", "bug"]),
        ("ＶＩＰ", ["vip"]),  # full-width letters become ASCII
        ("a-b_c9", ["a-b_c9"]),
        ("é-café", ["é-café"]),
    ],
)
def test_it_parses_label_names(raw: str, names: list[str]) -> None:
    assert label_names_parse(raw=raw) == names


@pytest.mark.parametrize(
    "raw", ["two words", "a/b", "<b>", "x" * 51, "emoji😀", ",".join("abcdefghijklmnopqrstu")]
)
def test_it_refuses_bad_label_names(raw: str) -> None:
    with pytest.raises(ValidationError):
        label_names_parse(raw=raw)


def test_it_replaces_labels_and_reuses_existing_ones() -> None:
    conversation = make_conversation()
    kept = Label.objects.create(name="refund")
    Label.objects.create(name="old").conversations.add(conversation)
    labels = conversation_labels_set(conversation=conversation, names=["refund", "新"])
    assert sorted(label.name for label in labels) == ["refund", "新"]
    assert set(conversation.labels.all()) == set(labels)
    assert kept in labels and Label.objects.count() == 3
    assert conversation_labels_set(conversation=conversation, names=[]) == []
    assert not conversation.labels.exists()


def test_it_writes_no_label_when_one_name_is_bad() -> None:
    conversation = make_conversation()
    with pytest.raises(ValidationError):
        conversation_labels_set(conversation=conversation, names=["good", "not good"])
    assert not Label.objects.exists()


def test_it_creates_a_note() -> None:
    conversation, author = make_conversation(), make_user("ann", agent=True)
    note = note_create(conversation=conversation, author=author, text="  Refund sent.\n")
    assert Note.objects.get() == note
    assert (note.text, note.author, note.conversation) == ("Refund sent.", author, conversation)


@pytest.mark.parametrize("text", ["", "  \n ", "x" * 5001])
def test_it_refuses_an_empty_or_too_long_note(text: str) -> None:
    with pytest.raises(ValidationError):
        note_create(conversation=make_conversation(), author=None, text=text)
    assert not Note.objects.exists()


def test_it_keeps_a_status_changed_meanwhile_when_setting_the_review_state() -> None:
    conversation = make_conversation(needs_followup=True)
    Conversation.objects.filter(pk=conversation.pk).update(status="closed")
    conversation_review_set(conversation=conversation, action="resolve")
    stored = Conversation.objects.get(pk=conversation.pk)
    assert stored.status == "closed"
    assert stored.resolved_at is not None and stored.needs_followup is False
    assert conversation.resolved_at == stored.resolved_at


def test_it_refuses_an_unknown_review_action() -> None:
    conversation = make_conversation()
    with pytest.raises(ValidationError):
        conversation_review_set(conversation=conversation, action="archive")
    assert Conversation.objects.get(pk=conversation.pk).resolved_at is None
