"""Frames of the agent socket, ``ws://HOST/ws/agent/`` (docs/agent-socket.md): what the
live console may send, parsed into typed values (or a ``FrameError``), and the frames that
describe conversations and visitors to agents. Shared parts (errors, text checks) are the
chat protocol's, ``chatbot.chat.frames``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from chatbot.chat import frames
from chatbot.chat.frames import FrameError
from chatbot.models import Conversation, Message

# Error codes of the agent socket beyond the chat protocol's.
FORBIDDEN = "forbidden"
TAKEN = "taken"
BAD_STATE = "bad_state"

LAST_MESSAGE_CHARS = 200
ACTIONS = ("take", "release", "close", "typing")


@dataclass(frozen=True)
class AgentHello:
    pass


@dataclass(frozen=True)
class Act:
    """``take``, ``release``, ``close`` or ``typing`` on one conversation."""

    kind: str
    conversation: int


@dataclass(frozen=True)
class Open:
    conversation: int
    after: int | None


@dataclass(frozen=True)
class Reply:
    conversation: int
    text: str
    client_id: str | None


AgentFrame = AgentHello | Act | Open | Reply | frames.Ping
BEFORE_HELLO = (AgentHello, frames.Ping)


def agent_frame_parse(raw: str, *, max_chars: int) -> AgentFrame:
    data = frames.frame_object(raw)
    kind = data.get("type")
    if kind == "hello":
        return AgentHello()
    if kind == "ping":
        return frames.Ping()
    if kind in ACTIONS:
        return Act(kind, _conversation(data))
    if kind == "open":
        after = data.get("after")
        valid = isinstance(after, int) and not isinstance(after, bool) and after >= 0
        return Open(_conversation(data), after if valid else None)
    if kind == "message":
        conversation = _conversation(data)
        client_id = _client_id(data, conversation)
        try:
            text = frames.text_parse(data, max_chars=max_chars, client_id=client_id)
        except FrameError as err:
            err.conversation = conversation
            raise
        return Reply(conversation, text, client_id)
    raise FrameError(frames.UNKNOWN_TYPE, f"Unknown frame type {kind!r}.")


def _conversation(data: dict[str, Any]) -> int:
    value = data.get("conversation")
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        # Nothing to look up: as for an id of someone else's conversation, there is no such one.
        raise FrameError(frames.NOT_FOUND, "conversation must be the id of a conversation.")
    return value


def _client_id(data: dict[str, Any], conversation: int) -> str | None:
    value = data.get("client_id")
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > frames.MAX_CLIENT_ID:
        raise FrameError(
            frames.INVALID,
            f"client_id must be a string of at most {frames.MAX_CLIENT_ID} characters.",
            conversation=conversation,
        )
    return frames.clean(value)


# --- Server frames ------------------------------------------------------------------


def _iso(moment: Any) -> str | None:
    return moment.isoformat() if moment is not None else None


def _bot(conversation: Conversation) -> dict[str, Any]:
    return {"id": conversation.bot_id, "name": conversation.bot.name}


def _visitor(conversation: Conversation) -> dict[str, Any]:
    visitor = conversation.visitor
    return {
        "name": visitor.name,
        "email": visitor.email,
        "language": visitor.language,
        "page": visitor.page_url,
    }


def conversation_item(conversation: Conversation) -> dict[str, Any]:
    """A conversation in the queue or the agent's own list. ``conversation`` comes with its
    bot and visitor selected and ``last_message`` annotated."""
    last = getattr(conversation, "last_message", None) or ""
    return {
        "id": conversation.pk,
        "bot": _bot(conversation),
        "visitor": _visitor(conversation),
        "status": conversation.status,
        "waiting_since": _iso(conversation.handoff_requested_at),
        "last_message": last[:LAST_MESSAGE_CHARS],
        "last_activity": conversation.last_activity_at.isoformat(),
    }


def lists_frame(kind: str, queue: Iterable[Conversation], mine: Iterable[Conversation]) -> dict[str, Any]:
    """``welcome`` (without its ``agent``) or ``queue.update``."""
    return {
        "type": kind,
        "queue": [conversation_item(c) for c in queue],
        "mine": [conversation_item(c) for c in mine],
    }


def conversation_frame(
    conversation: Conversation, messages: Iterable[Message], suggestions: Iterable[Any]
) -> dict[str, Any]:
    """Everything the console shows of one conversation. ``suggestions``: knowledge-base
    candidates (entry_id, question, answer, score) for the visitor's latest question."""
    agent = conversation.assigned_agent
    return {
        "type": "conversation",
        "conversation": {
            "id": conversation.pk,
            "bot": _bot(conversation),
            "visitor": {**_visitor(conversation), "uid": str(conversation.visitor.uid)},
            "status": conversation.status,
            "assigned_agent": frames.display_name(agent) if agent is not None else None,
            "messages": [frames.message_item(m) for m in messages],
            "suggestions": [
                {"entry_id": s.entry_id, "question": s.question, "answer": s.answer, "score": s.score}
                for s in suggestions
            ],
        },
    }


def visitor_message(conversation_id: int, item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "visitor.message", "conversation": conversation_id, "message": item}


def visitor_typing(conversation_id: int) -> dict[str, Any]:
    return {"type": "visitor.typing", "conversation": conversation_id}
