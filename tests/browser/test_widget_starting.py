"""A server that is starting closes the chat socket with 4013: the widget retries with its
backoff instead of giving up as after the other 4000-4999 codes (docs/chat-protocol.md).
Chromium runs widget.js on a page of its own against a stand-in websocket."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.browser.widget import Widget, standalone_open

pytestmark = pytest.mark.asyncio(loop_scope="session")

WELCOME = {"type": "welcome", "visitor": "v", "conversation": 1, "status": "open", "messages": []}

# The first socket is accepted and closed with 4013 (starting); the next one says welcome.
FAKE_SOCKET = (
    "const WELCOME = "
    + json.dumps(WELCOME)
    + ";\n"
    + """
window.socketsOpened = 0;
window.WebSocket = class {
  constructor() {
    this.n = ++window.socketsOpened;
    this.readyState = 0;
    setTimeout(() => {
      this.readyState = 1;
      this.onopen();
      if (this.n === 1) setTimeout(() => ((this.readyState = 3), this.onclose({ code: 4013 })));
    });
  }
  send(data) {
    if (JSON.parse(data).type !== 'hello' || this.n === 1) return;
    setTimeout(() => this.onmessage({ data: JSON.stringify(WELCOME) }));
  }
  close() {
    this.readyState = 3;
  }
};
"""
)


async def test_it_retries_when_the_server_is_starting(page: Any) -> None:
    await standalone_open(page, FAKE_SOCKET)
    widget = Widget(page)
    await widget.open()  # online: the second socket, after the backoff

    assert await page.evaluate("window.socketsOpened") == 2
