"""Live handoff, the visitor's side: asking for a person, the wait for one, leaving an
email address, and a visitor message stored without a bot reply (a request for a person).
The agents' side is ``agents.live``; docs/chat-protocol.md."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator
from django.db import transaction
from django.utils import timezone

from chatbot.models import Conversation, Message, Visitor
from chatbot.selectors import HandoffState, agents_online, handoff_state
from chatbot.services import conversation_followup_request, conversation_set_status, visitor_message_add

Status = Conversation.Status
MAX_EMAIL = 254


def handoff_request(*, conversation_id: int) -> HandoffState:
    """The visitor asks for a person. With an agent of the bot online, an open conversation
    joins the queue (``queued``); without one it stays open. Either way it is flagged for
    follow-up. A conversation already waiting or with an agent stays as it is."""
    queued = False
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(pk=conversation_id)
        if conversation.status == Status.CLOSED:
            conversation = conversation_set_status(conversation=conversation, status=Status.OPEN)
        if conversation.status != Status.WITH_AGENT:
            conversation_followup_request(conversation_id=conversation_id)
        if conversation.status == Status.OPEN and agents_online(bot_id=conversation.bot_id):
            conversation_set_status(conversation=conversation, status=Status.WAITING_FOR_AGENT)
            # A new wait: the queue position and the wait limit count from now.
            Conversation.objects.filter(pk=conversation_id).update(handoff_requested_at=timezone.now())
            queued = True
    return replace(handoff_state(conversation_id=conversation_id), queued=queued)


def wait_remaining(waiting_since: datetime | None) -> float:
    """Seconds until a wait that began at ``waiting_since`` reaches HANDOFF_WAIT_SECONDS."""
    if waiting_since is None:
        return 0.0
    limit = waiting_since + timedelta(seconds=settings.HANDOFF_WAIT_SECONDS)
    return max(0.0, (limit - timezone.now()).total_seconds())


@transaction.atomic
def handoff_expire(*, conversation_id: int, waiting_since: datetime | None) -> bool:
    """End the wait that began at ``waiting_since`` if no agent took the conversation: the
    bot answers again, and the conversation stays flagged for follow-up. False when the
    conversation is no longer in that wait (taken, closed, or waiting anew)."""
    conversation = Conversation.objects.select_for_update().get(pk=conversation_id)
    if conversation.status != Status.WAITING_FOR_AGENT or conversation.handoff_requested_at != waiting_since:
        return False
    conversation_set_status(conversation=conversation, status=Status.OPEN)
    Conversation.objects.filter(pk=conversation_id).update(needs_followup=True)
    return True


def handoff_state_current(*, conversation_id: int) -> tuple[HandoffState, bool]:
    """The conversation's handoff state, after ending a wait that has passed the limit
    (``handoff_expire``); True when this call ended it."""
    state = handoff_state(conversation_id=conversation_id)
    if state.status != Status.WAITING_FOR_AGENT or wait_remaining(state.waiting_since) > 0:
        return state, False
    expired = handoff_expire(conversation_id=conversation_id, waiting_since=state.waiting_since)
    return handoff_state(conversation_id=conversation_id), expired


def visitor_contact_save(*, conversation_id: int, email: str) -> int:
    """Keep the visitor's email address for the team's follow-up; returns the bot's id.
    Raises ValidationError for anything but an email address."""
    email = email.strip()
    if len(email) > MAX_EMAIL:
        raise ValidationError(f"An email address has at most {MAX_EMAIL} characters.")
    EmailValidator()(email)
    with transaction.atomic():
        conversation = Conversation.objects.get(pk=conversation_id)
        Visitor.objects.filter(pk=conversation.visitor_id).update(email=email)
        Conversation.objects.filter(pk=conversation_id).update(
            needs_followup=True, resolved_at=None, last_activity_at=timezone.now()
        )
    return conversation.bot_id


def visitor_message_store(
    *, conversation_id: int, text: str, client_id: str | None = None
) -> tuple[Message, str]:
    """Store a visitor's message that the bot will not answer; returns it and the
    conversation's status (a closed conversation reopens, as with any message). Raises
    ``DuplicateMessage`` when ``client_id`` is already stored in the conversation."""
    conversation = Conversation.objects.get(pk=conversation_id)
    message, _, conversation = visitor_message_add(
        conversation=conversation, text=text, reserve_reply=False, client_id=client_id
    )
    return message, conversation.status
