"""Frames of the chat protocol: what a client may send, parsed into typed values (or a
``FrameError`` with the protocol's error code), and the frames the server sends. The agent
socket's own frames are the agents app's (``agents.frames``)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from chatbot import bounded_json
from chatbot.chat import texts
from chatbot.models import Message

# Error codes (docs/chat-protocol.md).
BAD_JSON = "bad_json"
UNKNOWN_TYPE = "unknown_type"
INVALID = "invalid"
NOT_READY = "not_ready"
EMPTY = "empty"
TOO_LONG = "too_long"
BUSY = "busy"
RATE_LIMITED = "rate_limited"
NOT_FOUND = "not_found"
LLM_UNAVAILABLE = "llm_unavailable"
SERVER_ERROR = "server_error"
BAD_EMAIL = "bad_email"

MAX_EMAIL = 254

MAX_CLIENT_ID = 100
_LANGUAGE = re.compile(r"^[A-Za-z]{1,8}(?:[-_][A-Za-z0-9]{1,8})*$")


@dataclass(frozen=True)
class Hello:
    visitor: object  # the token, checked by the service
    page: str
    lang: str
    after: int | None


@dataclass(frozen=True)
class Say:
    text: str
    client_id: str | None


@dataclass(frozen=True)
class Rate:
    reply_id: int
    rating: str
    comment: str


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Handoff:
    pass


@dataclass(frozen=True)
class Contact:
    email: str  # trimmed; validated by the service


@dataclass(frozen=True)
class Typing:
    pass


ClientFrame = Hello | Say | Rate | Ping | Handoff | Contact | Typing
BEFORE_HELLO = (Hello, Ping)


class FrameError(Exception):
    def __init__(
        self, code: str, message: str, client_id: str | None = None, *, conversation: int | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.client_id = client_id
        self.conversation = conversation  # the agent socket names the conversation concerned

    def frame(self) -> dict[str, Any]:
        extra = {} if self.conversation is None else {"conversation": self.conversation}
        return error(self.code, self.message, self.client_id, **extra)


MAX_DEPTH = 32  # protocol frames nest one level (an object of plain values)


def frame_bytes(text_data: str | None, bytes_data: bytes | None) -> int:
    """The size of a websocket message in bytes, as sent on the wire. Never raises: a text
    that holds lone surrogates (only a test client can send one) counts them as 3 bytes."""
    if text_data is not None:
        return len(text_data.encode("utf-8", "surrogatepass"))
    return len(bytes_data or b"")


def frame_object(raw: str) -> dict[str, Any]:
    """The JSON object of a frame of either socket, within ``bounded_json``'s limits (nesting
    depth, integers), or FrameError ``bad_json``."""
    try:
        return bounded_json.object_loads(raw, max_depth=MAX_DEPTH)
    except bounded_json.BadJSON as err:
        raise FrameError(BAD_JSON, str(err)) from None


def frame_parse(raw: str, *, max_chars: int) -> ClientFrame:
    data = frame_object(raw)
    kind = data.get("type")
    parse = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parse is None:
        raise FrameError(UNKNOWN_TYPE, f"Unknown frame type {kind!r}.", _client_id(data, strict=False))
    return parse(data, max_chars)


def _client_id(data: dict[str, Any], *, strict: bool = True) -> str | None:
    value = data.get("client_id")
    if value is None or (isinstance(value, str) and len(value) <= MAX_CLIENT_ID):
        return value if value is None else clean(value)
    if strict:
        raise FrameError(INVALID, f"client_id must be a string of at most {MAX_CLIENT_ID} characters.")
    return None


def clean(text: str) -> str:
    # Lone surrogates can't be encoded (nor stored), and PostgreSQL refuses NUL characters.
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")


def _hello(data: dict[str, Any], max_chars: int) -> Hello:
    page = data.get("page")
    lang = data.get("lang")
    after = data.get("after")
    return Hello(
        visitor=data.get("visitor"),
        page=clean(page) if isinstance(page, str) and page.startswith(("http://", "https://")) else "",
        lang=lang if isinstance(lang, str) and _LANGUAGE.match(lang) and len(lang) <= 16 else "",
        after=after if isinstance(after, int) and not isinstance(after, bool) and after >= 0 else None,
    )


def text_parse(data: dict[str, Any], *, max_chars: int, client_id: str | None) -> str:
    """A message's ``text``: trimmed, storable, not empty, at most ``max_chars``."""
    text = data.get("text")
    if not isinstance(text, str):
        raise FrameError(INVALID, "text must be a string.", client_id)
    text = clean(text).strip()
    if not text:
        raise FrameError(EMPTY, "The message is empty.", client_id)
    if len(text) > max_chars:
        raise FrameError(TOO_LONG, f"The message is longer than {max_chars} characters.", client_id)
    return text


def _say(data: dict[str, Any], max_chars: int) -> Say:
    client_id = _client_id(data)
    return Say(text=text_parse(data, max_chars=max_chars, client_id=client_id), client_id=client_id)


def _rate(data: dict[str, Any], max_chars: int) -> Rate:
    reply_id = data.get("id")
    rating = data.get("rating")
    comment = data.get("comment")
    if not isinstance(reply_id, int) or isinstance(reply_id, bool):
        raise FrameError(INVALID, "id must be the id of a reply.")
    if rating not in ("up", "down"):
        raise FrameError(INVALID, 'rating must be "up" or "down".')
    if comment is not None and not isinstance(comment, str):
        raise FrameError(INVALID, "comment must be a string.")
    comment = clean(comment or "").strip()
    if len(comment) > max_chars:
        raise FrameError(TOO_LONG, f"The comment is longer than {max_chars} characters.")
    return Rate(reply_id=reply_id, rating=rating, comment=comment)


def _contact(data: dict[str, Any], max_chars: int) -> Contact:
    email = data.get("email")
    if not isinstance(email, str) or not email.strip() or len(email.strip()) > MAX_EMAIL:
        raise FrameError(BAD_EMAIL, f"email must be an email address of at most {MAX_EMAIL} characters.")
    return Contact(email=clean(email).strip())


_PARSERS = {
    "hello": _hello,
    "message": _say,
    "feedback": _rate,
    "ping": lambda data, max_chars: Ping(),
    "handoff": lambda data, max_chars: Handoff(),
    "contact": _contact,
    "typing": lambda data, max_chars: Typing(),
}


# --- Server frames ------------------------------------------------------------------


def error(code: str, message: str, client_id: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message, "client_id": client_id, **extra}


def display_name(user: Any) -> str:
    """How a person from the team is named to visitors and other agents."""
    return user.get_full_name() or user.get_username()


def message_item(message: Message, *, client_id: bool = False) -> dict[str, Any]:
    """A stored message as the history (and other tabs, and agents) see it. An agent's
    message also names its author (``author`` should be selected with the message). With
    ``client_id`` (the visitor's own history), a visitor message the widget sent with a
    ``client_id`` carries it: the widget recognises what it sent but never saw acknowledged."""
    item = {
        "id": message.pk,
        "role": message.role,
        "text": message.text,
        "source": message.source,
        "status": message.status,
        "created": message.created_at.isoformat(),
        # The company's documents a bot reply drew on, as in reply.end (docs/chat-protocol.md).
        "sources": list(message.sources or []),
    }
    if message.role == Message.Role.AGENT:
        item["agent"] = display_name(message.author) if message.author_id else None
    if client_id and message.client_id:
        item["client_id"] = message.client_id
    return item


def encode(frame: dict[str, Any]) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


# --- Live handoff (docs/chat-protocol.md: handoff, contact, typing) ----------------


def handoff_waiting(position: int, lang: str) -> dict[str, Any]:
    return {
        "type": "handoff.waiting",
        "position": position,
        "message": texts.text("waiting", lang, position=position),
    }


def handoff_unavailable(lang: str, *, timed_out: bool = False) -> dict[str, Any]:
    message = texts.text("timed_out" if timed_out else "unavailable", lang)
    return {"type": "handoff.unavailable", "message": message, "ask_email": True}


def _with_id(frame: dict[str, Any], notice_id: int | None) -> dict[str, Any]:
    # The stored notice's id: a client that resyncs from history shows the notice once.
    return frame if notice_id is None else {**frame, "id": notice_id}


def agent_joined(agent: str, lang: str, notice_id: int | None = None) -> dict[str, Any]:
    frame = {"type": "agent.joined", "agent": agent, "message": texts.text("joined", lang, agent=agent)}
    return _with_id(frame, notice_id)


def agent_left(agent: str, reason: str, lang: str, notice_id: int | None = None) -> dict[str, Any]:
    """``reason``: ``bot`` (handed back to the assistant) or ``closed``."""
    message = texts.text(f"left.{reason}", lang, agent=agent)
    return _with_id({"type": "agent.left", "agent": agent, "reason": reason, "message": message}, notice_id)


def agent_message(message: Message, agent: str) -> dict[str, Any]:
    return {
        "type": "agent.message",
        "id": message.pk,
        "text": message.text,
        "agent": agent,
        "created": message.created_at.isoformat(),
    }
