"""The admin import page shows the report of every bad file (never a 500) and keeps
nothing; its CSV export neutralises formulas."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import IntegrityError
from django.test import Client
from django.urls import reverse
from django.utils.html import escape

from knowledge import services
from knowledge.models import Entry
from knowledge.services import entry_upsert
from tests.factories import make_bot
from tests.knowledge.bad_kb_files import BadFile, bad_files

pytestmark = pytest.mark.django_db

IMPORT = reverse("admin:knowledge_entry_import")
EXPORT = reverse("admin:knowledge_entry_export")


def problems(page: str) -> list[str]:
    listed = page.split('<ul class="errorlist" id="import-problems">', 1)[1].split("</ul>", 1)[0]
    return [item.split("</li>", 1)[0] for item in listed.split("<li>")[1:]]


@bad_files
def test_a_bad_upload_shows_its_report_and_keeps_nothing(admin_client: Client, bad: BadFile) -> None:
    bot = make_bot()
    entry_upsert(bot=bot, external_id="keep", question="Kept?", answer="unchanged")
    upload = SimpleUploadedFile(bad.filename, bad.data)
    response = admin_client.post(IMPORT, {"bot": bot.pk, "file": upload})
    assert response.status_code == 400
    page = response.content.decode()
    assert "Nothing was imported: the file has 1 problem." in page
    assert problems(page) == [escape(line) for line in bad.report]
    assert list(Entry.objects.values_list("external_id", "answer")) == [("keep", "unchanged")]


def test_a_database_refusal_is_shown_as_the_report(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def clash(**fields: Any) -> Any:
        raise IntegrityError("UNIQUE constraint failed")

    monkeypatch.setattr(services, "entry_upsert", clash)
    upload = SimpleUploadedFile("kb.csv", b"id,question,answer\nx,Q?,A.\n")
    response = admin_client.post(IMPORT, {"bot": make_bot().pk, "file": upload})
    assert response.status_code == 400
    assert problems(response.content.decode()) == [
        escape("The database refused the import at the entry 'Q?': UNIQUE constraint failed. Try again.")
    ]
    assert not Entry.objects.exists()


def test_the_csv_export_neutralises_formula_cells(admin_client: Client) -> None:
    bot = make_bot()
    entry_upsert(bot=bot, external_id="a", question='=HYPERLINK("http://evil")', answer="-1", tags=["-x"])
    response = admin_client.get(EXPORT, {"bot": bot.pk, "format": "csv"})
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"), newline="")))
    assert rows[1] == ["a", '\'=HYPERLINK("http://evil")', "'-1", "", "'-x", "true"]
