from __future__ import annotations

import pytest
from django.core.management import call_command
from django.test import Client

pytestmark = pytest.mark.django_db


def test_the_demo_page_shows_the_shop_and_the_demo_bot(client: Client) -> None:
    call_command("load_demo", stdout=None)
    response = client.get("/demo/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "Demo shop assistant" in page
    assert "Chat widget embed" not in page  # the template comment marking the slot is not rendered
    assert "/static/demo/shop.css" in page


def test_the_demo_page_still_renders_before_the_demo_is_loaded(client: Client) -> None:
    response = client.get("/demo/")
    assert response.status_code == 200
    assert "not loaded" in response.content.decode()


def test_the_root_redirects_to_the_demo(client: Client) -> None:
    response = client.get("/")
    assert (response.status_code, response["Location"]) == (302, "/demo/")


def test_static_files_are_served_by_the_app(client: Client) -> None:
    response = client.get("/static/demo/shop.css")
    assert response.status_code == 200
    assert b"{" in b"".join(response.streaming_content)
