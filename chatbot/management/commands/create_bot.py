from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from chatbot.services import bot_create


class Command(BaseCommand):
    help = "Create a bot and print its public key (alone, on the last line)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument(
            "--origin",
            action="append",
            default=[],
            help="An origin allowed to embed the widget, e.g. https://shop.example (repeatable).",
        )

    def handle(self, *args: Any, name: str, origin: list[str], **options: Any) -> None:
        try:
            bot = bot_create(name=name, origins=origin)
        except ValidationError as err:
            messages = "; ".join(f"{field}: {' '.join(errs)}" for field, errs in err.message_dict.items())
            raise CommandError(messages) from err
        self.stderr.write(f"Created bot {bot.name!r} (id {bot.pk}). Public key:")
        self.stdout.write(bot.public_key)
