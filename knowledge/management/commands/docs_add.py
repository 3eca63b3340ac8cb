from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from chatbot.models import Bot
from knowledge.docs.errors import DocumentError, TooLarge
from knowledge.docs.services import source_add_file, source_add_url, source_process
from knowledge.management.progress import progress_bar
from knowledge.models import Source

# What a folder given to docs_add contributes: the files the extractor reads.
Adder = tuple[str, Callable[[], Source]]  # a source's label, and what adds it
DOCUMENT_SUFFIXES = {".html", ".htm", ".md", ".markdown", ".txt", ".text", ".pdf", ".docx"}


def bot_from_key(key: str) -> Bot:
    """A bot by public key, or by id."""
    bot = Bot.objects.filter(public_key=key).first()
    if bot is None and key.isdigit():
        bot = Bot.objects.filter(pk=int(key)).first()
    if bot is None:
        raise CommandError(f"No bot has the public key or id {key!r} (the admin's bot page shows it).")
    return bot


def is_url(text: str) -> bool:
    return "://" in text


def url_kind(url: str, *, crawl: bool, sitemap: bool) -> str:
    if crawl:
        return Source.Kind.CRAWL
    if sitemap or url.split("?", 1)[0].rstrip("/").endswith(("sitemap.xml", "sitemap.xml.gz")):
        return Source.Kind.SITEMAP
    return Source.Kind.URL


def files_in(path: Path) -> Iterator[Path]:
    if path.is_dir():
        yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in DOCUMENT_SUFFIXES)
    else:
        yield path


class Command(BaseCommand):
    help = (
        "Add files, folders of files and URLs as documents of a bot and index them now. "
        "A URL ending in sitemap.xml is read as a sitemap (unless --crawl)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("sources", nargs="+", metavar="SOURCE", help="A file, a folder or a URL.")
        parser.add_argument("--bot", required=True, metavar="KEY", help="The bot's public key or id.")
        parser.add_argument("--crawl", action="store_true", help="Crawl the site from each URL.")
        parser.add_argument("--sitemap", action="store_true", help="Each URL is a sitemap.")
        parser.add_argument("--max-pages", type=int, metavar="N", help="Pages per sitemap or crawl.")
        parser.add_argument("--max-depth", type=int, metavar="N", help="Link depth of a crawl.")

    def handle(self, *args: Any, **options: Any) -> None:
        bot = bot_from_key(options["bot"])
        failed = done = 0
        for text in options["sources"]:
            for label, add in self._adders(text, options, bot):
                done += 1
                if not self._one(label, add):
                    failed += 1
        if failed:
            raise CommandError(f"{failed} of {done} sources failed.", returncode=1)
        self.stdout.write(f"Done: {done} sources indexed for {bot.name}.")

    def _adders(
        self, text: str, options: dict[str, Any], bot: Bot
    ) -> Iterator[tuple[str, Callable[[], Source]]]:
        if is_url(text):
            kind = url_kind(text, crawl=options["crawl"], sitemap=options["sitemap"])
            yield (
                text,
                lambda: source_add_url(
                    bot=bot,
                    url=text,
                    kind=kind,
                    max_pages=options["max_pages"],
                    max_depth=options["max_depth"],
                ),
            )
            return
        path = Path(text)
        if not path.exists():
            yield text, lambda: _missing(path)
            return
        for file in files_in(path):
            yield str(file), lambda file=file: source_add_file(bot=bot, filename=file.name, data=_read(file))

    def _one(self, label: str, add: Callable[[], Source]) -> bool:
        try:
            source = add()
        except DocumentError as err:
            self.stdout.write(f"{label}: failed: {err}")
            return False
        stream = self.stderr._out if hasattr(self.stderr, "_out") else sys.stderr
        source = source_process(source.pk, progress=progress_bar(stream, label.rsplit("/", 1)[-1] or label))
        if source.status != Source.Status.READY:
            self.stdout.write(f"{label}: failed: {source.last_error}")
            return False
        passages = source.passages.count() + sum(page.passages.count() for page in source.pages.all())
        pages = source.pages.count()
        where = f" from {pages} pages" if source.kind in (Source.Kind.SITEMAP, Source.Kind.CRAWL) else ""
        note = f" ({source.last_error})" if source.last_error else ""
        self.stdout.write(f"{label}: {passages} passages indexed{where}{note}")
        return True


def _missing(path: Path) -> Source:
    raise DocumentError(f"No such file or folder: {path}")


def _read(path: Path) -> bytes:
    try:
        if path.stat().st_size > settings.DOCS_MAX_FILE_BYTES:  # not read into memory
            limit = settings.DOCS_MAX_FILE_BYTES / (1024 * 1024)
            raise TooLarge(f"{path.name} is larger than the limit of {limit:.1f} MB (DOCS_MAX_FILE_BYTES).")
        return path.read_bytes()
    except OSError as err:
        raise DocumentError(f"Can't read {path}: {err.strerror}") from None
