from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db.models import Count
from django.utils import timezone

from knowledge.management.commands.docs_add import bot_from_key
from knowledge.models import Source

COLUMNS = ("id", "kind", "status", "title / url", "passages", "size", "indexed at", "last error")
WIDE = 48  # the title / url and last error columns are cut to this many characters


def size_text(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def cut(text: str, width: int = WIDE) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


class Command(BaseCommand):
    help = "List a bot's documents: each source's kind, status, passages, size and last error."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bot", required=True, metavar="KEY", help="The bot's public key or id.")

    def handle(self, *args: Any, **options: Any) -> None:
        bot = bot_from_key(options["bot"])
        sources = Source.objects.filter(bot=bot).annotate(passage_count=Count("passages")).order_by("id")
        rows = [COLUMNS]
        for source in sources:
            label = source.title or source.filename or source.url
            if source.url and source.title:
                label = f"{source.title} <{source.url}>"
            indexed = (
                timezone.localtime(source.indexed_at).strftime("%Y-%m-%d %H:%M") if source.indexed_at else "-"
            )
            rows.append(
                (
                    str(source.pk),
                    source.kind,
                    source.status,
                    cut(label),
                    str(source.passage_count),
                    size_text(source.size),
                    indexed,
                    cut(source.last_error) or "-",
                )
            )
        if len(rows) == 1:
            self.stdout.write(f"{bot.name} has no documents (add some with docs_add).")
            return
        widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
        for row in rows:
            self.stdout.write(
                "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            )
