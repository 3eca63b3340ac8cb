"""Who may use the agent workspace, and which bots' conversations they see.

Staff users and members of the AGENT_GROUP group are agents. An agent with bot
assignments sees only those bots; one without sees every bot (superusers always do).
Anonymous users are sent to the login page; signed-in non-agents get 403.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404

from agents.models import Assignment
from chatbot.models import Bot, Conversation, Message

View = Callable[..., HttpResponse]


def is_agent(user: Any) -> bool:
    if not (user.is_authenticated and user.is_active):
        return False
    return bool(user.is_staff or user.groups.filter(name=settings.AGENT_GROUP).exists())


def agent_required(view: View) -> View:
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not is_agent(request.user):
            raise PermissionDenied("The agent workspace is for support staff.")
        return view(request, *args, **kwargs)

    return wrapper


def assigned_bot_ids(user: Any) -> list[int] | None:
    """The bots an agent is restricted to, or None when they see every bot."""
    if user.is_superuser:
        return None
    ids = list(Assignment.objects.filter(user=user).values_list("bot_id", flat=True))
    return ids or None


def visible_bots(user: Any) -> QuerySet[Bot]:
    ids = assigned_bot_ids(user)
    return Bot.objects.all() if ids is None else Bot.objects.filter(pk__in=ids)


def visible_conversations(user: Any) -> QuerySet[Conversation]:
    # No bot filter at all when unrestricted: an always-true "bot_id IN (...)" would keep
    # SQLite's planner off the last-activity index (the list page's sort).
    ids = assigned_bot_ids(user)
    return Conversation.objects.all() if ids is None else Conversation.objects.filter(bot_id__in=ids)


def conversation_or_404(user: Any, pk: int) -> Conversation:
    """A conversation of a bot the agent sees; any other id is a 404, never a leak."""
    return get_object_or_404(visible_conversations(user).select_related("bot", "visitor"), pk=pk)


def message_or_404(user: Any, pk: int) -> Message:
    return get_object_or_404(
        Message.objects.visible()
        .select_related("conversation__bot")
        .filter(conversation__bot__in=visible_bots(user)),
        pk=pk,
    )
