"""Closes the server asks the widget to retry after (docs/chat-protocol.md): 4013 (starting)
and 1013 (busy) with its backoff, instead of giving up as after the other 4000-4999 codes;
1012 (this process is restarting) at once, within a short jitter. Chromium runs widget.js
on a page of its own against a stand-in websocket."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.browser.widget import Widget, standalone_open

pytestmark = pytest.mark.asyncio(loop_scope="session")

WELCOME = {"type": "welcome", "visitor": "v", "conversation": 1, "status": "open", "messages": []}

# The first socket is accepted and closed with CLOSE_CODE; the next one says welcome. The
# delays the widget waits (setTimeout) are recorded, with Math.random pinned to its maximum.
FAKE_SOCKET = (
    "const WELCOME = "
    + json.dumps(WELCOME)
    + ";\n"
    + """
window.socketsOpened = 0;
window.waits = [];
Math.random = () => 0.999;
const realSetTimeout = window.setTimeout.bind(window);
window.setTimeout = (fn, ms, ...rest) => (ms >= 20 && window.waits.push(ms), realSetTimeout(fn, ms, ...rest));
window.WebSocket = class {
  constructor() {
    this.n = ++window.socketsOpened;
    this.readyState = 0;
    setTimeout(() => {
      this.readyState = 1;
      this.onopen();
      if (this.n === 1) setTimeout(() => ((this.readyState = 3), this.onclose({ code: CLOSE_CODE })));
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


@pytest.mark.parametrize(
    ("code", "longest_wait_ms"),
    [(4013, 1300), (1013, 1300), (1012, 550)],
    ids=["starting", "busy", "restarting"],
)
async def test_it_retries_when_the_server_asks_it_to(page: Any, code: int, longest_wait_ms: int) -> None:
    await standalone_open(page, f"const CLOSE_CODE = {code};\n" + FAKE_SOCKET)
    widget = Widget(page)
    await widget.open()  # online: the second socket, after the wait

    assert await page.evaluate("window.socketsOpened") == 2
    # The reconnect's wait: a backoff of 0.7-1.3 s, or for a restart 50-500 ms.
    waits = await page.evaluate("window.waits")
    reconnect = [ms for ms in waits if 50 <= ms <= 1300]
    assert reconnect and max(reconnect) <= longest_wait_ms, waits
    assert (max(reconnect) < 700) == (code == 1012), waits
