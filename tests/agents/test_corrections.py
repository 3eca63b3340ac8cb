"""Correcting a bot reply into the knowledge base: the form, both save modes, validation,
access, and the whole loop from a fallback reply to a knowledge-base answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.core.cache import cache
from django.db import connections
from django.test import Client
from django.urls import reverse

from agents.models import Correction
from chatbot.models import Bot, Conversation, Message
from knowledge import embeddings, matching
from knowledge.models import Alternative, Embedding, Entry
from knowledge.services import entries_embed, entry_upsert
from tests.agents.conftest import client_for, make_user
from tests.chatbot.ws_client import connected, db, hello, send, until
from tests.factories import make_bot, make_conversation, make_message

QUESTION = "How do I reset my password?"


@pytest.fixture
def bot(db: Any) -> Bot:
    return make_bot(name="Shop")


@pytest.fixture
def conversation(bot: Bot) -> Conversation:
    return make_conversation(bot)


@pytest.fixture
def reply(conversation: Conversation) -> Message:
    make_message(conversation, text="Hello there")
    make_message(conversation, role="bot", source="llm", text="Hi! How can I help?")
    make_message(conversation, text=QUESTION)
    return make_message(conversation, role="bot", source="fallback", text="Sorry, I can't answer that.")


@pytest.fixture
def staff(db: Any) -> User:
    return make_user("staff", staff=True)


@pytest.fixture
def client(staff: User) -> Client:
    return client_for(staff)


def url(message: Message) -> str:
    return reverse("agents:correct", args=[message.pk])


def written() -> tuple[int, int, int, int]:
    return (
        Entry.objects.count(),
        Alternative.objects.count(),
        Correction.objects.count(),
        Embedding.objects.count(),
    )


def phrasings_embedded(entry: Entry) -> set[str]:
    return set(entry.embeddings.filter(model_name=embeddings.model_name()).values_list("text", flat=True))


# --- The form -----------------------------------------------------------------------------


def test_it_prefills_the_question_the_reply_answered_and_the_reply(client: Client, reply: Message) -> None:
    make_message(reply.conversation, text="A later question")
    response = client.get(url(reply))
    assert response.status_code == 200
    form = response.context["entry_form"]
    assert (form["question"].value(), form["answer"].value()) == (QUESTION, "Sorry, I can't answer that.")
    assert response.context["alternative_form"]["question"].value() == QUESTION
    assert response.content.count(b'id="id_question"') == 1  # two forms, distinct element ids


def test_it_prefills_from_the_query_string_when_given(client: Client, reply: Message) -> None:
    response = client.get(url(reply), {"question": "Password reset?", "answer": ""})
    form = response.context["entry_form"]
    assert (form["question"].value(), form["answer"].value()) == ("Password reset?", "")


def test_it_suggests_the_closest_entries_with_their_scores(client: Client, bot: Bot, reply: Message) -> None:
    entry, _ = entry_upsert(bot=bot, question="How can I change my password?", answer="Settings.")
    entry_upsert(bot=bot, question="Where is my parcel?", answer="Tracking page.")
    entry_upsert(bot=make_bot(name="Other"), question=QUESTION, answer="Other bot's answer.")
    response = client.get(url(reply))
    suggestions = response.context["suggestions"]
    assert suggestions[0].entry_id == entry.pk
    assert {s.entry_id for s in suggestions} <= set(
        Entry.objects.filter(bot=bot).values_list("pk", flat=True)
    )
    assert f"{suggestions[0].score:.2f}".encode() in response.content
    assert response.context["alternative_form"]["entry"].value() == entry.pk
    assert b"Other bot&#x27;s answer." not in response.content


# --- Saving -------------------------------------------------------------------------------


def test_it_saves_a_new_entry_embedded_and_linked_to_the_reply(
    client: Client, staff: User, bot: Bot, reply: Message
) -> None:
    revision = bot.kb_revision
    response = client.post(
        url(reply),
        {
            "mode": "entry",
            "question": f"  {QUESTION} ",
            "answer": "Use the reset link on the login page.",
            "alternatives": "I forgot my password\n\nI forgot my password\nCan't log in",
            "tags": "Account, login ,",
        },
    )
    assert response.status_code == 302
    assert (
        response["Location"]
        == reverse("agents:transcript", args=[reply.conversation_id]) + f"#message-{reply.pk}"
    )
    entry = Entry.objects.get()
    assert (entry.bot, entry.question, entry.answer, entry.is_active) == (
        bot,
        QUESTION,
        "Use the reset link on the login page.",
        True,
    )
    assert entry.phrasings() == [QUESTION, "I forgot my password", "Can't log in"]
    assert sorted(entry.tags.values_list("name", flat=True)) == ["account", "login"]
    assert phrasings_embedded(entry) == set(entry.phrasings())
    correction = Correction.objects.get()
    assert (correction.message, correction.entry, correction.kind, correction.question, correction.agent) == (
        reply,
        entry,
        "entry",
        QUESTION,
        staff,
    )
    bot.refresh_from_db()
    assert bot.kb_revision > revision
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        f"Saved to the knowledge base: “{QUESTION}”."
    ]


def test_it_adds_the_question_as_a_phrasing_of_an_existing_entry(
    client: Client, staff: User, bot: Bot, reply: Message
) -> None:
    entry, _ = entry_upsert(bot=bot, question="How can I change my password?", answer="Settings.")
    entries_embed(entries=[entry])
    revision = Bot.objects.get(pk=bot.pk).kb_revision
    response = client.post(url(reply), {"mode": "alternative", "question": QUESTION, "entry": entry.pk})
    assert response.status_code == 302
    assert list(entry.alternatives.values_list("text", flat=True)) == [QUESTION]
    entry.refresh_from_db()
    assert (entry.question, entry.answer, Entry.objects.count()) == (
        "How can I change my password?",
        "Settings.",
        1,
    )
    assert phrasings_embedded(entry) == {"How can I change my password?", QUESTION}
    correction = Correction.objects.get()
    assert (correction.message, correction.entry, correction.kind, correction.question, correction.agent) == (
        reply,
        entry,
        "alternative",
        QUESTION,
        staff,
    )
    assert Bot.objects.get(pk=bot.pk).kb_revision > revision
    assert matching.match(bot, QUESTION).best.entry_id == entry.pk


def test_it_does_not_repeat_a_phrasing_the_entry_already_has(
    client: Client, bot: Bot, reply: Message
) -> None:
    entry, _ = entry_upsert(bot=bot, question="Password help", answer="Settings.", alternatives=[QUESTION])
    client.post(url(reply), {"mode": "alternative", "question": QUESTION, "entry": entry.pk})
    assert entry.alternatives.count() == 1
    assert Correction.objects.get().entry == entry


# --- Validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"mode": "entry", "question": "  ", "answer": "An answer"}, "question"),
        ({"mode": "entry", "question": QUESTION, "answer": ""}, "answer"),
        ({"question": QUESTION}, "answer"),  # no mode: a new entry
        ({"mode": "entry", "question": QUESTION, "answer": "A", "tags": "two words"}, "tags"),
        ({"mode": "alternative", "question": "", "entry": "1"}, "question"),
        ({"mode": "alternative", "question": QUESTION}, "entry"),
        ({"mode": "alternative", "question": QUESTION, "entry": "999999"}, "entry"),
    ],
)
def test_it_shows_errors_and_writes_nothing(
    client: Client, reply: Message, data: dict[str, str], field: str
) -> None:
    before = written()
    response = client.post(url(reply), data)
    assert response.status_code == 200
    form = response.context["alternative_form" if data.get("mode") == "alternative" else "entry_form"]
    assert form.errors[field]
    assert form.errors[field][0] in response.content.decode()
    assert written() == before


def test_it_refuses_an_entry_of_another_bot(client: Client, reply: Message) -> None:
    foreign, _ = entry_upsert(bot=make_bot(name="Other"), question="Foreign", answer="No.")
    inactive, _ = entry_upsert(bot=reply.conversation.bot, question="Old", answer="Gone.", is_active=False)
    before = written()
    for entry in (foreign, inactive):
        response = client.post(url(reply), {"mode": "alternative", "question": QUESTION, "entry": entry.pk})
        assert "Choose an active entry of this bot." in response.context["alternative_form"].errors["entry"]
    assert written() == before


# --- Access -------------------------------------------------------------------------------


def test_it_is_a_404_for_another_bots_reply(reply: Message) -> None:
    client = client_for(make_user("agent", agent=True, bots=[make_bot(name="Other")]))
    assert client.get(url(reply)).status_code == 404
    assert client.post(url(reply), {"mode": "entry", "question": "Q", "answer": "A"}).status_code == 404
    assert written() == (0, 0, 0, 0)


def test_it_is_a_404_for_anything_but_a_bots_reply(client: Client, conversation: Conversation) -> None:
    visitor = make_message(conversation, text="Hi")
    agent = make_message(conversation, role="agent", source="agent", text="A person here.")
    reserved = make_message(conversation, role="bot", source="llm", text="Being wri", status="pending")
    for message in (visitor, agent, reserved):
        assert client.get(url(message)).status_code == 404
        assert client.post(url(message), {"mode": "entry", "question": "Q", "answer": "A"}).status_code == 404
    assert client.get(reverse("agents:correct", args=[999999])).status_code == 404
    assert written() == (0, 0, 0, 0)


# --- The loop: a fallback reply, a correction, then a knowledge-base answer -------------------


@pytest.fixture
async def release_connections() -> AsyncIterator[None]:
    yield
    # ORM calls from async code ran on a worker thread: close its connection, or PostgreSQL
    # refuses to drop the test database at the end of the run.
    await sync_to_async(connections.close_all)()


@pytest.mark.django_db(transaction=True)
async def test_it_answers_from_the_knowledge_base_after_a_correction(
    settings: Any, release_connections: None
) -> None:
    settings.LLM_PROVIDER = ""  # no LLM: the first reply is the fallback
    cache.clear()  # rate limits
    shop = await db(make_bot, name="Shop", fallback_reply="Shall I find a person?")
    client = await db(lambda: client_for(make_user("staff", staff=True)))
    async with connected(shop) as comm:
        await hello(comm)
        await send(comm, type="message", text=QUESTION, client_id="c1")
        first = (await until(comm, "reply.end"))[-1]
        assert (first["source"], first["text"]) == ("fallback", "Shall I find a person?")

        form = await db(client.get, reverse("agents:correct", args=[first["id"]]))
        assert form.context["entry_form"]["question"].value() == QUESTION
        saved = await db(
            client.post,
            reverse("agents:correct", args=[first["id"]]),
            {"mode": "entry", "question": QUESTION, "answer": "Use the reset link on the login page."},
        )
        assert saved.status_code == 302

        await send(comm, type="message", text=QUESTION, client_id="c2")
        second = (await until(comm, "reply.end"))[-1]
    entry = await db(Entry.objects.get)
    assert (second["source"], second["entry_id"], second["text"]) == (
        "knowledge",
        entry.pk,
        "Use the reset link on the login page.",
    )
    assert second["score"] >= shop.answer_threshold
    stored = await db(Message.objects.get, pk=second["id"])
    assert (stored.source, stored.matched_entry_id) == ("knowledge", entry.pk)
    correction = await db(Correction.objects.get)
    assert (correction.message_id, correction.entry_id) == (first["id"], entry.pk)
