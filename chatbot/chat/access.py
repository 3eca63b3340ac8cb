"""Who may open a chat: a known, active bot, embedded on one of its allowed origins; and how
fast a connection may send messages (the rate-limit buckets of its visitor and address)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from chatbot import closecodes, ratelimit
from chatbot.models import Bot
from chatbot.readiness import accepting_chats
from chatbot.selectors import bot_by_public_key


def header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def origin_allowed(*, origin: str | None, host: str | None, allowed: Iterable[str]) -> bool:
    """A browser always sends ``Origin`` with a websocket handshake; a client that sends
    none is not a page that embeds the widget, and the bot's key is public anyway."""
    if origin is None:
        return True
    origin = origin.strip().rstrip("/").lower()
    if origin in {o.rstrip("/").lower() for o in allowed}:
        return True
    # The server's own pages (the demo shop, the admin's try-out) are always allowed.
    parts = urlsplit(origin)
    return bool(host) and parts.scheme in ("http", "https") and parts.netloc == host.strip().lower()


def process_refusal() -> int | None:
    """The close code that turns every chat away while this process is starting (its
    embedding model still loading), else None. In process only: no database call."""
    return None if accepting_chats() else closecodes.STARTING


def bot_admit(*, key: str, headers: Iterable[tuple[bytes, bytes]]) -> tuple[Bot | None, int | None]:
    """The bot a connection is for, or the close code that refuses it."""
    headers = list(headers)
    bot = bot_by_public_key(key)
    if bot is None:
        return None, closecodes.UNKNOWN_BOT
    if not bot.is_active:
        return None, closecodes.BOT_INACTIVE
    if not origin_allowed(
        origin=header(headers, b"origin"), host=header(headers, b"host"), allowed=bot.allowed_origins
    ):
        return None, closecodes.ORIGIN_NOT_ALLOWED
    return bot, None


def message_buckets(*, visitor_uid: uuid.UUID, client: Sequence[Any] | None) -> list[ratelimit.Bucket]:
    """The buckets a visitor's message takes a token from: the visitor's (CHAT_RATE_VISITOR)
    and their IP address's (CHAT_RATE_IP), each when set; ``client`` is the ASGI scope's."""
    buckets = []
    if settings.CHAT_RATE_VISITOR:
        buckets.append(ratelimit.Bucket(f"visitor:{visitor_uid}", settings.CHAT_RATE_VISITOR))
    if settings.CHAT_RATE_IP and client and client[0]:
        buckets.append(ratelimit.Bucket(f"ip:{client[0]}", settings.CHAT_RATE_IP))
    return buckets
