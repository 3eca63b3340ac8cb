"""manage.py chat, llm_check and fake_llm, end to end against the fake provider."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from chatbot.models import Conversation, Message
from chatbot.replying import Matcher
from devtools.fake_llm.server import FakeLLMServer, Script
from knowledge.models import Entry
from tests.factories import make_bot
from tests.fixtures.llm import Candidate, MatchResult, StandIn, free_port

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.django_db(transaction=True)


def chat(key: str, typed: str, *args: str, matcher: Matcher | None = None) -> str:
    out = io.StringIO()
    options: dict[str, Any] = {"matcher": matcher} if matcher is not None else {}
    call_command(
        "chat", "--bot", key, *args, stdin=io.StringIO(typed), stdout=out, stderr=io.StringIO(), **options
    )
    return out.getvalue()


def test_chat_streams_replies_through_the_pipeline(kb: StandIn, llm: Callable[..., None]) -> None:
    llm("zhipu")
    bot = make_bot(answer_only_from_knowledge=False, name="Maple Nook", greeting="Hi! Ask me anything.")
    output = chat(bot.public_key, "Where is my parcel?\n\nDo you sell maple syrup?\n/quit\n", matcher=kb)
    lines = output.splitlines()
    assert (
        lines[0]
        == f"Chatting with Maple Nook (conversation #{Conversation.objects.get().pk}). Ctrl-D or /quit ends."
    )
    assert lines[1] == "bot> Hi! Ask me anything."
    assert "you> bot> You said: Where is my parcel?" in lines
    assert "you> you> bot> You said: Do you sell maple syrup?" in lines  # an empty line just prompts again
    assert "llm · zhipu/zhipu-test-model ·" in output and "first token" in output
    assert [(m.role, m.source) for m in Message.objects.order_by("id")] == [
        ("visitor", ""),
        ("bot", "llm"),
        ("visitor", ""),
        ("bot", "llm"),
    ]


def test_chat_answers_from_the_knowledge_base_and_ends_at_end_of_input(
    kb: StandIn,
    llm: Callable[..., None],
    fake: FakeLLMServer,
) -> None:
    llm()
    bot = make_bot()
    hours = Entry.objects.create(bot=bot, question="Opening hours?", answer="9 to 5, Monday to Friday.")
    kb.result = MatchResult("answer", [Candidate(hours.pk, hours.question, hours.answer, 0.91)])
    output = chat(bot.public_key, "when are you open", "--quiet", matcher=kb)
    assert "you> bot> 9 to 5, Monday to Friday.\n" in output
    assert "knowledge" not in output  # --quiet
    assert fake.requests == []


def test_chat_says_when_the_bot_is_unknown() -> None:
    with pytest.raises(CommandError, match="No bot with public key 'nope'"):
        chat("nope", "")


def test_llm_check_prints_provider_model_and_timings(llm: Callable[..., None], fake: FakeLLMServer) -> None:
    llm("dashscope")
    out = io.StringIO()
    call_command("llm_check", stdout=out)
    line = out.getvalue().strip()
    assert line.startswith("ok provider=dashscope model=dashscope-test-model ttft=")
    assert " total=" in line and "reply='You said: Reply with the single word: po'" in line
    assert fake.requests[-1].body["parameters"]["max_tokens"] == 5


def test_llm_check_prints_the_error_in_one_line(llm: Callable[..., None], fake: FakeLLMServer) -> None:
    llm("openai", LLM_MAX_RETRIES=0)
    fake.defaults = Script(status=401)
    with pytest.raises(CommandError) as info:
        call_command("llm_check", stdout=io.StringIO())
    message = str(info.value)
    assert message.startswith(
        "AuthenticationError: [openai] fake error 401 [invalid_api_key] (request id fake-"
    )
    assert "\n" not in message


@pytest.fixture
def fake_process() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "fake_llm", "--port", str(port), "--delay-ms", "0", "--tokens", "3"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                    assert json.load(response) == {"status": "ok"}
                    break
            except OSError:
                if process.poll() is not None:
                    raise AssertionError(process.stdout.read().decode() if process.stdout else "") from None
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)


async def test_fake_llm_runs_as_a_separate_process(fake_process: str, llm: Callable[..., None]) -> None:
    from tests.chatbot.llm.helpers import ask, collect

    llm("openai", LLM_BASE_URL=f"{fake_process}/v1")
    deltas, _ = await collect(ask("hi"))
    assert deltas == ["tok1 ", "tok2 ", "tok3 "]
    _, scripted = await collect(ask("hi [[fake: tokens=1]]"))
    assert scripted.text == "tok1 "


def _database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return "sqlite:///" + str(Path(db["NAME"]).resolve())
    auth = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        auth += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{quote(db['NAME'])}"


def test_chat_in_a_terminal_against_the_fake_server_process(fake_process: str) -> None:
    """Two real processes, as a developer would run them (uses the real knowledge.matching)."""
    pytest.importorskip("knowledge.matching")
    bot = make_bot(answer_only_from_knowledge=False, name="Terminal bot", greeting="")
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "LLM_PROVIDER": "openai",
        "LLM_BASE_URL": f"{fake_process}/v1",
        "LLM_MODEL": "fake-model",
        "LLM_API_KEY": "sk-anything",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "chat", "--bot", bot.public_key],
        cwd=ROOT,
        env=env,
        input="xyzzy plugh frobnicate\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "bot> tok1 tok2 tok3 \n" in result.stdout
