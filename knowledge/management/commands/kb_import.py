from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chatbot.models import Bot
from chatbot.selectors import bot_by_public_key
from knowledge.io import FORMATS, ImportFailed, detect_format, kb_import, parse_kb


def bot_from_key(key: str) -> Bot:
    bot = bot_by_public_key(key)
    if bot is None:
        raise CommandError(
            f"No bot has the public key {key!r} (the admin's bot page and `create_bot` show it)."
        )
    return bot


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CommandError(f"File not found: {path}") from None
    except OSError as err:
        raise CommandError(f"Can't read {path}: {err.strerror}") from None


class Command(BaseCommand):
    help = (
        "Import knowledge-base entries from a CSV or JSON file into a bot, upserting by id. "
        "All or nothing: a file with any bad line is rejected whole, with every problem listed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="A .csv or .json file, UTF-8.")
        parser.add_argument("--bot", required=True, metavar="KEY", help="The bot's public key.")
        parser.add_argument(
            "--format", choices=FORMATS, help="The file's format (default: from its extension or content)."
        )

    def handle(self, *args: Any, file: Path, bot: str, format: str | None, **options: Any) -> None:
        data = read_file(file)
        try:
            rows = parse_kb(data, fmt=format or detect_format(file.name, data))
            target = bot_from_key(bot)
            summary = kb_import(bot=target, rows=rows)
        except ImportFailed as err:
            count = len(err.errors)
            raise CommandError(
                f"{file}: nothing imported, {count} problem{'s' if count != 1 else ''}:\n{err.report()}"
            ) from err
        self.stdout.write(
            f"Imported {len(rows)} entries into {target.name!r}: "
            f"{summary.created} created, {summary.updated} updated."
        )
