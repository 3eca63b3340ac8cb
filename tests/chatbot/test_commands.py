from __future__ import annotations

import io
import json

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import CommandError, call_command

from chatbot.management.commands.load_demo import DEMO_KB
from chatbot.models import Bot
from chatbot.selectors import demo_bot
from knowledge.models import Alternative, Entry

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_create_bot_prints_the_public_key_alone_on_the_last_line() -> None:
    output = run(
        "create_bot", "Acme", "--origin", "https://acme.example/", "--origin", "http://localhost:3000"
    )
    key = output.strip().splitlines()[-1]
    bot = Bot.objects.get(public_key=key)
    assert bot.name == "Acme"
    assert bot.allowed_origins == ["https://acme.example", "http://localhost:3000"]


def test_create_bot_explains_a_bad_origin_and_creates_nothing() -> None:
    with pytest.raises(CommandError, match="not an origin"):
        run("create_bot", "Acme", "--origin", "acme.example/path")
    assert not Bot.objects.exists()


def test_load_demo_is_idempotent() -> None:
    run("load_demo")
    counts = (Bot.objects.count(), Entry.objects.count(), Alternative.objects.count())
    first_key = demo_bot().public_key
    run("load_demo")
    assert (Bot.objects.count(), Entry.objects.count(), Alternative.objects.count()) == counts
    assert demo_bot().public_key == first_key


def test_load_demo_restores_an_edited_entry() -> None:
    run("load_demo")
    entry = Entry.objects.filter(external_id__startswith="en-").first()
    original = entry.answer
    entry.answer = "vandalised"
    entry.save()
    run("load_demo")
    entry.refresh_from_db()
    assert entry.answer == original


def test_the_demo_knowledge_base_is_bilingual_with_alternatives() -> None:
    items = json.loads(DEMO_KB.read_text(encoding="utf-8"))
    run("load_demo")
    bot = demo_bot()
    assert Entry.objects.filter(bot=bot).count() == len(items) >= 40
    assert Entry.objects.filter(bot=bot, tags__name="en").count() >= 15
    assert Entry.objects.filter(bot=bot, tags__name="zh").count() >= 15
    assert all(entry.alternatives.count() >= 3 for entry in Entry.objects.filter(bot=bot))


def test_ensure_admin_creates_one_superuser_with_a_printed_password() -> None:
    output = run("ensure_admin")
    password = output.strip().splitlines()[-1].strip()
    assert authenticate(username="admin", password=password) is not None
    assert "already exists" in run("ensure_admin")
    assert get_user_model().objects.filter(is_superuser=True).count() == 1
