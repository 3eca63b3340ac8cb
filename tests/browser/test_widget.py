"""The chat widget on the demo shop, end to end: Chromium -> widget.js -> websocket ->
daphne -> knowledge base or the fake LLM process (tests/browser/conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from chatbot.chat.texts import text as server_text
from chatbot.models import Conversation, Feedback, Message, Visitor
from knowledge.services import entries_embed, entry_upsert
from tests.browser.widget import ROOT_JS, Widget, demo_bot_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="session")]

TRACKING_ANSWER = "When your parcel leaves our warehouse, we email you a tracking link."


async def test_it_answers_a_knowledge_base_question_from_the_demo_page(
    live_server_process: Any, page: Any, artifacts: Path
) -> None:
    await demo_bot_for(live_server_process.url)
    await page.goto(live_server_process.url + "/demo/")
    widget = Widget(page)
    await widget.open()
    assert "I'm the shop assistant" in await widget.panel.inner_text()

    answer = await widget.ask_and_wait("Where is my order?")

    assert TRACKING_ANSWER in answer
    reply = widget.replies.last
    # The markdown subset became elements: bold, and a safe link that opens a new tab.
    assert await reply.locator("strong").first.inner_text() == "Account > Orders"
    link = reply.locator("a")
    assert await link.get_attribute("href") == "https://maplenook.example/track"
    assert await link.get_attribute("rel") == "noopener noreferrer"
    assert await link.get_attribute("target") == "_blank"
    stored = await sync_to_async(lambda: list(Message.objects.filter(role="bot").values("source", "text")))()
    assert stored == [{"source": "knowledge", "text": await sync_to_async(_tracking_answer)()}]
    await page.screenshot(path=str(artifacts / "widget-demo.png"))


def _tracking_answer() -> str:
    from knowledge.models import Entry

    return Entry.objects.get(external_id="en-orders-track").answer


async def test_it_shows_an_llm_reply_growing_while_it_streams(live_server_process: Any, page: Any) -> None:
    await demo_bot_for(live_server_process.url)
    await page.goto(live_server_process.url + "/demo/")
    widget = Widget(page)
    await widget.open()
    # Every distinct text of a reply row that has started but not ended.
    await page.evaluate(
        f"""() => {{
            const root = {ROOT_JS};
            window.partials = [];
            new MutationObserver(() => {{
                for (const row of root.querySelectorAll('.row.bot[data-id]:not([data-status])')) {{
                    const text = row.querySelector('.bubble').textContent;
                    if (text && window.partials.at(-1) !== text) window.partials.push(text);
                }}
            }}).observe(root.querySelector('.log'), {{subtree: true, childList: true, characterData: true}});
        }}"""
    )

    typing = page.locator("chatbot-widget .typing")
    await widget.ask("[[fake: tokens=20 delay_ms=80 first_delay_ms=1000]] Do you sell gift cards?")
    await typing.wait_for(state="visible")  # until the first words arrive
    await widget.wait_replies(1)
    final = await widget.reply_text()

    partials = [text.strip() for text in await page.evaluate("window.partials")]
    assert final.split() == [f"tok{i}" for i in range(1, 21)]
    growing = [text for text in partials if text != final]
    assert len(set(growing)) >= 2, partials
    for text in growing:
        assert final.startswith(text)
    assert await widget.replies.last.get_attribute("data-status") == "complete"
    assert await typing.is_hidden()
    assert await sync_to_async(Message.objects.filter(role="bot", source="llm").count)() == 1


async def test_it_restores_the_conversation_after_a_reload_and_on_another_page(
    live_server_process: Any, page: Any
) -> None:
    await demo_bot_for(live_server_process.url)
    await page.goto(live_server_process.url + "/demo/")
    widget = Widget(page)
    await widget.open()
    await widget.ask_and_wait("Where is my order?")

    await page.reload()
    # The panel was open: it opens again, without taking the focus from the page.
    await widget.wait_state("online")
    await widget.wait_replies(1)
    assert await widget.visitor_rows.all_inner_texts() == ["Where is my order?"]
    assert TRACKING_ANSWER in await widget.reply_text()
    assert await page.evaluate(f"{ROOT_JS}.activeElement") is None

    await widget.launcher.click()  # closed now, so the next page starts closed
    await page.goto(live_server_process.url + "/demo/?page=2")
    await widget.wait_state("online")  # a returning visitor connects at once
    assert await widget.panel.is_hidden()
    await widget.open()
    await widget.wait_replies(1)
    assert await widget.visitor_rows.all_inner_texts() == ["Where is my order?"]
    assert await sync_to_async(Message.objects.values("conversation").distinct().count)() == 1


async def test_it_shows_html_from_the_knowledge_base_and_the_llm_as_text(
    live_server_process: Any, page: Any
) -> None:
    bot = await demo_bot_for(live_server_process.url)
    hostile = (
        'Try <img src=x onerror="window.xssKb=1"> and <script>window.xssKb2=1</script> '
        "or [this link](javascript:window.xssKb3=1)."
    )
    await sync_to_async(_hostile_entry)(bot, hostile)
    await page.goto(live_server_process.url + "/demo/")
    widget = Widget(page)
    await widget.open()

    kb_reply = await widget.ask_and_wait("What is the secret discount code for loyal customers?")
    llm_html = "<img src=x onerror='window.xssLlm=1'> <script>window.xssLlm2=1</script> <b>bold?</b>"
    llm_reply = await widget.ask_and_wait(f'[[fake: text="{llm_html}"]] Tell me something')

    assert (
        kb_reply
        == 'Try <img src=x onerror="window.xssKb=1"> and <script>window.xssKb2=1</script> or this link.'
    )
    assert llm_reply == llm_html
    assert await widget.replies.nth(0).locator("img, script, a, b").count() == 0
    assert await widget.replies.nth(1).locator("img, script, b").count() == 0
    # The visitor's own text, HTML included, is shown as typed.
    assert llm_html in await widget.visitor_rows.last.inner_text()
    flags = await page.evaluate("['xssKb', 'xssKb2', 'xssKb3', 'xssLlm', 'xssLlm2'].filter(k => k in window)")
    assert flags == []
    sources = await sync_to_async(
        lambda: list(Message.objects.filter(role="bot").order_by("id").values_list("source", flat=True))
    )()
    assert sources == ["knowledge", "llm"]


def _hostile_entry(bot: Any, answer: str) -> None:
    entry, _ = entry_upsert(
        bot=bot,
        question="What is the secret discount code for loyal customers?",
        answer=answer,
        alternatives=["Is there a discount code for loyal customers?", "loyal customer discount code"],
    )
    entries_embed(entries=[entry])


@pytest.mark.parametrize("how", ["data-lang", "html-lang"])
async def test_it_speaks_chinese_when_the_page_or_the_tag_says_so(
    live_server_process: Any, page: Any, artifacts: Path, how: str
) -> None:
    await demo_bot_for(live_server_process.url)

    # Changed as the parser inserts them, before the async widget script runs. (Serving an
    # edited page through page.route instead would make Chromium's local-network-access
    # checks block the page's websocket to 127.0.0.1.)
    change = (
        "document.documentElement.lang = 'zh-CN'"
        if how == "html-lang"
        else "document.querySelector('script[data-bot]')?.setAttribute('data-lang', 'zh')"
    )
    await page.add_init_script(
        f"new MutationObserver(() => {{ if (document.documentElement) {change}; }})"
        ".observe(document, {childList: true, subtree: true});"
    )
    await page.goto(live_server_process.url + "/demo/")
    widget = Widget(page)
    assert await widget.launcher.get_attribute("aria-label") == "打开在线客服"
    await widget.open()
    assert await page.locator("chatbot-widget h2").inner_text() == "在线客服"
    assert await page.locator("chatbot-widget .human").inner_text() == "转人工客服"
    assert await widget.input.get_attribute("placeholder") == "请输入您的问题…"

    answer = await widget.ask_and_wait("我的快递到哪了？")

    assert "快递单号" in answer
    await page.locator("chatbot-widget .human").click()
    # No one from the team is online: the server says so in Chinese, and asks for an address.
    note = page.locator("chatbot-widget .row.system .bubble")
    await note.wait_for(timeout=10_000)
    assert await note.inner_text() == server_text("unavailable", "zh")
    assert await page.locator("chatbot-widget .mail input").get_attribute("placeholder") == "您的邮箱"
    if how == "data-lang":
        await page.screenshot(path=str(artifacts / "widget-zh.png"))


async def test_it_works_from_the_keyboard_and_announces_replies(live_server_process: Any, page: Any) -> None:
    await demo_bot_for(live_server_process.url)
    await page.goto(live_server_process.url + "/demo/")
    widget = Widget(page)
    assert await widget.launcher.evaluate("el => el.tagName") == "BUTTON"

    await widget.launcher.focus()
    await page.keyboard.press("Enter")
    await widget.wait_state("online")
    assert await widget.launcher.get_attribute("aria-expanded") == "true"
    assert await page.evaluate(f"{ROOT_JS}.activeElement.tagName") == "TEXTAREA"
    await page.keyboard.type("Where is my order?")
    await page.keyboard.press("Enter")
    await widget.wait_replies(1)
    live = page.locator("chatbot-widget [aria-live=polite]")
    await page.wait_for_function(
        f"{ROOT_JS}.querySelector('[aria-live=polite]').textContent.includes('tracking link')", timeout=10_000
    )
    assert "**" not in await live.text_content()

    await page.keyboard.press("Escape")
    assert await widget.panel.is_hidden()
    assert await widget.launcher.get_attribute("aria-expanded") == "false"
    assert await page.evaluate(f"{ROOT_JS}.activeElement.className") == "launch"


async def test_it_sends_feedback_and_asks_for_a_person(live_server_process: Any, page: Any) -> None:
    await demo_bot_for(live_server_process.url)
    await page.goto(live_server_process.url + "/demo/")
    widget = Widget(page)
    await widget.open()
    await widget.ask_and_wait("Where is my order?")
    reply = widget.replies.last

    await reply.locator("button[value=down]").click()
    await page.wait_for_function(
        f"{ROOT_JS}.querySelector('.row.bot[data-status]').dataset.feedback === 'down'", timeout=10_000
    )
    assert await reply.locator("button[value=down]").get_attribute("aria-pressed") == "true"
    feedback = await sync_to_async(lambda: list(Feedback.objects.values("message_id", "rating")))()
    assert feedback == [{"message_id": int(await reply.get_attribute("data-id")), "rating": "down"}]

    await page.locator("chatbot-widget .human").click()
    note = page.locator("chatbot-widget .row.system .bubble")
    await note.wait_for(timeout=10_000)
    # No one from the team is online: the visitor may leave an email address.
    assert await note.inner_text() == server_text("unavailable", "en")
    assert await sync_to_async(Conversation.objects.filter(needs_followup=True).count)() == 1
    email = page.locator("chatbot-widget .mail input[type=email]")
    await email.fill("ada@example.com")
    await email.press("Enter")
    thanks = page.locator("chatbot-widget .row.system .bubble", has_text="reply by email")
    await thanks.wait_for(timeout=10_000)
    assert await page.locator("chatbot-widget .mail").count() == 0
    assert await sync_to_async(lambda: list(Visitor.objects.values_list("email", flat=True)))() == [
        "ada@example.com"
    ]


async def test_it_is_a_polite_guest_on_the_page(live_server_process: Any, page: Any) -> None:
    """One global, one element, an idempotent tag, and styles the page can't reach."""
    await demo_bot_for(live_server_process.url)

    async def without_widget(route: Any) -> None:
        response = await route.fetch()
        html = (await response.text()).replace("chatbot/widget.js", "nothing.js")
        await route.fulfill(response=response, body=html)

    await page.route("**/demo/?bare", without_widget)
    await page.goto(live_server_process.url + "/demo/?bare")
    bare = set(await page.evaluate("Object.keys(window)"))
    await page.goto(live_server_process.url + "/demo/")
    await page.wait_for_function("window.ChatbotWidget")
    assert set(await page.evaluate("Object.keys(window)")) - bare == {"ChatbotWidget"}
    assert sorted(await page.evaluate("Object.keys(window.ChatbotWidget)")) == [
        "close",
        "open",
        "send",
        "toggle",
        "version",
    ]

    # A second copy of the tag changes nothing.
    await page.evaluate(
        """() => new Promise(resolve => {
            const first = document.querySelector('script[data-bot]');
            const again = document.createElement('script');
            again.src = first.src + '?again';
            again.dataset.bot = first.dataset.bot;
            again.onload = resolve;
            document.body.append(again);
        })"""
    )
    assert await page.locator("chatbot-widget").count() == 1

    # Hostile page styles don't reach inside.
    await page.add_style_tag(
        content="* { color: red !important; font-size: 40px !important; "
        "text-transform: uppercase !important; display: inline !important; }"
    )
    size = await widget_size(page)
    assert size["launcher"] == [58, 58]
    assert size["color"] != "rgb(255, 0, 0)"

    # The API drives it: open, send.
    await page.evaluate("ChatbotWidget.open(); ChatbotWidget.send('Where is my order?')")
    widget = Widget(page)
    await widget.wait_replies(1)
    assert TRACKING_ANSWER in await widget.reply_text()
    # innerText applies text-transform: the page's "uppercase" did not get in.
    assert await widget.visitor_rows.last.inner_text() == "Where is my order?"


async def widget_size(page: Any) -> dict[str, Any]:
    return await page.evaluate(
        f"""() => {{
            const root = {ROOT_JS};
            const launcher = root.querySelector('.launch').getBoundingClientRect();
            return {{
                launcher: [Math.round(launcher.width), Math.round(launcher.height)],
                color: getComputedStyle(root.querySelector('h2')).color,
            }};
        }}"""
    )
