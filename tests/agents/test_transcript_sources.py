"""The company's documents a bot reply drew on, for agents: links in the transcript (http(s)
only), and in the CSV and JSON exports of a transcript."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from agents.exports import csv_cell, document_label
from chatbot.models import Conversation, Message
from tests.factories import make_bot, make_conversation, make_message

pytestmark = pytest.mark.django_db

SOURCES = [
    {"title": "Warranty terms", "url": "https://shop.example/help/warranty", "passage_id": 12},
    {"title": "Evil page", "url": "javascript:alert(1)", "passage_id": 13},
    {"title": "Assembly manual.pdf", "url": "", "passage_id": 14},
    {"title": "", "url": "http://intranet.example/faq", "passage_id": 15},
]


@pytest.fixture
def conversation() -> Conversation:
    conversation = make_conversation(make_bot(name="Shop"))
    make_message(conversation, text="How long is the warranty?")
    make_message(conversation, role="bot", source="llm", text="Ten years [1].", sources=SOURCES)
    return conversation


def get(client: Client, name: str, *args: Any) -> Any:
    response = client.get(reverse(f"agents:{name}", args=args))
    assert response.status_code == 200
    return response


def content(response: Any) -> str:
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return body.decode("utf-8-sig")


def test_the_transcript_shows_a_replys_sources_as_links_only_for_http_urls(
    staff_client: Client, conversation: Conversation
) -> None:
    page = content(get(staff_client, "transcript", conversation.pk))
    assert (
        '<a href="https://shop.example/help/warranty" target="_blank" rel="noopener noreferrer">'
        "Warranty terms</a>" in page
    )
    assert '<a href="http://intranet.example/faq" target="_blank" rel="noopener noreferrer">' in page
    assert "javascript:" not in page.split("Sources:")[1].split("Evil page")[0]
    assert 'href="javascript' not in page
    assert "<li>Evil page <span" in page and "<li>Assembly manual.pdf <span" in page
    assert "(passage #12)" in page


def test_a_reply_without_sources_shows_none(staff_client: Client) -> None:
    conversation = make_conversation(make_bot())
    make_message(conversation, role="bot", source="knowledge", text="Like this.")
    assert "Sources:" not in content(get(staff_client, "transcript", conversation.pk))


def test_the_csv_export_names_each_source_with_its_url(
    staff_client: Client, conversation: Conversation
) -> None:
    response = get(staff_client, "transcript_export", conversation.pk, "csv")
    visitor, reply = list(csv.DictReader(io.StringIO(content(response))))
    assert visitor["sources"] == ""
    assert reply["sources"] == (
        "Warranty terms <https://shop.example/help/warranty>; Evil page <javascript:alert(1)>; "
        "Assembly manual.pdf; http://intranet.example/faq"
    )


def test_the_json_export_has_the_sources_as_stored(staff_client: Client, conversation: Conversation) -> None:
    document = json.loads(content(get(staff_client, "transcript_export", conversation.pk, "json")))
    visitor, reply = document["messages"]
    assert (visitor["sources"], reply["sources"]) == ([], SOURCES)
    assert Message.objects.get(pk=reply["id"]).sources == SOURCES


def test_a_document_label_is_title_and_url_or_whichever_there_is() -> None:
    assert document_label({"title": "T", "url": "https://x.example"}) == "T <https://x.example>"
    assert document_label({"title": "T", "url": ""}) == "T"
    assert document_label({"title": "", "url": "https://x.example"}) == "https://x.example"
    assert csv_cell([{"title": "=cmd", "url": ""}]) == "=cmd"  # csv_line neutralises it
