"""Frames of the chat protocol: what a client may send, parsed into typed values (or a
``FrameError`` with the protocol's error code), and the frames the server sends."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from chatbot.models import Message

# Error codes (README "The chat protocol").
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


ClientFrame = Hello | Say | Rate | Ping | Handoff
BEFORE_HELLO = (Hello, Ping)


class FrameError(Exception):
    def __init__(self, code: str, message: str, client_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.client_id = client_id

    def frame(self) -> dict[str, Any]:
        return error(self.code, self.message, self.client_id)


def frame_parse(raw: str, *, max_chars: int) -> ClientFrame:
    try:
        data = json.loads(raw)
    except ValueError:
        raise FrameError(BAD_JSON, "A frame must be valid JSON.") from None
    if not isinstance(data, dict):
        raise FrameError(BAD_JSON, "A frame must be a JSON object.")
    kind = data.get("type")
    parse = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parse is None:
        raise FrameError(UNKNOWN_TYPE, f"Unknown frame type {kind!r}.", _client_id(data, strict=False))
    return parse(data, max_chars)


def _client_id(data: dict[str, Any], *, strict: bool = True) -> str | None:
    value = data.get("client_id")
    if value is None or (isinstance(value, str) and len(value) <= MAX_CLIENT_ID):
        return value if value is None else _clean(value)
    if strict:
        raise FrameError(INVALID, f"client_id must be a string of at most {MAX_CLIENT_ID} characters.")
    return None


def _clean(text: str) -> str:
    # Lone surrogates can't be encoded (nor stored), and PostgreSQL refuses NUL characters.
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")


def _hello(data: dict[str, Any], max_chars: int) -> Hello:
    page = data.get("page")
    lang = data.get("lang")
    after = data.get("after")
    return Hello(
        visitor=data.get("visitor"),
        page=_clean(page) if isinstance(page, str) and page.startswith(("http://", "https://")) else "",
        lang=lang if isinstance(lang, str) and _LANGUAGE.match(lang) and len(lang) <= 16 else "",
        after=after if isinstance(after, int) and not isinstance(after, bool) and after >= 0 else None,
    )


def _say(data: dict[str, Any], max_chars: int) -> Say:
    client_id = _client_id(data)
    text = data.get("text")
    if not isinstance(text, str):
        raise FrameError(INVALID, "text must be a string.", client_id)
    text = _clean(text).strip()
    if not text:
        raise FrameError(EMPTY, "The message is empty.", client_id)
    if len(text) > max_chars:
        raise FrameError(TOO_LONG, f"The message is longer than {max_chars} characters.", client_id)
    return Say(text=text, client_id=client_id)


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
    comment = _clean(comment or "").strip()
    if len(comment) > max_chars:
        raise FrameError(TOO_LONG, f"The comment is longer than {max_chars} characters.")
    return Rate(reply_id=reply_id, rating=rating, comment=comment)


_PARSERS = {
    "hello": _hello,
    "message": _say,
    "feedback": _rate,
    "ping": lambda data, max_chars: Ping(),
    "handoff": lambda data, max_chars: Handoff(),
}


# --- Server frames ------------------------------------------------------------------


def error(code: str, message: str, client_id: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message, "client_id": client_id, **extra}


def message_item(message: Message) -> dict[str, Any]:
    """A stored message as the history (and other tabs) see it."""
    return {
        "id": message.pk,
        "role": message.role,
        "text": message.text,
        "source": message.source,
        "status": message.status,
        "created": message.created_at.isoformat(),
    }


def encode(frame: dict[str, Any]) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


HANDOFF_TEXTS = {
    "en": (
        "No one is available to chat live yet. We have passed this conversation on to our team, "
        "and they will follow up."
    ),
    "zh": "目前还没有人工客服在线。我们已把这段对话转给团队，他们会跟进处理。",
}


def handoff_text(lang: str) -> str:
    return HANDOFF_TEXTS.get(lang.lower()[:2], HANDOFF_TEXTS["en"])
