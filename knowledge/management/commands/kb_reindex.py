from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chatbot.models import Bot
from knowledge import embeddings
from knowledge.management.progress import progress_bar
from knowledge.services import bot_kb_touch, entries_embed


class Command(BaseCommand):
    help = "Embed every knowledge-base phrasing that has no vector for the current model (or all, --force)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bot", help="Only this bot (public key). Default: every bot.")
        parser.add_argument("--force", action="store_true", help="Re-embed phrasings that have a vector.")

    def handle(self, *args: Any, **options: Any) -> None:
        bots = Bot.objects.all()
        if options["bot"]:
            bots = bots.filter(public_key=options["bot"])
            if not bots.exists():
                raise CommandError(f"no bot with public key {options['bot']!r}")
        total = 0
        for bot in bots:
            count = entries_embed(bot=bot, force=options["force"], progress=self._bar(bot.name))
            if count:
                bot_kb_touch(bot_id=bot.pk)
            total += count
            self.stdout.write(f"{bot.name}: {count} phrasings embedded")
        self.stdout.write(f"Done: {total} phrasings embedded with {embeddings.model_name()}.")

    def _bar(self, label: str) -> Any:
        return progress_bar(self.stderr._out if hasattr(self.stderr, "_out") else sys.stderr, label)
