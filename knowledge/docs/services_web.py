"""URL sources fetched again: a page re-indexed only when its text changed, a sitemap's or a
crawl's pages kept in step with the site (pages no longer listed or found removed), pages
that are gone (404, 410) losing their passages, pages that fail keeping theirs.

The fetch module's coroutines run on a private event loop (``Loop``) that the calling
thread drives between its ORM calls, so the ORM never runs inside a running loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from knowledge.docs import fetch as web
from knowledge.docs.errors import FetchError
from knowledge.docs.extract import extract
from knowledge.docs.services_index import (
    Interrupted,
    Progress,
    document_index,
    documents_model,
    documents_touch,
    failed_set,
    failure_reason,
    is_embedded,
)
from knowledge.models import Source

T = TypeVar("T")
GONE_STATUSES = (404, 410)


@dataclass
class SyncReport:
    unchanged: int = 0
    reindexed: int = 0
    gone: int = 0
    failed: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)  # (source label, reason)

    def add(self, other: SyncReport) -> None:
        self.unchanged += other.unchanged
        self.reindexed += other.reindexed
        self.gone += other.gone
        self.failed += other.failed
        self.errors.extend(other.errors)


@dataclass(frozen=True)
class SitePage:
    """A page of a sitemap (to fetch) or of a crawl (fetched, or failed)."""

    url: str
    fetched: web.Fetched | None = None
    error: str = ""
    status: int = 0


Outcome = Literal["unchanged", "reindexed", "gone"]  # what refreshing one page did


def page_refresh(source: Source, loop: Loop, fetched: web.Fetched | None = None) -> Outcome:
    """Fetch the page (unless the crawl did), and re-index it if its text changed. Raises
    DocumentError for a failure other than a page that is gone."""
    if fetched is None:
        conditional = is_embedded(source, documents_model(source.bot_id))
        try:
            fetched = loop.run(
                web.fetch(
                    source.url,
                    etag=source.etag if conditional else "",
                    last_modified=source.last_modified if conditional else "",
                )
            )
        except FetchError as err:
            if _status_of(err) not in GONE_STATUSES:
                raise
            _gone(source, f"The page is gone (HTTP {_status_of(err)}): its passages were removed.")
            return "gone"
    source.fetched_at = timezone.now()
    source.etag, source.last_modified = fetched.etag[:500], fetched.last_modified[:100]
    changed = False
    if fetched.status != 304:
        document = extract(fetched.data, content_type=fetched.content_type, url=fetched.url)
        changed = document_index(source, document)
        source.title = (document.title or source.url)[:500]
        source.size, source.content_type = len(fetched.data), fetched.content_type[:100]
    if changed or source.indexed_at is None:
        source.indexed_at = timezone.now()
    source.status, source.last_error = Source.Status.READY, ""
    source.save()
    return "reindexed" if changed else "unchanged"


def _status_of(err: Exception) -> int:
    return int(getattr(err, "status", 0) or 0)


def _gone(source: Source, reason: str) -> None:
    with transaction.atomic():
        if source.passages.all().delete()[0]:
            documents_touch(source.bot_id)
        Source.objects.filter(pk=source.pk).update(
            status=Source.Status.FAILED, last_error=reason, content_hash="", etag="", last_modified=""
        )


def site_refresh(source: Source, loop: Loop, progress: Progress | None) -> SyncReport:
    """A sitemap's or a crawl's pages fetched and indexed; pages no longer listed or found
    are removed. If no page could be had at all, nothing is removed: DocumentError."""
    report = SyncReport()
    pages = {page.url: page for page in source.pages.all()}
    seen: set[str] = set()
    total, items = _site_pages(source, loop)
    with closing(items):  # a crawl stopped early (Interrupted) closes its connections now
        for done, found in enumerate(items, start=1):
            if found.url not in seen:
                seen.add(found.url)
                page = _site_page(source, pages, found.url)
                if page is not None:  # else the URL is another source of the bot's, indexed there
                    tally(report, page, lambda p=page, f=found: _page_step(p, loop, f))
            if progress:
                progress(done, max(done, total))
    if not seen:
        raise FetchError("No page could be fetched: the pages found before are kept.")
    gone = [page.pk for url, page in pages.items() if url not in seen]
    report.gone += len(gone)
    Source.objects.filter(pk__in=gone).delete()
    now = timezone.now()
    Source.objects.filter(pk=source.pk).update(
        status=Source.Status.READY,
        last_error=f"{report.failed} of {len(seen)} pages failed." if report.failed else "",
        size=sum(source.pages.values_list("size", flat=True)) + (source.size if source.url in seen else 0),
        fetched_at=now,
        indexed_at=now if report.reindexed or report.gone or not source.indexed_at else source.indexed_at,
        title=source.title or f"{urlsplit(source.url).hostname} ({source.get_kind_display().lower()})",
    )
    return report


def _site_pages(source: Source, loop: Loop) -> tuple[int, Generator[SitePage, None, None]]:
    """How many pages to expect, and the site's pages as the sitemap lists them (to fetch)
    or as the crawl fetched them."""
    limit = int(source.options.get("max_pages") or settings.DOCS_MAX_PAGES)
    if source.kind == Source.Kind.SITEMAP:
        urls = loop.run(web.sitemap_urls(source.url))[:limit]
        return len(urls), (SitePage(url) for url in urls)
    depth = int(source.options.get("max_depth", settings.DOCS_MAX_DEPTH))
    crawled = loop.iterate(web.crawl(source.url, max_pages=limit, max_depth=depth))
    return limit, (
        SitePage(item.url, error=item.error or "The page could not be fetched.", status=item.status)
        if isinstance(item, web.FetchFailure)
        else SitePage(item.url, fetched=item)
        for item in crawled
    )


def _site_page(site: Source, pages: dict[str, Source], url: str) -> Source | None:
    """The page source for ``url``: a crawl's start page is the crawl source itself (its
    passages are that page's); None when another source of the bot's has the URL."""
    if url == site.url:
        return site
    if url in pages:
        return pages[url]
    if Source.objects.filter(bot_id=site.bot_id, url=url).exists():
        return None
    return Source.objects.create(bot_id=site.bot_id, parent=site, kind=Source.Kind.PAGE, url=url)


def _page_step(page: Source, loop: Loop, found: SitePage) -> Outcome:
    if found.status in GONE_STATUSES:
        _gone(page, f"The page is gone: {found.error}")
        return "gone"
    if found.error:
        raise FetchError(found.error)
    return page_refresh(page, loop, found.fetched)


def tally(report: SyncReport, page: Source, step: Callable[[], Outcome]) -> None:
    """Run one page's refresh, counting its outcome; a failed page keeps its passages."""
    try:
        outcome = step()
    except Interrupted:
        raise
    except Exception as err:  # this page fails, the others go on
        reason = failure_reason(err, page.url or page.label)
        failed_set(page, reason)
        report.failed += 1
        report.errors.append((page.url or page.label, reason))
        return
    if outcome == "gone":
        report.gone += 1
        report.errors.append((page.url, "gone"))
    elif outcome == "reindexed":
        report.reindexed += 1
    else:
        report.unchanged += 1


class Loop:
    """A private event loop for the fetch module's coroutines, driven from this thread:
    between two awaits nothing runs in it, so the ORM calls in between are synchronous."""

    def __enter__(self) -> Loop:
        self._loop = asyncio.new_event_loop()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        finally:
            self._loop.close()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(coroutine)

    def iterate(self, items: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self._loop.run_until_complete(anext(items))
                except StopAsyncIteration:
                    return
        finally:
            close = getattr(items, "aclose", None)
            if close is not None:
                self._loop.run_until_complete(close())
