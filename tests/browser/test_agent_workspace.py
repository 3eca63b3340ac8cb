"""The agent workspace in Chromium: a staff member logs in, opens the transcript of a
conversation the widget just had, turns the bot's reply into a knowledge-base entry, and
the widget's next identical question is answered from the knowledge base."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from agents.models import Correction
from chatbot.models import Message
from tests.browser.widget import Widget, demo_bot_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="session")]

QUESTION = "Do you engrave names on the wooden toy boxes?"
ANSWER = "Yes: engraving of up to 20 letters is free, add it at checkout."


async def log_in(page: Any, base: str, username: str, password: str) -> None:
    await page.goto(base + "/agent/")
    assert "/agent/login/" in page.url  # anonymous: sent to log in
    await page.fill("#id_username", username)
    await page.fill("#id_password", password)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/agent/conversations/**")


async def test_staff_log_in_open_a_transcript_and_correct_a_reply_into_the_knowledge_base(
    live_server_process: Any, browser: Any, page: Any, artifacts: Path
) -> None:
    base = live_server_process.url
    await demo_bot_for(base)
    await sync_to_async(get_user_model().objects.create_user)(
        "support", password="browser-agent-pw-1", is_staff=True
    )
    await page.goto(base + "/demo/")
    widget = Widget(page)
    await widget.open()
    first = await widget.ask_and_wait(QUESTION)
    assert f"You said: {QUESTION}" in first  # the fake LLM's reply

    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    staff = await context.new_page()
    try:
        await log_in(staff, base, "support", "browser-agent-pw-1")
        await staff.click(f"table a:has-text('{QUESTION[:30]}'), table a[href*='/agent/conversations/']")
        await staff.wait_for_selector("text=Add to knowledge base")
        transcript = await staff.inner_text("main")
        assert QUESTION in transcript and "You said:" in transcript
        await staff.screenshot(path=str(artifacts / "agent-transcript.png"), full_page=True)

        await staff.click("text=Add to knowledge base")
        assert await staff.input_value("#id_question") == QUESTION
        await staff.fill("#id_answer", ANSWER)
        await staff.click("button:has-text('Save as new entry')")
        await staff.wait_for_selector("text=Saved to the knowledge base")
    finally:
        await context.close()

    second = await widget.ask_and_wait(QUESTION)
    assert ANSWER in second
    replies = await sync_to_async(
        lambda: list(Message.objects.filter(role="bot").exclude(text="").order_by("id"))
    )()
    assert [r.source for r in replies] == ["llm", "knowledge"]
    correction = await sync_to_async(Correction.objects.select_related("entry").get)()
    assert correction.message_id == replies[0].pk and replies[1].matched_entry_id == correction.entry_id
