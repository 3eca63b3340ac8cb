"""Live handoff, the agents' side (the agent socket, ``agents.consumers``): who may open
it, presence (written here, read by ``chatbot.selectors.agents_online``), the queue and an
agent's own conversations, one conversation for the console, and the changes an agent
makes: take, hand back to the bot, close, write.

Every change runs in a transaction on the locked conversation row (``select_for_update``;
SQLite's IMMEDIATE transactions serialise the same way), so of two agents taking one
conversation at once exactly one succeeds and the other gets ``Taken``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import F, OuterRef, QuerySet, Subquery
from django.utils import timezone

from agents.access import is_agent, visible_bots, visible_conversations
from agents.models import Presence
from chatbot.chat import texts
from chatbot.chat.frames import display_name
from chatbot.models import Conversation, Message, Visitor
from chatbot.services import conversation_set_status

Status = Conversation.Status
LIST_LIMIT = 200  # conversations per list (queue, mine) sent to a console
TRANSCRIPT_LIMIT = 500  # newest messages of a conversation sent to a console
SHOWN_ROLES = (Message.Role.VISITOR, Message.Role.BOT, Message.Role.AGENT)


class LiveError(Exception):
    """What an agent may not do; ``code`` is the agent socket's error code."""

    code = "forbidden"


class NotFound(LiveError):
    code = "not_found"  # no such conversation, or one of a bot the agent doesn't see


class Forbidden(LiveError):
    code = "forbidden"  # the agent doesn't have this conversation


class Taken(LiveError):
    code = "taken"  # another agent has it


class BadState(LiveError):
    code = "bad_state"  # not in a state this action applies to


@dataclass(frozen=True)
class Change:
    """What an agent's action did, for the frames that tell everyone concerned."""

    conversation_id: int
    bot_id: int
    agent: str  # the agent's display name
    language: str  # the visitor's, for the visitor's frames
    notice: Message | None  # the system message stored; None when nothing changed


# --- Access and presence ----------------------------------------------------------------


def agent_connect(*, user: Any) -> Any | None:
    """The agent a socket's session signs in (presence refreshed), or None for anyone else."""
    if user is None or not is_agent(user):
        return None
    agent = get_user_model().objects.get(pk=user.pk)
    presence_touch(agent=agent)
    return agent


def presence_touch(*, agent: Any) -> None:
    Presence.objects.update_or_create(user=agent, defaults={"last_seen": timezone.now()})


# --- Reads: the lists and one conversation --------------------------------------------------


def agent_bot_ids(*, agent: Any) -> list[int]:
    return list(visible_bots(agent).values_list("pk", flat=True))


def _listed(conversations: QuerySet[Conversation]) -> QuerySet[Conversation]:
    last = (
        Message.objects.visible()
        .filter(conversation=OuterRef("pk"), role__in=SHOWN_ROLES)
        .order_by("-id")
        .values("text")[:1]
    )
    return conversations.select_related("bot", "visitor").annotate(last_message=Subquery(last))


def agent_lists(*, agent: Any) -> tuple[list[Conversation], list[Conversation]]:
    """The queue (waiting conversations of the agent's bots, oldest request first) and the
    agent's own (with_agent, assigned to them, latest activity first)."""
    visible = visible_conversations(agent)
    queue = _listed(visible.filter(status=Status.WAITING_FOR_AGENT)).order_by(
        F("handoff_requested_at").asc(nulls_last=True), "id"
    )
    mine = _listed(visible.filter(status=Status.WITH_AGENT, assigned_agent=agent)).order_by(
        "-last_activity_at", "-id"
    )
    return list(queue[:LIST_LIMIT]), list(mine[:LIST_LIMIT])


def agent_conversation(
    *, agent: Any, conversation_id: int, after: int | None = None
) -> tuple[Conversation, list[Message], str]:
    """A conversation the agent sees, its messages (newest TRANSCRIPT_LIMIT, or those after
    the message id ``after``), and the visitor's latest question ("" if none)."""
    conversation = (
        visible_conversations(agent)
        .select_related("bot", "visitor", "assigned_agent")
        .filter(pk=conversation_id)
        .first()
    )
    if conversation is None:
        raise NotFound("There is no such conversation.")
    rows = Message.objects.visible().filter(conversation_id=conversation_id).select_related("author")
    if after is not None:
        rows = rows.filter(id__gt=after)
    messages = list(rows.order_by("-id")[:TRANSCRIPT_LIMIT])[::-1]
    question = (
        Message.objects.visible()
        .filter(conversation_id=conversation_id, role=Message.Role.VISITOR)
        .order_by("-id")
        .values_list("text", flat=True)
        .first()
    )
    return conversation, messages, question or ""


def agent_assigned_check(*, agent: Any, conversation_id: int) -> None:
    """Raises unless the agent has the conversation (with_agent, assigned to them)."""
    conversation = visible_conversations(agent).filter(pk=conversation_id).first()
    _assigned(conversation, agent)


# --- Writes ------------------------------------------------------------------------------


def _locked(agent: Any, conversation_id: int) -> Conversation:
    conversation = visible_conversations(agent).select_for_update().filter(pk=conversation_id).first()
    if conversation is None:
        raise NotFound("There is no such conversation.")
    return conversation


def _assigned(conversation: Conversation | None, agent: Any) -> Conversation:
    if conversation is None:
        raise NotFound("There is no such conversation.")
    if conversation.status != Status.WITH_AGENT or conversation.assigned_agent_id != agent.pk:
        raise Forbidden("Only the agent who took the conversation may do that.")
    return conversation


def _change(conversation: Conversation, agent: Any, notice_key: str | None) -> Change:
    name = display_name(agent)
    notice = None
    if notice_key is not None:
        notice = Message.objects.create(
            conversation_id=conversation.pk,
            role=Message.Role.SYSTEM,
            text=texts.notice(notice_key, agent=name),
        )
    language = Visitor.objects.filter(pk=conversation.visitor_id).values_list("language", flat=True).first()
    return Change(conversation.pk, conversation.bot_id, name, language or "", notice)


@transaction.atomic
def conversation_take(*, agent: Any, conversation_id: int) -> Change:
    """The agent takes a waiting (or open) conversation: the bot goes silent."""
    conversation = _locked(agent, conversation_id)
    if conversation.status == Status.WITH_AGENT:
        if conversation.assigned_agent_id == agent.pk:
            return _change(conversation, agent, None)  # taken already, by them
        raise Taken("Another agent has this conversation.")
    if conversation.status == Status.CLOSED:
        raise BadState("The conversation is closed.")
    conversation_set_status(conversation=conversation, status=Status.WITH_AGENT, agent=agent)
    return _change(conversation, agent, "joined")


@transaction.atomic
def conversation_release(*, agent: Any, conversation_id: int) -> Change:
    """The agent hands the conversation back to the bot."""
    conversation = _assigned(_locked(agent, conversation_id), agent)
    conversation_set_status(conversation=conversation, status=Status.OPEN)
    return _change(conversation, agent, "left.bot")


@transaction.atomic
def conversation_close(*, agent: Any, conversation_id: int) -> Change:
    """The agent who has the conversation (any agent of the bot, for a waiting one) closes it."""
    conversation = _locked(agent, conversation_id)
    if conversation.status == Status.WITH_AGENT:
        _assigned(conversation, agent)
    elif conversation.status != Status.WAITING_FOR_AGENT:
        raise BadState("Only a waiting conversation, or one you have, can be closed here.")
    conversation_set_status(conversation=conversation, status=Status.CLOSED)
    return _change(conversation, agent, "left.closed")


@transaction.atomic
def agent_message_store(*, agent: Any, conversation_id: int, text: str) -> Message:
    """Store what the agent wrote (before anyone is sent it)."""
    conversation = _assigned(_locked(agent, conversation_id), agent)
    message = Message.objects.create(
        conversation_id=conversation.pk,
        role=Message.Role.AGENT,
        source=Message.Source.AGENT,
        author=agent,
        text=text,
    )
    Conversation.objects.filter(pk=conversation.pk).update(last_activity_at=message.created_at)
    return message
