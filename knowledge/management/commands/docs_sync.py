from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from knowledge.docs.services import source_sync
from knowledge.management.commands.docs_add import bot_from_key
from knowledge.management.progress import progress_bar


class Command(BaseCommand):
    help = (
        "Fetch every URL document again; re-index only the pages whose text changed, remove "
        "the passages of pages that are gone. A page that fails keeps its passages."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--bot", metavar="KEY", help="Only this bot (public key or id). Default: every bot."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        bot = bot_from_key(options["bot"]) if options["bot"] else None
        stream = self.stderr._out if hasattr(self.stderr, "_out") else sys.stderr
        report = source_sync(bot=bot, progress=progress_bar(stream, "sync"))
        for label, reason in report.errors:
            self.stdout.write(f"{label}: {reason}")
        self.stdout.write(
            f"unchanged: {report.unchanged}, re-indexed: {report.reindexed}, "
            f"gone: {report.gone}, failed: {report.failed}"
        )
        if report.failed:
            raise CommandError(f"{report.failed} sources failed to sync.", returncode=1)
