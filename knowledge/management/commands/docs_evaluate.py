from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from asgiref.sync import async_to_sync
from django.core.management.base import BaseCommand, CommandError, CommandParser

from knowledge.docs.retrieval_eval import QueriesInvalid, evaluate_documents, format_report, read_doc_queries
from knowledge.management.commands.kb_import import bot_from_key, read_file


class Command(BaseCommand):
    help = (
        "Measure how well a bot's documents answer labelled questions (writes nothing): recall@1/3/5 "
        "of the right page among the passages retrieved, and the share of out-of-scope questions "
        "(empty expected_url) that retrieved nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bot", required=True, help="The bot's public key.")
        parser.add_argument("--queries", required=True, help="CSV with columns query,expected_url.")
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        bot = bot_from_key(options["bot"])
        try:
            queries = read_doc_queries(read_file(Path(options["queries"])))
        except QueriesInvalid as err:
            raise CommandError(f"cannot evaluate {options['queries']}:\n{err}") from None
        figures = async_to_sync(evaluate_documents)(bot, queries)
        self.stdout.write(json.dumps(figures) if options["json"] else format_report(figures))
