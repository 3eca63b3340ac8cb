from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from knowledge.io import FORMATS, ExportFailed, kb_export
from knowledge.management.commands.kb_import import bot_from_key
from knowledge.models import Entry


class Command(BaseCommand):
    help = (
        "Export every knowledge-base entry of a bot (active or not) as CSV or JSON, "
        "in the format kb_import reads. Writes to standard output unless -o is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bot", required=True, metavar="KEY", help="The bot's public key.")
        parser.add_argument(
            "--format", choices=FORMATS, help="Default: from the -o file's extension, otherwise csv."
        )
        parser.add_argument("-o", "--output", type=Path, metavar="FILE", help="Write to FILE.")

    def handle(self, *args: Any, bot: str, format: str | None, output: Path | None, **options: Any) -> None:
        target = bot_from_key(bot)
        fmt = format or _format_of(output)
        try:
            data = kb_export(bot=target, fmt=fmt)
        except ExportFailed as err:
            raise CommandError(str(err)) from err
        if output is None:
            self.stdout.write(data.decode("utf-8"), ending="")
            return
        try:
            output.write_bytes(data)
        except OSError as err:
            raise CommandError(f"Can't write {output}: {err.strerror}") from None
        count = Entry.objects.filter(bot=target).count()
        self.stdout.write(f"Exported {count} entries of {target.name!r} to {output} ({fmt}).")


def _format_of(output: Path | None) -> str:
    suffix = output.suffix.lower().lstrip(".") if output else ""
    return suffix if suffix in FORMATS else "csv"
