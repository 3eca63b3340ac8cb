"""The widget shows a reply's sources (the company's documents it drew on) as links under
it: http(s) URLs only, built as elements. The server side of ``sources`` is tested in
tests/chatbot/test_replying_documents.py; here Chromium runs widget.js on a page of its own
against a stand-in websocket that sends the frames of docs/chat-protocol.md."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.browser.widget import Widget, standalone_open

pytestmark = pytest.mark.asyncio(loop_scope="session")


SOURCES = [
    {"title": "Warranty terms", "url": "https://shop.example/help/warranty", "passage_id": 12},
    {"title": "Evil <b>page</b>", "url": "javascript:alert(document.domain)", "passage_id": 13},
    {"title": "Assembly manual.pdf", "url": "", "passage_id": 14},
    {"title": "Warranty terms", "url": "https://shop.example/help/warranty", "passage_id": 15},
]
CREATED = "2025-01-01T00:00:00+00:00"
WELCOME = {
    "type": "welcome",
    "visitor": "v",
    "conversation": 1,
    "status": "open",
    "messages": [
        {"id": 1, "role": "visitor", "text": "Care?", "source": "", "status": "complete", "created": CREATED},
        {
            "id": 2,
            "role": "bot",
            "text": "Oil it [1].",
            "source": "llm",
            "status": "complete",
            "created": CREATED,
            "sources": [{"title": "Care guide", "url": "http://shop.example/help/care", "passage_id": 9}],
        },
    ],
}
REPLY = [
    {"type": "reply.start", "id": 4, "source": "llm"},
    {"type": "reply.delta", "id": 4, "text": "Ten years [1]."},
    {
        "type": "reply.end",
        "id": 4,
        "text": "Ten years [1].",
        "source": "llm",
        "status": "complete",
        "entry_id": None,
        "score": None,
        "sources": SOURCES,
    },
]

# A WebSocket that answers like the server: WELCOME to hello, an ack and REPLY to a message.
FAKE_SOCKET = (
    "const WELCOME = "
    + json.dumps(WELCOME)
    + ", REPLY = "
    + json.dumps(REPLY)
    + ";\n"
    + """
window.WebSocket = class {
  constructor() {
    this.readyState = 0;
    setTimeout(() => ((this.readyState = 1), this.onopen()));
  }
  frame(f) {
    setTimeout(() => this.onmessage({ data: JSON.stringify(f) }));
  }
  send(data) {
    const f = JSON.parse(data);
    if (f.type === 'hello') this.frame(WELCOME);
    if (f.type !== 'message') return;
    this.frame({ type: 'ack', client_id: f.client_id, id: 3 });
    REPLY.forEach((r) => this.frame(r));
  }
  close() {
    this.readyState = 3;
  }
};
"""
)


async def test_it_shows_sources_as_links_and_never_links_a_javascript_url(page: Any) -> None:
    await standalone_open(page, FAKE_SOCKET)
    widget = Widget(page)
    await widget.open()

    await widget.ask("How long is the warranty?")
    await widget.wait_replies(2)
    reply = widget.replies.last
    sources = reply.locator(".src")
    assert (await sources.inner_text()).startswith("Sources")
    items = sources.locator("li")
    # The same page twice is shown once; a title is text, never markup.
    assert await items.all_inner_texts() == ["Warranty terms", "Evil <b>page</b>", "Assembly manual.pdf"]
    links = sources.locator("a")
    assert await links.count() == 1  # the others are text
    assert await links.first.get_attribute("href") == "https://shop.example/help/warranty"
    assert await links.first.get_attribute("target") == "_blank"
    assert "noopener" in (await links.first.get_attribute("rel")).split()
    assert await sources.locator("b").count() == 0  # a title is text, never markup
    assert await items.nth(1).evaluate("li => li.childNodes.length === 1 && li.firstChild.nodeType") == 3

    earlier = widget.replies.first.locator(".src a")
    assert await earlier.get_attribute("href") == "http://shop.example/help/care"
    assert await earlier.inner_text() == "Care guide"
