"""Driving the chat widget (static/chatbot/widget.js) from Playwright.

The widget lives in an open shadow root: Playwright's CSS locators pierce it, and page
scripts reach it through ``document.querySelector('chatbot-widget').shadowRoot``. The host
element's ``data-state`` is the connection state (connecting, online, offline, refused);
a reply row gets ``data-status`` (complete, partial, failed) when its ``reply.end`` arrives.
A visitor row gets ``data-id`` once the server has acknowledged (stored) it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asgiref.sync import sync_to_async
from django.core.management import call_command

from chatbot.models import Bot
from chatbot.selectors import demo_bot

ROOT_JS = "document.querySelector('chatbot-widget').shadowRoot"
# Generous: the first knowledge-base question of a fresh server waits for the embedding model.
REPLY_TIMEOUT = 90_000


@sync_to_async
def demo_bot_for(server_url: str) -> Bot:
    """The demo bot, with its knowledge base, allowed on the live server's origin, and
    letting the (fake) LLM answer what its knowledge doesn't cover: these tests ask it."""
    call_command("load_demo", stdout=None)
    bot = demo_bot()
    assert bot is not None
    bot.allowed_origins = [*bot.allowed_origins, server_url]
    bot.answer_only_from_knowledge = False
    bot.save(update_fields=["allowed_origins", "answer_only_from_knowledge"])
    return bot


WIDGET_JS = Path(__file__).resolve().parents[2] / "static" / "chatbot" / "widget.js"
STANDALONE_ORIGIN = "http://widget.test"
STANDALONE_PAGE = (
    '<!doctype html><html lang="en"><body>'
    '<script src="/static/chatbot/widget.js" data-bot="k"></script></body></html>'
)


async def standalone_open(page: Any, fake_socket: str) -> None:
    """A page holding only the widget, served by the browser itself (no server), with
    ``fake_socket`` (a script defining ``window.WebSocket``) standing in for the server."""

    async def serve(route: Any) -> None:
        if route.request.url.endswith("/widget.js"):
            await route.fulfill(body=WIDGET_JS.read_bytes(), content_type="text/javascript")
        else:
            await route.fulfill(body=STANDALONE_PAGE, content_type="text/html")

    await page.route(STANDALONE_ORIGIN + "/**", serve)
    await page.add_init_script(fake_socket)
    await page.goto(STANDALONE_ORIGIN + "/")


class Widget:
    def __init__(self, page: Any) -> None:
        self.page = page
        self.launcher = page.locator("chatbot-widget .launch")
        self.panel = page.locator("chatbot-widget .panel")
        self.input = page.locator("chatbot-widget textarea")
        self.replies = page.locator("chatbot-widget .row.bot[data-status]")
        self.visitor_rows = page.locator("chatbot-widget .row.visitor")
        # Live handoff: a person's bubbles, notices (joined, left, none free), the queue line.
        self.agent_rows = page.locator("chatbot-widget .row.agent")
        self.notices = page.locator("chatbot-widget .row.system .bubble")
        self.wait_line = page.locator("chatbot-widget .wait")
        self.typing = page.locator("chatbot-widget .typing")

    async def open(self) -> None:
        await self.launcher.click()
        await self.panel.wait_for(state="visible")
        await self.wait_state("online")

    async def wait_state(self, state: str, wait_ms: float = 60_000) -> None:
        await self.page.wait_for_function(
            "state => document.querySelector('chatbot-widget')?.dataset.state === state",
            arg=state,
            timeout=wait_ms,
        )

    async def wait_state_not(self, state: str, wait_ms: float = 60_000) -> None:
        await self.page.wait_for_function(
            "state => document.querySelector('chatbot-widget')?.dataset.state !== state",
            arg=state,
            timeout=wait_ms,
        )

    async def ask(self, text: str) -> None:
        await self.input.fill(text)
        await self.input.press("Enter")

    async def wait_replies(self, count: int, wait_ms: float = REPLY_TIMEOUT) -> None:
        await self.page.wait_for_function(
            f"n => {ROOT_JS}.querySelectorAll('.row.bot[data-status]').length >= n",
            arg=count,
            timeout=wait_ms,
        )

    async def reply_text(self, index: int = -1) -> str:
        return await self.replies.nth(index).locator(".bubble").inner_text()

    async def ask_and_wait(self, text: str) -> str:
        before = await self.replies.count()
        await self.ask(text)
        await self.wait_replies(before + 1)
        return await self.reply_text()

    async def state(self) -> str:
        return await self.page.evaluate("document.querySelector('chatbot-widget').dataset.state")

    async def wait_notice(self, text: str, wait_ms: float = 10_000) -> str:
        """The first notice (system line) containing ``text``, once shown; its whole text."""
        notice = self.notices.filter(has_text=text).first
        await notice.wait_for(timeout=wait_ms)
        return await notice.inner_text()

    async def wait_acked(self, count: int, wait_ms: float = 10_000) -> None:
        """Until ``count`` of the visitor's messages are acknowledged (stored)."""
        await self.page.wait_for_function(
            f"n => {ROOT_JS}.querySelectorAll('.row.visitor[data-id]').length >= n",
            arg=count,
            timeout=wait_ms,
        )
