"""Automatic calibration with the database: stored per bot, served by matching, re-run
in the background after edits, and overridden by labelled or pinned thresholds."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from asgiref.sync import sync_to_async

from chatbot.models import Bot
from chatbot.runtime import RuntimeClosed, runtime
from knowledge import calibration, calibration_services, embeddings, matching
from knowledge.calibration_services import Calibrated, runner, thresholds_for
from knowledge.models import Calibration, Entry
from knowledge.services import entry_upsert
from tests.factories import make_bot

SHOP = {
    "ship": (
        "How long does shipping take?",
        ["delivery time", "when will my parcel arrive", "how many days to deliver"],
    ),
    "refund": ("How do I get a refund?", ["I want my money back", "refund an item", "can I be reimbursed"]),
    "password": (
        "How do I reset my password?",
        ["I forgot my password", "can't log in", "change my login password"],
    ),
    "cancel": (
        "How do I cancel my order?",
        ["please cancel my purchase", "stop my order", "I ordered by mistake"],
    ),
    "pay": (
        "Which payment methods do you accept?",
        ["can I pay by card", "do you take paypal", "payment options"],
    ),
    "hours": (
        "When is customer service open?",
        ["opening hours", "what time can I call you", "support hours"],
    ),
}


def shop_bot(**fields: object) -> Bot:
    bot = make_bot(**fields)
    for key, (question, alternatives) in SHOP.items():
        entry_upsert(
            bot=bot, external_id=key, question=question, answer=f"answer {key}", alternatives=alternatives
        )
    return bot


@pytest.mark.django_db
def test_it_stores_a_calibration_and_matching_serves_calibrated_confidences() -> None:
    bot = shop_bot()
    row = matching.calibrate_now(bot)
    assert row.status == Calibration.Status.OK and row.model_name == embeddings.model_name()
    assert row.answer_threshold is not None and 0 < row.reference_threshold <= row.answer_threshold
    assert row.counts["in_scope"] == 24 and row.counts["elsewhere"] > 100
    assert row.curve and {"threshold", "precision", "coverage"} <= set(row.curve[0])
    bot.refresh_from_db()
    assert bot.calibration_stamp == 1
    known = matching.match(bot, "how do I reset my password")
    unrelated = matching.match(bot, "what is the capital of France?")
    assert known.thresholds is not None and known.thresholds.source == "auto"
    assert known.thresholds.answer == pytest.approx(row.answer_threshold)
    assert known.decision == "answer" and known.best is not None
    assert Entry.objects.get(pk=known.best.entry_id).external_id == "password"
    assert unrelated.decision == "none"
    assert unrelated.best is not None and unrelated.best.score < 0.2


@pytest.mark.django_db
def test_pinned_and_labelled_thresholds_win_over_the_automatic_ones() -> None:
    bot = shop_bot()
    matching.calibrate_now(bot)
    bot.refresh_from_db()
    automatic = matching.match(bot, "how do I reset my password")
    assert automatic.decision == "answer"
    for source in (Bot.ThresholdSource.PINNED, Bot.ThresholdSource.LABELLED):
        bot.threshold_source, bot.answer_threshold, bot.reference_threshold = source, 0.9999, 0.01
        bot.save()
        result = matching.match(bot, "how do I reset my password")
        assert result.thresholds is not None and result.thresholds.source == source
        assert (result.thresholds.answer, result.thresholds.reference) == (0.9999, 0.01)
        assert result.decision == "reference"


def test_thresholds_before_the_first_calibration_are_the_bots_own() -> None:
    bot = Bot(name="b", answer_threshold=0.7, reference_threshold=0.3)
    assert thresholds_for(bot, None) == calibration_services.Thresholds(0.7, 0.3, "uncalibrated")
    stored = Calibrated(calibrator=None, answer_threshold=None, reference_threshold=0.4, kb_revision=1)  # type: ignore[arg-type]
    never = thresholds_for(bot, stored)
    assert never.source == "auto" and never.answer > 1 and never.reference == 0.4


@pytest.mark.django_db
def test_a_knowledge_base_too_small_is_recorded_as_such_and_not_served() -> None:
    bot = make_bot()
    entry_upsert(bot=bot, question="How long does shipping take?", answer="3 days")
    row = matching.calibrate_now(bot)
    assert row.status == Calibration.Status.IMPOSSIBLE and "two entries" in row.message
    bot.refresh_from_db()
    assert bot.calibration_stamp == 0
    assert matching.match(bot, "shipping time").thresholds.source == "uncalibrated"


@pytest.mark.django_db
def test_a_failed_rerun_keeps_the_working_calibration(monkeypatch: pytest.MonkeyPatch) -> None:
    bot = shop_bot()
    good = matching.calibrate_now(bot)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(calibration, "calibrate", broken)
    entry_upsert(bot=bot, external_id="gift", question="Do you sell gift cards?", answer="Yes")
    snapshot = matching.snapshot_for(bot.pk)  # a new revision: a re-run is due
    job = calibration_services.calibration_job(bot.pk, snapshot.revision, snapshot.model, snapshot.ranker)
    with pytest.raises(RuntimeError):
        job()
    row = Calibration.objects.get(bot=bot)
    assert row.status == Calibration.Status.OK and row.answer_threshold == good.answer_threshold
    assert "the last re-run failed: RuntimeError: out of memory" in row.message


@pytest.mark.django_db
def test_a_failure_with_nothing_to_keep_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    bot = shop_bot()
    monkeypatch.setattr(calibration, "calibrate", lambda *a, **k: (_ for _ in ()).throw(ValueError("bad")))
    snapshot = matching.snapshot_for(bot.pk)
    with pytest.raises(ValueError):
        calibration_services.calibration_job(bot.pk, snapshot.revision, snapshot.model, snapshot.ranker)()
    row = Calibration.objects.get(bot=bot)
    assert row.status == Calibration.Status.FAILED and row.message == "ValueError: bad"


def test_a_calibration_cut_short_by_shutdown_stores_no_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    failures: list[tuple[object, ...]] = []
    monkeypatch.setattr(calibration_services, "calibration_needed", lambda *args: True)
    monkeypatch.setattr(calibration_services, "bot_calibrate", lambda **kwargs: runtime().part(Late))
    monkeypatch.setattr(calibration_services, "_failure_store", lambda *args: failures.append(args))
    job = calibration_services.calibration_job(1, 1, "model", ranker=None)  # type: ignore[arg-type]
    outcome: list[BaseException] = []

    class JobUnderWay:  # made last, so closed first: the job runs on while the runtime closes
        def close(self) -> None:
            try:
                job()
            except BaseException as err:
                outcome.append(err)

    runtime().part(JobUnderWay)
    runtime().close()
    assert [type(err) for err in outcome] == [RuntimeClosed]
    assert failures == []  # the next process calibrates


class Late:
    """A part asked for too late."""


@pytest.mark.django_db(transaction=True)
@pytest.mark.auto_calibrate
def test_an_edit_recalibrates_in_the_background_while_the_old_calibration_serves() -> None:
    bot = shop_bot()
    first = matching.calibrate_now(bot)
    assert runner().wait(60)
    # Hold the background thread so the re-calibration can't start yet.
    release = threading.Event()
    runner().schedule(-1, lambda: release.wait(30) and None)
    entry_upsert(
        bot=bot,
        external_id="gift",
        question="Do you sell gift cards?",
        answer="Yes",
        alternatives=["gift voucher", "can I buy a present card", "gift certificate"],
    )
    bot.refresh_from_db()
    assert bot.kb_revision > first.kb_revision
    meanwhile = matching.snapshot_for(bot.pk)  # the new index, with the old calibration
    assert meanwhile.revision == bot.kb_revision
    assert meanwhile.calibrated is not None and meanwhile.calibrated.kb_revision == first.kb_revision
    assert matching.match(bot, "how do I reset my password").thresholds.source == "auto"
    release.set()
    assert runner().wait(60)
    row = Calibration.objects.get(bot=bot)
    assert row.kb_revision == bot.kb_revision and row.counts["in_scope"] == 28
    after = matching.snapshot_for(bot.pk)
    assert after.calibrated is not None and after.calibrated.kb_revision == bot.kb_revision


@pytest.mark.django_db
def test_when_the_question_cannot_be_embedded_it_is_matched_on_its_words(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bot = shop_bot()
    matching.calibrate_now(bot)
    bot.refresh_from_db()

    class Broken:
        def submit(self, text: str) -> Future:
            future: Future = Future()
            future.set_exception(RuntimeError("embedding provider down"))
            return future

    monkeypatch.setattr(embeddings, "get_batcher", lambda name=None: Broken())
    result = matching.match(bot, "I forgot my password")
    assert result.lexical_only
    assert result.best is not None
    assert Entry.objects.get(pk=result.best.entry_id).external_id == "password"
    assert matching.match(bot, "zzz qqq").decision == "none"  # no word in common: nothing to go on


@pytest.mark.django_db(transaction=True)
async def test_the_async_match_falls_back_to_words_too(monkeypatch: pytest.MonkeyPatch) -> None:
    bot = await sync_to_async(shop_bot)()

    class Broken:
        def submit(self, text: str) -> Future:
            future: Future = Future()
            future.set_exception(RuntimeError("embedding provider down"))
            return future

    monkeypatch.setattr(embeddings, "loaded_batcher", lambda name=None: Broken())
    result = await matching.amatch(bot, "refund an item please")
    assert result.lexical_only and result.best is not None
    external = await sync_to_async(lambda: Entry.objects.get(pk=result.best.entry_id).external_id)()
    assert external == "refund"


def test_the_reference_vectors_are_kept_on_disk_and_reused(
    tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.EMBEDDING_CACHE_DIR = str(tmp_path)
    model = embeddings.model_name()
    first = calibration_services.reference_for(model)
    assert len(list(tmp_path.glob("reference-*.npy"))) == 1
    assert first.negatives.shape == (len(calibration.out_of_scope_questions()), embeddings.get_encoder().dim)

    def no_encoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("encoded again")

    monkeypatch.setattr(embeddings, "encode_documents", no_encoding)
    again = calibration_services.References().get(model)  # as the next process would: from disk
    assert np.array_equal(again.paraphrases, first.paraphrases) and again.pairs == first.pairs
