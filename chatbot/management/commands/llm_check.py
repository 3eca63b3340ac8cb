from __future__ import annotations

import asyncio
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chatbot.llm import ChatMessage, ChatRequest, ChatResult, LLMError, complete
from chatbot.llm.http import close_shared_client
from chatbot.models import Bot

PING = "Reply with the single word: pong"


class Command(BaseCommand):
    help = "Send one tiny request to the LLM; print provider, model, time to first token and total."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--provider", default="", help="openai, dashscope or zhipu (default: LLM_PROVIDER)"
        )
        parser.add_argument("--model", default="", help="model name (default: LLM_MODEL)")
        parser.add_argument("--bot", default="", help="use this bot's provider and model (public key)")

    def handle(self, *args: Any, provider: str, model: str, bot: str, **options: Any) -> None:
        if bot:
            found = Bot.objects.filter(public_key=bot).first()
            if found is None:
                raise CommandError(f"No bot with public key {bot!r}.")
            provider, model = provider or found.llm_provider, model or found.llm_model
        request = ChatRequest(
            messages=(ChatMessage("user", PING),), provider=provider, model=model, max_tokens=5, temperature=0
        )
        try:
            result = asyncio.run(_check(request))
        except LLMError as err:
            raise CommandError(f"{type(err).__name__}: {err}") from err
        self.stdout.write(
            f"ok provider={result.provider} model={result.model} ttft={result.ttft_ms} ms "
            f"total={result.total_ms} ms tokens={result.prompt_tokens}+{result.completion_tokens}"
            f"{' (estimated)' if result.tokens_estimated else ''} reply={result.text.strip()[:40]!r}"
        )


async def _check(request: ChatRequest) -> ChatResult:
    try:
        # The fallback provider would hide a broken primary: check exactly the one asked for.
        return await complete(request, fallback=False)
    finally:
        await close_shared_client()
