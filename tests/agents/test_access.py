"""Every /agent/ URL: anonymous users are sent to log in, non-agents get 403, agents of
another bot get 404 for this bot's objects and never see its conversations listed."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from agents.access import is_agent, visible_bots
from chatbot.models import Message
from tests.agents.conftest import client_for, make_user
from tests.factories import make_bot, make_conversation, make_message

pytestmark = pytest.mark.django_db

SECRET = "my card number is 4000-1234 please refund"


@pytest.fixture
def setting() -> dict[str, Any]:
    bot = make_bot(name="Shop")
    conversation = make_conversation(bot)
    make_message(conversation, text=SECRET)
    reply = make_message(conversation, role=Message.Role.BOT, source=Message.Source.LLM, text="Sure.")
    return {"bot": bot, "conversation": conversation, "reply": reply}


def body(response: Any) -> bytes:
    """The whole body, of a plain or a streamed (export) response."""
    return b"".join(response.streaming_content) if response.streaming else response.content


def urls(setting: dict[str, Any]) -> list[tuple[str, str]]:
    """(method, url) for every workspace view; object views name this bot's objects."""
    pk, reply = setting["conversation"].pk, setting["reply"].pk
    return [
        ("get", reverse("agents:conversations")),
        ("get", reverse("agents:conversations_export", args=["csv"])),
        ("get", reverse("agents:conversations_export", args=["json"])),
        ("get", reverse("agents:transcript", args=[pk])),
        ("get", reverse("agents:transcript_export", args=[pk, "csv"])),
        ("get", reverse("agents:transcript_export", args=[pk, "json"])),
        ("post", reverse("agents:note_add", args=[pk])),
        ("post", reverse("agents:labels_set", args=[pk])),
        ("post", reverse("agents:review_set", args=[pk])),
        ("get", reverse("agents:correct", args=[reply])),
        ("post", reverse("agents:correct", args=[reply])),
        ("get", reverse("agents:gaps")),
        ("get", reverse("agents:stats")),
        ("get", reverse("agents:live")),
    ]


def test_it_sends_anonymous_users_to_the_login_page(setting: dict[str, Any]) -> None:
    client = Client()
    for method, url in urls(setting):
        response = getattr(client, method)(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("agents:login")), url
        assert SECRET.encode() not in body(response)


def test_it_refuses_signed_in_users_who_are_not_agents(setting: dict[str, Any]) -> None:
    client = client_for(make_user("visitor"))
    for method, url in urls(setting):
        response = getattr(client, method)(url)
        assert response.status_code == 403, url
        assert SECRET.encode() not in body(response)


def test_it_lets_staff_and_agent_group_members_in(setting: dict[str, Any]) -> None:
    for user in (make_user("staff", staff=True), make_user("helper", agent=True)):
        assert is_agent(user)
        response = client_for(user).get(reverse("agents:transcript", args=[setting["conversation"].pk]))
        assert response.status_code == 200
        assert SECRET.encode() in body(response)


def test_it_hides_another_bots_objects_from_an_assigned_agent(setting: dict[str, Any]) -> None:
    other_bot = make_bot(name="Other shop")
    agent = make_user("other-agent", agent=True, bots=[other_bot])
    assert list(visible_bots(agent)) == [other_bot]
    client = client_for(agent)
    for method, url in urls(setting):
        response = getattr(client, method)(url)
        assert SECRET.encode() not in body(response), url
        names_an_object = url.split("/conversations/")[-1][:1].isdigit() or "/messages/" in url
        if names_an_object:
            assert response.status_code == 404, url


def test_it_shows_an_assigned_agent_their_own_bots_conversations(setting: dict[str, Any]) -> None:
    agent = make_user("own-agent", agent=True, bots=[setting["bot"]])
    response = client_for(agent).get(reverse("agents:conversations"))
    assert response.status_code == 200
    assert reverse("agents:transcript", args=[setting["conversation"].pk]).encode() in body(response)


def test_it_refuses_changes_without_a_csrf_token(setting: dict[str, Any]) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user("staff", staff=True))
    for method, url in urls(setting):
        if method == "post":
            assert client.post(url, {"text": "x"}).status_code == 403, url
