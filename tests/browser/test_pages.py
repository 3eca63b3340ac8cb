"""Browser tests are async (Playwright's async API): Django's ORM is reached through
sync_to_async, because a running event loop forbids direct ORM calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.core.management import call_command

# The browser fixture lives on the session's event loop, so the tests run on it too.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="session")]

load_demo = sync_to_async(lambda: call_command("load_demo", stdout=None))


async def test_the_demo_shop_page_renders_in_chromium(
    live_server_process: Any, page: Any, artifacts: Path
) -> None:
    await load_demo()
    await page.goto(live_server_process.url + "/demo/")
    assert "Demo shop assistant" in await page.inner_text("body")
    # The stylesheet was served and applied: the body is not in the browser's default serif.
    font = await page.evaluate("getComputedStyle(document.body).fontFamily")
    assert "Times" not in font
    await page.screenshot(path=str(artifacts / "demo-page.png"), full_page=True)


async def test_a_superuser_logs_into_the_admin_and_sees_the_demo_entries(
    live_server_process: Any, page: Any
) -> None:
    await load_demo()
    await sync_to_async(get_user_model().objects.create_superuser)("admin", password="browser-test-pw-1")
    await page.goto(live_server_process.url + "/admin/")
    await page.fill("#id_username", "admin")
    await page.fill("#id_password", "browser-test-pw-1")
    await page.click("input[type=submit]")
    await page.wait_for_selector("#site-name")
    await page.goto(live_server_process.url + "/admin/knowledge/entry/")
    assert "Demo shop assistant" in await page.inner_text("#changelist")
    await page.goto(live_server_process.url + "/admin/chatbot/bot/")
    assert "Demo shop assistant" in await page.inner_text("#result_list")
