from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from chatbot.models import Bot
from knowledge.calibration_services import calibrated_read
from knowledge.embeddings import get_encoder
from knowledge.evaluation import evaluate, read_queries
from knowledge.io import EntryRow, ImportFailed
from knowledge.management.commands.kb_evaluate import format_report
from knowledge.management.commands.kb_import import bot_from_key
from knowledge.models import Entry
from knowledge.services import bot_embedding_model


def bot_rows(bot: Bot) -> list[EntryRow]:
    """The bot's active entries as import rows (what the live index searches)."""
    entries = Entry.objects.filter(bot=bot, is_active=True).prefetch_related("alternatives").order_by("id")
    return [
        EntryRow(
            line=0,
            external_id=entry.external_id or str(entry.pk),
            question=entry.question,
            answer=entry.answer,
            alternatives=tuple(a.text for a in entry.alternatives.all()),
            tags=(),
        )
        for entry in entries
    ]


class Command(BaseCommand):
    help = (
        "Set a bot's answer threshold from data: the lowest confidence whose precision on the "
        "labelled queries reaches the target. expected_id is an entry's import id (or its number). "
        "The bot's thresholds are then 'labelled' and win over the automatic ones."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bot", required=True, help="The bot's public key.")
        parser.add_argument("--queries", required=True, help="CSV with columns query,expected_id.")
        parser.add_argument("--target-precision", type=float, default=0.95)
        parser.add_argument("--dry-run", action="store_true", help="Report, but change nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        bot = bot_from_key(options["bot"])
        try:
            queries = read_queries(Path(options["queries"]).read_bytes())
            model = bot_embedding_model(bot.pk)
            stored = calibrated_read(bot.pk, model)
            figures = evaluate(
                bot_rows(bot),
                queries,
                get_encoder(model),
                mode=settings.KB_MATCH_MODE,
                target=options["target_precision"],
                # The bot's own calibration, so the thresholds are on the scale it serves with.
                calibrator=stored.calibrator if stored is not None else None,
            )
        except OSError as err:
            raise CommandError(f"can't read {options['queries']}: {err.strerror}") from None
        except ImportFailed as err:
            raise CommandError(f"cannot calibrate:\n{err.report()}") from None
        self.stdout.write(format_report(figures))
        recommended = figures["recommended_threshold"]
        if recommended is None:
            raise CommandError(
                f"no threshold reaches precision {options['target_precision']}: add alternative phrasings "
                "to the entries that are confused, or lower --target-precision"
            )
        old = (bot.answer_threshold, bot.reference_threshold)
        bot.answer_threshold = recommended
        bot.reference_threshold = min(
            stored.reference_threshold if stored else bot.reference_threshold, recommended
        )
        bot.threshold_source = Bot.ThresholdSource.LABELLED  # wins over the automatic thresholds
        if not options["dry_run"]:
            bot.save(update_fields=["answer_threshold", "reference_threshold", "threshold_source"])
        verb = "Would set" if options["dry_run"] else "Set"
        self.stdout.write(
            f"\n{verb} {bot.name!r}: answer threshold {old[0]:.2f} -> {bot.answer_threshold:.2f}, "
            f"reference threshold {old[1]:.2f} -> {bot.reference_threshold:.2f}"
        )
