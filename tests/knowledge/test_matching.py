from __future__ import annotations

import asyncio
import time

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from chatbot.models import Bot
from chatbot.runtime import Runtime, install, runtime
from knowledge import matching
from knowledge.calibration_services import Thresholds
from knowledge.models import Embedding, Entry
from knowledge.services import bot_embedding_model, entries_embed, entries_set_active, entry_upsert
from tests.factories import make_bot

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop() -> Bot:
    bot = make_bot(name="Shop", answer_threshold=0.8, reference_threshold=0.4)
    entry_upsert(
        bot=bot,
        question="How do I track my order?",
        answer="Use the tracking page.",
        alternatives=["Where is my parcel?", "Where is my order?"],
        external_id="track",
    )
    entry_upsert(
        bot=bot,
        question="How do I return an item?",
        answer="Within 30 days.",
        alternatives=["Can I send it back?"],
        external_id="returns",
    )
    entry_upsert(
        bot=bot,
        question="我的订单到哪了？",
        answer="请在物流页面查看。",
        alternatives=["查一下物流"],
        external_id="zh-track",
    )
    return bot


@pytest.mark.parametrize(
    ("confidence", "decision"),
    [
        (0.95, "answer"),
        (0.8, "answer"),
        (0.7999, "reference"),
        (0.4, "reference"),
        (0.3999, "none"),
        (None, "none"),
    ],
)
def test_the_decision_bands_follow_the_thresholds(confidence: float | None, decision: str) -> None:
    assert matching.decide(Thresholds(0.8, 0.4, "pinned"), confidence) == decision


def test_a_known_question_is_answered_and_an_unknown_one_is_not(shop: Bot) -> None:
    result = matching.match(shop, "  Where is my   order? ")
    assert result.decision == "answer"
    assert result.best.answer == "Use the tracking page."
    assert matching.match(shop, "Do you have a shop in Paris?").decision != "answer"
    assert matching.match(shop, "我的快递到哪了").best.question == "我的订单到哪了？"


def test_an_empty_question_matches_nothing(shop: Bot) -> None:
    assert matching.match(shop, "   ") == matching.MatchResult("none", [], 0.0)


def test_inactive_entries_are_not_matched(shop: Bot) -> None:
    entries_set_active(entries=Entry.objects.filter(external_id="track"), active=False)
    result = matching.match(shop, "Where is my order?")
    assert all(c.question != "How do I track my order?" for c in result.candidates)


def indexes() -> dict[int, matching.Snapshot]:
    """This process's in-memory index of each bot."""
    return runtime().part(matching.Snapshots).by_bot


def test_the_index_is_reused_until_the_knowledge_base_changes(shop: Bot) -> None:
    matching.match(shop, "Where is my order?")
    first = indexes()[shop.pk]
    matching.match(shop, "Can I send it back?")
    assert indexes()[shop.pk] is first  # no reload per query

    entry_upsert(bot=shop, question="Do you gift wrap?", answer="Yes, for 2 euros.", external_id="gift")
    result = matching.match(shop, "Do you gift wrap?")
    assert indexes()[shop.pk] is not first
    assert result.best.answer == "Yes, for 2 euros."


def test_a_change_made_by_another_process_is_seen_through_the_revision(shop: Bot) -> None:
    # Two processes = two runtimes, each with its in-memory indexes, over one database.
    matching.match(shop, "Where is my order?")
    process_b = Runtime()
    process_a = install(process_b)
    try:
        entry = Entry.objects.get(external_id="returns")
        entry.answer = "Within 60 days now."
        entry.save()  # B edits the knowledge base
        assert indexes() == {}
    finally:
        install(process_a)  # back in process A, holding the old index
        process_b.close()
    assert indexes()[shop.pk].revision < Bot.objects.get(pk=shop.pk).kb_revision
    assert matching.match(shop, "Can I send it back?").best.answer == "Within 60 days now."


def test_phrasing_vectors_are_stored_and_replaced_when_the_text_changes(shop: Bot) -> None:
    entry = Entry.objects.get(external_id="returns")
    entries_embed(entries=[entry])
    assert set(Embedding.objects.filter(entry=entry).values_list("text", flat=True)) == {
        "How do I return an item?",
        "Can I send it back?",
    }
    entry_upsert(
        bot=shop,
        question="How do I return an item?",
        answer="x",
        alternatives=["Return policy?"],
        external_id="returns",
    )
    entries_embed(entries=[entry])
    assert set(Embedding.objects.filter(entry=entry).values_list("text", flat=True)) == {
        "How do I return an item?",
        "Return policy?",
    }


def test_a_new_embedding_model_name_means_new_vectors(shop: Bot, settings) -> None:
    entry = Entry.objects.get(external_id="returns")
    entries_embed(entries=[entry])
    Embedding.objects.filter(entry=entry).update(model_name="old-model")
    assert entries_embed(entries=[entry]) == 2
    # The shop has Chinese entries: its model is the CJK one.
    assert bot_embedding_model(shop.pk) == settings.EMBEDDING_MODEL_CJK
    assert set(Embedding.objects.filter(entry=entry).values_list("model_name", flat=True)) == {
        settings.EMBEDDING_MODEL_CJK
    }


def test_kb_reindex_embeds_everything_missing_and_force_redoes_it(shop: Bot) -> None:
    import io

    Embedding.objects.all().delete()
    out, err = io.StringIO(), io.StringIO()
    call_command("kb_reindex", f"--bot={shop.public_key}", stdout=out, stderr=err)
    assert Embedding.objects.count() == 7
    assert "7 phrasings embedded" in out.getvalue()
    assert "7/7" in err.getvalue()
    out = io.StringIO()
    call_command("kb_reindex", f"--bot={shop.public_key}", "--force", stdout=out, stderr=io.StringIO())
    assert "7 phrasings embedded" in out.getvalue() and Embedding.objects.count() == 7


def test_entry_edits_and_bulk_changes_bump_the_revision(shop: Bot) -> None:
    before = Bot.objects.get(pk=shop.pk).kb_revision
    entries_set_active(entries=Entry.objects.filter(bot=shop), active=False)
    assert Bot.objects.get(pk=shop.pk).kb_revision > before


@pytest.mark.django_db(transaction=True)
async def test_amatch_answers_without_touching_the_orm_on_the_event_loop() -> None:
    from asgiref.sync import sync_to_async

    bot = await sync_to_async(make_bot)(answer_threshold=0.8, reference_threshold=0.4)
    await sync_to_async(entry_upsert)(bot=bot, question="How do I reset my password?", answer="Use the link.")
    # Django raises SynchronousOnlyOperation if the ORM is called from the event loop.
    result = await matching.amatch(bot, "How do I reset my password?")
    assert result.decision == "answer" and result.best.answer == "Use the link."


@pytest.mark.django_db(transaction=True)
async def test_amatch_trusts_a_revision_read_just_now_and_rereads_otherwise() -> None:
    from asgiref.sync import sync_to_async

    bot = await sync_to_async(make_bot)(answer_threshold=0.8, reference_threshold=0.4)
    await sync_to_async(entry_upsert)(bot=bot, question="How do I reset my password?", answer="Use the link.")
    seen = await sync_to_async(Bot.objects.get)(pk=bot.pk)  # the revision the pipeline would read
    assert (await matching.amatch(seen, "How do I reset my password?", fresh_revision=True)).best
    await sync_to_async(entry_upsert)(bot=bot, question="Can I pay by card?", answer="Yes, all cards.")
    # The caller vouches for its revision: the index built at it is used, no database check.
    stale = await matching.amatch(seen, "Can I pay by card?", fresh_revision=True)
    assert "Yes, all cards." not in [c.answer for c in stale.candidates]
    # Without that promise (or with the newer revision) the change is seen.
    assert (await matching.amatch(seen, "Can I pay by card?")).best.answer == "Yes, all cards."
    newer = await sync_to_async(Bot.objects.get)(pk=bot.pk)
    again = await matching.amatch(newer, "Can I pay by card?", fresh_revision=True)
    assert again.best.answer == "Yes, all cards."


def test_the_admin_try_box_shows_matches_and_the_decision(shop: Bot, client: Client) -> None:
    client.force_login(get_user_model().objects.create_superuser("root", password="pw-123456789"))
    page = client.get(f"/admin/chatbot/bot/{shop.pk}/change/", {"try": "Where is my order?"}).content.decode()
    assert 'id="try-decision">answer<' in page
    assert "How do I track my order?" in page
    assert page.index("How do I track my order?") < page.index("How do I return an item?")
    page = client.get(f"/admin/chatbot/bot/{shop.pk}/change/", {"try": "我的快递到哪了"}).content.decode()
    assert "我的订单到哪了" in page


def test_the_demo_questions_are_answered_in_english_and_chinese() -> None:
    import io

    call_command("load_demo", stdout=io.StringIO())
    from chatbot.selectors import demo_bot

    bot = demo_bot()
    for question, expected in [
        ("where is my order", "How can I track my order?"),
        ("can I pay with alipay", "What payment methods do you accept?"),
        ("我的快递到哪了", "我的订单到哪了？"),
        ("能开发票吗", "可以开发票吗？"),
    ]:
        result = matching.match(bot, question)
        assert result.decision == "answer", (question, result.candidates[:2])
        assert result.best.question == expected
    assert matching.match(bot, "what is the weather tomorrow").decision == "none"
    assert matching.match(bot, "今天天气怎么样").decision == "none"


def test_a_bot_without_entries_matches_nothing_without_an_error() -> None:
    bot = make_bot(name="Empty")
    result = matching.match(bot, "Where is my order?")
    assert (result.decision, result.candidates) == ("none", [])


async def test_a_caller_that_gives_up_does_not_fail_the_others_sharing_its_index_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Concurrent matches for one bot share one revision read; the caller that started it
    # may be cancelled (its visitor left) while others wait for the same read.
    def slow_read(bot_id: int) -> str:
        time.sleep(0.2)
        return f"index of bot {bot_id}"

    monkeypatch.setattr(matching, "snapshot_for", slow_read)
    starter = asyncio.ensure_future(matching._snapshot_shared(7))
    await asyncio.sleep(0.05)
    waiter = asyncio.ensure_future(matching._snapshot_shared(7))
    await asyncio.sleep(0.01)
    starter.cancel()
    assert await waiter == "index of bot 7"
    with pytest.raises(asyncio.CancelledError):
        await starter
    assert runtime().part(matching.Snapshots).reads == {}


async def test_a_read_left_by_a_closed_loop_is_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    # A loop that closed mid-read leaves its task behind; a new loop may get the same id.
    monkeypatch.setattr(matching, "snapshot_for", lambda bot_id: f"index of bot {bot_id}")
    old = asyncio.new_event_loop()
    leftover = old.create_future()  # never finished
    old.close()
    reads = runtime().part(matching.Snapshots).reads
    monkeypatch.setitem(reads, (id(asyncio.get_running_loop()), 9), leftover)
    assert await asyncio.wait_for(matching._snapshot_shared(9), 5) == "index of bot 9"
