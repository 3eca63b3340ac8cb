"""Writes for the company's documents: add a file or a URL as a source, index it (fetch or
read, extract, split, embed, store its passages), keep URL sources in sync, remove them.

Synchronous, safe on any thread without a running event loop (a worker thread, a command).
The fetch module's coroutines run on a private event loop that this thread drives between
its ORM calls (``services_web.Loop``), so the ORM never runs inside a loop.

A source's passages are replaced in one transaction, and only once extraction, splitting
and embedding all succeeded: a source that fails keeps the passages it had, with status
``failed`` and the reason in ``last_error``.

Retrieval caches per bot and ``documents_revision``, not ``Bot.kb_revision``: a bump of the
latter re-calibrates the bot's entries (knowledge.matching), which passages don't change.
"""

from __future__ import annotations

from pathlib import PurePath
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.utils import timezone

from chatbot.models import Bot
from knowledge.docs.errors import BlockedAddress, DocumentError, ExtractError, TooLarge
from knowledge.docs.extract import extract
from knowledge.docs.services_index import (
    Interrupted,
    Progress,
    document_index,
    failed_set,
    failure_reason,
    passages_embed,
    status_set,
)
from knowledge.docs.services_web import Loop, SyncReport, page_refresh, site_refresh, tally
from knowledge.models import Source

__all__ = [
    "Interrupted",
    "SyncReport",
    "documents_revision",
    "passages_embed",
    "source_add_file",
    "source_add_url",
    "source_process",
    "source_remove",
    "source_sync",
    "url_clean",
]
URL_KINDS = (Source.Kind.URL, Source.Kind.SITEMAP, Source.Kind.CRAWL)


# --- Adding sources -----------------------------------------------------------------------


def source_add_file(*, bot: Bot, filename: str, data: bytes, content_type: str = "") -> Source:
    """A file as a queued source of the bot; a file of the same name is replaced (queued
    again, its passages kept until the new text is indexed)."""
    name = PurePath(filename.replace("\\", "/")).name[:255]
    if not name:
        raise DocumentError("The file has no name.")
    limit = settings.DOCS_MAX_FILE_BYTES
    if len(data) > limit:
        raise TooLarge(f"{name} is {_megabytes(len(data))}; files may be up to {_megabytes(limit)}.")
    if not data:
        raise ExtractError(f"{name} is empty.")
    fields = {"content": data, "content_type": content_type[:100], "size": len(data)}
    source, _ = Source.objects.update_or_create(
        bot=bot,
        kind=Source.Kind.FILE,
        filename=name,
        defaults={**fields, "status": Source.Status.QUEUED, "last_error": ""},
    )
    return source


def source_add_url(
    *,
    bot: Bot,
    url: str,
    kind: str = Source.Kind.URL,
    max_pages: int | None = None,
    max_depth: int | None = None,
) -> Source:
    """A web page, a sitemap or a crawl's start URL as a queued source of the bot."""
    if kind not in URL_KINDS:
        raise DocumentError(f"A URL source is a web page, a sitemap or a crawl, not {kind!r}.")
    url = url_clean(url)
    taken = Source.objects.filter(bot=bot, url=url).first()
    if taken is not None:
        owner = f" (a page of source #{taken.parent_id})" if taken.parent_id else f" (source #{taken.pk})"
        raise DocumentError(f"{url} is already a source of this bot{owner}.")
    options: dict[str, int] = {}
    if kind != Source.Kind.URL:
        options["max_pages"] = _limit("max_pages", max_pages, settings.DOCS_MAX_PAGES, minimum=1)
    if kind == Source.Kind.CRAWL:
        options["max_depth"] = _limit("max_depth", max_depth, settings.DOCS_MAX_DEPTH, minimum=0)
    return Source.objects.create(bot=bot, kind=kind, url=url, options=options)


def url_clean(url: str) -> str:
    """``url`` checked (http or https, a host, no user name or password) without its fragment."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise BlockedAddress(f"Only http and https URLs can be added, not {url!r}.")
    if parts.username or parts.password:
        raise BlockedAddress("URLs with a user name or password are refused.")
    try:
        URLValidator(schemes=["http", "https"])(url)
    except ValidationError:
        raise DocumentError(f"{url!r} is not a valid URL.") from None
    if len(url) > 2000:
        raise DocumentError("The URL is longer than 2,000 characters.")
    return urlunsplit(parts._replace(fragment=""))


def _limit(name: str, value: int | None, ceiling: int, *, minimum: int) -> int:
    if value is None:
        return ceiling
    if not minimum <= value <= ceiling:
        raise DocumentError(f"{name} must be between {minimum} and {ceiling}, not {value}.")
    return value


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


# --- Removing, revision -------------------------------------------------------------------


def source_remove(source_id: int) -> None:
    """Delete a source with its passages (and a sitemap's or a crawl's pages)."""
    deleted, _ = Source.objects.filter(pk=source_id).delete()
    if not deleted:
        raise DocumentError(f"There is no source #{source_id}.")


def documents_revision(bot_id: int) -> int:
    """Moves whenever the bot's passages or their vectors change (``documents_touch``)."""
    return Bot.objects.filter(pk=bot_id).values_list("docs_revision", flat=True).get()


# --- Indexing -----------------------------------------------------------------------------


def source_process(source_id: int, *, progress: Progress | None = None) -> Source:
    """Index one source now (fetch or read, extract, split, embed, store). Never raises for
    a source that can't be indexed: it ends ``failed`` with ``last_error``. Raises
    ``Interrupted`` (from ``progress``) and ``Source.DoesNotExist``."""
    source = Source.objects.select_related("bot").get(pk=source_id)
    status_set(source, Source.Status.RUNNING)
    try:
        with Loop() as loop:
            if source.kind == Source.Kind.FILE:
                _file_index(source, progress)
            elif source.kind in (Source.Kind.URL, Source.Kind.PAGE):
                page_refresh(source, loop)
            else:
                site_refresh(source, loop, progress)
    except Interrupted:
        status_set(source, Source.Status.QUEUED)
        raise
    except Exception as err:
        failed_set(source, failure_reason(err, source.url or source.label))
    else:
        if progress and source.kind in (Source.Kind.URL, Source.Kind.PAGE):
            progress(1, 1)
        # A document that changed the bot's passage model (``documents_model``): the other
        # passages get vectors of the new one (they are found by their words meanwhile).
        passages_embed(bot=source.bot)
    source.refresh_from_db()
    return source


def _file_index(source: Source, progress: Progress | None) -> None:
    data = bytes(source.content or b"")
    document = extract(data, filename=source.filename, content_type=source.content_type)
    if document_index(source, document, progress=progress):
        source.indexed_at = timezone.now()
    source.title = (document.title or source.filename)[:500]
    source.status, source.last_error = Source.Status.READY, ""
    source.save(update_fields=["title", "status", "last_error", "indexed_at"])


# --- Sync ---------------------------------------------------------------------------------


def source_sync(*, bot: Bot | None = None, progress: Progress | None = None) -> SyncReport:
    """Fetch every URL source again (of ``bot``, or of all bots), re-index only the pages
    whose text changed, drop the passages of pages that are gone. Pages that fail keep
    their passages."""
    sources = Source.objects.filter(parent__isnull=True, kind__in=URL_KINDS).order_by("id")
    if bot is not None:
        sources = sources.filter(bot=bot)
    todo = list(sources.select_related("bot"))
    report = SyncReport()
    with Loop() as loop:
        for done, source in enumerate(todo, start=1):
            status_set(source, Source.Status.RUNNING)
            if source.kind == Source.Kind.URL:
                tally(report, source, lambda source=source: page_refresh(source, loop))
            else:
                try:
                    report.add(site_refresh(source, loop, None))
                except Interrupted:
                    raise
                except Exception as err:  # the site's pages are kept; the other sources go on
                    reason = failure_reason(err, source.url or source.label)
                    failed_set(source, reason)
                    report.failed += 1
                    report.errors.append((source.url, reason))
            if progress:
                progress(done, len(todo))
    for each in {source.bot for source in todo}:
        passages_embed(bot=each)
    return report
