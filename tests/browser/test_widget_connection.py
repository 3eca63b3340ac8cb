"""The widget's connection: surviving a server restart, a refused bot, several tabs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from chatbot.models import Message
from tests.browser.widget import REPLY_TIMEOUT, ROOT_JS, Widget, demo_bot_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="session")]

RETURN_ANSWER = "Start your return under"


async def test_it_reconnects_after_a_server_restart_and_sends_what_was_typed_offline(
    live_server_process: Any, page: Any
) -> None:
    await demo_bot_for(live_server_process.url)
    await page.goto(live_server_process.url + "/demo/")
    widget = Widget(page)
    await widget.open()
    await widget.ask_and_wait("Where is my order?")

    try:
        await asyncio.to_thread(live_server_process.stop)
        await widget.wait_state_not("online")
        assert "Reconnecting" in await page.locator("chatbot-widget .status").inner_text()
        await widget.ask("How do I return an item?")
        queued = widget.visitor_rows.last
        assert "queued" in (await queued.get_attribute("class") or "")
        assert await queued.locator(".meta").inner_text() == "Waiting for connection"
    finally:
        await asyncio.to_thread(live_server_process.start)  # same port

    await widget.wait_state("online")
    await widget.wait_replies(2)
    assert RETURN_ANSWER in await widget.reply_text()
    assert "queued" not in (await queued.get_attribute("class") or "")
    assert await page.locator("chatbot-widget .status").is_hidden()

    # The next message works, and nothing was shown or stored twice.
    assert "tracking link" in await widget.ask_and_wait("Where is my order?")
    texts = ["Where is my order?", "How do I return an item?", "Where is my order?"]
    assert await widget.visitor_rows.all_inner_texts() == texts
    assert await widget.replies.count() == 3
    stored = await sync_to_async(
        lambda: list(Message.objects.filter(role="visitor").order_by("id").values_list("text", flat=True))
    )()
    assert stored == texts


async def test_it_stops_and_says_so_when_the_server_refuses_the_bot(
    live_server_process: Any, page: Any
) -> None:
    await demo_bot_for(live_server_process.url)
    await page.add_init_script(
        "new MutationObserver(() => document.querySelector('script[data-bot]')"
        "?.setAttribute('data-bot', 'no-such-bot')).observe(document, {childList: true, subtree: true});"
    )
    await page.goto(live_server_process.url + "/demo/")
    widget = Widget(page)
    await widget.launcher.click()

    await widget.wait_state("refused")
    assert await page.locator("chatbot-widget .status").inner_text() == "Chat is not available here."
    assert await page.evaluate("ChatbotWidget.send('Hello?')") is False


async def test_a_second_tab_of_the_same_visitor_sees_the_conversation_live(
    live_server_process: Any, page: Any
) -> None:
    await demo_bot_for(live_server_process.url)
    await page.goto(live_server_process.url + "/demo/")
    first = Widget(page)
    await first.open()
    await first.ask_and_wait("Where is my order?")
    other_page = await page.context.new_page()  # same storage: same visitor token
    await other_page.goto(live_server_process.url + "/demo/?tab=2")
    second = Widget(other_page)
    await second.open()
    await second.wait_replies(1)

    await first.ask_and_wait("How do I return an item?")

    await second.wait_replies(2)
    assert RETURN_ANSWER in await second.reply_text()
    assert await second.visitor_rows.all_inner_texts() == ["Where is my order?", "How do I return an item?"]


async def test_a_reply_cut_off_by_a_server_crash_says_so_once_the_widget_resyncs(
    live_server_process: Any, page: Any
) -> None:
    await demo_bot_for(live_server_process.url)
    await page.goto(live_server_process.url + "/demo/")
    widget = Widget(page)
    await widget.open()
    await widget.ask("Tell me about Mars [[fake: tokens=400 delay_ms=50]]")  # 20 s of streaming
    await page.wait_for_function(
        f"() => [...{ROOT_JS}.querySelectorAll('.row.bot[data-id]:not([data-status])')]"
        ".some((row) => row.textContent.length > 40)",
        timeout=REPLY_TIMEOUT,
    )
    try:
        live_server_process.process.kill()  # SIGKILL: no reply.end, no close frame
        await asyncio.to_thread(live_server_process.process.wait)
        await widget.wait_state_not("online")
    finally:
        # The restarted process does not reap the dead one's reply while this test runs
        # (however long its start-up takes), so the widget marks the cut itself.
        live_server_process.env["PROCESS_DEAD_SECONDS"] = "600"
        await asyncio.to_thread(live_server_process.start)  # same port
        del live_server_process.env["PROCESS_DEAD_SECONDS"]

    await widget.wait_state("online")
    cut = page.locator("chatbot-widget .row.bot[data-status=partial]")
    await cut.wait_for(timeout=30_000)
    assert await cut.locator(".meta").inner_text() == "This reply was cut off."
    assert (await cut.locator(".bubble").inner_text()).startswith("tok1 tok2 tok3")
    assert await cut.locator(".meta button").count() == 0  # rated once the server has it
