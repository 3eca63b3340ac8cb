from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from knowledge.docs.errors import DocumentError
from knowledge.docs.services import source_remove
from knowledge.management.commands.docs_add import bot_from_key
from knowledge.models import Source


class Command(BaseCommand):
    help = "Remove documents (sources, with their passages; a sitemap or crawl with its pages)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "ids", nargs="+", type=int, metavar="ID", help="A source id (docs_list shows them)."
        )
        parser.add_argument("--bot", metavar="KEY", help="Only sources of this bot (public key or id).")

    def handle(self, *args: Any, **options: Any) -> None:
        sources = Source.objects.all()
        if options["bot"]:
            sources = sources.filter(bot=bot_from_key(options["bot"]))
        missing = 0
        for source_id in options["ids"]:
            source = sources.filter(pk=source_id).first()
            if source is None:
                self.stdout.write(f"#{source_id}: no such source{' of this bot' if options['bot'] else ''}")
                missing += 1
                continue
            passages = source.passages.count() + sum(p.passages.count() for p in source.pages.all())
            try:
                source_remove(source_id)
            except DocumentError as err:  # removed meanwhile
                self.stdout.write(f"#{source_id}: {err}")
                missing += 1
                continue
            self.stdout.write(f"#{source_id}: removed {source.label} ({passages} passages)")
        if missing:
            raise CommandError(f"{missing} of {len(options['ids'])} sources were not found.", returncode=1)
