from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from django.test import override_settings

from chatbot.models import Bot
from knowledge import embeddings, multilingual_models
from knowledge.docs.errors import BlockedAddress, DocumentError, TooLarge
from knowledge.docs.services import (
    documents_revision,
    passages_embed,
    source_add_file,
    source_add_url,
    source_process,
    source_remove,
    source_sync,
)
from knowledge.docs.services_index import documents_model
from knowledge.models import Passage, PassageEmbedding, Source
from knowledge.services import bot_embedding_model, entry_upsert
from tests.factories import make_bot
from tests.knowledge.docs.site_server import SiteServer, page, text

pytestmark = pytest.mark.django_db

CARE_MD = b"""# Care guide

Our leather bags last for decades when they are looked after.

## Cleaning

Wipe the leather with a damp cloth. Never put a bag in the washing machine.

## Storing

Keep the bag stuffed with paper in its dust bag, away from sunlight and radiators.
"""

WARRANTY_HTML = """<!doctype html><html><head><title>Warranty terms</title></head><body>
<nav><a href="/">Home</a> <a href="/shop">Shop</a> <a href="/cart">Cart</a></nav>
<main><article>
<h1>Warranty terms</h1>
<p>Every bag carries a two-year warranty against defects in materials and workmanship.</p>
<h2>How to claim</h2>
<p>Email support with your order number and a photo of the defect. We repair or replace it
free of charge within two weeks of receiving the bag.</p>
</article></main>
<footer>Copyright 2026 Example Leather Ltd. All rights reserved.</footer>
</body></html>"""


CARE_ZH_MD = """# 保养指南

好好保养，我们的皮包可以用几十年。

## 清洁

用湿布擦拭皮面。千万不要把包放进洗衣机。

## 存放

包里塞满纸，放进防尘袋，远离阳光和暖气片。
""".encode()


def help_page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><title>{title}</title></head><body><main><article>"
        f"<h1>{title}</h1><p>{body}</p></article></main></body></html>"
    )


def vector_ids(source: Source) -> list[int]:
    return list(
        PassageEmbedding.objects.filter(passage__source=source).order_by("id").values_list("id", flat=True)
    )


@pytest.fixture
def bot() -> Bot:
    return make_bot()


@pytest.fixture
def site() -> Iterator[SiteServer]:
    with override_settings(DOCS_FETCH_ALLOW_PRIVATE=True), SiteServer() as server:
        yield server


def test_it_indexes_a_markdown_file_into_passages_with_headings_and_vectors(bot: Bot) -> None:
    source = source_add_file(bot=bot, filename="care.md", data=CARE_MD)
    assert source.status == Source.Status.QUEUED and source.size == len(CARE_MD)

    source = source_process(source.pk)

    assert (source.status, source.last_error, source.title) == ("ready", "", "Care guide")
    assert source.indexed_at is not None and len(source.content_hash) == 64
    passages = list(source.passages.order_by("position"))
    # The H1 is the title; the heading path is what lies under it.
    assert [p.headings for p in passages] == [[], ["Cleaning"], ["Storing"]]
    assert "damp cloth" in passages[1].text and all(p.title == "Care guide" for p in passages)
    assert all(p.bot_id == bot.pk and p.tokens > 0 for p in passages)
    rows = PassageEmbedding.objects.filter(passage__source=source)
    assert rows.count() == 3 and {row.model_name for row in rows} == {embeddings.DEFAULT_MODEL}
    for row in rows:
        vector = np.frombuffer(row.vector, dtype="<f4")
        assert vector.shape == (row.dim,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-3


def test_it_indexes_an_html_file_without_its_navigation_and_footer(bot: Bot) -> None:
    source = source_add_file(bot=bot, filename="warranty.html", data=WARRANTY_HTML.encode())
    source = source_process(source.pk)

    assert (source.status, source.title) == ("ready", "Warranty terms")
    text_all = " ".join(source.passages.values_list("text", flat=True))
    assert "two-year warranty" in text_all and "free of charge" in text_all
    assert "Copyright" not in text_all and "Cart" not in text_all
    assert ["How to claim"] in list(source.passages.values_list("headings", flat=True))


def test_a_failing_reindex_keeps_the_old_passages(bot: Bot) -> None:
    source = source_process(source_add_file(bot=bot, filename="care.md", data=CARE_MD).pk)
    before = list(source.passages.values_list("id", "text"))

    again = source_add_file(
        bot=bot, filename="care.md", data=b"%PDF-1.4 not really a pdf", content_type="application/pdf"
    )
    assert again.pk == source.pk and again.status == Source.Status.QUEUED
    again = source_process(again.pk)

    assert again.status == Source.Status.FAILED and again.last_error
    assert list(again.passages.values_list("id", "text")) == before
    assert again.content_hash == source.content_hash


def test_indexing_the_same_text_again_embeds_nothing(bot: Bot) -> None:
    source = source_process(source_add_file(bot=bot, filename="care.md", data=CARE_MD).pk)
    vectors = vector_ids(source)
    revision = documents_revision(bot.pk)

    source_process(source_add_file(bot=bot, filename="care.md", data=CARE_MD).pk)

    assert vector_ids(source) == vectors
    assert documents_revision(bot.pk) == revision


def test_passages_can_be_embedded_again(bot: Bot) -> None:
    source = source_process(source_add_file(bot=bot, filename="care.md", data=CARE_MD).pk)
    vectors = vector_ids(source)

    assert passages_embed(bot=bot) == 0  # every passage has a vector of the bot's model
    assert passages_embed(bot=bot, force=True) == 3

    assert len(vector_ids(source)) == 3 and set(vector_ids(source)).isdisjoint(vectors)


def test_the_documents_revision_moves_with_every_change_of_passages(bot: Bot) -> None:
    empty = documents_revision(bot.pk)
    source_process(source_add_file(bot=bot, filename="warranty.html", data=WARRANTY_HTML.encode()).pk)
    care = source_process(source_add_file(bot=bot, filename="care.md", data=CARE_MD).pk)
    first = documents_revision(bot.pk)
    source_process(source_add_file(bot=bot, filename="care.md", data=CARE_MD + b"\nAlso oil it yearly.\n").pk)
    edited = documents_revision(bot.pk)
    source_remove(care.pk)

    assert empty == 0
    assert empty < first < edited < documents_revision(bot.pk)
    assert Bot.objects.get(pk=bot.pk).kb_revision == bot.kb_revision  # entries not re-calibrated


@override_settings(DOCS_MAX_FILE_BYTES=1024)
def test_a_file_over_the_size_limit_is_refused_with_a_clear_message(bot: Bot) -> None:
    with pytest.raises(TooLarge, match=r"big.pdf is 0.0 MB; files may be up to 0.0 MB"):
        source_add_file(bot=bot, filename="../big.pdf", data=b"x" * 2048)
    assert not Source.objects.exists()


@pytest.mark.parametrize(
    ("url", "error", "message"),
    [
        ("ftp://example.com/file", BlockedAddress, "Only http and https"),
        ("javascript:alert(1)", BlockedAddress, "Only http and https"),
        ("https://user:pw@example.com/", BlockedAddress, "user name or password"),
        ("https://exa mple.com/", DocumentError, "not a valid URL"),
    ],
)
def test_a_bad_url_is_refused(bot: Bot, url: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        source_add_url(bot=bot, url=url)


def test_a_url_the_bot_has_already_is_refused_and_limits_are_checked(bot: Bot) -> None:
    first = source_add_url(bot=bot, url="https://example.com/help#top")
    assert first.url == "https://example.com/help" and first.options == {}
    with pytest.raises(DocumentError, match=rf"already a source of this bot \(source #{first.pk}\)"):
        source_add_url(bot=bot, url="https://example.com/help")
    with pytest.raises(DocumentError, match="max_pages must be between 1 and"):
        source_add_url(bot=bot, url="https://example.com/sitemap.xml", kind="sitemap", max_pages=0)
    crawl = source_add_url(bot=bot, url="https://example.com/", kind="crawl", max_pages=5, max_depth=1)
    assert crawl.options == {"max_pages": 5, "max_depth": 1}
    assert source_add_url(bot=make_bot(), url="https://example.com/help").status == "queued"


def test_a_url_source_is_fetched_and_indexed_with_its_validators(bot: Bot, site: SiteServer) -> None:
    site.routes["/warranty"] = page(WARRANTY_HTML, ETag='"v1"', Last_Modified="Mon, 07 Dec 2026 06:00:00 GMT")
    source = source_process(source_add_url(bot=bot, url=site.url("/warranty")).pk)

    assert (source.status, source.title, source.etag) == ("ready", "Warranty terms", '"v1"')
    assert source.last_modified == "Mon, 07 Dec 2026 06:00:00 GMT"
    assert source.size == len(WARRANTY_HTML.encode()) and source.fetched_at is not None
    assert source.passages.count() >= 1
    assert PassageEmbedding.objects.filter(passage__source=source).count() == source.passages.count()


def test_a_url_that_fails_to_fetch_again_keeps_its_passages(bot: Bot, site: SiteServer) -> None:
    site.routes["/warranty"] = page(WARRANTY_HTML)
    source = source_process(source_add_url(bot=bot, url=site.url("/warranty")).pk)
    before = list(source.passages.values_list("id", flat=True))
    site.routes["/warranty"] = text("down for maintenance", status=503)

    report = source_sync(bot=bot)

    source.refresh_from_db()
    assert (report.failed, source.status) == (1, "failed") and "503" in source.last_error
    assert list(source.passages.values_list("id", flat=True)) == before


def test_sync_skips_unchanged_pages_reindexes_changed_ones_and_drops_gone_ones(
    bot: Bot, site: SiteServer
) -> None:
    site.routes.update(
        {
            "/same": page(help_page("Shipping", "Orders ship within two working days.")),
            "/edited": page(help_page("Returns", "Return a bag within 30 days.")),
            "/removed": page(help_page("Payment", "We take cards and bank transfers.")),
        }
    )
    sources = {path: source_process(source_add_url(bot=bot, url=site.url(path)).pk) for path in site.routes}
    vectors = {path: vector_ids(source) for path, source in sources.items()}
    site.routes["/edited"] = page(help_page("Returns", "Return a bag within 60 days, unused."))
    del site.routes["/removed"]

    report = source_sync(bot=bot)

    assert (report.unchanged, report.reindexed, report.gone, report.failed) == (1, 1, 1, 0)
    assert vector_ids(sources["/same"]) == vectors["/same"]
    assert vector_ids(sources["/edited"]) != vectors["/edited"]
    assert "60 days" in Passage.objects.get(source=sources["/edited"]).text
    removed = Source.objects.get(pk=sources["/removed"].pk)
    assert removed.passages.count() == 0 and removed.status == "failed" and "404" in removed.last_error


def test_sync_sends_the_validators_and_a_304_embeds_nothing(bot: Bot, site: SiteServer) -> None:
    def conditional(request: object) -> tuple[int, dict[str, str], str]:
        if getattr(request, "headers", {}).get("if-none-match") == '"v1"':
            return 304, {"ETag": '"v1"'}, ""
        return page(WARRANTY_HTML, ETag='"v1"')  # type: ignore[return-value]

    site.routes["/warranty"] = conditional
    source = source_process(source_add_url(bot=bot, url=site.url("/warranty")).pk)
    vectors = vector_ids(source)

    report = source_sync(bot=bot)

    assert (report.unchanged, report.reindexed) == (1, 0)
    assert vector_ids(source) == vectors
    assert Source.objects.get(pk=source.pk).status == "ready"


def sitemap(*urls: str) -> tuple[int, dict[str, str], str]:
    entries = "".join(f"<url><loc>{url}</loc></url>" for url in urls)
    body = (
        f'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{entries}</urlset>'
    )
    return page(body, content_type="application/xml")  # type: ignore[return-value]


def test_a_sitemap_makes_a_page_source_per_url_and_sync_drops_pages_it_no_longer_lists(
    bot: Bot, site: SiteServer
) -> None:
    site.routes.update(
        {
            "/care": page(help_page("Care guide", "Wipe the leather with a damp cloth.")),
            "/warranty": page(WARRANTY_HTML),
            "/shipping": page(help_page("Shipping", "Orders ship within two working days.")),
        }
    )
    site.routes["/sitemap.xml"] = sitemap(site.url("/care"), site.url("/warranty"), site.url("/shipping"))
    source = source_process(source_add_url(bot=bot, url=site.url("/sitemap.xml"), kind="sitemap").pk)

    assert source.status == "ready" and source.last_error == ""
    pages = {p.url: p for p in source.pages.all()}
    assert set(pages) == {site.url("/care"), site.url("/warranty"), site.url("/shipping")}
    assert all(p.kind == "page" and p.status == "ready" and p.passages.exists() for p in pages.values())
    care_vectors = vector_ids(pages[site.url("/care")])

    site.routes["/sitemap.xml"] = sitemap(site.url("/care"), site.url("/warranty"))
    report = source_sync(bot=bot)

    assert (report.unchanged, report.reindexed, report.gone, report.failed) == (2, 0, 1, 0)
    assert not Source.objects.filter(url=site.url("/shipping")).exists()
    assert not Passage.objects.filter(text__contains="two working days").exists()
    assert vector_ids(pages[site.url("/care")]) == care_vectors


def test_an_unreadable_sitemap_keeps_its_pages(bot: Bot, site: SiteServer) -> None:
    site.routes["/care"] = page(help_page("Care guide", "Wipe the leather with a damp cloth."))
    site.routes["/sitemap.xml"] = sitemap(site.url("/care"))
    source = source_process(source_add_url(bot=bot, url=site.url("/sitemap.xml"), kind="sitemap").pk)
    site.routes["/sitemap.xml"] = text("oops", status=500)

    report = source_sync(bot=bot)

    source.refresh_from_db()
    assert report.failed == 1 and source.status == "failed" and "500" in source.last_error
    assert source.pages.get().passages.exists()


def test_a_crawl_indexes_the_site_within_its_limits_and_drops_pages_no_longer_linked(
    bot: Bot, site: SiteServer
) -> None:
    site.routes.update(
        {
            "/": page(help_page("Help", "Start here.") + '<a href="/a">A</a><a href="/b">B</a>'),
            "/a": page(help_page("Returns", "Return a bag within 30 days.") + '<a href="/deep">deep</a>'),
            "/b": page(help_page("Shipping", "Orders ship within two working days.")),
            "/deep": page(help_page("Deep", "Too deep to be crawled.")),
        }
    )
    source = source_process(
        source_add_url(bot=bot, url=site.url("/"), kind="crawl", max_pages=10, max_depth=1).pk
    )

    # The start page's passages are the crawl source's own; each other page is a page source.
    assert (source.status, source.title) == ("ready", "Help") and source.passages.exists()
    assert sorted(source.pages.values_list("url", flat=True)) == [site.url(p) for p in ("/a", "/b")]

    site.routes["/"] = page(help_page("Help", "Start here.") + '<a href="/a">A</a>')
    report = source_sync(bot=bot)

    assert (report.unchanged, report.reindexed, report.gone) == (2, 0, 1)
    assert list(source.pages.values_list("url", flat=True)) == [site.url("/a")]
    assert not Passage.objects.filter(text__contains="two working days").exists()


def test_removing_a_source_removes_its_pages_and_passages(bot: Bot, site: SiteServer) -> None:
    site.routes["/care"] = page(help_page("Care guide", "Wipe the leather with a damp cloth."))
    site.routes["/sitemap.xml"] = sitemap(site.url("/care"))
    source = source_process(source_add_url(bot=bot, url=site.url("/sitemap.xml"), kind="sitemap").pk)

    source_remove(source.pk)

    assert not Source.objects.exists() and not Passage.objects.exists()
    with pytest.raises(DocumentError, match=f"no source #{source.pk}"):
        source_remove(source.pk)


def passage_models(bot: Bot) -> dict[str, set[str]]:
    """Each source's file name -> the models its passages have vectors of."""
    models: dict[str, set[str]] = {}
    for name, model in PassageEmbedding.objects.filter(passage__bot=bot).values_list(
        "passage__source__filename", "model_name"
    ):
        models.setdefault(name, set()).add(model)
    return models


@pytest.mark.parametrize(
    ("questions", "filename", "data"),
    [
        # An English FAQ's Chinese documents are read by a model that reads them ...
        (["Where is my order?", "How do I get a refund?", "Do you ship abroad?"], "care-zh.md", CARE_ZH_MD),
        # ... and a Chinese FAQ's English ones by one that matches Chinese questions to them.
        (["我的订单到哪了？", "怎么申请退货？", "运费怎么算？"], "care.md", CARE_MD),
    ],
)
def test_documents_in_another_language_than_the_faq_get_the_multilingual_model(
    bot: Bot, questions: list[str], filename: str, data: bytes
) -> None:
    for question in questions:
        entry_upsert(bot=bot, question=question, answer="See our help pages.")
    entries_model = bot_embedding_model(bot.pk)

    source_process(source_add_file(bot=bot, filename=filename, data=data).pk)

    assert passage_models(bot) == {filename: {multilingual_models.E5}}
    assert documents_model(bot.pk) == multilingual_models.E5
    assert bot_embedding_model(bot.pk) == entries_model  # the entries keep their own choice


def test_a_bot_with_documents_only_gets_the_model_its_documents_need(bot: Bot) -> None:
    assert documents_model(bot.pk) == embeddings.DEFAULT_MODEL  # nothing yet: the default

    source_process(source_add_file(bot=bot, filename="care.md", data=CARE_MD).pk)
    assert passage_models(bot) == {"care.md": {embeddings.DEFAULT_MODEL}}

    other = make_bot()
    source_process(source_add_file(bot=other, filename="care-zh.md", data=CARE_ZH_MD).pk)
    assert passage_models(other) == {"care-zh.md": {multilingual_models.E5}}


def test_a_document_that_changes_the_passage_model_brings_the_other_passages_along(bot: Bot) -> None:
    source_process(source_add_file(bot=bot, filename="care.md", data=CARE_MD).pk)
    assert passage_models(bot) == {"care.md": {embeddings.DEFAULT_MODEL}}

    source_process(source_add_file(bot=bot, filename="care-zh.md", data=CARE_ZH_MD).pk)

    # 3 of 6 passages are Chinese: every passage now has a vector of the multilingual model only.
    e5 = {multilingual_models.E5}
    assert passage_models(bot) == {"care.md": e5, "care-zh.md": e5}
    vectors = PassageEmbedding.objects.filter(passage__bot=bot)
    assert vectors.count() == Passage.objects.filter(bot=bot).count() == 6


def test_a_bots_own_model_setting_wins_for_its_documents_too() -> None:
    bot = make_bot(embedding_model=multilingual_models.USE)
    source_process(source_add_file(bot=bot, filename="care.md", data=CARE_MD).pk)
    assert passage_models(bot) == {"care.md": {multilingual_models.USE}}
