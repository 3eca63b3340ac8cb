"""Users and clients for the agent workspace tests."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.test import Client

from agents.models import Assignment
from chatbot.models import Bot


def make_user(
    username: str, *, staff: bool = False, agent: bool = False, bots: list[Bot] | None = None
) -> User:
    user = User.objects.create_user(username=username, password="pw-" + username, is_staff=staff)
    if agent:
        group, _ = Group.objects.get_or_create(name=settings.AGENT_GROUP)
        user.groups.add(group)
    for bot in bots or []:
        Assignment.objects.create(user=user, bot=bot)
    return user


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def staff_client(db: Any) -> Client:
    return client_for(make_user("staff", staff=True))
