"""Live handoff across server processes: two daphne processes share the database and the
Redis channel layer; the visitor's socket is on one, the agent's on the other.

Runs where REDIS_URL is set (.ci/run's PostgreSQL + Redis pass); skipped, with the
reason, elsewhere: the in-memory channel layer cannot span processes."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import websockets
from asgiref.sync import sync_to_async
from django.conf import settings
from django.test import Client

from chatbot.models import Message
from tests.agents.conftest import make_user
from tests.browser import conftest as live
from tests.factories import make_bot

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not settings.REDIS_URL, reason="needs REDIS_URL: two processes share a Redis channel layer"
    ),
]

WAIT = 20  # seconds for any one frame; a first connection may wait for a cold process


@pytest_asyncio.fixture
async def two_servers() -> AsyncIterator[tuple[live.LiveServer, live.LiveServer]]:
    url = await sync_to_async(live.test_database_url)()
    env = {**os.environ, "DATABASE_URL": url, "DEBUG": "1", "PYTHONUNBUFFERED": "1", "EMBEDDING_PRELOAD": "0"}
    servers = []
    try:
        for name in ("visitor-side", "agent-side"):
            server = live.LiveServer(env)
            server.log = live.ARTIFACTS / f"daphne-{name}.log"
            server.log.write_text("")
            await asyncio.to_thread(server.start)
            servers.append(server)
        yield servers[0], servers[1]
    finally:
        for server in servers:
            await asyncio.to_thread(server.stop)


async def frame_of(ws: Any, kind: str) -> dict[str, Any]:
    """The next frame of this type (others are skipped)."""
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        if frame["type"] == kind:
            return frame


def agent_session_cookie() -> str:
    client = Client()
    client.force_login(make_user("alice", staff=True))
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


async def test_a_visitor_and_an_agent_on_different_processes_talk_both_ways(
    two_servers: tuple[live.LiveServer, live.LiveServer],
) -> None:
    visitor_side, agent_side = two_servers
    bot = await sync_to_async(make_bot)(name="Shop")
    cookie = await sync_to_async(agent_session_cookie)()
    ws_agent = agent_side.url.replace("http", "ws") + "/ws/agent/"
    ws_visitor = visitor_side.url.replace("http", "ws") + f"/ws/chat/{bot.public_key}/"
    async with (
        websockets.connect(ws_agent, additional_headers={"Cookie": cookie}, origin=agent_side.url) as agent,
        websockets.connect(ws_visitor) as visitor,
    ):
        await agent.send(json.dumps({"type": "hello"}))
        assert (await frame_of(agent, "welcome"))["queue"] == []
        await visitor.send(
            json.dumps({"type": "hello", "visitor": None, "page": "http://shop/", "lang": "en"})
        )
        conversation = (await frame_of(visitor, "welcome"))["conversation"]

        await visitor.send(json.dumps({"type": "handoff"}))
        assert (await frame_of(visitor, "handoff.waiting"))["position"] == 1
        queue = (await frame_of(agent, "queue.update"))["queue"]  # across processes, via Redis
        assert [item["id"] for item in queue] == [conversation]

        await agent.send(json.dumps({"type": "take", "conversation": conversation}))
        assert (await frame_of(agent, "conversation"))["conversation"]["id"] == conversation
        assert (await frame_of(visitor, "agent.joined"))["agent"] == "alice"

        await agent.send(
            json.dumps(
                {
                    "type": "message",
                    "conversation": conversation,
                    "text": "Hi, Alice here.",
                    "client_id": "a1",
                }
            )
        )
        said = await frame_of(visitor, "agent.message")
        assert (said["text"], said["agent"]) == ("Hi, Alice here.", "alice")

        await visitor.send(json.dumps({"type": "message", "text": "My parcel is late.", "client_id": "v1"}))
        ack = await frame_of(visitor, "ack")
        heard = await frame_of(agent, "visitor.message")
        assert heard["conversation"] == conversation
        assert (heard["message"]["id"], heard["message"]["text"]) == (ack["id"], "My parcel is late.")

    roles = await sync_to_async(
        lambda: list(
            Message.objects.filter(conversation_id=conversation)
            .exclude(role="system")
            .values_list("role", "text")
        )
    )()
    # Stored on both sides, and the bot stayed silent while Alice had the conversation.
    assert roles == [("agent", "Hi, Alice here."), ("visitor", "My parcel is late.")]
