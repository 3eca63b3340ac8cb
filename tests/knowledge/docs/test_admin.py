from __future__ import annotations

import threading
import time

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings
from django.urls import reverse

from chatbot.models import Bot
from knowledge.docs import jobs
from knowledge.docs.services import source_add_file, source_process
from knowledge.models import Passage, Source
from tests.factories import make_bot

# Uploads are indexed on the worker thread, which has a connection of its own.
pytestmark = pytest.mark.django_db(transaction=True)

CARE_MD = b"""# Care guide

Wipe the leather with a damp cloth.

## Storing

Keep the bag stuffed with paper in its dust bag, away from sunlight.
"""
CHANGELIST = reverse("admin:knowledge_source_changelist")


def bot_page(bot: Bot) -> str:
    return reverse("admin:knowledge_source_bot", args=[bot.pk])


def source_page(source: Source) -> str:
    return reverse("admin:knowledge_source_passages", args=[source.pk])


@pytest.fixture
def bot() -> Bot:
    return make_bot(name="Leather shop")


def test_the_source_list_links_each_bots_documents_page(admin_client: Client, bot: Bot) -> None:
    page = admin_client.get(CHANGELIST).content.decode()
    assert f'href="{bot_page(bot)}">Leather shop</a>' in page


def test_an_upload_returns_at_once_and_the_file_is_indexed_in_the_background(
    admin_client: Client, bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    real = jobs.source_process

    def slow(source_id: int, **kwargs: object) -> Source:
        assert release.wait(30)
        return real(source_id, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jobs, "source_process", slow)
    started = time.monotonic()
    response = admin_client.post(
        bot_page(bot),
        {"action": "upload", "files": [SimpleUploadedFile("care.md", CARE_MD, "text/markdown")]},
    )

    assert response.status_code == 302 and response["Location"] == bot_page(bot)
    assert time.monotonic() - started < 5
    source = Source.objects.get(bot=bot)
    assert (source.filename, source.status, source.passages.count()) == ("care.md", "queued", 0)
    release.set()
    assert jobs.jobs().wait(60)
    source.refresh_from_db()
    assert source.status == "ready" and source.passages.count() == 2


def test_several_files_can_be_uploaded_at_once(admin_client: Client, bot: Bot) -> None:
    files = [
        SimpleUploadedFile("care.md", CARE_MD),
        SimpleUploadedFile("notes.txt", b"Opening hours: 9 to 5."),
    ]
    admin_client.post(bot_page(bot), {"action": "upload", "files": files})

    assert jobs.jobs().wait(60)
    assert sorted(Source.objects.filter(bot=bot).values_list("filename", "status")) == [
        ("care.md", "ready"),
        ("notes.txt", "ready"),
    ]


@override_settings(DOCS_MAX_FILE_BYTES=1024)
def test_a_file_over_the_limit_is_refused_with_a_message_not_an_error_page(
    admin_client: Client, bot: Bot
) -> None:
    response = admin_client.post(
        bot_page(bot), {"action": "upload", "files": [SimpleUploadedFile("manual.pdf", b"x" * 4096)]}
    )

    assert response.status_code == 400
    page = response.content.decode()
    assert "Too large: manual.pdf (4.0 KB). Files may be up to 1.0 KB each." in page
    assert not Source.objects.exists()


def test_an_empty_upload_and_a_bad_url_are_shown_as_form_errors(admin_client: Client, bot: Bot) -> None:
    empty = admin_client.post(bot_page(bot), {"action": "upload", "files": [SimpleUploadedFile("a.md", b"")]})
    assert empty.status_code == 400 and "The submitted file is empty." in empty.content.decode()

    bad = admin_client.post(bot_page(bot), {"action": "url", "url": "ftp://example.com/x", "kind": "url"})
    assert bad.status_code == 400 and "Only http and https URLs can be added" in bad.content.decode()
    assert not Source.objects.exists()


def test_adding_a_crawl_queues_it_with_its_limits(
    admin_client: Client, bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    queued: list[int] = []
    monkeypatch.setattr(jobs, "enqueue", queued.append)
    response = admin_client.post(
        bot_page(bot),
        {
            "action": "url",
            "url": "https://help.example.com/",
            "kind": "crawl",
            "max_pages": "20",
            "max_depth": "2",
        },
    )

    assert response.status_code == 302
    source = Source.objects.get(bot=bot)
    assert (source.kind, source.url, source.options) == (
        "crawl",
        "https://help.example.com/",
        {"max_pages": 20, "max_depth": 2},
    )
    assert queued == [source.pk]


def test_the_sync_button_queues_a_sync_of_the_bot(
    admin_client: Client, bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(jobs, "enqueue_sync", synced.append)

    response = admin_client.post(bot_page(bot), {"action": "sync"})

    assert response.status_code == 302 and synced == [bot.pk]


def test_the_bot_page_lists_its_sources_with_status_error_and_passages(
    admin_client: Client, bot: Bot
) -> None:
    good = source_process(source_add_file(bot=bot, filename="care.md", data=CARE_MD).pk)
    bad = source_process(source_add_file(bot=bot, filename="scan.pdf", data=b"%PDF-1.4 broken").pk)
    make_bot(name="Other").sources.create(kind="file", filename="other.md")

    page = admin_client.get(bot_page(bot)).content.decode()

    assert f'<a href="{source_page(good)}">Care guide</a>' in page
    assert f'<a href="{source_page(bad)}">scan.pdf</a>' in page
    assert bad.last_error and bad.last_error in page
    assert "<td>2</td>" in page and "Ready" in page and "Failed" in page
    assert "other.md" not in page


def test_a_sources_page_previews_its_passages_with_their_heading_path(admin_client: Client, bot: Bot) -> None:
    source = source_process(source_add_file(bot=bot, filename="care.md", data=CARE_MD).pk)

    page = admin_client.get(source_page(source)).content.decode()

    assert "1. Care guide ·" in page and "2. Care guide &rsaquo; Storing ·" in page
    assert "Wipe the leather with a damp cloth." in page
    assert f'href="{bot_page(bot)}">Documents of Leather shop</a>' in page
    # The change form of a source is its preview.
    change = admin_client.get(reverse("admin:knowledge_source_change", args=[source.pk]))
    assert change.status_code == 302 and change["Location"] == source_page(source)


def test_the_pages_are_for_staff_only_and_adding_needs_the_permission(client: Client, bot: Bot) -> None:
    assert client.get(bot_page(bot)).status_code == 302  # to the login page
    user = get_user_model().objects.create_user("viewer", password="pw-for-tests-123", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename="view_source"))
    client.force_login(user)

    assert client.get(bot_page(bot)).status_code == 200
    refused = client.post(
        bot_page(bot), {"action": "upload", "files": [SimpleUploadedFile("care.md", CARE_MD)]}
    )
    assert refused.status_code == 403 and not Source.objects.exists()
    assert not Passage.objects.exists()
