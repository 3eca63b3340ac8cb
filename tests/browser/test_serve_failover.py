"""`make serve WORKERS=2` with a worker killed mid-reply: Chromium, on the demo page through
nginx, is streaming an answer of the (slow, fake) LLM when the worker holding its socket
gets SIGKILL. The widget reconnects through nginx to the other worker, resyncs, and shows
the reply as far as it went, marked as cut off; the other worker's reaper stores it as
partial; the supervisor starts a new worker in the dead one's place and keeps serving."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from deploy import serve
from tests.browser.conftest import FakeLLM
from tests.browser.widget import REPLY_TIMEOUT, ROOT_JS, Widget
from tests.deploy.conftest import serve_missing_reason
from tests.deploy.serving import Served, alive, postgres_database

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.skipif(serve_missing_reason() is not None, reason=str(serve_missing_reason())),
]

LONG_ANSWER = "Tell me about Mars [[fake: tokens=400 delay_ms=50]]"  # 20 s of streaming, not in the KB
# The surviving worker takes the killed one for dead (and settles its reply) this soon.
HEARTBEAT_SECONDS = 1
DEAD_SECONDS = 4
SETTLE_SECONDS = 60  # for the reaper, and for the supervisor's new worker


@pytest.fixture
def served(tmp_path: Path, fake_llm_process: FakeLLM) -> Iterator[tuple[Served, str]]:
    with postgres_database() as database:
        env = {
            **fake_llm_process.env(),
            "PROCESS_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
            "PROCESS_DEAD_SECONDS": str(DEAD_SECONDS),
        }
        run = Served(
            run_dir=tmp_path / "serve", database_url=database, env=env, log_name="serve-failover.log"
        )
        try:
            yield run, database.replace("postgres://", "postgresql://", 1)
        finally:
            run.kill()


def sql(database: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database, autocommit=True) as db:
        cursor = db.execute(query, params)
        return cursor.fetchall() if cursor.description is not None else []


def streaming_worker(database: str) -> tuple[int, int]:
    """The reply being streamed, once some of its text is stored (REPLY_FLUSH_SECONDS), and
    the pid of the worker writing it: the pending row's owner is a process whose heartbeat
    row names its pid (chatbot.inflight)."""
    found: list[tuple[int, int]] = []

    def stored() -> bool:
        found[:] = sql(
            database,
            "SELECT m.id, h.pid FROM chatbot_message m JOIN chatbot_processheartbeat h ON h.owner = m.owner"
            " WHERE m.status = 'pending' AND m.text LIKE 'tok1 tok2 tok3 %%'",
        )
        return len(found) == 1

    wait_until(stored, "the streamed reply's text stored so far")
    return found[0]


def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + SETTLE_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"not within {SETTLE_SECONDS} s: {what}"
        time.sleep(0.2)


def worker_pids(served: Served) -> set[int]:
    """The supervisor's children but nginx's master."""
    return {
        pid for pid, argv in serve.children(served.process.pid).items() if argv and b"nginx" not in argv[0]
    }


async def test_a_worker_killed_mid_reply_leaves_the_widget_on_the_other_with_the_reply_cut_off(
    served: tuple[Served, str], page: Any
) -> None:
    run, database = served
    await asyncio.to_thread(run.wait_for_demo)
    # Questions the knowledge base can't answer go to the (fake) LLM.
    await asyncio.to_thread(sql, database, "UPDATE chatbot_bot SET answer_only_from_knowledge = false")
    workers = await asyncio.to_thread(worker_pids, run)
    assert len(workers) == 2, workers

    await page.goto(run.url + "/demo/")
    widget = Widget(page)
    await widget.open()
    await widget.ask(LONG_ANSWER)
    await page.wait_for_function(
        f"() => [...{ROOT_JS}.querySelectorAll('.row.bot[data-id]:not([data-status])')]"
        ".some((row) => row.textContent.length > 40)",
        timeout=REPLY_TIMEOUT,
    )
    reply_id, pid = await asyncio.to_thread(streaming_worker, database)
    assert pid in workers

    os.kill(pid, signal.SIGKILL)  # no reply.end, no close frame: nginx drops the socket
    await asyncio.to_thread(wait_until, lambda: not alive(pid), "the worker gone")
    await widget.wait_state("online")  # again: through nginx, to the other worker

    cut = page.locator(f"chatbot-widget .row.bot[data-id='{reply_id}']")
    await page.wait_for_function(
        f"() => {ROOT_JS}.querySelector(\".row.bot[data-id='{reply_id}']\")?.dataset.status === 'partial'",
        timeout=30_000,
    )
    assert (await cut.locator(".meta").inner_text()).startswith("This reply was cut off.")
    shown = await cut.locator(".bubble").inner_text()
    assert shown.startswith("tok1 tok2 tok3")

    # The other worker's reaper stores it as partial, as far as it was written.
    def settled() -> bool:
        rows = sql(database, "SELECT status, text FROM chatbot_message WHERE id = %s", reply_id)
        assert rows, "the reply's row is gone"
        return rows[0][0] == "partial" and rows[0][1].startswith("tok1 tok2 tok3")

    await asyncio.to_thread(wait_until, settled, "the reply stored as partial")
    # The conversation goes on, on the surviving worker.
    assert "tracking" in await widget.ask_and_wait("How can I track my order?")
    assert await page.locator("chatbot-widget .row.bot[data-status=partial]").count() == 1

    # The supervisor kept serving, and put a new worker in the dead one's place.
    assert run.process.poll() is None, run.output()

    def replaced() -> bool:
        now = worker_pids(run)
        return len(now) == 2 and pid not in now

    await asyncio.to_thread(wait_until, replaced, "a new worker in place of the killed one")
    await page.reload()  # the history from the server: the reply as stored
    widget = Widget(page)
    await widget.launcher.wait_for()
    if await widget.panel.is_hidden():  # the widget may remember it was open
        await widget.open()
    await widget.wait_state("online")
    await widget.wait_replies(2)
    assert await page.locator("chatbot-widget .row.bot[data-status=partial]").count() == 1
