from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from chatbot.models import Bot
from knowledge import tuning
from knowledge.management.commands.kb_import import bot_from_key
from knowledge.models import Entry


def phrasing_groups(bots: list[Bot]) -> list[list[str]]:
    """Every active entry's phrasings (question, then alternatives), one list per entry."""
    entries = Entry.objects.filter(bot__in=bots, is_active=True).prefetch_related("alternatives")
    return [entry.phrasings() for entry in entries.order_by("id")]


class Command(BaseCommand):
    help = (
        "Tune the embedding model on the knowledge base's own phrasings (each entry's phrasings "
        "pulled together, other entries' pushed apart) and save it to a new folder. Then set "
        "EMBEDDING_MODEL to that folder and run kb_reindex."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--out", required=True, help="A folder that does not exist yet.")
        parser.add_argument("--bot", help="Only this bot's entries (public key). Default: every bot's.")
        parser.add_argument("--base", help="The model to start from. Default: the EMBEDDING_MODEL setting.")
        parser.add_argument(
            "--steps", type=int, help="Training steps. Default: one pass over the pairs of phrasings."
        )
        parser.add_argument(
            "--batch", type=int, default=tuning.DEFAULT_BATCH, help="Entries (pairs of phrasings) per step."
        )
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args: Any, **options: Any) -> None:
        bots = [bot_from_key(options["bot"])] if options["bot"] else list(Bot.objects.all())
        groups = phrasing_groups(bots)
        base = options["base"] or settings.EMBEDDING_MODEL
        usable = tuning.usable_groups(groups)
        self.stdout.write(
            f"Tuning {base} on {len(usable)} entries with two or more phrasings "
            f"({len(groups) - len(usable)} with one are left out)."
        )
        try:
            report = tuning.tune(
                groups,
                Path(options["out"]),
                base=base,
                steps=options["steps"],
                batch=options["batch"],
                seed=options["seed"],
                progress=self._progress,
            )
        except (tuning.TuningError, FileNotFoundError) as err:
            raise CommandError(str(err)) from None
        self.stdout.write(
            f"Saved to {report.folder} after {report.steps} steps in {report.seconds:.0f} s "
            f"(loss {report.first_loss:.3f} -> "
            f"{report.last_loss:.3f}). To use it: EMBEDDING_MODEL={report.folder.resolve()} "
            "then manage.py kb_reindex; check it first with kb_evaluate."
        )

    def _progress(self, step: int, steps: int, loss: float) -> None:
        stream = self.stderr._out if hasattr(self.stderr, "_out") else sys.stderr
        width = 30
        filled = width * step // steps
        stream.write(f"\rtuning [{'#' * filled}{'.' * (width - filled)}] {step}/{steps} loss {loss:.3f}")
        if step == steps:
            stream.write("\n")
        stream.flush()
