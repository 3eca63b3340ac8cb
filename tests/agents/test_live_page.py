"""The live console's page (/agent/live/): a shell for agents only, carrying what
static/agents/console.js needs to open the agent socket."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from tests.agents.conftest import client_for, make_user

pytestmark = pytest.mark.django_db

URL = "/agent/live/"


def config_of(html: str) -> dict[str, Any]:
    found = re.search(r'<script id="live-config" type="application/json">(.*?)</script>', html, re.S)
    assert found is not None
    return json.loads(found.group(1))


def test_it_is_named_live() -> None:
    assert reverse("agents:live") == URL


def test_it_renders_the_console_for_an_agent() -> None:
    agent = make_user("ann", agent=True)
    agent.first_name, agent.last_name = "Ann", "Ng"
    agent.save()

    response = client_for(agent).get(URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert config_of(html) == {
        "ws": "/ws/agent/",
        "agent": {"id": agent.pk, "name": "Ann Ng"},
        "ping_ms": 20_000,
        "transcript": "/agent/conversations/0/",
    }
    assert "/static/agents/console.js" in html
    for element in (
        'id="queue"',
        'id="mine"',
        'id="transcript"',
        'id="reply"',
        'id="take"',
        'id="release"',
        'id="close"',
        'id="suggestions"',
        'id="visitor-typing"',
        'id="visitor-info"',
    ):
        assert element in html
    assert f'href="{URL}" aria-current="page">Live</a>' in html


def test_it_names_an_agent_without_a_full_name_by_username(staff_client: Client) -> None:
    html = staff_client.get(URL).content.decode()

    assert config_of(html)["agent"]["name"] == "staff"


def test_it_sends_anonymous_users_to_log_in() -> None:
    response = Client().get(URL)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("agents:login"))
    assert "next=/agent/live/" in response["Location"]


def test_it_refuses_signed_in_users_who_are_not_agents() -> None:
    response = client_for(make_user("customer")).get(URL)

    assert response.status_code == 403
    assert b"live-config" not in response.content


def test_it_links_the_console_from_every_workspace_page(staff_client: Client) -> None:
    html = staff_client.get(reverse("agents:gaps")).content.decode()

    assert f'<a href="{URL}">Live</a>' in html


def test_it_only_answers_safe_methods(staff_client: Client) -> None:
    assert staff_client.post(URL).status_code == 405
