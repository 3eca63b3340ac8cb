"""Writes for the conversation domain. Views, consumers and commands call these."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from chatbot.models import Bot, Conversation, Feedback, Message, Visitor
from chatbot.tokens import visitor_token_read, visitor_token_sign

Status = Conversation.Status

# Which status changes a conversation may make. Closing is always allowed; a closed
# conversation reopens when its visitor writes again.
ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    Status.OPEN: frozenset({Status.WAITING_FOR_AGENT, Status.WITH_AGENT, Status.CLOSED}),
    Status.WAITING_FOR_AGENT: frozenset({Status.WITH_AGENT, Status.OPEN, Status.CLOSED}),
    Status.WITH_AGENT: frozenset({Status.OPEN, Status.CLOSED}),
    Status.CLOSED: frozenset({Status.OPEN}),
}


class InvalidTransition(ValueError):
    pass


def bot_create(*, name: str, origins: list[str] | None = None, **fields: object) -> Bot:
    name = name.strip()
    if not name:
        raise ValidationError({"name": "A bot needs a name."})
    bot = Bot(name=name, allowed_origins=[o.rstrip("/") for o in origins or []], **fields)
    bot.full_clean()
    bot.save()
    return bot


@transaction.atomic
def conversation_set_status(
    *, conversation: Conversation, status: str, agent: AbstractBaseUser | None = None
) -> Conversation:
    """Move a conversation to ``status`` if the transition is allowed.

    Taking a conversation (``with_agent``) needs the agent; leaving that state clears it.
    """
    locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
    if status == locked.status:
        return locked
    if status not in ALLOWED_TRANSITIONS.get(locked.status, frozenset()):
        raise InvalidTransition(f"A conversation can't go from {locked.status} to {status}.")
    if status == Status.WITH_AGENT:
        if agent is None:
            raise InvalidTransition("Only an agent can take a conversation.")
        locked.assigned_agent = agent
    elif locked.status == Status.WITH_AGENT:
        locked.assigned_agent = None
    locked.status = status
    locked.last_activity_at = timezone.now()
    locked.save(update_fields=["status", "assigned_agent", "last_activity_at"])
    return locked


# --- Visitors, conversations and feedback of the chat widget ---------------------------


def visitor_resume_or_create(
    *, bot: Bot, token: object, language: str = "", page_url: str = "", user_agent: str = ""
) -> tuple[Visitor, str]:
    """The visitor a token names (a token that is invalid, tampered with, from another bot or
    of an erased visitor gets a new visitor), with what the widget reports refreshed, and the
    token to give back."""
    uid = visitor_token_read(bot=bot, token=token)
    visitor = Visitor.objects.filter(bot=bot, uid=uid).first() if uid else None
    now = timezone.now()
    details = {
        "language": language[:16],
        "page_url": page_url[:2000],
        "user_agent": user_agent[:500],
        "last_seen": now,
    }
    if visitor is None:
        visitor = Visitor.objects.create(bot=bot, first_seen=now, **details)
    else:
        for name, value in details.items():
            setattr(visitor, name, value)
        visitor.save(update_fields=list(details))
    return visitor, visitor_token_sign(bot=bot, uid=visitor.uid)


@transaction.atomic
def conversation_current(*, visitor: Visitor) -> Conversation:
    """The visitor's latest conversation, or a new one when they have none or it was closed."""
    # Serialises two tabs arriving at once, so they share one new conversation.
    Visitor.objects.select_for_update().filter(pk=visitor.pk).first()
    latest = Conversation.objects.filter(visitor=visitor).order_by("-id").first()
    if latest is not None and latest.status != Status.CLOSED:
        return latest
    return Conversation.objects.create(bot_id=visitor.bot_id, visitor=visitor)


def visitor_message_add(
    *, conversation: Conversation, text: str, reserve_reply: bool
) -> tuple[Message, int | None, Conversation]:
    """Store a visitor's message (a closed conversation reopens first). With
    ``reserve_reply`` and no agent in charge, an empty bot row is reserved for the reply
    in the same transaction. Returns the message, the reserved row's id and the
    conversation (its status after the reopening)."""
    return visitor_messages_add(arrivals=[(conversation, text)], reserve_reply=reserve_reply)[0]


def visitor_messages_add(
    *, arrivals: list[tuple[Conversation, str]], reserve_reply: bool
) -> list[tuple[Message, int | None, Conversation]]:
    """``visitor_message_add`` for several messages (of any conversations) at once: one
    transaction, one INSERT for every row, one UPDATE of the conversations' activity."""
    if not arrivals:
        return []
    reopened = [
        conversation_set_status(conversation=c, status=Status.OPEN) if c.status == Status.CLOSED else c
        for c, _ in arrivals
    ]
    rows: list[Message] = []
    reserved: list[Message | None] = []
    for conversation, (_, text) in zip(reopened, arrivals, strict=True):
        rows.append(Message(conversation_id=conversation.pk, role=Message.Role.VISITOR, text=text))
        reply = None
        if reserve_reply and conversation.status != Status.WITH_AGENT:
            reply = Message(
                conversation_id=conversation.pk,
                role=Message.Role.BOT,
                source=Message.Source.LLM,
                status=Message.Status.FAILED,
            )
            rows.append(reply)
        reserved.append(reply)
    with transaction.atomic():
        # One INSERT for all rows (ids come back in order on SQLite and PostgreSQL).
        Message.objects.bulk_create(rows)
        conversations = Conversation.objects.filter(pk__in={c.pk for c in reopened})
        conversations.update(last_activity_at=rows[-1].created_at)
    visitor_rows = [row for row in rows if row.role == Message.Role.VISITOR]
    return [
        (message, reply.pk if reply is not None else None, conversation)
        for message, reply, conversation in zip(visitor_rows, reserved, reopened, strict=True)
    ]


def conversation_followup_request(*, conversation_id: int) -> None:
    """Flag the conversation for the team (the visitor asked for a person)."""
    now = timezone.now()
    conversations = Conversation.objects.filter(pk=conversation_id)
    conversations.update(needs_followup=True, resolved_at=None, last_activity_at=now)
    conversations.filter(handoff_requested_at__isnull=True).update(handoff_requested_at=now)


def feedback_save(
    *, conversation_id: int, message_id: int, rating: str, comment: str = ""
) -> Feedback | None:
    """Rate a reply of this conversation (rating again replaces the rating). None when the
    conversation has no such reply."""
    message = (
        Message.objects.filter(
            pk=message_id, conversation_id=conversation_id, role__in=[Message.Role.BOT, Message.Role.AGENT]
        )
        .exclude(text="")
        .first()
    )
    if message is None:
        return None
    feedback, _ = Feedback.objects.update_or_create(
        message=message, defaults={"rating": rating, "comment": comment, "created_at": timezone.now()}
    )
    return feedback
