"""The staff pages under their Content-Security-Policy in Chromium: each page arrives with
the policy, the browser reports no violation (no script, style or socket blocked), and what
the policy could break still works: the live console connects over its websocket, the
bot's admin page is styled from its static stylesheet."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from chatbot.security_headers import HEADER, STAFF_POLICY
from tests.browser.widget import demo_bot_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="session")]

# Chromium fires securitypolicyviolation for every blocked script, style, image or socket.
LISTEN = """document.addEventListener('securitypolicyviolation', (e) =>
  console.error('CSP violation: ' + e.violatedDirective + ' blocked ' + e.blockedURI));"""


async def test_staff_pages_load_under_the_policy_without_a_violation(
    live_server_process: Any, browser: Any
) -> None:
    base = live_server_process.url
    bot = await demo_bot_for(base)
    await sync_to_async(get_user_model().objects.create_superuser)("csp", password="browser-csp-pw-1")
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    await context.add_init_script(LISTEN)
    complaints: list[str] = []
    # Chromium's own report ("Refused to ... because it violates the following Content
    # Security Policy directive") and the event's.
    context.on(
        "console", lambda m: complaints.append(m.text) if "Content Security Policy" in m.text else None
    )
    context.on("console", lambda m: complaints.append(m.text) if m.text.startswith("CSP violation") else None)
    page = await context.new_page()
    try:
        await page.goto(base + "/agent/login/")
        await page.fill("#id_username", "csp")
        await page.fill("#id_password", "browser-csp-pw-1")
        await page.click("button[type=submit]")
        await page.wait_for_url("**/agent/conversations/**")

        policies = {}
        bot_page = f"/admin/chatbot/bot/{bot.pk}/change/?try=How+can+I+track+my+order%3F"
        for path in ("/agent/conversations/", "/agent/stats/", "/agent/live/", "/admin/", bot_page):
            response = await page.goto(base + path)
            assert response.status == 200, path
            policies[path] = await response.header_value(HEADER)
            if path == "/agent/live/":
                # console.js ran and its websocket (connect-src 'self') is open.
                await page.locator("#live-status", has_text="Connected as").wait_for()
        assert policies == dict.fromkeys(policies, STAFF_POLICY)

        # static/staff/bot-admin.css, which replaced inline styles, applies.
        assert await page.inner_text("#try-decision")
        style = "(s) => getComputedStyle(document.querySelector(s)).paddingLeft"
        assert await page.evaluate(style, "#try-question form") == "10px"
        assert complaints == []

        # The policy is enforced, and a violation would have been heard: inline code is refused.
        inject = """() => {
            const s = document.createElement('script');
            s.textContent = 'window.ran = 1';
            document.head.append(s);
        }"""
        async with page.expect_console_message(lambda m: m.text.startswith("CSP violation")):
            await page.evaluate(inject)
        assert await page.evaluate("window.ran") is None
    finally:
        await context.close()
