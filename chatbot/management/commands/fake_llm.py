from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from devtools.fake_llm import server as fake_server


class Command(BaseCommand):
    help = (
        "Serve a fake LLM provider on 127.0.0.1 (OpenAI, DashScope and Zhipu wire formats) for "
        "development and tests. Script replies with [[fake: ...]] in the message; see "
        "devtools/fake_llm/server.py."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        fake_server.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        fake_server.serve(**options)
