from __future__ import annotations

from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from chatbot.models import Bot
from knowledge.docs.services import source_add_file, source_process
from knowledge.models import Passage, Source
from tests.factories import make_bot
from tests.knowledge.docs.site_server import SiteServer, page

pytestmark = pytest.mark.django_db

CARE_MD = b"# Care guide\n\nWipe the leather with a damp cloth.\n\n## Storing\n\nKeep it in its dust bag.\n"


def help_page(title: str, body: str) -> str:
    head = f"<html><head><title>{title}</title></head>"
    return f"{head}<body><main><h1>{title}</h1><p>{body}</p></main></body></html>"


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def bot() -> Bot:
    return make_bot(name="Leather shop")


@pytest.fixture
def site() -> Iterator[SiteServer]:
    with override_settings(DOCS_FETCH_ALLOW_PRIVATE=True), SiteServer() as server:
        yield server


def test_docs_add_indexes_files_folders_and_urls_with_a_progress_bar(
    bot: Bot, site: SiteServer, tmp_path: Path
) -> None:
    (tmp_path / "care.md").write_bytes(CARE_MD)
    folder = tmp_path / "help"
    folder.mkdir()
    (folder / "hours.txt").write_text("Opening hours: nine to five, Monday to Friday.")
    (folder / "logo.png").write_bytes(b"\x89PNG not a document")
    site.routes["/shipping"] = page(help_page("Shipping", "Orders ship within two working days."))

    out, err = run(
        "docs_add", str(tmp_path / "care.md"), str(folder), site.url("/shipping"), "--bot", bot.public_key
    )

    assert f"{tmp_path / 'care.md'}: 2 passages indexed" in out
    assert f"{folder / 'hours.txt'}: 1 passages indexed" in out
    assert f"{site.url('/shipping')}: 1 passages indexed" in out
    assert "Done: 3 sources indexed for Leather shop." in out
    assert "logo.png" not in out
    assert "care.md" in err and "] 2/2" in err  # the progress bar
    assert sorted(Source.objects.filter(bot=bot).values_list("kind", flat=True)) == ["file", "file", "url"]


def test_docs_add_reads_a_sitemap_url_as_a_sitemap_and_takes_the_bot_by_id(
    bot: Bot, site: SiteServer
) -> None:
    site.routes["/care"] = page(help_page("Care guide", "Wipe the leather with a damp cloth."))
    site.routes["/sitemap.xml"] = page(
        f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>{site.url("/care")}</loc></url></urlset>',
        content_type="application/xml",
    )

    out, _ = run("docs_add", site.url("/sitemap.xml"), "--bot", str(bot.pk), "--max-pages", "5")

    assert f"{site.url('/sitemap.xml')}: 1 passages indexed from 1 pages" in out
    sitemap = Source.objects.get(kind="sitemap")
    assert sitemap.options == {"max_pages": 5} and sitemap.pages.get().url == site.url("/care")


def test_docs_add_reports_each_failure_and_exits_with_status_1(bot: Bot, tmp_path: Path) -> None:
    (tmp_path / "care.md").write_bytes(CARE_MD)
    (tmp_path / "scan.pdf").write_bytes(b"%PDF-1.4 broken")
    out = StringIO()

    with pytest.raises(CommandError, match="3 of 4 sources failed") as failed:
        call_command(
            "docs_add",
            str(tmp_path / "care.md"),
            str(tmp_path / "scan.pdf"),
            str(tmp_path / "missing.md"),
            "ftp://example.com/x",
            "--bot",
            bot.public_key,
            stdout=out,
            stderr=StringIO(),
        )

    assert failed.value.returncode == 1
    text = out.getvalue()
    assert f"{tmp_path / 'care.md'}: 2 passages indexed" in text
    assert f"{tmp_path / 'scan.pdf'}: failed: " in text
    assert f"{tmp_path / 'missing.md'}: failed: No such file or folder" in text
    assert "ftp://example.com/x: failed: Only http and https URLs" in text
    assert "Traceback" not in text


@override_settings(DOCS_MAX_FILE_BYTES=1024)
def test_docs_add_refuses_a_file_over_the_limit_without_reading_it(bot: Bot, tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_bytes(b"x" * 4096)
    out = StringIO()
    with pytest.raises(CommandError):
        call_command(
            "docs_add", str(tmp_path / "big.txt"), "--bot", bot.public_key, stdout=out, stderr=StringIO()
        )
    assert "big.txt is larger than the limit of 0.0 MB" in out.getvalue()


def test_an_unknown_bot_is_a_clear_error() -> None:
    with pytest.raises(CommandError, match="No bot has the public key or id 'nope'"):
        run("docs_list", "--bot", "nope")


def test_docs_list_shows_a_table_of_the_bots_sources(bot: Bot) -> None:
    good = source_process(source_add_file(bot=bot, filename="care.md", data=CARE_MD).pk)
    bad = source_process(source_add_file(bot=bot, filename="scan.pdf", data=b"%PDF-1.4 broken").pk)

    out, _ = run("docs_list", "--bot", bot.public_key)

    header, *rows = out.splitlines()
    assert header.split() == [
        "id",
        "kind",
        "status",
        "title",
        "/",
        "url",
        "passages",
        "size",
        "indexed",
        "at",
        "last",
        "error",
    ]
    assert rows[0].split()[:6] == [str(good.pk), "file", "ready", "Care", "guide", "2"]
    assert rows[1].split()[:4] == [str(bad.pk), "file", "failed", "scan.pdf"]
    assert bad.last_error[:20] in rows[1]


def test_docs_list_of_a_bot_without_documents(bot: Bot) -> None:
    out, _ = run("docs_list", "--bot", bot.public_key)
    assert out == "Leather shop has no documents (add some with docs_add).\n"


def test_docs_remove_removes_sources_and_reports_unknown_ids(bot: Bot) -> None:
    source = source_process(source_add_file(bot=bot, filename="care.md", data=CARE_MD).pk)
    other = source_process(source_add_file(bot=make_bot(), filename="care.md", data=CARE_MD).pk)
    out = StringIO()

    with pytest.raises(CommandError, match="1 of 2 sources were not found") as failed:
        call_command("docs_remove", str(source.pk), str(other.pk), "--bot", bot.public_key, stdout=out)

    assert failed.value.returncode == 1
    assert f"#{source.pk}: removed Care guide (2 passages)" in out.getvalue()
    assert f"#{other.pk}: no such source of this bot" in out.getvalue()
    assert list(Source.objects.values_list("pk", flat=True)) == [other.pk]
    assert Passage.objects.filter(source=other).count() == 2


def test_docs_sync_prints_the_counts(bot: Bot, site: SiteServer) -> None:
    site.routes["/same"] = page(help_page("Shipping", "Orders ship within two working days."))
    site.routes["/edited"] = page(help_page("Returns", "Return a bag within 30 days."))
    run("docs_add", site.url("/same"), site.url("/edited"), "--bot", bot.public_key)
    site.routes["/edited"] = page(help_page("Returns", "Return a bag within 60 days."))

    out, err = run("docs_sync", "--bot", bot.public_key)

    assert out.splitlines()[-1] == "unchanged: 1, re-indexed: 1, gone: 0, failed: 0"
    assert "] 2/2" in err


def test_docs_sync_exits_with_status_1_when_a_page_fails(bot: Bot, site: SiteServer) -> None:
    site.routes["/shipping"] = page(help_page("Shipping", "Orders ship within two working days."))
    run("docs_add", site.url("/shipping"), "--bot", bot.public_key)
    site.routes["/shipping"] = page("down", status=503)
    out = StringIO()

    with pytest.raises(CommandError, match="1 sources failed to sync") as failed:
        call_command("docs_sync", stdout=out, stderr=StringIO())

    assert failed.value.returncode == 1
    assert "unchanged: 0, re-indexed: 0, gone: 0, failed: 1" in out.getvalue()
    assert "503" in out.getvalue()
