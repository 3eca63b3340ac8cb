"""Live handoff in Chromium: the widget on the demo shop and the agent console
(/agent/live/) in a second browser context, talking through daphne both ways."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from chatbot.models import Conversation, Message
from tests.browser.widget import ROOT_JS, Widget, demo_bot_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="session")]

AGENT_NAME = "Alice Lee"
GREETING = "Hi, I'm Alice from the shop. How can I help?"
# Generous: the console's first knowledge-base suggestions wait for the embedding model.
SUGGESTION_TIMEOUT = 90_000


async def console_open(browser: Any, base: str) -> Any:
    """A staff member signed in, with the live console open and connected (so online)."""
    await sync_to_async(get_user_model().objects.create_user)(
        "alice", password="browser-agent-pw-2", is_staff=True, first_name="Alice", last_name="Lee"
    )
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    staff = await context.new_page()
    await staff.goto(base + "/agent/live/")
    assert "/agent/login/" in staff.url  # anonymous: sent to log in, then back here
    await staff.fill("#id_username", "alice")
    await staff.fill("#id_password", "browser-agent-pw-2")
    await staff.click("button[type=submit]")
    await staff.wait_for_url("**/agent/live/")
    await staff.locator("#live-status", has_text=f"Connected as {AGENT_NAME}").wait_for()
    return staff


def messages_of(conversation_id: int) -> list[tuple[str, str, str]]:
    rows = Message.objects.filter(conversation_id=conversation_id).order_by("id")
    return [(m.role, m.text, m.author.get_username() if m.author else "") for m in rows]


async def test_a_visitor_and_an_agent_talk_live_and_the_bot_stays_silent(
    live_server_process: Any, browser: Any, page: Any, artifacts: Path
) -> None:
    base = live_server_process.url
    await demo_bot_for(base)
    staff = await console_open(browser, base)
    try:
        await page.goto(base + "/demo/")
        widget = Widget(page)
        await widget.open()

        # A question the shop's documents answer: the LLM is given the help-center passage,
        # and the reply names it as its source (a file, so a title and no link).
        await widget.ask_and_wait("How do I clean a cast iron pan?")
        assert "Care and assembly guide" in await page.locator("chatbot-widget .row.bot .src").inner_text()

        # Asking for a person in words: stored, no bot reply, first in line.
        await widget.ask("I want to talk to a human")
        await widget.wait_line.filter(has_text="number 1 in line").wait_for(timeout=10_000)
        assert await widget.typing.is_hidden()
        conversation = await sync_to_async(Conversation.objects.get)()
        item = staff.locator(f'#queue [data-conversation="{conversation.pk}"]')
        await item.wait_for(timeout=10_000)  # no reload: a queue.update
        assert "I want to talk to a human" in await item.inner_text()

        await item.click()  # take
        assert "Alice Lee joined" in await widget.wait_notice("joined")
        # The agent sees what the bot said before, with its sources.
        bot_sources = staff.locator("#transcript .msg.bot .sources li", has_text="Care and assembly guide")
        await bot_sources.wait_for(timeout=10_000)
        await staff.locator(f'#mine [data-conversation="{conversation.pk}"]').wait_for()
        await staff.locator("#queue li").first.wait_for(state="detached")
        assert await widget.wait_line.is_hidden()

        # The agent types (the visitor sees it), then sends.
        reply = staff.locator("#reply")
        await reply.press_sequentially(GREETING, delay=15)
        await widget.typing.wait_for(state="visible", timeout=5_000)
        await reply.press("Enter")
        await widget.agent_rows.first.wait_for(timeout=10_000)
        assert await widget.agent_rows.first.locator(".who").inner_text() == AGENT_NAME
        assert await widget.agent_rows.first.locator(".bubble").inner_text() == GREETING
        assert await widget.typing.is_hidden()
        await staff.locator("#transcript .msg.agent[data-id]:not(.pending)").wait_for()

        # The visitor types (the agent sees it), then asks; only the agent answers.
        await widget.input.press_sequentially("Where is my order?", delay=30)
        await staff.locator("#visitor-typing").wait_for(state="visible", timeout=5_000)
        await widget.input.press("Enter")
        await widget.wait_acked(3)
        visitor_line = staff.locator("#transcript .msg.visitor", has_text="Where is my order?")
        await visitor_line.wait_for(timeout=10_000)
        await page.wait_for_timeout(500)  # room for a bot reply that must not come
        assert await widget.typing.is_hidden()
        assert await widget.replies.count() == 1  # the documents answer only

        # A knowledge-base suggestion for that question, inserted and sent.
        insert = staff.locator("#suggestions li", has_text="tracking link").locator("button.insert")
        await insert.first.click(timeout=SUGGESTION_TIMEOUT)
        assert "tracking link" in await reply.input_value()
        await reply.press("Enter")
        await widget.agent_rows.nth(1).wait_for(timeout=10_000)
        assert "tracking link" in await widget.agent_rows.nth(1).inner_text()
        await page.wait_for_function(  # read out to screen readers, with the name
            f"{ROOT_JS}.querySelector('[aria-live=polite]').textContent.startsWith('{AGENT_NAME}: ')",
            timeout=5_000,
        )
        await staff.screenshot(path=str(artifacts / "agent-console.png"), full_page=True)
        await page.screenshot(path=str(artifacts / "widget-agent.png"))

        stored = await sync_to_async(messages_of)(conversation.pk)
        assert [role for role, _, _ in stored] == [
            "visitor",
            "bot",
            "visitor",
            "system",
            "agent",
            "visitor",
            "agent",
        ]
        assert stored[4] == ("agent", GREETING, "alice")

        # Handed back: the visitor is told, and the bot answers again.
        await staff.click("#release")
        assert "handed the conversation back" in await widget.wait_notice("handed")
        await staff.locator("#mine li").first.wait_for(state="detached")
        await staff.locator("#take:enabled").wait_for()  # open again: it may be taken again
        assert await staff.locator("#release").is_disabled()
        assert "tracking link" in await widget.ask_and_wait("Where is my order?")
        roles = [role for role, _, _ in await sync_to_async(messages_of)(conversation.pk)]
        assert roles[-2:] == ["visitor", "bot"] and roles.count("bot") == 2
    finally:
        await staff.context.close()


async def test_the_widget_keeps_its_place_and_its_person_across_reloads(
    live_server_process: Any, browser: Any, page: Any
) -> None:
    base = live_server_process.url
    await demo_bot_for(base)
    staff = await console_open(browser, base)
    try:
        await page.goto(base + "/demo/")
        widget = Widget(page)
        await widget.open()
        await page.locator("chatbot-widget .human").click()
        await widget.wait_line.filter(has_text="number 1 in line").wait_for(timeout=10_000)

        await page.reload()  # still waiting: the place in line is shown again
        await widget.wait_line.filter(has_text="number 1 in line").wait_for(timeout=10_000)
        conversation = await sync_to_async(Conversation.objects.get)()
        await staff.click(f'#queue [data-conversation="{conversation.pk}"]')
        await widget.wait_notice("joined")
        assert await widget.wait_line.is_hidden()

        await page.reload()  # with a person: the notice is history, and typing reaches them
        await widget.wait_state("online")
        assert "Alice Lee joined" in await widget.wait_notice("joined")
        assert await widget.wait_line.is_hidden()
        await widget.input.press_sequentially("Hello?", delay=30)
        await staff.locator("#visitor-typing").wait_for(state="visible", timeout=5_000)
        await widget.input.press("Enter")
        await staff.locator("#transcript .msg.visitor", has_text="Hello?").wait_for(timeout=10_000)
        await widget.wait_acked(1)
        assert await widget.typing.is_hidden()

        await staff.click("#close")
        assert "closed the conversation" in await widget.wait_notice("closed")
        await staff.locator("#close:disabled").wait_for()  # closed: nothing more to do
        assert await staff.locator("#take").is_disabled() and await staff.locator("#release").is_disabled()
        status = await sync_to_async(lambda: Conversation.objects.get(pk=conversation.pk).status)()
        assert status == Conversation.Status.CLOSED
    finally:
        await staff.context.close()
