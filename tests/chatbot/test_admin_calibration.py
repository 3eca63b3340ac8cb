"""The calibration panel, the "Recalibrate now" button and the threshold rules of the bot's
admin page."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from chatbot.models import Bot
from knowledge import embeddings
from knowledge.confidence import FEATURES, Calibrator
from knowledge.models import Calibration, Entry
from knowledge.services import entry_upsert
from tests.factories import make_bot

pytestmark = pytest.mark.django_db

CALIBRATOR = Calibrator((1.0,) * len(FEATURES), 0.0, (0.0,) * len(FEATURES), (1.0,) * len(FEATURES))
CURVE = [
    {"threshold": 0.25, "precision": 0.7, "coverage": 0.9, "false_answer_rate": 0.3},
    {"threshold": 0.5, "precision": 0.9, "coverage": 0.8, "false_answer_rate": 0.1},
    {"threshold": 0.75, "precision": 0.975, "coverage": 0.6, "false_answer_rate": 0.02},
]
KB = {
    "track": [
        "How do I track my order?",
        "Where is my parcel?",
        "Where is my order?",
        "Has my package shipped?",
    ],
    "returns": ["How do I return an item?", "Can I send it back?", "I want a refund", "How do returns work?"],
    "hours": ["When are you open?", "What are your opening hours?", "Are you open on Sunday?", "Shop hours?"],
    "pay": [
        "Which payment methods do you accept?",
        "Can I pay by card?",
        "Do you take PayPal?",
        "How to pay?",
    ],
}


@pytest.fixture
def shop() -> Bot:
    bot = make_bot(name="Shop", answer_threshold=0.8, reference_threshold=0.25)
    for key, (question, *alternatives) in KB.items():
        entry_upsert(
            bot=bot, external_id=key, question=question, answer=f"About {key}.", alternatives=alternatives
        )
    bot.refresh_from_db()
    return bot


def entry(bot: Bot, key: str) -> Entry:
    return Entry.objects.get(bot=bot, external_id=key)


def store_calibration(bot: Bot, **fields: Any) -> Calibration:
    defaults: dict[str, Any] = {
        "kb_revision": bot.kb_revision,
        "status": Calibration.Status.OK,
        "target_precision": 0.95,
        "calibrator": CALIBRATOR.as_dict(),
        "answer_threshold": 0.62,
        "reference_threshold": 0.3,
        "curve": CURVE,
        "counts": {
            "in_scope": 16,
            "in_scope_right": 14,
            "paraphrases": 12,
            "paraphrases_right": 9,
            "verbatim": 5,
            "not_answered": 16,
            "elsewhere": 120,
        },
        "estimated": {"threshold": 0.62, "precision": 0.953, "coverage": 0.712, "false_answer_rate": 0.018},
        "seconds": 0.4,
    }
    return Calibration.objects.create(bot=bot, model_name=embeddings.model_name(), **{**defaults, **fields})


def change_page(client: Client, bot: Bot, **params: str) -> str:
    response = client.get(reverse("admin:chatbot_bot_change", args=[bot.pk]), params)
    assert response.status_code == 200
    return response.content.decode()


def text_of(page: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>(.*?)</', page, re.S)
    assert found, element_id
    return " ".join(found.group(1).split())


def test_it_shows_the_thresholds_in_force_the_run_and_the_estimates(admin_client: Client, shop: Bot) -> None:
    store_calibration(shop)
    page = change_page(admin_client, shop)
    assert text_of(page, "calibration-answer") == "0.62"
    assert text_of(page, "calibration-reference") == "0.3"
    assert text_of(page, "calibration-origin") == "automatic (calibrated from the knowledge base)"
    assert text_of(page, "calibration-freshness") == "up to date"
    counts = " ".join(re.search(r'id="calibration-counts">(.*?)</p>', page, re.S).group(1).split())
    assert "16 phrasings were asked" in counts
    assert "14 ranked their own entry first" in counts
    assert "12 shipped paraphrases stood in for entries with a single phrasing (9 ranked right)" in counts
    assert "5 phrasings were asked a word short" in counts
    estimated = " ".join(re.search(r'id="calibration-estimated">(.*?)</p>', page, re.S).group(1).split())
    assert "precision <strong>95.3%</strong>, coverage <strong>71.2%</strong>" in estimated
    assert 'action="' + reverse("admin:chatbot_bot_recalibrate", args=[shop.pk]) + '"' in page


def test_it_warns_that_the_estimate_is_optimistic_when_most_entries_have_one_phrasing(
    admin_client: Client, shop: Bot
) -> None:
    row = store_calibration(shop)
    assert "calibration-warning" not in change_page(admin_client, shop)  # no such counts: no warning
    row.counts = {**row.counts, "entries": 4, "single_phrasing": 3}
    row.save()
    warnings = re.findall(r'<p class="calibration-warning">(.*?)</p>', change_page(admin_client, shop), re.S)
    assert len(warnings) == 1
    assert warnings[0].startswith("3 of 4 entries have a single phrasing")
    assert "Add two or three alternative phrasings" in warnings[0]
    row.counts = {**row.counts, "single_phrasing": 1}
    row.save()
    assert "calibration-warning" not in change_page(admin_client, shop)


def test_it_draws_the_curve_as_a_table_and_a_chart(admin_client: Client, shop: Bot) -> None:
    store_calibration(shop)
    page = change_page(admin_client, shop)
    rows = re.findall(
        r"<tr( class=\"answering\")?>\s*<td>(.*?)</td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td>", page
    )
    assert rows == [
        ("", "0.25", "70.0%", "90.0%", "30.0%"),
        ("", "0.5", "90.0%", "80.0%", "10.0%"),
        (' class="answering"', "0.75", "97.5%", "60.0%", "2.0%"),  # at or above the 0.62 in force
    ]
    chart = re.search(r'<div id="calibration-chart">(<svg.*?</svg>)</div>', page, re.S).group(1)
    assert chart.count("<polyline") == 2
    assert '<polyline class="line precision"' in chart and '<polyline class="line coverage"' in chart
    assert "0.75 · precision: 97.5%" in chart  # each point's tooltip
    assert "<script" not in page.split('id="calibration"')[1].split("</fieldset>")[0]


def test_it_lists_confused_entries_with_links_and_examples(admin_client: Client, shop: Bot) -> None:
    track, returns = entry(shop, "track"), entry(shop, "returns")
    confused = [
        {"entry": track.pk, "confused_with": returns.pk, "phrasings": 2, "examples": ["Where is my parcel?"]},
        {"entry": returns.pk, "confused_with": 999_999, "phrasings": 1, "examples": ["I want a refund"]},
    ]
    store_calibration(shop, confused=confused)
    page = change_page(admin_client, shop)
    table = re.search(r'<table id="calibration-confused".*?</table>', page, re.S).group(0)
    track_link = (
        f'<a href="{reverse("admin:knowledge_entry_change", args=[track.pk])}">How do I track my order?</a>'
    )
    returns_link = (
        f'<a href="{reverse("admin:knowledge_entry_change", args=[returns.pk])}">How do I return an item?</a>'
    )
    cells = [" ".join(cell.split()) for cell in re.findall(r"<td>(.*?)</td>", table, re.S)]
    assert cells == [
        track_link,
        returns_link,
        "2",
        "&ldquo;Where is my parcel?&rdquo;",
        returns_link,
        "#999999 (deleted)",
        "1",
        "&ldquo;I want a refund&rdquo;",
    ]
    assert "Add phrasings that tell the two apart" in page


def test_it_says_when_the_bot_is_not_calibrated_yet(admin_client: Client, shop: Bot) -> None:
    page = change_page(admin_client, shop)
    assert "<strong>Not calibrated yet</strong>" in page
    assert text_of(page, "calibration-origin").startswith("not calibrated yet")
    assert (text_of(page, "calibration-answer"), text_of(page, "calibration-reference")) == ("0.8", "0.25")
    assert 'id="calibration-curve"' not in page


def test_it_explains_a_knowledge_base_too_small_to_calibrate(admin_client: Client, shop: Bot) -> None:
    store_calibration(shop, status=Calibration.Status.IMPOSSIBLE, message="at least two entries are needed")
    page = change_page(admin_client, shop)
    assert "<strong>Too little to calibrate from</strong>" in page
    assert "at least two entries are needed. Add more entries, or more phrasings to each" in page
    assert text_of(page, "calibration-origin").startswith("not calibrated yet")
    assert 'id="calibration-chart"' not in page


def test_it_shows_why_a_calibration_failed(admin_client: Client, shop: Bot) -> None:
    store_calibration(shop, status=Calibration.Status.FAILED, message="RuntimeError: model gone")
    page = change_page(admin_client, shop)
    assert "The calibration failed: RuntimeError: model gone" in page


def test_it_says_when_no_threshold_reaches_the_target(admin_client: Client, shop: Bot) -> None:
    store_calibration(shop, answer_threshold=None, estimated={})
    page = change_page(admin_client, shop)
    assert text_of(page, "calibration-answer") == "never"
    assert "the bot never answers on its own; entries are still given to the LLM as references" in page
    assert 'id="calibration-estimated"' not in page
    assert 'class="answering"' not in page


@pytest.mark.parametrize(
    ("auto", "freshness"),
    [(True, "re-running"), (False, "out of date (automatic calibration is off: recalibrate now)")],
)
def test_it_says_when_the_knowledge_base_changed_since(
    admin_client: Client, shop: Bot, settings: Any, auto: bool, freshness: str
) -> None:
    store_calibration(shop, kb_revision=shop.kb_revision - 1)
    settings.KB_AUTO_CALIBRATE = auto
    page = change_page(admin_client, shop)
    assert text_of(page, "calibration-freshness") == freshness
    assert (
        f"on knowledge-base revision {shop.kb_revision - 1}; the bot is at revision {shop.kb_revision}"
        in page
    )


def test_the_button_stores_a_new_calibration_and_reports_it(admin_client: Client, shop: Bot) -> None:
    url = reverse("admin:chatbot_bot_recalibrate", args=[shop.pk])
    response = admin_client.post(url)
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:chatbot_bot_change", args=[shop.pk])
    row = Calibration.objects.get(bot=shop, model_name=embeddings.model_name())
    assert (row.status, row.kb_revision, row.counts["in_scope"]) == ("ok", shop.kb_revision, 16)
    page = admin_client.get(response["Location"]).content.decode()
    assert "Calibrated on 16 phrasings in" in page
    assert text_of(page, "calibration-freshness") == "up to date"


def test_the_button_needs_a_post(admin_client: Client, shop: Bot) -> None:
    response = admin_client.get(reverse("admin:chatbot_bot_recalibrate", args=[shop.pk]))
    assert response.status_code == 405
    assert not Calibration.objects.exists()


def test_staff_without_change_permission_get_no_button_and_a_403(client: Client, shop: Bot) -> None:
    user = get_user_model().objects.create_user("viewer", password="pw-for-tests-123", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename="view_bot"))
    client.force_login(user)
    page = change_page(client, shop)
    assert 'id="calibration-in-force"' in page
    assert "Recalibrate now" not in page
    response = client.post(reverse("admin:chatbot_bot_recalibrate", args=[shop.pk]))
    assert response.status_code == 403
    assert not Calibration.objects.exists()


def form_data(bot: Bot, **changes: Any) -> dict[str, Any]:
    fields = ["name", "greeting", "system_prompt", "fallback_reply", "llm_provider", "llm_model"]
    fields += ["threshold_source", "target_precision", "answer_threshold", "reference_threshold"]
    fields += ["temperature", "top_p", "max_tokens"]
    data = {name: getattr(bot, name) for name in fields}
    data.update(is_active="on", allowed_origins=json.dumps(bot.allowed_origins))
    return {**data, **changes}


def save(client: Client, bot: Bot, **changes: Any) -> Bot:
    response = client.post(reverse("admin:chatbot_bot_change", args=[bot.pk]), form_data(bot, **changes))
    assert response.status_code == 302, response.context["adminform"].form.errors
    return Bot.objects.get(pk=bot.pk)


@pytest.mark.parametrize(
    ("changes", "source"),
    [
        ({"answer_threshold": 0.7}, "pinned"),
        ({"reference_threshold": 0.4}, "pinned"),
        ({"name": "Renamed"}, "auto"),
        ({"answer_threshold": 0.7, "threshold_source": "labelled"}, "labelled"),  # an explicit choice wins
    ],
)
def test_editing_a_threshold_while_automatic_pins_it(
    admin_client: Client, changes: dict[str, Any], source: str
) -> None:
    bot = make_bot()
    saved = save(admin_client, bot, **changes)
    assert saved.threshold_source == source
    if "answer_threshold" in changes:
        assert saved.answer_threshold == changes["answer_threshold"]


def test_the_threshold_fields_say_when_they_apply(admin_client: Client) -> None:
    page = change_page(admin_client, make_bot())
    assert page.count("Used only when the source is Pinned or Labelled") == 2
    assert "Editing either threshold while this is Automatic switches it to Pinned." in page
    assert "saving a new value re-calibrates at once" in page


def test_the_page_says_the_thresholds_were_pinned(admin_client: Client) -> None:
    bot = make_bot()
    response = admin_client.post(
        reverse("admin:chatbot_bot_change", args=[bot.pk]), form_data(bot, answer_threshold=0.7), follow=True
    )
    assert "The thresholds you edited are now pinned" in response.content.decode()


def test_a_new_target_precision_recalibrates_at_once(
    admin_client: Client, shop: Bot, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    store_calibration(shop, target_precision=0.95, kb_revision=0)
    with django_capture_on_commit_callbacks(execute=True):
        saved = save(admin_client, shop, target_precision=0.9)
    assert saved.threshold_source == "auto"
    row = Calibration.objects.get(bot=shop)
    assert (row.status, row.target_precision, row.kb_revision) == ("ok", 0.9, shop.kb_revision)


def test_other_edits_do_not_recalibrate(
    admin_client: Client, shop: Bot, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        save(admin_client, shop, name="Renamed")
    assert callbacks == []
    assert not Calibration.objects.exists()


def test_trying_a_question_shows_confidences_and_the_thresholds_source(
    admin_client: Client, shop: Bot
) -> None:
    store_calibration(shop)
    page = change_page(admin_client, shop, **{"try": "Where is my parcel?"})
    assert "<th>Confidence (probability right)</th>" in page
    assert text_of(page, "try-decision") in {"answer", "reference", "none"}
    assert (text_of(page, "try-answer"), text_of(page, "try-reference")) == ("0.62", "0.3")
    assert text_of(page, "try-source") == "automatic (calibrated from the knowledge base)"
    assert 'id="try-lexical-only"' not in page


def test_trying_a_question_shows_pinned_thresholds(admin_client: Client, shop: Bot) -> None:
    Bot.objects.filter(pk=shop.pk).update(threshold_source="pinned", answer_threshold=0.7)
    page = change_page(admin_client, shop, **{"try": "Where is my parcel?"})
    assert (text_of(page, "try-answer"), text_of(page, "try-source")) == ("0.7", "pinned by an admin")


def test_trying_a_question_says_when_it_matched_on_words_only(
    admin_client: Client, shop: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken:
        def submit(self, text: str) -> Future[Any]:
            failed: Future[Any] = Future()
            failed.set_exception(RuntimeError("model gone"))
            return failed

    monkeypatch.setattr(embeddings, "get_batcher", lambda name=None: Broken())
    page = change_page(admin_client, shop, **{"try": "Where is my parcel?"})
    assert "Matched on words only" in page
