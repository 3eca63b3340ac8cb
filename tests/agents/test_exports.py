"""CSV and JSON exports of the conversation list and of one transcript."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.db import connections
from django.test import AsyncClient, Client
from django.urls import reverse

from agents.exports import CONVERSATION_FIELDS, MESSAGE_FIELDS, csv_cell
from agents.models import Label, Note
from agents.selectors.conversations import ConversationFilters, conversation_row_batches
from chatbot.csv_cells import csv_line
from chatbot.models import Conversation, Feedback, Message, Visitor
from knowledge.models import Entry
from tests.agents.conftest import client_for, make_user
from tests.factories import make_bot, make_conversation, make_message

pytestmark = pytest.mark.django_db


@pytest.fixture
def conversation() -> Conversation:
    bot = make_bot(name="商店")
    visitor = Visitor.objects.create(bot=bot, name='=HYPERLINK("http://evil")', email="li@example.com")
    conversation = make_conversation(bot, visitor=visitor, status="closed", needs_followup=True)
    make_message(conversation, text="我的退款在哪里？")
    entry = Entry.objects.create(bot=bot, question="退款多久到账？", answer="三天内。")
    reply = make_message(
        conversation,
        role="bot",
        source="knowledge",
        text="三天内。",
        matched_entry=entry,
        score=0.91,
        cost=Decimal("0.000120"),
        prompt_tokens=12,
        tokens_estimated=True,
    )
    Feedback.objects.create(message=reply, rating="up", comment="+1 thanks")
    make_message(conversation, text="=1+2")
    make_message(conversation, role="bot", source="llm", text="", status="failed")  # being written
    Label.objects.create(name="退款").conversations.add(conversation)
    return conversation


def body(response: Any) -> bytes:
    assert response.status_code == 200
    return b"".join(response.streaming_content) if response.streaming else response.content


def csv_rows(response: Any) -> list[dict[str, str]]:
    raw = body(response)
    assert raw.startswith("\ufeff".encode())
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))


def list_export(client: Client, fmt: str, **params: Any) -> Any:
    return client.get(reverse("agents:conversations_export", args=[fmt]), params)


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=SUM(A1)", "'=SUM(A1)"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@cmd", "'@cmd"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("'=x", "''=x"),
        ("a=b", "a=b"),
        (-5, "-5"),
        (Decimal("0.5"), "0.5"),
        (True, "true"),
        (None, ""),
        (["a", "=b"], "a; =b"),
        (["=a", "b"], "'=a; b"),
    ],
)
def test_it_guards_csv_cells_against_formulas(value: Any, cell: str) -> None:
    assert next(csv.reader([csv_line([csv_cell(value)])])) == [cell]


def test_it_exports_the_conversation_list_as_csv(staff_client: Client, conversation: Conversation) -> None:
    response = list_export(staff_client, "csv")
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="conversations-')
    assert response["Content-Disposition"].endswith('.csv"')
    [row] = csv_rows(response)
    assert list(row) == CONVERSATION_FIELDS
    assert row["id"] == str(conversation.pk) and row["bot_name"] == "商店"
    assert row["visitor_name"] == '\'=HYPERLINK("http://evil")'
    assert row["visitor_uid"] == str(conversation.visitor.uid)
    assert (row["status"], row["needs_followup"], row["resolved_at"]) == ("closed", "true", "")
    assert (row["labels"], row["message_count"], row["sources"]) == ("退款", "3", "knowledge")
    assert (row["up"], row["down"], row["first_question"]) == ("1", "0", "我的退款在哪里？")
    datetime.fromisoformat(row["started_at"])


def test_it_exports_the_conversation_list_as_json(staff_client: Client, conversation: Conversation) -> None:
    response = list_export(staff_client, "json")
    assert response["Content-Type"] == "application/json; charset=utf-8"
    raw = body(response)
    assert "商店".encode() in raw  # UTF-8, not \\u escapes
    [record] = json.loads(raw)["conversations"]
    assert list(record) == CONVERSATION_FIELDS
    assert record["visitor_name"] == '=HYPERLINK("http://evil")'  # JSON is not a spreadsheet
    assert (record["labels"], record["sources"], record["message_count"]) == (["退款"], ["knowledge"], 3)
    assert (record["needs_followup"], record["resolved_at"], record["assigned_agent"]) == (True, None, "")


def test_it_exports_every_page_of_the_filtered_list(staff_client: Client, settings: Any) -> None:
    settings.AGENT_PAGE_SIZE = 5
    bot = make_bot()
    closed = {make_conversation(bot, status="closed").pk for _ in range(12)}
    make_conversation(bot, status="open")
    rows = csv_rows(list_export(staff_client, "csv", status="closed"))
    assert {int(row["id"]) for row in rows} == closed
    records = json.loads(body(list_export(staff_client, "json", status="closed")))["conversations"]
    assert {record["id"] for record in records} == closed
    assert json.loads(body(list_export(staff_client, "json", q="no such text"))) == {"conversations": []}


def test_it_exports_only_the_agents_bots(conversation: Conversation) -> None:
    other = make_bot(name="Other")
    make_conversation(other)
    client = client_for(make_user("other-agent", agent=True, bots=[other]))
    rows = csv_rows(list_export(client, "csv"))
    assert [row["bot_name"] for row in rows] == ["Other"]


def test_it_reads_conversations_in_batches(conversation: Conversation) -> None:
    bot = conversation.bot
    for _ in range(4):
        make_conversation(bot)
    user = make_user("staff", staff=True)
    batches = list(conversation_row_batches(user=user, filters=ConversationFilters(), batch_size=2))
    assert [len(batch) for batch in batches] == [2, 2, 1]
    [row] = [row for batch in batches for row in batch if row.conversation.pk == conversation.pk]
    assert row.message_count == 3


def test_it_refuses_invalid_filters_and_unknown_formats(
    staff_client: Client, conversation: Conversation
) -> None:
    response = list_export(staff_client, "csv", bot="abc")
    assert response.status_code == 400
    assert "Unknown bot" in response.content.decode()
    assert list_export(staff_client, "xml").status_code == 404
    url = reverse("agents:transcript_export", args=[conversation.pk, "xlsx"])
    assert staff_client.get(url).status_code == 404


def test_it_exports_a_transcript_as_csv(staff_client: Client, conversation: Conversation) -> None:
    response = staff_client.get(reverse("agents:transcript_export", args=[conversation.pk, "csv"]))
    assert response["Content-Disposition"] == f'attachment; filename="conversation-{conversation.pk}.csv"'
    rows = csv_rows(response)
    assert [row["text"] for row in rows] == ["我的退款在哪里？", "三天内。", "'=1+2"]
    assert list(rows[0]) == MESSAGE_FIELDS
    reply = rows[1]
    assert (reply["role"], reply["source"], reply["status"]) == ("bot", "knowledge", "complete")
    assert (reply["matched_entry_question"], reply["score"], reply["cost"]) == (
        "退款多久到账？",
        "0.91",
        "0.000120",
    )
    assert (reply["prompt_tokens"], reply["completion_tokens"], reply["tokens_estimated"]) == (
        "12",
        "",
        "true",
    )
    assert (reply["feedback_rating"], reply["feedback_comment"]) == ("up", "'+1 thanks")


FORMULAS = ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(1)", "\tx", "\rx", "'=quoted"]


def test_every_formula_cell_of_a_transcript_is_neutralised(staff_client: Client) -> None:
    conversation = make_conversation(make_bot())
    for text in FORMULAS:
        make_message(conversation, text=text)
    rows = csv_rows(staff_client.get(reverse("agents:transcript_export", args=[conversation.pk, "csv"])))
    assert [row["text"] for row in rows] == ["'" + text for text in FORMULAS]


def test_every_formula_cell_of_the_conversation_list_is_neutralised(staff_client: Client) -> None:
    bot = make_bot(name="@bot")
    for text in FORMULAS:
        visitor = Visitor.objects.create(bot=bot, name=text, email="-" + text)
        make_message(make_conversation(bot, visitor=visitor), text=text)
    rows = csv_rows(list_export(staff_client, "csv"))
    assert sorted(row["first_question"] for row in rows) == sorted("'" + text for text in FORMULAS)
    assert sorted(row["visitor_name"] for row in rows) == sorted("'" + text for text in FORMULAS)
    assert {row["bot_name"] for row in rows} == {"'@bot"}
    assert sorted(row["visitor_email"] for row in rows) == sorted("'-" + text for text in FORMULAS)


def test_it_exports_a_transcript_as_json(staff_client: Client, conversation: Conversation) -> None:
    Note.objects.create(conversation=conversation, author=make_user("ann", agent=True), text="已退款")
    response = staff_client.get(reverse("agents:transcript_export", args=[conversation.pk, "json"]))
    assert response["Content-Type"] == "application/json; charset=utf-8"
    document = json.loads(body(response))
    header = document["conversation"]
    assert header["id"] == conversation.pk and header["bot_name"] == "商店" and header["labels"] == ["退款"]
    assert [(n["author"], n["text"]) for n in header["notes"]] == [("ann", "已退款")]
    messages = document["messages"]
    assert [m["text"] for m in messages] == ["我的退款在哪里？", "三天内。", "=1+2"]
    reply = messages[1]
    assert list(reply) == MESSAGE_FIELDS
    assert (reply["cost"], reply["score"], reply["feedback_rating"]) == ("0.000120", 0.91, "up")
    entry_id = Message.objects.get(pk=reply["id"]).matched_entry_id
    assert (reply["matched_entry_id"], reply["matched_entry_question"]) == (entry_id, "退款多久到账？")
    assert datetime.fromisoformat(reply["created_at"]) == Message.objects.get(pk=reply["id"]).created_at


@pytest.mark.django_db(transaction=True)
async def test_it_streams_an_export_chunk_by_chunk_under_asgi() -> None:
    @sync_to_async
    def setting() -> User:
        bot = make_bot(name="商店")
        for n in range(3):
            make_message(make_conversation(bot), text=f"问题 {n}")
        return make_user("staff", staff=True)

    client = AsyncClient()
    await client.aforce_login(await setting())
    try:
        response = await client.get(reverse("agents:conversations_export", args=["csv"]))
        assert response.status_code == 200 and response.is_async
        chunks = [chunk async for chunk in response.streaming_content]
    finally:
        # The view ran in asgiref's sync thread; its connection must not outlive the test.
        await sync_to_async(connections.close_all)()
    assert len(chunks) == 2  # the header, then one batch
    rows = list(csv.DictReader(io.StringIO(b"".join(chunks).decode("utf-8-sig"))))
    assert sorted(row["first_question"] for row in rows) == ["问题 0", "问题 1", "问题 2"]
