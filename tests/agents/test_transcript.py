"""The transcript page and its forms: notes, labels, review state."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from agents.models import Correction, Label, Note
from chatbot.models import Conversation, Feedback, Visitor
from knowledge.models import Entry
from tests.factories import make_bot, make_conversation, make_message

pytestmark = pytest.mark.django_db


@pytest.fixture
def conversation() -> Conversation:
    bot = make_bot(name="Shop")
    visitor = Visitor.objects.create(
        bot=bot, name="Li Lei", email="li@example.com", language="zh-CN", page_url="https://shop.example/cart"
    )
    agent = User.objects.create_user("ann")
    return make_conversation(bot, visitor=visitor, status="with_agent", assigned_agent=agent)


def page(client: Client, conversation: Conversation) -> str:
    response = client.get(reverse("agents:transcript", args=[conversation.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_it_shows_the_conversation_header(staff_client: Client, conversation: Conversation) -> None:
    Label.objects.create(name="退款").conversations.add(conversation)
    content = page(staff_client, conversation)
    visitor = conversation.visitor
    for text in (str(visitor.uid), "Li Lei", "li@example.com", "zh-CN", "https://shop.example/cart"):
        assert text in content
    assert "With agent" in content and "ann" in content and "退款" in content


def test_it_shows_every_message_with_its_details(staff_client: Client, conversation: Conversation) -> None:
    entry = Entry.objects.create(bot=conversation.bot, question="How do refunds work?", answer="Like this.")
    make_message(conversation, text="refund?")
    kb = make_message(
        conversation, role="bot", source="knowledge", text="Like this.", matched_entry=entry, score=0.9132
    )
    Feedback.objects.create(message=kb, rating="down", comment="Not helpful at all")
    make_message(
        conversation,
        role="bot",
        source="llm",
        text="Half an ans",
        status="partial",
        llm_model="qwen-plus",
        prompt_tokens=321,
        completion_tokens=45,
        tokens_estimated=True,
        cost=Decimal("0.001234"),
        ttft_ms=456,
        total_ms=2345,
    )
    content = page(staff_client, conversation)
    assert content.index("refund?") < content.index("Like this.") < content.index("Half an ans")
    assert reverse("admin:knowledge_entry_change", args=[entry.pk]) in content
    assert "How do refunds work?" in content and "0.913" in content
    assert "Knowledge base" in content and "LLM" in content and "Partial" in content
    assert "qwen-plus" in content and "321 prompt + 45 completion (estimated)" in content
    assert "0.001234" in content and "456 ms" in content and "2345 ms" in content
    assert "Thumbs down" in content and "Not helpful at all" in content


def test_it_escapes_message_text(staff_client: Client, conversation: Conversation) -> None:
    make_message(conversation, text='<script>alert("x")</script><b>bold</b>')
    content = page(staff_client, conversation)
    assert "<script>alert" not in content and "<b>bold</b>" not in content
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in content


def test_it_hides_a_reply_still_being_written(staff_client: Client, conversation: Conversation) -> None:
    make_message(conversation, text="hello")
    reserved = make_message(conversation, role="bot", source="llm", text="We ship to", status="pending")
    content = page(staff_client, conversation)
    assert f'id="message-{reserved.pk}"' not in content
    assert reverse("agents:correct", args=[reserved.pk]) not in content


def test_it_links_bot_replies_to_the_knowledge_base(staff_client: Client, conversation: Conversation) -> None:
    question = make_message(conversation, text="Do you ship to Mars?")
    answered = make_message(conversation, role="bot", source="llm", text="We do.")
    corrected = make_message(conversation, role="bot", source="fallback", text="Sorry.")
    entry = Entry.objects.create(bot=conversation.bot, question="Shipping to Mars?", answer="Yes.")
    Correction.objects.create(message=corrected, entry=entry, kind="entry", question="Do you ship to Mars?")
    content = page(staff_client, conversation)
    assert reverse("agents:correct", args=[answered.pk]) in content
    assert reverse("agents:correct", args=[corrected.pk]) in content
    assert reverse("agents:correct", args=[question.pk]) not in content
    assert f"Added to entry #{entry.pk}" in content
    assert content.count("Added to entry") == 1


def test_it_adds_a_note(staff_client: Client, conversation: Conversation) -> None:
    url = reverse("agents:note_add", args=[conversation.pk])
    response = staff_client.post(url, {"text": "  Called back, <refund> issued.  "}, follow=True)
    assert response.redirect_chain == [(reverse("agents:transcript", args=[conversation.pk]), 302)]
    note = Note.objects.get()
    assert (note.conversation, note.author.username, note.text) == (
        conversation,
        "staff",
        "Called back, <refund> issued.",
    )
    content = response.content.decode()
    assert "Note added." in content and "Called back, &lt;refund&gt; issued." in content


@pytest.mark.parametrize(
    ("text", "error"), [("   ", "This field is required."), ("x" * 5001, "at most 5000")]
)
def test_it_refuses_an_empty_or_too_long_note(
    staff_client: Client, conversation: Conversation, text: str, error: str
) -> None:
    response = staff_client.post(reverse("agents:note_add", args=[conversation.pk]), {"text": text})
    assert response.status_code == 400
    assert error in response.content.decode()
    assert not Note.objects.exists()


def test_it_replaces_the_labels(staff_client: Client, conversation: Conversation) -> None:
    Label.objects.create(name="old").conversations.add(conversation)
    url = reverse("agents:labels_set", args=[conversation.pk])
    response = staff_client.post(url, {"labels": "Refund, bug_report ,退款，refund,,"}, follow=True)
    assert sorted(conversation.labels.values_list("name", flat=True)) == ["bug_report", "refund", "退款"]
    assert Label.objects.filter(name="old").exists()  # still there for other conversations
    assert "Labels saved (3)." in response.content.decode()
    staff_client.post(url, {"labels": ""})
    assert not conversation.labels.exists()


@pytest.mark.parametrize(
    ("labels", "error"),
    [
        ("refund, two words", "“two words” may contain only letters, digits"),
        ("ok, <b>", "may contain only letters"),
        ("a" * 51, "is longer than 50 characters"),
        (",".join(f"l{n}" for n in range(21)), "At most 20 labels"),
    ],
)
def test_it_refuses_bad_label_names(
    staff_client: Client, conversation: Conversation, labels: str, error: str
) -> None:
    Label.objects.create(name="kept").conversations.add(conversation)
    response = staff_client.post(reverse("agents:labels_set", args=[conversation.pk]), {"labels": labels})
    assert response.status_code == 400
    assert error in response.content.decode()
    assert list(conversation.labels.values_list("name", flat=True)) == ["kept"]
    assert Label.objects.count() == 1


@pytest.mark.parametrize(
    ("before", "action", "after"),
    [
        ({"needs_followup": True}, "resolve", {"resolved": True, "needs_followup": False}),
        ({"resolved": True}, "reopen", {"resolved": False, "needs_followup": False}),
        ({"resolved": True}, "followup", {"resolved": False, "needs_followup": True}),
        (
            {"resolved": True, "needs_followup": True},
            "clear_followup",
            {"resolved": True, "needs_followup": False},
        ),
    ],
)
def test_it_sets_the_review_state(
    staff_client: Client, conversation: Conversation, before: dict, action: str, after: dict
) -> None:
    Conversation.objects.filter(pk=conversation.pk).update(
        needs_followup=before.get("needs_followup", False),
        resolved_at=timezone.now() if before.get("resolved") else None,
    )
    response = staff_client.post(reverse("agents:review_set", args=[conversation.pk]), {"action": action})
    assert response.status_code == 302
    conversation.refresh_from_db()
    assert (conversation.resolved_at is not None, conversation.needs_followup) == (
        after["resolved"],
        after["needs_followup"],
    )
    assert conversation.status == "with_agent"


def test_it_refuses_an_unknown_review_action(staff_client: Client, conversation: Conversation) -> None:
    response = staff_client.post(reverse("agents:review_set", args=[conversation.pk]), {"action": "delete"})
    assert response.status_code == 400
    assert "Unknown review action" in response.content.decode()
    conversation.refresh_from_db()
    assert (conversation.resolved_at, conversation.needs_followup) == (None, False)


@pytest.mark.parametrize("name", ["note_add", "labels_set", "review_set"])
def test_it_refuses_get_on_forms(staff_client: Client, conversation: Conversation, name: str) -> None:
    assert staff_client.get(reverse(f"agents:{name}", args=[conversation.pk])).status_code == 405


def test_it_404s_for_an_unknown_conversation(staff_client: Client) -> None:
    assert staff_client.get(reverse("agents:transcript", args=[987654])).status_code == 404
    assert staff_client.post(reverse("agents:note_add", args=[987654]), {"text": "x"}).status_code == 404
    assert not Note.objects.exists()


def test_it_renders_in_a_bounded_number_of_queries(
    staff_client: Client, conversation: Conversation, django_assert_max_num_queries: Any
) -> None:
    entry = Entry.objects.create(bot=conversation.bot, question="Q?", answer="A.")
    for n in range(10):
        make_message(conversation, text=f"question {n}")
        reply = make_message(conversation, role="bot", source="knowledge", text="A.", matched_entry=entry)
        Feedback.objects.create(message=reply, rating="up")
        Correction.objects.create(message=reply, entry=entry, kind="alternative", question=f"question {n}")
    # Session, user, visibility, conversation, labels, messages, corrections, notes, agent.
    with django_assert_max_num_queries(9):
        page(staff_client, conversation)
