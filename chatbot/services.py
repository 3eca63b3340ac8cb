"""Writes for the conversation domain. Views, consumers and commands call these."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from chatbot.models import Bot, Conversation, Feedback, Message, Visitor
from chatbot.selectors import visitor_message_original
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


class DuplicateMessage(Exception):
    """The conversation already has a visitor message with this ``client_id`` (the widget
    sent it again): ``original`` is that message; nothing was stored."""

    def __init__(self, original: Message) -> None:
        super().__init__(f"message {original.pk} has client_id {original.client_id!r}")
        self.original = original


def visitor_message_add(
    *,
    conversation: Conversation,
    text: str,
    reserve_reply: bool,
    client_id: str | None = None,
    reply_owner: str = "",
) -> tuple[Message, int | None, Conversation]:
    """Store a visitor's message (a closed conversation reopens first). With
    ``reserve_reply`` and no agent in charge, a bot row is reserved for the reply in the
    same transaction (status ``pending``, owned by the server process ``reply_owner``).
    Returns the message, the reserved row's id and the conversation (its status after the
    reopening). Raises ``DuplicateMessage`` when ``client_id`` is already stored in the
    conversation."""
    arrivals = [(conversation, text, client_id)]
    try:
        [stored] = visitor_messages_add(
            arrivals=arrivals, reserve_reply=reserve_reply, reply_owner=reply_owner
        )
    except IntegrityError as err:
        raise duplicate_or(err, conversation_id=conversation.pk, client_id=client_id) from None
    return stored


def duplicate_or(err: IntegrityError, *, conversation_id: int, client_id: str | None) -> Exception:
    """What an IntegrityError from storing one visitor message means: ``DuplicateMessage``
    when the unique ``client_id`` constraint refused it (another tab or process stored it
    first), else the error itself (e.g. the conversation was deleted meanwhile)."""
    original = visitor_message_original(conversation_id=conversation_id, client_id=client_id)
    return err if original is None else DuplicateMessage(original)


def visitor_messages_add(
    *,
    arrivals: list[tuple[Conversation, str, str | None]],
    reserve_reply: bool,
    reply_owner: str = "",
) -> list[tuple[Message, int | None, Conversation]]:
    """``visitor_message_add`` for several messages (conversation, text, client id) of any
    conversations at once: one transaction, one INSERT for every row, one UPDATE of the
    conversations' activity. A stored ``client_id`` raises IntegrityError for the whole batch."""
    if not arrivals:
        return []
    reopened = [
        conversation_set_status(conversation=c, status=Status.OPEN) if c.status == Status.CLOSED else c
        for c, _, _ in arrivals
    ]
    rows: list[Message] = []
    reserved: list[Message | None] = []
    for conversation, (_, text, client_id) in zip(reopened, arrivals, strict=True):
        visitor = Message(conversation_id=conversation.pk, role=Message.Role.VISITOR, text=text)
        visitor.client_id = client_id or None  # "" is no id
        rows.append(visitor)
        reply = None
        if reserve_reply and conversation.status != Status.WITH_AGENT:
            reply = Message(
                conversation_id=conversation.pk,
                role=Message.Role.BOT,
                source=Message.Source.LLM,
                status=Message.Status.PENDING,
                owner=reply_owner,
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
    replies = Message.objects.visible().filter(role__in=[Message.Role.BOT, Message.Role.AGENT])
    message = replies.filter(pk=message_id, conversation_id=conversation_id).first()
    if message is None:
        return None
    feedback, _ = Feedback.objects.update_or_create(
        message=message, defaults={"rating": rating, "comment": comment, "created_at": timezone.now()}
    )
    return feedback
