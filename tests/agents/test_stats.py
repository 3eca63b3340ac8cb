"""The statistics page: every figure of a hand-built data set, checked against numbers
worked out by hand (in the comments), on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.db.models import Count
from django.db.models.functions import ExtractHour, TruncDate
from django.test import Client
from django.urls import reverse

from agents.models import Correction
from agents.selectors.localtime import utc_offsets
from agents.selectors.percentiles import nearest_rank_index
from agents.selectors.stats import statistics_collect, stats_period
from chatbot.models import Bot, Conversation, Feedback, Message
from knowledge.models import Entry
from tests.agents.conftest import client_for, make_user
from tests.factories import make_bot, make_conversation, make_message

pytestmark = pytest.mark.django_db

V, B, A, S = Message.Role.VISITOR, Message.Role.BOT, Message.Role.AGENT, Message.Role.SYSTEM
KB, LLM, FB, AG = Message.Source.KNOWLEDGE, Message.Source.LLM, Message.Source.FALLBACK, Message.Source.AGENT
PERIOD = {"date_from": "2025-03-01", "date_to": "2025-03-03"}


def at(day: int, hour: int, minute: int = 0, second: int = 0, month: int = 3) -> datetime:
    return datetime(2025, month, day, hour, minute, second, tzinfo=UTC)


def say(conversation: Conversation, when: datetime, role: str = V, **fields: Any) -> Message:
    rating = fields.pop("rating", None)
    fields.setdefault("text", f"{role} at {when:%H:%M}")
    message = make_message(conversation, role=role, created_at=when, **fields)
    if rating:
        Feedback.objects.create(message=message, rating=rating)
    return message


@pytest.fixture
def shop() -> dict[str, Any]:
    """Bot "Shop" (C1-C4, C6-C8) and bot "Other" (C5); times in UTC.

    C1 03-01 09:00  visitor, KB E1 ttft 40 up, visitor, KB E2 ttft 60 up
    C2 03-01 14:00  (handoff 14:10) visitor, LLM gpt-a ttft 900 down (100+50 tok, 0.0015),
                    visitor 14:09, LLM glm-b 14:09:01 ttft 700 up (200+80, 0.0030),
                    system notice, agent 14:15, KB E2 14:20 ttft 30 (after the handoff)
    C3 03-02 23:30  visitor, KB E2 ttft 50 down, visitor 23:40, LLM glm-b ttft 1200 up (300+120, 0.0020)
    C4 03-03 10:00  visitor, fallback ttft 8, visitor 10:01, reserved empty bot row
    C5 03-02 12:00  (bot Other) visitor, KB E3 ttft 20 down
    C6 02-28 12:00  visitor, KB E1 ttft 10          (before the period)
    C7 03-03 11:00  no messages                     (not counted)
    C8 03-04 00:00  visitor, LLM gpt-a ttft 500     (after the period)
    """
    shop, other = make_bot(name="Shop"), make_bot(name="Other")
    e1 = Entry.objects.create(bot=shop, question="Where is my order?", answer="Here.")
    e2 = Entry.objects.create(bot=shop, question="How do I return an item?", answer="Like so.")
    e3 = Entry.objects.create(bot=other, question="Opening hours?", answer="9-5.")

    c1 = make_conversation(shop, started_at=at(1, 9))
    say(c1, at(1, 9))
    say(c1, at(1, 9, 0, 1), B, source=KB, matched_entry=e1, ttft_ms=40, rating="up")
    say(c1, at(1, 9, 5))
    say(c1, at(1, 9, 5, 1), B, source=KB, matched_entry=e2, ttft_ms=60, rating="up")

    c2 = make_conversation(shop, started_at=at(1, 14), handoff_requested_at=at(1, 14, 10))
    say(c2, at(1, 14))
    llm = {"source": LLM, "llm_model": "gpt-a", "ttft_ms": 900, "prompt_tokens": 100, "completion_tokens": 50}
    say(c2, at(1, 14, 0, 2), B, **llm, cost=Decimal("0.0015"), rating="down")
    say(c2, at(1, 14, 9))
    llm = {"source": LLM, "llm_model": "glm-b", "ttft_ms": 700, "prompt_tokens": 200, "completion_tokens": 80}
    say(c2, at(1, 14, 9, 1), B, **llm, cost=Decimal("0.0030"), rating="up")
    say(c2, at(1, 14, 14), S, text="Ann joined")
    say(c2, at(1, 14, 15), A, source=AG, text="Hi, I'm Ann")
    say(c2, at(1, 14, 20), B, source=KB, matched_entry=e2, ttft_ms=30)

    c3 = make_conversation(shop, started_at=at(2, 23, 30))
    say(c3, at(2, 23, 30), text="退货怎么办")
    say(c3, at(2, 23, 30, 1), B, source=KB, matched_entry=e2, ttft_ms=50, rating="down")
    say(c3, at(2, 23, 40), text="还有别的吗")
    llm = {
        "source": LLM,
        "llm_model": "glm-b",
        "ttft_ms": 1200,
        "prompt_tokens": 300,
        "completion_tokens": 120,
    }
    say(c3, at(2, 23, 40, 2), B, **llm, cost=Decimal("0.0020"), rating="up")

    c4 = make_conversation(shop, started_at=at(3, 10))
    say(c4, at(3, 10), text="asdf")
    say(c4, at(3, 10, 0, 1), B, source=FB, ttft_ms=8)
    say(c4, at(3, 10, 1), text="hello?")
    say(c4, at(3, 10, 1, 1), B, source=LLM, text="Being wri", status=Message.Status.PENDING)

    c5 = make_conversation(other, started_at=at(2, 12))
    say(c5, at(2, 12))
    say(c5, at(2, 12, 0, 1), B, source=KB, matched_entry=e3, ttft_ms=20, rating="down")

    c6 = make_conversation(shop, started_at=at(28, 12, month=2))
    say(c6, at(28, 12, month=2))
    say(c6, at(28, 12, 0, 1, month=2), B, source=KB, matched_entry=e1, ttft_ms=10)
    make_conversation(shop, started_at=at(3, 11))
    c8 = make_conversation(shop, started_at=at(4, 0))
    say(c8, at(4, 0))
    say(c8, at(4, 0, 0, 1), B, source=LLM, llm_model="gpt-a", ttft_ms=500, cost=Decimal("1"))
    return {"shop": shop, "other": other, "entries": [e1, e2, e3]}


def collect(bots: list[Bot]) -> Any:
    period = stats_period(date_from=date(2025, 3, 1), date_to=date(2025, 3, 3))
    return statistics_collect(bot_ids=[b.pk for b in bots], period=period)


def test_it_counts_conversations_and_messages_per_day_and_hour(shop: dict[str, Any]) -> None:
    stats = collect([shop["shop"], shop["other"]])
    # Conversations with a visitor message: 03-01 C1 C2; 03-02 C3 C5; 03-03 C4 (C7 is empty).
    # Messages (not system, not empty): 03-01 C1 4 + C2 6; 03-02 C3 4 + C5 2; 03-03 C4 3.
    assert [(d.day.day, d.conversations, d.messages) for d in stats.activity.days] == [
        (1, 2, 10),
        (2, 2, 6),
        (3, 1, 3),
    ]
    assert (stats.activity.conversations, stats.activity.messages) == (5, 19)
    # Hours: 09 C1 4, 10 C4 3, 12 C5 2, 14 C2 6, 23 C3 4.
    expected = [0] * 24
    expected[9], expected[10], expected[12], expected[14], expected[23] = 4, 3, 2, 6, 4
    assert stats.activity.hours == expected


def test_it_counts_days_and_hours_in_the_current_time_zone(shop: dict[str, Any], settings: Any) -> None:
    settings.TIME_ZONE = "Asia/Shanghai"  # UTC+8: 03-01..03-03 local is 02-28 16:00 to 03-03 16:00 UTC
    stats = collect([shop["shop"], shop["other"]])
    # C3 (23:30 UTC on 03-02) moves to 07:30 on 03-03; C4 (10:00 UTC) is 18:00 on 03-03.
    assert [(d.day.day, d.conversations, d.messages) for d in stats.activity.days] == [
        (1, 2, 10),
        (2, 1, 2),
        (3, 2, 7),
    ]
    expected = [0] * 24
    expected[7], expected[17], expected[18], expected[20], expected[22] = 4, 4, 3, 2, 6
    assert stats.activity.hours == expected
    # Usage per local day: C3's glm-b reply is now on 03-03.
    assert [(u.day.day, u.model, u.replies) for u in stats.usage] == [
        (1, "glm-b", 1),
        (1, "gpt-a", 1),
        (3, "glm-b", 1),
    ]


def test_it_shares_replies_by_source_and_computes_the_deflection_rate(shop: dict[str, Any]) -> None:
    replies = collect([shop["shop"], shop["other"]]).replies
    # knowledge: C1 x2, C2 14:20, C3, C5 = 5; llm: C2 x2, C3 = 3; fallback C4 = 1; agent C2 = 1.
    assert [(s.source, s.replies) for s in replies.sources] == [(KB, 5), (LLM, 3), (FB, 1), (AG, 1)]
    assert replies.total == 10
    # Deflected: C1 both (up), C2 14:20 (after the handoff), C3 LLM (up) = 4. Not: C2 LLM 14:00
    # (down, before handoff), C2 LLM 14:09 (before handoff), C3 KB (down), C5 KB (down).
    assert [s.deflected for s in replies.sources] == [3, 1, 0, 0]
    assert replies.deflection_rate == pytest.approx(4 / 10)


def test_it_counts_thumbs_up_and_down(shop: dict[str, Any]) -> None:
    replies = collect([shop["shop"], shop["other"]]).replies
    # Up: C1 x2, C2 glm-b, C3 glm-b = 4. Down: C2 gpt-a, C3 KB, C5 KB = 3.
    assert (replies.up, replies.down) == (4, 3)
    assert [(s.up, s.down) for s in replies.sources] == [(2, 2), (2, 1), (0, 0), (0, 0)]
    assert replies.up_rate == pytest.approx(4 / 7)


def test_it_gives_the_nearest_rank_median_and_p95_of_time_to_first_reply(shop: dict[str, Any]) -> None:
    sources = {s.source: s for s in collect([shop["shop"], shop["other"]]).replies.sources}
    # knowledge 20 30 40 50 60: median ceil(2.5)=3rd = 40, p95 ceil(4.75)=5th = 60.
    assert (sources[KB].timed, sources[KB].ttft_median, sources[KB].ttft_p95) == (5, 40, 60)
    # llm 700 900 1200: median ceil(1.5)=2nd = 900, p95 ceil(2.85)=3rd = 1200.
    assert (sources[LLM].timed, sources[LLM].ttft_median, sources[LLM].ttft_p95) == (3, 900, 1200)
    assert (sources[FB].ttft_median, sources[FB].ttft_p95) == (8, 8)
    assert (sources[AG].timed, sources[AG].ttft_median, sources[AG].ttft_p95) == (0, None, None)


def test_it_takes_p95_at_the_nearest_rank_not_the_maximum() -> None:
    bot = make_bot()
    conversation = make_conversation(bot, started_at=at(2, 8))
    for ms in [20, 3, 17, 1, 9, 14, 6, 11, 19, 2, 8, 16, 4, 13, 10, 18, 5, 15, 7, 12]:
        say(conversation, at(2, 8), B, source=KB, ttft_ms=ms)
    replies = collect([bot]).replies
    # 1..20: median at ceil(0.5*20)=10th = 10, p95 at ceil(0.95*20)=19th = 19.
    assert (replies.sources[0].ttft_median, replies.sources[0].ttft_p95) == (10, 19)
    assert [nearest_rank_index(count=n, percentile=95) for n in (1, 2, 20, 21, 100)] == [0, 1, 18, 19, 94]


def test_it_sums_tokens_and_cost_per_model_and_day(shop: dict[str, Any]) -> None:
    stats = collect([shop["shop"], shop["other"]])
    rows = [
        (u.day.day, u.model, u.replies, u.prompt_tokens, u.completion_tokens, u.cost) for u in stats.usage
    ]
    assert rows == [
        (1, "glm-b", 1, 200, 80, Decimal("0.0030")),
        (1, "gpt-a", 1, 100, 50, Decimal("0.0015")),
        (2, "glm-b", 1, 300, 120, Decimal("0.0020")),
    ]
    # glm-b: 200+300 prompt, 80+120 completion, 0.0030+0.0020.
    totals = [
        (m.model, m.replies, m.prompt_tokens, m.completion_tokens, m.cost) for m in stats.usage_by_model
    ]
    assert totals == [("glm-b", 2, 500, 200, Decimal("0.0050")), ("gpt-a", 1, 100, 50, Decimal("0.0015"))]


def test_it_ranks_the_most_used_entries(shop: dict[str, Any]) -> None:
    e1, e2, e3 = shop["entries"]
    top = collect([shop["shop"], shop["other"]]).top_entries
    # E2: C1, C2, C3 = 3; E1: C1 = 1 (C6 is before the period); E3: C5 = 1 (tie: older entry first).
    assert [(t.entry_id, t.replies) for t in top] == [(e2.pk, 3), (e1.pk, 1), (e3.pk, 1)]
    assert top[0].question == "How do I return an item?"


def test_it_counts_knowledge_gaps(shop: dict[str, Any]) -> None:
    # Questions whose next reply is llm/fallback/down: C2 x2 (llm), C3 x2 (KB down, llm),
    # C4 "asdf" (fallback), C5 (KB down) = 6. Not: C1 x2 (KB up), C4 "hello?" (only an
    # empty reserved row follows), C8 (after the period).
    assert collect([shop["shop"], shop["other"]]).gap_count == 6
    # Shop alone: C5 drops out.
    assert collect([shop["shop"]]).gap_count == 5


def test_it_stops_counting_a_gap_once_its_reply_is_corrected(shop: dict[str, Any]) -> None:
    reply = Message.objects.filter(conversation__bot=shop["shop"], source="llm").order_by("id").first()
    assert reply is not None
    Correction.objects.create(message=reply, entry=shop["entries"][0], kind="entry", question="q")
    assert collect([shop["shop"], shop["other"]]).gap_count == 5  # one of the 6 above


def test_it_renders_the_figures_on_the_page(shop: dict[str, Any], staff_client: Client) -> None:
    response = staff_client.get(reverse("agents:stats"), PERIOD)
    assert response.status_code == 200
    page = response.content.decode()
    assert '<strong id="deflection-rate">40.0%</strong>' in page
    assert '<strong id="up-rate">57.1%</strong>' in page
    assert '<strong id="gap-count">6</strong>' in page
    assert reverse("agents:gaps") in page
    assert reverse("admin:knowledge_entry_change", args=[shop["entries"][1].pk]) in page
    assert page.count('<svg class="chart"') == 7
    assert "not followed by a" in page and "handoff" in page  # the definition's footnote


def test_it_filters_by_bot(shop: dict[str, Any], staff_client: Client) -> None:
    response = staff_client.get(reverse("agents:stats"), {**PERIOD, "bot": shop["other"].pk})
    stats = response.context["stats"]
    # Other: C5 only - 1 conversation, 2 messages, one KB reply rated down.
    assert (stats.activity.conversations, stats.activity.messages, stats.replies.total) == (1, 2, 1)
    assert (stats.replies.deflected, stats.replies.down, stats.gap_count) == (0, 1, 1)
    assert '<strong id="deflection-rate">0.0%</strong>' in response.content.decode()


def test_it_shows_an_assigned_agent_only_their_bots(shop: dict[str, Any]) -> None:
    client = client_for(make_user("other-agent", agent=True, bots=[shop["other"]]))
    response = client.get(reverse("agents:stats"), PERIOD)
    assert response.status_code == 200
    assert response.context["stats"].replies.total == 1
    assert "Where is my order?" not in response.content.decode()
    refused = client.get(reverse("agents:stats"), {**PERIOD, "bot": shop["shop"].pk})
    assert refused.status_code == 400
    assert "stats" not in refused.context


def test_it_renders_an_empty_database(staff_client: Client) -> None:
    response = staff_client.get(reverse("agents:stats"))
    assert response.status_code == 200
    stats = response.context["stats"]
    assert len(stats.activity.days) == 30  # settings.AGENT_STATS_DAYS
    assert (stats.replies.total, stats.gap_count, stats.usage, stats.top_entries) == (0, 0, [], [])
    assert "No data" in response.content.decode()
    assert f'{reverse("agents:gaps")}?days=30"' in response.content.decode()  # the same 30 days


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"days": "0"}, "greater than or equal to 1"),
        ({"days": "366"}, "less than or equal to 365"),
        ({"days": "many"}, "whole number"),
        ({"date_from": "2025-13-01"}, "must be a date"),
        ({"date_from": "2025-03-05", "date_to": "2025-03-01"}, "From must not be after To"),
        ({"date_from": "2023-01-01", "date_to": "2025-01-01"}, "at most 365 days"),
        ({"bot": "abc"}, "No such bot"),
        ({"bot": "999999"}, "No such bot"),
    ],
)
def test_it_explains_invalid_filters(staff_client: Client, query: dict[str, str], message: str) -> None:
    response = staff_client.get(reverse("agents:stats"), query)
    assert response.status_code == 400
    assert message in response.content.decode()


def test_it_takes_the_last_days_up_to_a_given_end(staff_client: Client) -> None:
    response = staff_client.get(reverse("agents:stats"), {"days": "7", "date_to": "2025-03-10"})
    period = response.context["stats"].period
    assert (period.date_from, period.date_to) == (date(2025, 3, 4), date(2025, 3, 10))


def test_it_makes_a_bounded_number_of_queries(
    shop: dict[str, Any], staff_client: Client, django_assert_max_num_queries: Any
) -> None:
    # Session and user 2, visible bots 2, bot count 1; replies by day/source/model 1,
    # percentiles (SQLite: 2 per source with timings, at most 8; PostgreSQL: 1),
    # conversations per day 1, messages per day and hour 1, top entries 2, gaps 1: at most 19.
    with django_assert_max_num_queries(19):
        assert staff_client.get(reverse("agents:stats"), PERIOD).status_code == 200
    conversation = make_conversation(shop["shop"], started_at=at(2, 9))
    for minute in range(20):
        say(conversation, at(2, 9, minute))
        source = [KB, LLM, FB][minute % 3]
        say(conversation, at(2, 9, minute, 1), B, source=source, llm_model=f"m{minute % 4}", ttft_ms=minute)
    say(conversation, at(2, 9, 30), A, source=AG, text="Agent here", ttft_ms=900)
    with django_assert_max_num_queries(19):
        assert staff_client.get(reverse("agents:stats"), PERIOD).status_code == 200


def test_it_finds_the_utc_offsets_in_force_during_a_period() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    span = (datetime(2025, 3, 29, tzinfo=berlin), datetime(2025, 4, 1, tzinfo=berlin))
    # Summer time starts on 2025-03-30 at 01:00 UTC (02:00 CET becomes 03:00 CEST).
    assert utc_offsets(tz=berlin, span=span) == [
        (datetime(2025, 3, 28, 23, tzinfo=UTC), 3600),
        (datetime(2025, 3, 30, 1, tzinfo=UTC), 7200),
    ]
    assert utc_offsets(tz=ZoneInfo("Asia/Kolkata"), span=span) == [
        (datetime(2025, 3, 28, 23, tzinfo=UTC), 19800)
    ]


@pytest.mark.parametrize(
    ("zone", "first_day"),
    [
        ("Europe/Berlin", date(2025, 3, 29)),  # summer time starts
        ("Europe/Berlin", date(2025, 10, 25)),  # and ends: one local hour happens twice
        ("America/St_Johns", date(2025, 11, 1)),  # UTC-2:30 to UTC-3:30
        ("Australia/Lord_Howe", date(2025, 4, 5)),  # a half-hour change
        ("Asia/Kolkata", date(2025, 6, 1)),
    ],
)
def test_it_groups_by_local_day_and_hour_like_django_does(zone: str, first_day: date, settings: Any) -> None:
    settings.TIME_ZONE = zone
    conversation = make_conversation(make_bot())
    start = datetime.combine(first_day, datetime.min.time(), tzinfo=UTC) - timedelta(hours=14)
    for step in range(0, 4 * 24 * 60, 17):  # every 17 minutes for four days, some with microseconds
        say(conversation, start + timedelta(minutes=step, microseconds=step % 3 * 250_000))
    period = stats_period(date_from=first_day, date_to=first_day + timedelta(days=2))
    messages = Message.objects.filter(created_at__gte=period.start, created_at__lt=period.end)
    tz = ZoneInfo(zone)

    def grouped(day: Any, hour: Any) -> list[tuple[date, int, int]]:
        rows = messages.values(day=day, hour=hour).annotate(n=Count("id")).order_by("day", "hour")
        return [(row["day"], row["hour"], row["n"]) for row in rows]

    ours = grouped(period.local_date("created_at"), period.local_hour("created_at"))
    assert ours == grouped(TruncDate("created_at", tzinfo=tz), ExtractHour("created_at", tzinfo=tz))
    assert ours[0][0] == first_day and len({d for d, _, _ in ours}) == 3


def test_it_escapes_entry_questions_in_tables_and_charts(staff_client: Client) -> None:
    bot = make_bot()
    entry = Entry.objects.create(bot=bot, question="<script>alert(1)</script>", answer="No.")
    conversation = make_conversation(bot, started_at=at(2, 8))
    say(conversation, at(2, 8))
    say(conversation, at(2, 8, 0, 1), B, source=KB, matched_entry=entry, ttft_ms=5)
    page = staff_client.get(reverse("agents:stats"), PERIOD).content.decode()
    assert "<script>alert" not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 2  # table link and chart tooltip
