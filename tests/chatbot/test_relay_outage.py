"""Redis away past CHANNEL_LAYER_OUTAGE_SECONDS while a reply streams: the visitor's other
tabs and the agents miss their live copies (logged), and the tab that asked still gets its
whole reply (chatbot.chat.relay, chatbot.chat.tabs)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer

from chatbot.channel_layer import ChannelLayerUnavailable
from chatbot.chat.tabs import Tabs
from chatbot.reply_events import AgentHasConversation, Ended
from tests.chatbot.test_relay import CREATED, REPLY, events, relayed


class RedisAway(InMemoryChannelLayer):
    """A layer whose every send has waited out its limit."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        self.attempts += 1
        raise ChannelLayerUnavailable("Redis unreachable for 15 s")

    async def group_add(self, group: str, channel: str) -> None:
        raise ChannelLayerUnavailable("Redis unreachable for 15 s")


def two_tabs(layer: RedisAway) -> Tabs:
    tabs = Tabs(layer, "this-tab", conversation_id=9)
    tabs.others = {"other-tab"}
    return tabs


@pytest.mark.django_db
async def test_the_sender_gets_its_whole_reply_when_the_other_tabs_and_agents_cannot_be_reached(
    caplog: pytest.LogCaptureFixture,
) -> None:
    layer = RedisAway()
    ended = Ended(6, "Hi there!", "llm", "complete")
    stream = events(*REPLY, AgentHasConversation(5, "Hello?", CREATED), ended)
    with caplog.at_level(logging.WARNING):
        steps = await relayed(stream, two_tabs(layer))
    assert [f["type"] for step in steps for f in step.frames] == [
        "ack",
        "reply.start",
        "reply.delta",
        "reply.delta",
        "reply.delta",
        "reply.end",
    ]
    assert steps[-1].event == ended
    assert layer.attempts > 0
    assert "not relayed to the other tabs" in caplog.text
    assert "message 5 not relayed to the agents" in caplog.text


async def test_a_tab_joins_and_leaves_while_redis_is_away_without_an_error() -> None:
    tabs = two_tabs(RedisAway())
    await tabs.join()
    await tabs.leave()
