"""Knowledge gaps: which questions count, cached vectors, clusters, the page, and how a
correction makes a gap disappear."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from agents.models import Correction, QuestionVector
from agents.selectors import gaps
from agents.selectors.gaps import gap_questions, gap_report
from chatbot.models import Bot, Conversation, Feedback, Message
from knowledge import embeddings
from knowledge.services import entries_embed, entry_upsert
from tests.agents.conftest import client_for, make_user
from tests.factories import make_bot, make_conversation, make_message

pytestmark = pytest.mark.django_db

PASSWORD = [
    "How do I reset my password?",
    "Reset my password please",
    "I forgot my password, how can I reset it?",
]
PARCEL = ["Where is my parcel?", "Where's my parcel?"]
UNRELATED = "Do you sell gift cards?"


def ask(
    conversation: Conversation,
    text: str,
    *,
    source: str = Message.Source.FALLBACK,
    role: str = Message.Role.BOT,
    reply: str = "Sorry, I don't know.",
    rating: str | None = None,
    days_ago: float = 0,
) -> tuple[Message, Message]:
    when = timezone.now() - timedelta(days=days_ago)
    question = make_message(conversation, text=text, created_at=when)
    answer = make_message(conversation, role=role, source=source, text=reply, created_at=when)
    if rating:
        Feedback.objects.create(message=answer, rating=rating)
    return question, answer


def staff() -> Any:
    return User.objects.filter(username="staff").first() or make_user("staff", staff=True)


def texts(questions: list[gaps.GapQuestion]) -> list[str]:
    return [q.text for q in questions]


def test_it_selects_llm_fallback_and_thumbs_down_replies_and_nothing_else() -> None:
    conversation = make_conversation(make_bot())
    ask(conversation, "llm", source=Message.Source.LLM)
    ask(conversation, "fallback")
    ask(conversation, "knowledge", source=Message.Source.KNOWLEDGE)
    ask(conversation, "knowledge liked", source=Message.Source.KNOWLEDGE, rating="up")
    ask(conversation, "knowledge disliked", source=Message.Source.KNOWLEDGE, rating="down")
    ask(conversation, "agent disliked", source=Message.Source.AGENT, role=Message.Role.AGENT, rating="down")
    ask(conversation, "agent", source=Message.Source.AGENT, role=Message.Role.AGENT)
    ask(conversation, "llm liked", source=Message.Source.LLM, rating="up")
    selected = gap_questions(user=staff(), days=30)
    assert texts(selected) == ["llm liked", "agent disliked", "knowledge disliked", "fallback", "llm"]
    assert (selected[1].reply_role, selected[1].reply_rating) == ("agent", "down")


def test_it_leaves_out_corrected_old_unanswered_and_in_progress_questions() -> None:
    bot = make_bot()
    conversation = make_conversation(bot)
    _, corrected = ask(conversation, "corrected")
    entry, _ = entry_upsert(bot=bot, question="corrected", answer="Now known.")
    Correction.objects.create(message=corrected, entry=entry, kind="entry", question="corrected")
    ask(conversation, "last month", days_ago=31)
    ask(conversation, "within the month", days_ago=29)
    make_message(conversation, text="being answered")
    make_message(conversation, role="bot", source="llm", text="So far", status="pending")  # being written
    make_message(make_conversation(bot), text="never answered")
    assert texts(gap_questions(user=staff(), days=30)) == ["within the month"]
    assert texts(gap_questions(user=staff(), days=1)) == []


def test_it_takes_the_first_reply_after_the_question_as_its_reply() -> None:
    conversation = make_conversation(make_bot())
    ask(conversation, "answered from the knowledge base", source=Message.Source.KNOWLEDGE)
    ask(conversation, "then the fallback")
    assert texts(gap_questions(user=staff(), days=30)) == ["then the fallback"]


def test_it_shows_an_assigned_agent_only_their_bots_questions() -> None:
    mine, other = make_bot(name="Mine"), make_bot(name="Other")
    ask(make_conversation(mine), "mine")
    ask(make_conversation(other), "other")
    agent = make_user("agent", agent=True, bots=[mine])
    assert texts(gap_questions(user=agent, days=30)) == ["mine"]
    assert texts(gap_questions(user=agent, days=30, bot=other)) == []
    assert texts(gap_questions(user=staff(), days=30, bot=other)) == ["other"]


def test_it_selects_the_newest_questions_in_one_query(django_assert_num_queries: Any) -> None:
    conversation = make_conversation(make_bot())
    for days in (3, 1, 2):
        ask(conversation, f"{days} days ago", days_ago=days)
    user = staff()
    with django_assert_num_queries(2):  # the agent's bot assignments, then the questions
        selected = gap_questions(user=user, days=30, limit=2)
    assert texts(selected) == ["1 days ago", "2 days ago"]


@pytest.fixture
def shop() -> Bot:
    bot = make_bot(name="Shop")
    for days, text in enumerate([UNRELATED, *PARCEL, *PASSWORD]):
        ask(make_conversation(bot), text, days_ago=days / 10)
    return bot


def test_it_clusters_the_questions_largest_first_with_their_typical_question(shop: Bot) -> None:
    report = gap_report(user=staff(), days=30)
    assert report.total_questions == 6
    assert [c.count for c in report.clusters] == [3, 2, 1]
    assert [c.typical for c in report.clusters] == ["How do I reset my password?", PARCEL[0], UNRELATED]
    assert report.clusters[0].examples[0] == "How do I reset my password?"
    assert sorted(report.clusters[0].examples) == sorted(PASSWORD)
    assert {c.bot for c in report.clusters} == {shop}
    assert report.covered_clusters == 0


def test_it_lists_each_example_text_once(shop: Bot) -> None:
    ask(make_conversation(shop), "Where is my parcel?", days_ago=0.01)
    clusters = gap_report(user=staff(), days=30).clusters
    parcel = next(c for c in clusters if c.typical == "Where is my parcel?")
    assert parcel.count == 3
    assert parcel.examples == ["Where is my parcel?", "Where's my parcel?"]


def test_it_embeds_each_question_once(shop: Bot, monkeypatch: pytest.MonkeyPatch) -> None:
    encoded: list[str] = []
    real = embeddings.encode_documents

    def spy(texts: list[str], name: str | None = None) -> Any:
        encoded.extend(texts)
        return real(texts, name)

    monkeypatch.setattr(embeddings, "encode_documents", spy)
    user = staff()
    first = gap_report(user=user, days=30)
    assert sorted(encoded) == sorted([UNRELATED, *PARCEL, *PASSWORD])
    assert QuestionVector.objects.filter(model_name=embeddings.model_name()).count() == 6
    encoded.clear()
    second = gap_report(user=user, days=30)
    assert encoded == []
    assert QuestionVector.objects.count() == 6
    assert [c.typical for c in second.clusters] == [c.typical for c in first.clusters]


def test_it_counts_clusters_the_knowledge_base_now_answers_as_covered(shop: Bot) -> None:
    entry, _ = entry_upsert(bot=shop, question="How do I reset my password?", answer="Use the link.")
    entries_embed(entries=[entry])
    report = gap_report(user=staff(), days=30)
    assert (report.covered_clusters, report.covered_questions) == (1, 3)
    assert [c.typical for c in report.clusters] == [PARCEL[0], UNRELATED]
    assert report.total_questions == 6


def test_it_counts_clusters_beyond_the_listed_ones(shop: Bot, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gaps, "CLUSTERS_SHOWN", 2)
    report = gap_report(user=staff(), days=30)
    assert [c.count for c in report.clusters] == [3, 2]
    assert (report.unlisted_clusters, report.unlisted_questions) == (1, 1)


# --- The page ----------------------------------------------------------------------------


def test_it_renders_an_empty_report() -> None:
    response = client_for(staff()).get(reverse("agents:gaps"))
    assert response.status_code == 200
    assert b"No open knowledge gaps" in response.content
    assert response.context["report"].total_questions == 0


@pytest.mark.parametrize("days", ["0", "366", "soon"])
def test_it_reports_a_bad_day_count_and_uses_the_default(days: str, settings: Any) -> None:
    settings.AGENT_GAP_DAYS = 7
    conversation = make_conversation(make_bot())
    ask(conversation, "ten days ago", days_ago=10)
    ask(conversation, "yesterday", days_ago=1)
    response = client_for(staff()).get(reverse("agents:gaps"), {"days": days})
    assert response.status_code == 200
    assert response.context["form"].errors["days"]
    assert (response.context["report"].days, response.context["report"].total_questions) == (7, 1)


def test_it_filters_by_bot_and_refuses_a_bot_the_agent_does_not_see() -> None:
    mine, other = make_bot(name="Mine"), make_bot(name="Other")
    ask(make_conversation(mine), "Where is my parcel?")
    ask(make_conversation(other), "Do you sell gift cards?")
    client = client_for(make_user("agent", agent=True, bots=[mine]))
    response = client.get(reverse("agents:gaps"), {"bot": other.pk, "days": "30"})
    assert response.context["form"].errors["bot"]
    assert b"gift cards" not in response.content
    assert b"Where is my parcel?" in response.content
    staff_page = client_for(staff()).get(reverse("agents:gaps"), {"bot": other.pk})
    assert b"gift cards" in staff_page.content and b"Where is my parcel?" not in staff_page.content


def create_entry_link(content: str, typical: str) -> str:
    """The href of the "Create entry" link of the cluster whose typical question is given."""
    card = content.split(f"<strong>{typical}</strong>", 1)[1].split("</article>", 1)[0]
    return card.split('href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")


def test_it_links_each_cluster_to_a_prefilled_correction_that_closes_the_gap(shop: Bot) -> None:
    client = client_for(staff())
    page = client.get(reverse("agents:gaps"))
    assert b"6</strong> questions" in page.content
    link = create_entry_link(page.content.decode(), "How do I reset my password?")
    newest_password_reply = page.context["report"].clusters[0].reply_id
    assert urlsplit(link).path == reverse("agents:correct", args=[newest_password_reply])
    assert parse_qs(urlsplit(link).query, keep_blank_values=True) == {
        "question": ["How do I reset my password?"],
        "answer": [""],
    }
    form = client.get(link).context["entry_form"]
    assert (form["question"].value(), form["answer"].value()) == ("How do I reset my password?", "")
    saved = client.post(
        link, {"mode": "entry", "question": "How do I reset my password?", "answer": "Use the link."}
    )
    assert saved.status_code == 302
    after = client.get(reverse("agents:gaps"))
    assert b"now covered: 1 cluster" in after.content
    assert [c.typical for c in after.context["report"].clusters] == [PARCEL[0], UNRELATED]
    assert after.context["report"].total_questions == 5  # the corrected reply's question is gone


def test_the_gap_vectors_command_embeds_only_what_is_missing() -> None:
    conversation = make_conversation(make_bot())
    ask(conversation, "Do you sell gift cards?")
    ask(conversation, "Can I pay in instalments?", source=Message.Source.LLM)
    ask(conversation, "Old question", days_ago=40)  # outside the 30 days asked for
    ask(conversation, "Where is my order?", source=Message.Source.KNOWLEDGE)  # answered: no gap
    out = StringIO()
    call_command("gap_vectors", "--days", "30", stdout=out)
    assert "2 gap questions of the last 30 days; 2 newly embedded." in out.getvalue()
    stored = QuestionVector.objects.values_list("message__text", flat=True)
    assert sorted(stored) == ["Can I pay in instalments?", "Do you sell gift cards?"]
    call_command("gap_vectors", "--days", "30", stdout=(again := StringIO()))
    assert "0 newly embedded" in again.getvalue() and QuestionVector.objects.count() == 2
