from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import override_settings

from chatbot.models import Bot
from chatbot.runtime import runtime
from knowledge import embeddings, multilingual_models
from knowledge.docs import retrieval
from knowledge.docs.retrieval import PassageHit, passages_for_prompt
from knowledge.docs.retrieval_store import PassageFits, PassageIndexes, searchable_for
from knowledge.docs.services import source_add_file, source_process
from knowledge.docs.services_index import documents_model, documents_touch
from knowledge.document_models import Passage, PassageEmbedding, Source
from knowledge.services import bot_embedding_model, entry_upsert
from tests.factories import make_bot

pytestmark = pytest.mark.django_db(transaction=True)

HELP_CENTER: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "https://help.example.com/returns": (
        "Returns and refunds",
        [
            (
                "Returning an item",
                "You can return any unworn watch within 30 days of delivery. Print the prepaid return "
                "label from your account and drop the parcel at any post office.",
            ),
            (
                "Refunds",
                "Refunds are paid to your original payment method within five business days after the "
                "returned parcel reaches our warehouse.",
            ),
        ],
    ),
    "https://help.example.com/shipping": (
        "Shipping",
        [
            (
                "Delivery times",
                "Standard delivery takes three to five business days. Express delivery arrives the next "
                "working day when you order before 2 pm.",
            ),
            (
                "Shipping costs",
                "Shipping is free on orders over 50 euros. Otherwise standard delivery costs 4.95 euros "
                "and express delivery 9.95 euros.",
            ),
            (
                "International shipping",
                "We ship to all countries of the European Union, Switzerland and the United Kingdom. "
                "Customs duties outside the EU are paid by the recipient.",
            ),
        ],
    ),
    "https://help.example.com/warranty": (
        "Warranty",
        [
            (
                "What the warranty covers",
                "Every watch has a two-year warranty against manufacturing defects of the movement and "
                "the case. Scratches, water damage from misuse and worn straps are not covered.",
            ),
            (
                "Making a warranty claim",
                "Send a photo of the defect and your order number to our support team. We repair or "
                "replace the watch free of charge within three weeks.",
            ),
        ],
    ),
    "https://help.example.com/payment": (
        "Payment",
        [
            (
                "Payment methods",
                "We accept Visa, Mastercard, American Express, PayPal and Apple Pay. Cash on delivery "
                "is not available.",
            ),
            (
                "Invoices",
                "Your invoice is attached to the order confirmation email and can be downloaded from "
                "the orders page of your account at any time.",
            ),
        ],
    ),
    "https://help.example.com/zh/returns": (
        "退货与退款",
        [
            (
                "退货",
                "收到商品后三十天内，未佩戴的手表可以退货。请在账户中打印预付费退货标签，然后到邮局寄出包裹。",
            ),
            ("退款", "我们收到退回的包裹后，会在五个工作日内把款项退回到您原来的付款方式。"),
        ],
    ),
    "https://help.example.com/zh/shipping": (
        "配送",
        [
            ("配送时间", "标准配送需要三到五个工作日。下午两点前下单，快递次日送达。"),
            ("运费", "订单满五十欧元免运费，否则标准配送运费为四点九五欧元。"),
        ],
    ),
}


def add_page(
    bot: Bot, url: str, title: str, sections: list[tuple[str, str]], *, status: str = "ready"
) -> Source:
    source = Source.objects.create(bot=bot, kind=Source.Kind.URL, url=url, title=title, status=status)
    # Embedded under their heading path with the model their language brings, as ingestion
    # does (knowledge.docs.services_index).
    texts = [f"{title} › {heading}\n{text}" for heading, text in sections]
    model = documents_model(bot.pk, [text for _, text in sections])
    vectors = embeddings.encode_passages(texts, model)
    for position, ((heading, text), vector) in enumerate(zip(sections, vectors, strict=True)):
        passage = Passage.objects.create(
            source=source,
            bot=bot,
            position=position,
            title=title,
            headings=[title, heading],
            text=text,
            tokens=len(text.split()),
            text_hash=Passage.hash_text(text),
        )
        PassageEmbedding.objects.create(
            passage=passage, model_name=model, dim=len(vector), vector=vector.astype("<f4").tobytes()
        )
    documents_touch(bot.pk)
    return source


@pytest.fixture
def help_center() -> Bot:
    # One model for both languages, as the bot's documents choose it.
    bot = make_bot(name="Watches", embedding_model="multilingual-e5-small")
    for url, (title, sections) in HELP_CENTER.items():
        add_page(bot, url, title, sections)
    return bot


def search(bot: Bot, question: str, **kwargs: Any) -> list[PassageHit]:
    return async_to_sync(retrieval.passages_search)(bot, question, **kwargs)


@pytest.mark.parametrize(
    ("question", "url"),
    [
        ("How do I return a watch?", "https://help.example.com/returns"),
        ("How much is shipping?", "https://help.example.com/shipping"),
        ("Do you deliver to Switzerland?", "https://help.example.com/shipping"),
        ("Which payment methods do you accept?", "https://help.example.com/payment"),
        ("Where can I find my invoice?", "https://help.example.com/payment"),
        ("My watch stopped working after a year, is that covered?", "https://help.example.com/warranty"),
        ("我想退货，怎么办？", "https://help.example.com/zh/returns"),
        ("运费是多少", "https://help.example.com/zh/shipping"),
        ("退款多久到账", "https://help.example.com/zh/returns"),
    ],
)
def test_it_finds_the_page_that_answers_a_natural_question(help_center: Bot, question: str, url: str) -> None:
    hits = search(help_center, question)
    assert hits, question
    assert hits[0].url == url
    assert hits == sorted(hits, key=lambda h: -h.score)
    assert 0 < hits[0].confidence <= 1
    passage = Passage.objects.get(pk=hits[0].passage_id)
    assert (hits[0].text, hits[0].headings, hits[0].source_id) == (
        passage.text,
        tuple(passage.headings),
        passage.source_id,
    )


@pytest.mark.parametrize(
    "question",
    ["What's the weather like in Paris tomorrow?", "How do I bake a chocolate cake?", "明天北京会下雨吗"],
)
def test_it_returns_nothing_for_an_unrelated_question(help_center: Bot, question: str) -> None:
    assert search(help_center, question) == []


def test_it_returns_nothing_for_a_bot_without_passages_and_builds_no_fit() -> None:
    bot = make_bot()
    assert search(bot, "How long does delivery take?") == []
    assert searchable_for(bot.pk).fitted is None


def test_a_source_being_refetched_or_that_failed_to_keeps_serving_its_passages(help_center: Bot) -> None:
    for status in (Source.Status.RUNNING, Source.Status.FAILED):
        Source.objects.filter(url="https://help.example.com/payment").update(status=status)
        hits = search(help_center, "Which payment methods do you accept?")
        assert hits[0].url == "https://help.example.com/payment"


def test_it_honours_the_limit(help_center: Bot) -> None:
    assert len(search(help_center, "How much is shipping?", limit=1)) == 1
    assert search(help_center, "How long does delivery take?", limit=0) == []
    assert search(help_center, "   ") == []


class BrokenBatcher:
    def submit(self, text: str) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_exception(RuntimeError("the model crashed"))
        return future


def test_it_searches_by_words_when_the_question_cannot_be_embedded(
    help_center: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    searchable_for(help_center.pk)  # the index and its fit are made while the model works
    monkeypatch.setattr(embeddings, "loaded_batcher", lambda name=None: BrokenBatcher())
    hits = search(help_center, "prepaid return label post office")
    assert hits and hits[0].url == "https://help.example.com/returns"
    assert search(help_center, "What's the weather like in Paris tomorrow?") == []


def test_it_searches_by_words_when_the_model_cannot_even_load(
    help_center: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    searchable_for(help_center.pk)

    def unavailable(name: str | None = None) -> Any:
        raise OSError("model files missing")

    monkeypatch.setattr(embeddings, "loaded_batcher", lambda name=None: None)
    monkeypatch.setattr(embeddings, "get_batcher", unavailable)
    hits = search(help_center, "prepaid return label post office")
    assert hits and hits[0].url == "https://help.example.com/returns"


def test_it_searches_by_words_when_the_model_fails_before_the_first_fit(
    help_center: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(name: str | None = None) -> Any:
        raise OSError("model files missing")

    monkeypatch.setattr(embeddings, "get_encoder", unavailable)
    monkeypatch.setattr(embeddings, "get_batcher", unavailable)
    monkeypatch.setattr(embeddings, "loaded_batcher", lambda name=None: None)
    hits = search(help_center, "prepaid return label post office")
    assert hits and hits[0].url == "https://help.example.com/returns"
    assert searchable_for(help_center.pk).fitted is None


def test_the_index_is_kept_until_the_passages_change_then_rebuilt_and_refitted(help_center: Bot) -> None:
    first = searchable_for(help_center.pk)
    assert first.fitted is not None
    english = first.fitted.by_script[False]  # the Chinese pages are too few to fit on
    assert 0 < english.threshold <= 1 and english.counts["in_scope"] >= 10
    assert english.estimated["precision"] >= help_center.target_precision
    assert set(first.fitted.nulls) == {False, True}
    assert searchable_for(help_center.pk) is first
    search(help_center, "How much is shipping?")
    assert runtime().part(PassageIndexes).by_bot[help_center.pk] is first

    add_page(
        help_center,
        "https://help.example.com/care",
        "Care guide",
        [
            (
                "Cleaning",
                "Wipe the case with a soft dry cloth; never use solvents or put the watch in a dishwasher.",
            )
        ],
    )
    second = searchable_for(help_center.pk)
    assert second is not first and len(second.index) == len(first.index) + 1
    assert second.fitted is not None and second.fitted is not first.fitted  # refitted at once here
    assert search(help_center, "How should I clean my watch?")[0].url == "https://help.example.com/care"


@override_settings(KB_AUTO_CALIBRATE=True)
def test_after_the_first_fit_refits_run_in_the_background_while_the_old_fit_serves(help_center: Bot) -> None:
    first = searchable_for(help_center.pk)
    gone = Source.objects.get(url="https://help.example.com/warranty")  # as a sync finds a page gone
    gone.passages.all().delete()
    Source.objects.filter(pk=gone.pk).update(status=Source.Status.FAILED)
    documents_touch(help_center.pk)
    second = searchable_for(help_center.pk)
    assert len(second.index) == len(first.index) - 2
    runtime().part(PassageFits).wait(30)
    latest = runtime().part(PassageIndexes).by_bot[help_center.pk]
    assert latest.index is second.index
    assert latest.fitted is not None and latest.fitted is not first.fitted


def test_a_bot_with_too_few_passages_to_fit_on_still_finds_them() -> None:
    bot = make_bot()
    add_page(
        bot,
        "https://shop.example.com/returns",
        "Returns",
        [("Returns", "You can return any item within 30 days for a full refund.")],
    )
    assert searchable_for(bot.pk).fitted.by_script == {}
    assert search(bot, "Can I return an item?")[0].url == "https://shop.example.com/returns"
    assert search(bot, "How do I bake a chocolate cake?") == []


def test_chinese_pages_of_a_bot_with_english_entries_are_searched_with_a_model_that_reads_them() -> None:
    bot = make_bot()
    for question in ("Where is my order?", "How do I get a refund?", "Do you ship abroad?"):
        entry_upsert(bot=bot, question=question, answer="See our help pages.")
    for name in ("returns", "shipping"):  # through ingestion, which chooses their model
        title, sections = HELP_CENTER[f"https://help.example.com/zh/{name}"]
        markdown = "\n\n".join([f"# {title}", *(f"## {heading}\n\n{text}" for heading, text in sections)])
        source_process(source_add_file(bot=bot, filename=f"{name}.md", data=markdown.encode()).pk)

    assert bot_embedding_model(bot.pk) == embeddings.DEFAULT_MODEL  # the entries' model
    assert searchable_for(bot.pk).model == multilingual_models.E5  # the pages'
    assert search(bot, "我想退货，怎么办？")[0].title == "退货与退款"
    assert search(bot, "明天北京会下雨吗") == []


def hit(n: int, words: int) -> PassageHit:
    return PassageHit(n, 1, "", "", (), " ".join(["word"] * words), 0.5, 0.9)


@pytest.mark.parametrize(
    ("budget", "kept"),
    [(0, []), (12, []), (13, [1]), (26, [1, 2]), (50, [1, 2, 3]), (1000, [1, 2, 3])],
)
def test_passages_for_prompt_keeps_the_most_relevant_within_the_budget(budget: int, kept: list[int]) -> None:
    hits = [hit(1, 10), hit(2, 10), hit(3, 10)]  # 13 tokens each
    assert [h.passage_id for h in passages_for_prompt(hits, token_budget=budget)] == kept


def test_passages_for_prompt_stops_at_the_first_passage_that_does_not_fit() -> None:
    hits = [hit(1, 10), hit(2, 100), hit(3, 1)]
    assert [h.passage_id for h in passages_for_prompt(hits, token_budget=30)] == [1]
