from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from chatbot.models import Bot
from knowledge.models import Entry
from knowledge.services import entry_upsert
from tests.factories import make_bot

pytestmark = pytest.mark.django_db

DATA = Path(__file__).parent / "data"
CHANGELIST = reverse("admin:knowledge_entry_changelist")
IMPORT = reverse("admin:knowledge_entry_import")
EXPORT = reverse("admin:knowledge_entry_export")


def staff_user(*permissions: str) -> AbstractBaseUser:
    user = get_user_model().objects.create_user("clerk", password="pw-for-tests-123", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=permissions))
    return user


def upload(name: str = "kb_good.csv", data: bytes | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, (DATA / name).read_bytes() if data is None else data)


def post_import(client: Client, bot: Bot, file: SimpleUploadedFile) -> object:
    return client.post(IMPORT, {"bot": bot.pk, "file": file})


def test_the_entry_list_offers_import_and_export_of_the_filtered_bot(admin_client: Client) -> None:
    bot = make_bot()
    page = admin_client.get(CHANGELIST, {"bot__id__exact": bot.pk}).content.decode()
    assert f'href="{IMPORT}?bot={bot.pk}"' in page
    assert f'href="{EXPORT}?bot={bot.pk}&amp;format=csv">Export CSV' in page
    assert f'href="{EXPORT}?bot={bot.pk}&amp;format=json">Export JSON' in page


def test_the_import_page_preselects_the_bot_and_carries_a_csrf_token(admin_client: Client) -> None:
    bot = make_bot()
    page = admin_client.get(IMPORT, {"bot": bot.pk}).content.decode()
    assert f'<option value="{bot.pk}" selected>' in page
    assert 'name="csrfmiddlewaretoken"' in page
    assert 'enctype="multipart/form-data"' in page


def test_an_upload_imports_the_file_and_returns_to_the_bots_entries(admin_client: Client) -> None:
    bot = make_bot(name="Shop")
    response = post_import(admin_client, bot, upload("kb_good.json"))
    assert response.status_code == 302
    assert response["Location"] == f"{CHANGELIST}?bot__id__exact={bot.pk}"
    assert set(Entry.objects.filter(bot=bot).values_list("external_id", flat=True)) == {"ship-1", "zh-ship-1"}
    page = admin_client.get(response["Location"]).content.decode()
    assert "Imported 2 entries from kb_good.json into Shop: 2 created, 0 updated." in page


def test_an_upload_without_a_known_extension_is_read_by_its_content(admin_client: Client) -> None:
    bot = make_bot()
    response = post_import(admin_client, bot, upload("export", (DATA / "kb_good.json").read_bytes()))
    assert response.status_code == 302
    assert Entry.objects.filter(bot=bot).count() == 2


def test_a_bad_upload_lists_every_problem_and_imports_nothing(admin_client: Client) -> None:
    bot = make_bot()
    entry_upsert(bot=bot, external_id="ship-1", question="How long is shipping?", answer="old answer")
    response = post_import(admin_client, bot, upload("kb_bad.csv"))
    assert response.status_code == 400
    page = response.content.decode()
    assert "Nothing was imported: the file has 6 problems." in page
    for line in (3, 4, 7, 8, 9, 10):
        assert f"<li>line {line}: " in page
    assert Entry.objects.count() == 1
    assert Entry.objects.get().answer == "old answer"


def test_an_upload_that_is_not_utf8_is_refused(admin_client: Client) -> None:
    bot = make_bot()
    response = post_import(
        admin_client, bot, upload("kb.csv", "question,answer\nCafé?,Oui\n".encode("cp1252"))
    )
    assert response.status_code == 400
    assert "line 2: not UTF-8 text" in response.content.decode()
    assert not Entry.objects.exists()


def test_an_export_downloads_the_bots_entries(admin_client: Client) -> None:
    bot = make_bot(name="Maple Nook")
    entry_upsert(bot=bot, external_id="a", question="运费？", answer="免费", tags=["shipping"])
    entry_upsert(bot=make_bot(), external_id="other", question="Q", answer="A")
    response = admin_client.get(EXPORT, {"bot": bot.pk, "format": "csv"})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="kb-maple-nook-')
    assert response.content.decode("utf-8-sig").splitlines() == [
        "id,question,answer,alternatives,tags,active",
        "a,运费？,免费,,shipping,true",
    ]
    response = admin_client.get(EXPORT, {"bot": bot.pk, "format": "json"})
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert [item["id"] for item in json.loads(response.content)] == ["a"]


def test_an_export_without_a_bot_asks_for_one(admin_client: Client) -> None:
    bot = make_bot(name="Shop")
    response = admin_client.get(EXPORT, {"format": "json"})
    assert response.status_code == 200
    assert "Content-Disposition" not in response
    page = response.content.decode()
    assert f'<option value="{bot.pk}">Shop</option>' in page
    assert '<option value="json" selected>' in page


def test_anonymous_users_can_neither_import_nor_export(client: Client) -> None:
    bot = make_bot()
    entry_upsert(bot=bot, question="Secret?", answer="Internal answer")
    for response in (
        post_import(client, bot, upload()),
        client.get(EXPORT, {"bot": bot.pk, "format": "csv"}),
    ):
        assert response.status_code == 302
        assert "/admin/login/" in response["Location"]
    assert Entry.objects.count() == 1


def test_staff_without_permissions_can_neither_import_nor_export(client: Client) -> None:
    bot = make_bot()
    client.force_login(staff_user())
    assert client.get(IMPORT).status_code == 403
    assert post_import(client, bot, upload()).status_code == 403
    assert client.get(EXPORT, {"bot": bot.pk, "format": "csv"}).status_code == 403
    assert not Entry.objects.exists()


def test_viewing_entries_allows_export_but_not_import(client: Client) -> None:
    bot = make_bot()
    client.force_login(staff_user("view_entry"))
    assert client.get(EXPORT, {"bot": bot.pk, "format": "csv"}).status_code == 200
    assert post_import(client, bot, upload()).status_code == 403
    page = client.get(CHANGELIST).content.decode()
    assert "Export CSV" in page and f'href="{IMPORT}' not in page
    assert not Entry.objects.exists()


def test_adding_without_changing_entries_does_not_allow_import(client: Client) -> None:
    bot = make_bot()
    user = staff_user("add_entry", "view_entry")
    client.force_login(user)
    assert post_import(client, bot, upload()).status_code == 403
    assert not Entry.objects.exists()
    user.user_permissions.add(Permission.objects.get(codename="change_entry"))
    assert post_import(client, bot, upload()).status_code == 302
    assert Entry.objects.filter(bot=bot).count() == 3


def test_an_import_without_the_csrf_token_is_refused(admin_user: AbstractBaseUser) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    response = post_import(client, make_bot(), upload())
    assert response.status_code == 403
    assert not Entry.objects.exists()
