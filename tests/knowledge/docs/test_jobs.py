from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from django.test import override_settings

from chatbot.models import Bot
from knowledge.docs import jobs
from knowledge.docs.services import source_add_file, source_add_url
from knowledge.models import Source
from tests.factories import make_bot
from tests.knowledge.docs.site_server import Request, Response, SiteServer, page

# The worker thread has a database connection of its own: rows must be committed.
pytestmark = pytest.mark.django_db(transaction=True)

CARE_MD = b"# Care guide\n\nWipe the leather with a damp cloth.\n\n## Storing\n\nKeep it in its dust bag.\n"


def help_page(title: str, body: str) -> Response:
    return page(
        f"<html><head><title>{title}</title></head><body><main><h1>{title}</h1><p>{body}</p></main></body></html>"
    )


class Gate:
    """A route that answers only once the test opens the gate (a slow site)."""

    def __init__(self, response: Response) -> None:
        self.response = response
        self.reached = threading.Event()
        self.open = threading.Event()

    def __call__(self, request: Request) -> Response:
        self.reached.set()
        assert self.open.wait(30), "the test never opened the gate"
        return self.response


@pytest.fixture
def bot() -> Bot:
    return make_bot()


@pytest.fixture
def site() -> Iterator[SiteServer]:
    with override_settings(DOCS_FETCH_ALLOW_PRIVATE=True), SiteServer() as server:
        yield server


def test_it_indexes_a_queued_source_on_its_background_thread(bot: Bot, site: SiteServer) -> None:
    gate = Gate(help_page("Shipping", "Orders ship within two working days."))
    site.routes["/shipping"] = gate
    source = source_add_url(bot=bot, url=site.url("/shipping"))

    jobs.enqueue(source.pk)  # returns while the page is still being fetched

    assert gate.reached.wait(30)
    assert Source.objects.get(pk=source.pk).status == Source.Status.RUNNING
    gate.open.set()
    assert jobs.jobs().wait(60)
    done = Source.objects.get(pk=source.pk)
    assert (done.status, done.title) == ("ready", "Shipping") and done.passages.exists()


def test_a_source_waiting_in_the_queue_is_not_queued_twice(bot: Bot, site: SiteServer) -> None:
    gate = Gate(help_page("Shipping", "Orders ship within two working days."))
    site.routes["/shipping"] = gate
    busy = source_add_url(bot=bot, url=site.url("/shipping"))
    waiting = source_add_file(bot=bot, filename="care.md", data=CARE_MD)
    worker = jobs.jobs()
    worker.submit(busy.pk)
    assert gate.reached.wait(30)

    first, second = worker.submit(waiting.pk), worker.submit(waiting.pk)

    assert first is second
    gate.open.set()
    assert worker.wait(60)
    assert set(Source.objects.values_list("status", flat=True)) == {"ready"}


def test_sources_a_stopped_process_left_are_queued_again_at_start_up(bot: Bot) -> None:
    queued = source_add_file(bot=bot, filename="care.md", data=CARE_MD)
    running = source_add_file(bot=bot, filename="storing.md", data=b"# Storing\n\nAway from sunlight.\n")
    Source.objects.filter(pk=running.pk).update(status=Source.Status.RUNNING)
    ready = source_add_file(bot=bot, filename="ready.md", data=b"# Ready\n\nAlready indexed.\n")
    Source.objects.filter(pk=ready.pk).update(status=Source.Status.READY)

    assert jobs.resume() == 2
    assert jobs.resume() == 0  # once per process
    assert jobs.jobs().wait(60)

    assert Source.objects.get(pk=queued.pk).passages.exists()
    assert Source.objects.get(pk=running.pk).status == "ready"
    assert not Source.objects.get(pk=ready.pk).passages.exists()  # not touched


def test_closing_the_runtime_stops_the_job_under_way_and_leaves_it_queued(bot: Bot, site: SiteServer) -> None:
    gate = Gate(help_page("Care guide", "Wipe the leather with a damp cloth."))
    site.routes.update({"/care": gate, "/warranty": help_page("Warranty", "Two years.")})
    site.routes["/sitemap.xml"] = page(
        '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
        f"<url><loc>{site.url('/care')}</loc></url><url><loc>{site.url('/warranty')}</loc></url></urlset>",
        content_type="application/xml",
    )
    source = source_add_url(bot=bot, url=site.url("/sitemap.xml"), kind="sitemap")
    worker = jobs.jobs()
    later = source_add_file(bot=bot, filename="care.md", data=CARE_MD)
    worker.submit(source.pk)
    worker.submit(later.pk)
    assert gate.reached.wait(30)

    closing = threading.Thread(target=worker.close)
    closing.start()
    gate.open.set()
    closing.join(30)

    assert not closing.is_alive()
    assert Source.objects.get(pk=source.pk).status == Source.Status.QUEUED  # for the next start
    assert "/warranty" not in site.paths()  # stopped after the page under way
    assert Source.objects.get(pk=later.pk).status == Source.Status.QUEUED  # dropped, still queued
    assert worker.submit(later.pk).cancelled()  # nothing more runs; the next start resumes it


def test_a_source_removed_while_it_waited_is_skipped(bot: Bot) -> None:
    source = source_add_file(bot=bot, filename="care.md", data=CARE_MD)
    Source.objects.filter(pk=source.pk).delete()

    jobs.enqueue(source.pk)

    assert jobs.jobs().wait(30)
    assert jobs.jobs().failures == 0


def test_the_sync_job_runs_on_the_background_thread(bot: Bot, site: SiteServer) -> None:
    site.routes["/shipping"] = help_page("Shipping", "Orders ship within two working days.")
    source = source_add_url(bot=bot, url=site.url("/shipping"))

    jobs.enqueue_sync(bot.pk)
    assert jobs.jobs().wait(60)

    assert Source.objects.get(pk=source.pk).status == "ready"
