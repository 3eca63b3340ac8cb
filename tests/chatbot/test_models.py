from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError

from chatbot.models import Bot, Conversation, Feedback, Message, Visitor
from chatbot.services import InvalidTransition, bot_create, conversation_set_status
from knowledge.models import Entry
from tests.factories import make_bot, make_conversation, make_message

pytestmark = pytest.mark.django_db


def test_it_gives_each_bot_a_random_url_safe_public_key_and_a_separate_secret() -> None:
    first, second = make_bot(), make_bot()
    assert re.fullmatch(r"[A-Za-z0-9_-]{20,}", first.public_key)
    assert first.public_key != second.public_key
    assert first.secret != first.public_key and len(first.secret) >= 40


def test_it_refuses_a_duplicate_public_key() -> None:
    bot = make_bot()
    with pytest.raises(IntegrityError), transaction.atomic():
        Bot.objects.create(name="copy", public_key=bot.public_key)


def test_the_database_refuses_a_reference_threshold_above_the_answer_threshold() -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        Bot.objects.create(name="bad", answer_threshold=0.5, reference_threshold=0.7)


def test_validation_explains_a_bad_threshold_and_bad_origins() -> None:
    with pytest.raises(ValidationError) as err:
        bot_create(name="x", origins=["shop.example"])
    assert "not an origin" in str(err.value)
    bot = Bot(name="x", answer_threshold=0.5, reference_threshold=0.7)
    with pytest.raises(ValidationError) as err:
        bot.full_clean()
    assert "reference_threshold" in err.value.message_dict


def test_a_bot_with_conversations_cannot_be_deleted() -> None:
    conversation = make_conversation()
    with pytest.raises(ProtectedError):
        conversation.bot.delete()
    assert Conversation.objects.filter(pk=conversation.pk).exists()


def test_erasing_a_visitor_erases_their_conversations_messages_and_feedback() -> None:
    conversation = make_conversation()
    reply = make_message(conversation, role="bot", source="llm", text="hi")
    Feedback.objects.create(message=reply, rating="up")
    conversation.visitor.delete()
    assert not Conversation.objects.exists()
    assert not Message.objects.exists()
    assert not Feedback.objects.exists()


def test_deleting_a_knowledge_entry_keeps_the_transcript() -> None:
    conversation = make_conversation()
    entry = Entry.objects.create(bot=conversation.bot, question="q?", answer="a.")
    reply = make_message(conversation, role="bot", source="knowledge", matched_entry=entry, score=0.9)
    entry.delete()
    reply.refresh_from_db()
    assert reply.matched_entry is None
    assert reply.score == 0.9


def test_a_visitor_id_is_unique_per_bot_only() -> None:
    bot, other = make_bot(), make_bot()
    visitor = Visitor.objects.create(bot=bot)
    Visitor.objects.create(bot=other, uid=visitor.uid)
    with pytest.raises(IntegrityError), transaction.atomic():
        Visitor.objects.create(bot=bot, uid=visitor.uid)


@pytest.mark.parametrize(
    ("role", "source"), [("visitor", "llm"), ("bot", ""), ("agent", ""), ("robot", "llm")]
)
def test_the_database_refuses_a_source_that_does_not_fit_the_role(role: str, source: str) -> None:
    conversation = make_conversation()
    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(conversation=conversation, role=role, source=source, text="x")


def test_one_feedback_per_reply() -> None:
    reply = make_message(make_conversation(), role="bot", source="llm")
    Feedback.objects.create(message=reply, rating="up")
    with pytest.raises(IntegrityError), transaction.atomic():
        Feedback.objects.create(message=reply, rating="down")


def test_a_conversation_with_an_agent_must_name_the_agent() -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        make_conversation(status="with_agent")


def test_allowed_status_transitions_assign_and_release_the_agent() -> None:
    agent = get_user_model().objects.create_user("agent", password="x")
    conversation = make_conversation()
    conversation = conversation_set_status(conversation=conversation, status="waiting_for_agent")
    conversation = conversation_set_status(conversation=conversation, status="with_agent", agent=agent)
    assert conversation.assigned_agent == agent
    conversation = conversation_set_status(conversation=conversation, status="open")
    conversation.refresh_from_db()
    assert (conversation.status, conversation.assigned_agent) == ("open", None)


@pytest.mark.parametrize(
    ("start", "target"),
    [("closed", "with_agent"), ("closed", "waiting_for_agent"), ("with_agent", "waiting_for_agent")],
)
def test_it_refuses_transitions_that_make_no_sense(start: str, target: str) -> None:
    agent = get_user_model().objects.create_user("agent", password="x")
    conversation = make_conversation(status=start, assigned_agent=agent if start == "with_agent" else None)
    with pytest.raises(InvalidTransition):
        conversation_set_status(conversation=conversation, status=target, agent=agent)
    conversation.refresh_from_db()
    assert conversation.status == start


def test_taking_a_conversation_needs_an_agent() -> None:
    conversation = make_conversation()
    with pytest.raises(InvalidTransition, match="Only an agent"):
        conversation_set_status(conversation=conversation, status="with_agent")


def test_string_forms_are_readable() -> None:
    conversation = make_conversation(bot=make_bot(name="Shop"))
    message = make_message(conversation, text="x" * 100)
    assert str(conversation.bot) == "Shop"
    assert str(conversation).endswith("Shop (Open)")
    assert str(message).startswith("visitor: xxx") and str(message).endswith("...")
