"""Security headers: a strict Content-Security-Policy on the staff pages (none on the public
demo), X-Content-Type-Options and Referrer-Policy everywhere; the staff templates hold
nothing that policy would block; with DEBUG=0 pages link hashed static files while the
widget keeps its stable, revalidated URL."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import django
import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from chatbot.security_headers import HEADER, STAFF_POLICY
from tests.factories import make_bot, make_conversation

ROOT = Path(__file__).resolve().parents[2]
DJANGO_ADMIN_TEMPLATES = Path(django.__file__).parent / "contrib" / "admin" / "templates"


@pytest.fixture
def staff_client(db: None) -> Client:
    user = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw-123456")
    client = Client()
    client.force_login(user)
    return client


def test_it_is_strict_scripts_and_styles_from_our_origin_only() -> None:
    directives = dict(d.split(" ", 1) for d in STAFF_POLICY.split("; "))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["object-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in STAFF_POLICY


@pytest.mark.django_db
def test_it_puts_the_policy_on_the_staff_pages(staff_client: Client) -> None:
    bot = make_bot()
    conversation = make_conversation(bot)
    urls = [
        reverse("admin:index"),
        reverse("admin:chatbot_bot_change", args=[bot.pk]),
        reverse("agents:conversations"),
        reverse("agents:transcript", args=[conversation.pk]),
        reverse("agents:gaps"),
        reverse("agents:stats"),
        reverse("agents:live"),
    ]
    for url in urls:
        response = staff_client.get(url)
        assert response.status_code == 200, url
        assert response[HEADER] == STAFF_POLICY, url
    # Before logging in too.
    for url in (reverse("admin:login"), reverse("agents:login")):
        assert Client().get(url)[HEADER] == STAFF_POLICY, url


@pytest.mark.django_db
def test_it_leaves_the_public_demo_page_to_the_site_that_embeds_the_widget() -> None:
    response = Client().get(reverse("demo"))
    assert response.status_code == 200
    assert HEADER not in response


@pytest.mark.django_db
def test_every_response_says_nosniff_and_same_origin_referrer() -> None:
    for url in (reverse("demo"), reverse("admin:login"), reverse("healthz"), "/static/chatbot/widget.js"):
        response = Client().get(url)
        assert response["X-Content-Type-Options"] == "nosniff", url
        assert response["Referrer-Policy"] == "same-origin", url


@pytest.mark.django_db
def test_debug_error_pages_go_without_it_production_ones_get_it(
    settings: object,
) -> None:
    settings.DEBUG = True  # type: ignore[attr-defined]
    assert HEADER not in Client().get("/agent/nothing-here/")
    settings.DEBUG = False  # type: ignore[attr-defined]
    assert Client().get("/agent/nothing-here/")[HEADER] == STAFF_POLICY


class InlineFinder(HTMLParser):
    """What STAFF_POLICY blocks: <script> without src, <style>, style="", on*="" handlers,
    javascript: URLs."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.found.append("<script> without src")
        if tag == "style":
            self.found.append("<style>")
        if "style" in names:
            self.found.append(f'<{tag} style="">')
        self.found += [f"<{tag} {name}>" for name in names if name.startswith("on")]
        self.found += [
            f"<{tag} javascript:>" for _, value in attrs if (value or "").startswith("javascript:")
        ]


def inline_in(text: str) -> list[str]:
    finder = InlineFinder()
    finder.feed(re.sub(r"\{[%{#].*?[%}#]\}", "", text, flags=re.S))  # template tags out
    return finder.found


def staff_templates() -> list[Path]:
    ours = [*(ROOT / "templates" / "admin").rglob("*.html"), *(ROOT / "templates" / "agents").rglob("*.html")]
    return ours + list(DJANGO_ADMIN_TEMPLATES.rglob("*.html"))


def test_the_finder_sees_what_the_policy_blocks() -> None:
    page = '<script>x()</script><style>p{}</style><p style="a"><a onclick="x()" href="javascript:x()">'
    assert len(inline_in(page)) == 5
    assert inline_in('<script src="/static/a.js" defer></script><link rel="stylesheet" href="a.css">') == []


# Django's change list has a <style> only for a ModelAdmin with neither action bar.
DJANGO_EXCEPTIONS = {"admin/change_list.html": ["<style>"]}


@pytest.mark.parametrize("template", staff_templates(), ids=lambda p: str(p).rsplit("templates/", 1)[-1])
def test_no_staff_template_holds_inline_scripts_styles_or_handlers(template: Path) -> None:
    name = (
        str(template.relative_to(DJANGO_ADMIN_TEMPLATES))
        if template.is_relative_to(DJANGO_ADMIN_TEMPLATES)
        else ""
    )
    assert inline_in(template.read_text()) == DJANGO_EXCEPTIONS.get(name, [])


def test_no_model_admin_turns_off_both_action_bars() -> None:
    from django.contrib import admin

    for model, model_admin in admin.site._registry.items():
        assert model_admin.actions_on_top or model_admin.actions_on_bottom, model


@pytest.mark.django_db
def test_without_nginx_static_files_revalidate_except_hashed_ones() -> None:
    response = Client().get("/static/chatbot/widget.js")
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-cache"
    assert response["Last-Modified"] and response["ETag"]


PRODUCTION_PAGES = """
import sys, tempfile, re
import django
django.setup()
from django.core.management import call_command
from django.test import Client, override_settings
from chatbot.models import Bot
from chatbot.selectors import DEMO_BOT_NAME

with tempfile.TemporaryDirectory() as root, override_settings(STATIC_ROOT=root):
    call_command("collectstatic", "--noinput", verbosity=0)
    call_command("migrate", verbosity=0)
    c = Client(HTTP_HOST="chat.example.com", HTTP_X_FORWARDED_PROTO="https")
    login = c.get("/admin/login/")
    print("LOGIN", login.status_code, login["Content-Security-Policy"], login["X-Content-Type-Options"],
          login["Referrer-Policy"])
    print("CSS", " ".join(re.findall(r'href="(/static/[^"]+[.]css)"', login.content.decode())))
    Bot.objects.create(name=DEMO_BOT_NAME)
    demo = c.get("/demo/")
    print("DEMO", demo.status_code, "Content-Security-Policy" in demo,
          re.search(r'<script src="([^"]+)" data-bot=', demo.content.decode()).group(1))
"""


def test_in_production_pages_link_hashed_files_and_the_widget_its_stable_url(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "STATIC_HASHED")}
    env.update(
        DEBUG="0",
        SECRET_KEY="headers-" + "s" * 50,
        ALLOWED_HOSTS="chat.example.com",
        TRUST_X_FORWARDED_PROTO="1",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        DJANGO_SETTINGS_MODULE="chatbot.settings",
    )
    env.pop("REDIS_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", PRODUCTION_PAGES],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in done.stdout.splitlines() if " " in line}
    assert lines["LOGIN"] == f"200 {STAFF_POLICY} nosniff same-origin"
    sheets = lines["CSS"].split()
    assert sheets and all(re.search(r"\.[0-9a-f]{12}\.css$", href) for href in sheets), sheets
    assert lines["DEMO"] == "200 False /static/chatbot/widget.js"
