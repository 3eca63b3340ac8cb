from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from agents.models import QuestionVector
from agents.question_vectors import question_vectors_get
from agents.selectors.gaps import gap_questions_of
from chatbot.models import Bot
from knowledge import embeddings


class Command(BaseCommand):
    help = (
        "Embed the knowledge-gap questions that have no stored vector yet, so the Knowledge "
        "gaps page never embeds a backlog while someone waits (run it from cron)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days", type=int, default=settings.AGENT_GAP_DAYS, help="Questions of the last N days."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days = max(1, min(options["days"], 365))
        questions = gap_questions_of(bots=Bot.objects.all(), days=days)
        stored = QuestionVector.objects.filter(model_name=embeddings.model_name())
        before = stored.count()
        question_vectors_get(questions=[(q.message_id, q.text) for q in questions])
        added = stored.count() - before
        self.stdout.write(f"{len(questions)} gap questions of the last {days} days; {added} newly embedded.")
