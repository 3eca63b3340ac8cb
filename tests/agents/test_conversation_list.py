"""The conversation list: filters, per-option counts, search, pagination, bad input."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from agents.models import Label
from chatbot.models import Conversation, Feedback, Message
from tests.agents.conftest import client_for, make_user
from tests.factories import make_bot, make_conversation, make_message

pytestmark = pytest.mark.django_db


def at(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 1, day, hour, tzinfo=UTC)


def reply(conversation: Conversation, source: str, text: str = "An answer.", rating: str = "") -> Message:
    role = Message.Role.AGENT if source == Message.Source.AGENT else Message.Role.BOT
    message = make_message(conversation, role=role, source=source, text=text)
    if rating:
        Feedback.objects.create(message=message, rating=rating, comment="")
    return message


@pytest.fixture
def world() -> dict[str, Any]:
    shop, other = make_bot(name="Shop"), make_bot(name="Other shop")
    refund = make_conversation(shop, status="closed", resolved_at=at(10), last_activity_at=at(10))
    make_message(refund, text="Where is my REFUND?")
    reply(refund, Message.Source.KNOWLEDGE, rating=Feedback.Rating.UP)
    chinese = make_conversation(shop, needs_followup=True, last_activity_at=at(12))
    make_message(chinese, text="我的订单在哪里？")
    reply(chinese, Message.Source.LLM, text="正在发货。", rating=Feedback.Rating.DOWN)
    handoff = make_conversation(other, status="waiting_for_agent", last_activity_at=at(14))
    make_message(handoff, text="hello")
    reply(handoff, Message.Source.FALLBACK)
    reply(handoff, Message.Source.AGENT, text="Hi, I am Ann.")
    Label.objects.create(name="billing").conversations.add(handoff, refund)
    reserved = make_conversation(shop, last_activity_at=at(16))
    make_message(reserved, text="hi there")
    # A reply still being written (its text so far is saved while it streams): no reply yet.
    make_message(reserved, role="bot", source="llm", text="Hello th", status="pending")
    return {
        "shop": shop,
        "other": other,
        "refund": refund,
        "chinese": chinese,
        "handoff": handoff,
        "reserved": reserved,
    }


def listing(client: Client, **params: Any) -> Any:
    response = client.get(reverse("agents:conversations"), params)
    assert response.status_code == 200
    return response


def listed(client: Client, **params: Any) -> list[int]:
    return [row.conversation.pk for row in listing(client, **params).context["listing"].rows]


def counts(response: Any) -> dict[str, dict[str, int]]:
    return {
        facet.name: {"": facet.any_count} | {option.value: option.count for option in facet.options}
        for facet in response.context["listing"].facets
    }


def test_it_lists_visible_conversations_newest_activity_first(staff_client: Client, world: dict) -> None:
    ids = [world[k].pk for k in ("reserved", "handoff", "chinese", "refund")]
    assert listed(staff_client) == ids


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "closed"}, ["refund"]),
        ({"status": "waiting_for_agent"}, ["handoff"]),
        ({"answered": "knowledge"}, ["refund"]),
        ({"answered": "llm"}, ["chinese"]),  # not the empty reserved llm row
        ({"answered": "fallback"}, ["handoff"]),
        ({"answered": "agent"}, ["handoff"]),
        ({"rating": "up"}, ["refund"]),
        ({"rating": "down"}, ["chinese"]),
        ({"followup": "1"}, ["chinese"]),
        ({"review": "resolved"}, ["refund"]),
        ({"review": "unresolved"}, ["reserved", "handoff", "chinese"]),
        ({"label": "billing"}, ["handoff", "refund"]),
        ({"date_from": "2026-01-12", "date_to": "2026-01-14"}, ["handoff", "chinese"]),
        ({"q": "refund"}, ["refund"]),
        ({"q": "订单"}, ["chinese"]),
        ({"q": "发货"}, ["chinese"]),
        ({"q": "i am ann"}, ["handoff"]),
        ({"q": "100%"}, []),
        ({"status": "open", "answered": "llm", "rating": "down", "followup": "1"}, ["chinese"]),
    ],
)
def test_it_filters(staff_client: Client, world: dict, params: dict, expected: list[str]) -> None:
    assert listed(staff_client, **params) == [world[k].pk for k in expected]


def test_it_filters_by_bot(staff_client: Client, world: dict) -> None:
    assert listed(staff_client, bot=world["other"].pk) == [world["handoff"].pk]


def test_it_reads_dates_in_the_current_time_zone(staff_client: Client, world: dict, settings: Any) -> None:
    settings.TIME_ZONE = "Asia/Shanghai"
    # 2026-01-14 12:00 UTC is 20:00 in Shanghai; 2026-01-16 12:00 UTC is 20:00 too.
    assert listed(staff_client, date_to="2026-01-14") == [
        world[k].pk for k in ("handoff", "chinese", "refund")
    ]
    world["refund"].last_activity_at = datetime(2026, 1, 10, 17, tzinfo=UTC)  # 01:00 on the 11th there
    world["refund"].save()
    assert world["refund"].pk in listed(staff_client, date_from="2026-01-11", date_to="2026-01-11")
    assert world["refund"].pk not in listed(staff_client, date_to="2026-01-10")


def test_it_counts_each_option_under_the_other_active_filters(staff_client: Client, world: dict) -> None:
    response = listing(staff_client, bot=world["shop"].pk, review="unresolved")
    c = counts(response)
    # Shop's unresolved conversations: chinese (open, llm, down, follow-up) and reserved (open).
    assert c["status"] == {"": 2, "open": 2, "waiting_for_agent": 0, "with_agent": 0, "closed": 0}
    assert c["answered"] == {"": 2, "knowledge": 0, "llm": 1, "agent": 0, "fallback": 0}
    assert c["rating"] == {"": 2, "up": 0, "down": 1}
    assert c["followup"] == {"": 2, "1": 1}
    # The review counts ignore the review filter itself, not the bot filter.
    assert c["review"] == {"": 3, "resolved": 1, "unresolved": 2}
    assert response.context["listing"].total == 2
    assert b"Unresolved (2)" in response.content and b"Resolved (1)" in response.content


def test_it_counts_message_facets_without_their_own_filter(staff_client: Client, world: dict) -> None:
    c = counts(listing(staff_client, answered="fallback", rating="up"))
    assert c["answered"] == {"": 1, "knowledge": 1, "llm": 0, "agent": 0, "fallback": 0}
    assert c["rating"] == {"": 1, "up": 0, "down": 0}
    assert c["status"]["waiting_for_agent"] == 0 and c["status"][""] == 0
    c = counts(listing(staff_client, answered="agent", q="hello"))
    assert c["answered"] == {"": 1, "knowledge": 0, "llm": 0, "agent": 1, "fallback": 1}
    assert c["status"] == {"": 1, "open": 0, "waiting_for_agent": 1, "with_agent": 0, "closed": 0}
    assert c["rating"] == {"": 1, "up": 0, "down": 0}


def test_it_shows_each_rows_details(staff_client: Client, world: dict) -> None:
    rows = {row.conversation.pk: row for row in listing(staff_client).context["listing"].rows}
    handoff, reserved = rows[world["handoff"].pk], rows[world["reserved"].pk]
    assert (handoff.message_count, handoff.first_question) == (3, "hello")
    assert handoff.sources == {"fallback": 1, "agent": 1}
    assert handoff.labels == ["billing"]
    assert (reserved.message_count, reserved.sources) == (1, {})
    chinese = rows[world["chinese"].pk]
    assert (chinese.up, chinese.down, chinese.first_question) == (0, 1, "我的订单在哪里？")
    content = listing(staff_client).content.decode()
    assert "我的订单在哪里？" in content and "Other shop" in content and "follow-up" in content
    assert reverse("agents:transcript", args=[world["handoff"].pk]) in content


def test_it_paginates_and_keeps_the_filters_in_page_links(staff_client: Client, settings: Any) -> None:
    settings.AGENT_PAGE_SIZE = 5
    bot = make_bot()
    conversations = [make_conversation(bot, last_activity_at=at(1, hour)) for hour in range(12)]
    newest_first = [c.pk for c in reversed(conversations)]
    assert listed(staff_client, status="open") == newest_first[:5]
    response = listing(staff_client, status="open", page=3)
    assert [row.conversation.pk for row in response.context["listing"].rows] == newest_first[10:]
    assert "?status=open&amp;page=2" in response.content.decode()
    assert listed(staff_client, page="99") == newest_first[10:]
    assert listed(staff_client, page="abc") == newest_first[:5]


@pytest.mark.parametrize(
    ("params", "message", "shown"),
    [
        ({"bot": "abc"}, "Unknown bot", 4),
        ({"bot": "999999"}, "Unknown bot", 4),
        ({"date_from": "2026-13-45"}, "Enter a valid date", 4),
        ({"status": "lost"}, "Select a valid choice", 4),
        ({"answered": "magic", "status": "closed"}, "Select a valid choice", 1),
        ({"label": "nope"}, "There is no label with that name", 4),
        ({"date_from": "2026-01-14", "date_to": "2026-01-12"}, "The end date is before the start date", 2),
        ({"q": "x" * 201}, "at most 200 characters", 4),
    ],
)
def test_it_reports_invalid_filters_and_applies_only_the_valid_ones(
    staff_client: Client, world: dict, params: dict, message: str, shown: int
) -> None:
    response = listing(staff_client, **params)
    assert message in response.content.decode()
    assert "These filters were not applied" in response.content.decode()
    assert len(response.context["listing"].rows) == shown


def test_it_refuses_a_bot_the_agent_is_not_assigned_to(world: dict) -> None:
    agent = make_user("shop-agent", agent=True, bots=[world["shop"]])
    client = client_for(agent)
    response = listing(client, bot=world["other"].pk)
    assert "Unknown bot, or one you are not assigned to." in response.content.decode()
    assert world["handoff"].pk not in [row.conversation.pk for row in response.context["listing"].rows]
    assert "Other shop" not in response.content.decode()


def test_it_renders_a_page_in_a_bounded_number_of_queries(
    staff_client: Client, settings: Any, django_assert_max_num_queries: Any
) -> None:
    settings.AGENT_PAGE_SIZE = 20
    bot = make_bot()
    label = Label.objects.create(name="bulk")
    for n in range(25):
        conversation = make_conversation(bot, last_activity_at=at(1 + n % 20))
        make_message(conversation, text=f"question {n}")
        reply(conversation, Message.Source.LLM, rating=Feedback.Rating.UP)
        label.conversations.add(conversation)
    # Session, user, bot visibility (twice), counts, page, row details (3), filter options
    # (2); plus the label lookup and a second count query for the active "answered" filter.
    with django_assert_max_num_queries(13):
        response = listing(staff_client, q="question", answered="llm", label="bulk")
    assert len(response.context["listing"].rows) == 20
    with django_assert_max_num_queries(11):
        response = listing(staff_client)
    assert len(response.context["listing"].rows) == 20


def test_it_links_the_exports_of_the_current_filters(staff_client: Client, world: dict) -> None:
    content = listing(staff_client, status="closed", page=1).content.decode()
    assert reverse("agents:conversations_export", args=["csv"]) + "?status=closed" in content
    assert reverse("agents:conversations_export", args=["json"]) + "?status=closed" in content
    assert "export.csv" not in listing(staff_client, bot="abc").content.decode()
