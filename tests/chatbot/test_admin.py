from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from knowledge.models import Passage, Source
from tests.factories import make_conversation, make_message

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client: Client) -> Client:
    user = get_user_model().objects.create_superuser("root", password="pw-for-tests-123")
    client.force_login(user)
    return client


def test_every_admin_list_add_and_change_page_loads(staff_client: Client) -> None:
    from django.core.management import call_command

    call_command("load_demo", stdout=None)
    conversation = make_conversation()
    make_message(conversation, role="bot", source="llm", text="hello")
    checked = 0
    for model, model_admin in admin.site._registry.items():
        info = f"{model._meta.app_label}_{model._meta.model_name}"
        response = staff_client.get(reverse(f"admin:{info}_changelist"))
        assert response.status_code == 200, info
        if model_admin.has_add_permission(response.wsgi_request):
            assert staff_client.get(reverse(f"admin:{info}_add")).status_code == 200, info
        obj = model.objects.first()
        if obj is not None:
            # A source's page is its passages' preview (a redirect there).
            change = staff_client.get(reverse(f"admin:{info}_change", args=[obj.pk]), follow=True)
            assert change.status_code == 200, info
        checked += 1
    assert checked >= 8


def test_the_bot_page_never_shows_the_signing_secret(staff_client: Client) -> None:
    conversation = make_conversation()
    bot = conversation.bot
    page = staff_client.get(reverse("admin:chatbot_bot_change", args=[bot.pk])).content.decode()
    assert bot.public_key in page
    assert bot.secret not in page


def test_the_entry_list_searches_alternative_phrasings(staff_client: Client) -> None:
    from django.core.management import call_command

    call_command("load_demo", stdout=None)
    from knowledge.models import Alternative

    alternative = Alternative.objects.select_related("entry").first()
    url = reverse("admin:knowledge_entry_changelist")
    page = staff_client.get(url, {"q": alternative.text}).content.decode()
    assert "1 result" in page or "1 entry" in page


def test_anonymous_users_are_sent_to_the_login_page(client: Client) -> None:
    response = client.get(reverse("admin:chatbot_conversation_changelist"))
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_the_bot_page_counts_its_documents_links_to_them_and_edits_answer_only(staff_client: Client) -> None:
    bot = make_conversation().bot
    source = Source.objects.create(bot=bot, kind=Source.Kind.URL, url="https://shop.example/returns")
    Passage.objects.create(source=source, bot=bot, position=0, text="Returns within 30 days.", text_hash="x")
    page = staff_client.get(reverse("admin:chatbot_bot_change", args=[bot.pk])).content.decode()
    assert "1 sources, 1 passages" in page
    assert reverse("admin:knowledge_source_bot", args=[bot.pk]) in page
    assert 'name="answer_only_from_knowledge"' in page
