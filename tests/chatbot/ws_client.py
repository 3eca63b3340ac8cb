"""Talking to the chat consumer in tests: a communicator per visitor, frames in and out,
two tabs of one visitor, and database calls from async tests. A test that passes
``matcher=kb`` gets sockets that ask the stand-in instead of the real knowledge base."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from chatbot.models import Bot, Message
from chatbot.replying import Matcher
from chatbot.routing import websocket_routes, websocket_urlpatterns

WAIT = 20  # seconds: generous, for a busy machine; nothing asserts on time
application = URLRouter(websocket_urlpatterns)


def routes(matcher: Matcher | None = None) -> Any:
    """The websocket application, its sockets asking ``matcher`` (None: the real one)."""
    return application if matcher is None else URLRouter(websocket_routes(matcher=matcher))


def communicator(
    bot: Bot | str,
    *,
    origin: str | None = "http://testserver",
    host: str = "testserver",
    client: tuple[str, int] = ("198.51.100.7", 50123),
    matcher: Matcher | None = None,
) -> WebsocketCommunicator:
    key = bot if isinstance(bot, str) else bot.public_key
    headers = [(b"host", host.encode()), (b"user-agent", b"pytest-browser/1.0")]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    comm = WebsocketCommunicator(routes(matcher), f"/ws/chat/{key}/", headers=headers)
    comm.scope["client"] = client  # read when the application starts, at connect()
    return comm


@asynccontextmanager
async def connected(bot: Bot, **options: Any) -> AsyncIterator[WebsocketCommunicator]:
    comm = communicator(bot, **options)
    ok, _ = await comm.connect(timeout=WAIT)
    assert ok
    try:
        yield comm
    finally:
        await comm.disconnect(timeout=WAIT)


async def send(comm: WebsocketCommunicator, **frame: Any) -> None:
    await comm.send_json_to(frame)


async def recv(comm: WebsocketCommunicator) -> dict[str, Any]:
    return await comm.receive_json_from(timeout=WAIT)


async def hello(comm: WebsocketCommunicator, visitor: str | None = None, **extra: Any) -> dict[str, Any]:
    await send(comm, type="hello", visitor=visitor, page="https://shop.example/cart", lang="en", **extra)
    welcome = await recv(comm)
    assert welcome["type"] == "welcome", welcome
    return welcome


async def until(comm: WebsocketCommunicator, kind: str) -> list[dict[str, Any]]:
    """Frames received up to and including the first one of type ``kind``."""
    seen = []
    while True:
        frame = await recv(comm)
        seen.append(frame)
        if frame["type"] == kind:
            return seen


async def tabs_settled(group: str, *comms: WebsocketCommunicator) -> None:
    """Wait until the tabs of one conversation know each other: a marker through the
    group reaches each tab after every ``joined`` sent before it, and a second marker
    after every ``present`` answer those caused (channel-layer messages keep their order)."""
    layer = get_channel_layer()
    for round_ in range(2):
        marker = {"type": "chat.frame", "frame": {"type": f"marker.{round_}"}, "sender": ""}
        await layer.group_send(group, marker)
        for comm in comms:
            await until(comm, f"marker.{round_}")


@asynccontextmanager
async def two_tabs(
    bot: Bot, *, matcher: Matcher | None = None
) -> AsyncIterator[tuple[WebsocketCommunicator, WebsocketCommunicator, dict[str, Any]]]:
    """Two tabs of one new visitor that know each other, and the first tab's welcome."""
    async with connected(bot, matcher=matcher) as first, connected(bot, matcher=matcher) as second:
        welcome = await hello(first)
        await hello(second, welcome["visitor"])
        await tabs_settled(f"conversation.{welcome['conversation']}", first, second)
        yield first, second, welcome


async def closed_with(comm: WebsocketCommunicator) -> int:
    output = await comm.receive_output(timeout=WAIT)
    assert output["type"] == "websocket.close", output
    return output["code"]


async def db(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await sync_to_async(fn)(*args, **kwargs)


def rows(conversation_id: int) -> list[tuple[str, str, str, str]]:
    return list(
        Message.objects.filter(conversation_id=conversation_id)
        .order_by("id")
        .values_list("role", "text", "source", "status")
    )
