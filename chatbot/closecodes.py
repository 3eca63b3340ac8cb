"""Websocket close codes of the chat and agent endpoints (4000-4999: the application's own range).

The server accepts the connection and then closes it with one of these, so that a browser
client sees the code (a refused handshake only shows 1006). A client should not reconnect
after any of them, retrying cannot help; except STARTING, which asks it to retry with backoff.

Two standard codes (RFC 6455 registry) say the server, not the client, is the reason:
SERVICE_RESTART (the process is shutting down: reconnect at once, another process answers)
and TRY_AGAIN_LATER (the process is overloaded with new connections: reconnect with backoff).
"""

from __future__ import annotations

UNKNOWN_BOT = 4001  # no bot has this public key
ORIGIN_NOT_ALLOWED = (
    4003  # the page's origin is not allowed (the bot's origins; the agent socket: this server)
)
BOT_INACTIVE = 4004  # the bot exists but is switched off
FRAME_TOO_LARGE = 4008  # a frame was larger than CHAT_MAX_FRAME_BYTES
AGENT_FORBIDDEN = 4010  # the agent socket: not signed in, or not an agent (staff or AGENT_GROUP)
ERASED = 4011  # the chat socket: its visitor or conversation was erased while it was open
STARTING = 4013  # the chat socket: the process is starting (model loading): retry shortly
SERVICE_RESTART = 1012  # the process is shutting down (SIGTERM): reconnect now, to another process
TRY_AGAIN_LATER = 1013  # too many connections being set up at once: reconnect with backoff

REASONS: dict[int, str] = {
    UNKNOWN_BOT: "unknown bot",
    ORIGIN_NOT_ALLOWED: "origin not allowed",
    BOT_INACTIVE: "bot inactive",
    FRAME_TOO_LARGE: "frame too large",
    AGENT_FORBIDDEN: "agents only",
    ERASED: "conversation erased",
    STARTING: "server starting, retry shortly",
    SERVICE_RESTART: "server restarting, reconnect",
    TRY_AGAIN_LATER: "server busy, retry shortly",
}
