"""Several tabs of one visitor: each connection knows the conversation's other tabs, so a
lone tab sends its reply frames to nobody else (no channel-layer message per frame), and
tabs that join or leave are counted in and out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from channels.layers import get_channel_layer

from tests.chatbot.ws_client import connected, db, hello, send, tabs_settled, two_tabs, until
from tests.factories import make_bot
from tests.fixtures.llm import StandIn

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def frames_sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ``chat.frame`` types sent through the channel layer to conversation groups."""
    layer = get_channel_layer()
    real = layer.group_send
    sent: list[str] = []

    async def spy(group: str, message: dict[str, Any]) -> None:
        if message["type"] == "chat.frame" and not message["frame"]["type"].startswith("marker."):
            sent.append(message["frame"]["type"])
        await real(group, message)

    monkeypatch.setattr(layer, "group_send", spy)
    return sent


async def test_a_lone_tab_sends_nothing_through_the_channel_layer(
    kb: StandIn, llm: Callable[..., None], frames_sent: list[str]
) -> None:
    llm()
    async with connected(await db(make_bot, answer_only_from_knowledge=False), matcher=kb) as comm:
        await hello(comm)
        await send(comm, type="message", text="Hi [[fake: tokens=6]]", client_id="c1")
        frames = await until(comm, "reply.end")
    assert [f["type"] for f in frames if f["type"] == "reply.delta"] == ["reply.delta"] * 6
    assert frames_sent == []


async def test_a_tab_that_joins_later_hears_the_first_and_is_heard(
    kb: StandIn, llm: Callable[..., None], frames_sent: list[str]
) -> None:
    llm()
    bot = await db(make_bot, answer_only_from_knowledge=False)
    async with two_tabs(bot, matcher=kb) as (first, second, _):
        # The later tab learnt of the first from its "present" answer: its reply reaches it.
        await send(second, type="message", text="from the new tab [[fake: tokens=2]]", client_id="c1")
        own = await until(second, "reply.end")
        relayed = await until(first, "reply.end")
    assert relayed[0]["type"] == "message" and relayed[0]["text"] == "from the new tab [[fake: tokens=2]]"
    assert relayed[-1]["text"] == own[-1]["text"] == "tok1 tok2 "
    assert frames_sent[0] == "message" and frames_sent[-1] == "reply.end"


async def test_a_tab_that_left_is_no_longer_sent_to(
    kb: StandIn, llm: Callable[..., None], frames_sent: list[str]
) -> None:
    llm()
    bot = await db(make_bot, answer_only_from_knowledge=False)
    async with connected(bot, matcher=kb) as first:
        welcome = await hello(first)
        group = f"conversation.{welcome['conversation']}"
        async with connected(bot, matcher=kb) as second:
            await hello(second, welcome["visitor"])
            await tabs_settled(group, first, second)
        await tabs_settled(group, first)  # the "left" has been heard
        await send(first, type="message", text="alone again [[fake: tokens=3]]", client_id="c1")
        frames = await until(first, "reply.end")
    assert frames[-1]["text"] == "tok1 tok2 tok3 "
    assert frames_sent == []
