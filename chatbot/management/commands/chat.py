from __future__ import annotations

import asyncio
import sys
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chatbot.llm.http import close_shared_client
from chatbot.models import Bot, Conversation, Visitor
from chatbot.reply_events import AgentHasConversation, Delta, Ended
from chatbot.replying import Matcher, reply_stream
from knowledge import matching

QUIT = {"/quit", "/exit"}


class Command(BaseCommand):
    help = (
        "Chat with a bot in the terminal, through the same pipeline as the website "
        "(knowledge base first, then the LLM). Ctrl-D or /quit ends."
    )
    # call_command("chat", bot=key, stdin=io.StringIO("hello\n"), matcher=stand_in) in tests.
    stealth_options = ("stdin", "matcher")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bot", required=True, help="the bot's public key (or its id)")
        parser.add_argument("--quiet", action="store_true", help="no line about source, tokens and timings")

    def handle(
        self,
        *args: Any,
        bot: str,
        quiet: bool,
        stdin: IO[str] | None = None,
        matcher: Matcher = matching,
        **options: Any,
    ) -> None:
        found = Bot.objects.filter(public_key=bot).first()
        if found is None and bot.isdigit():
            found = Bot.objects.filter(pk=int(bot)).first()
        if found is None:
            raise CommandError(f"No bot with public key {bot!r}.")
        visitor = Visitor.objects.create(bot=found, metadata={"channel": "manage.py chat"})
        conversation = Conversation.objects.create(bot=found, visitor=visitor)
        self.stdout.write(
            f"Chatting with {found.name} (conversation #{conversation.pk}). Ctrl-D or /quit ends."
        )
        if found.greeting:
            self.stdout.write(f"bot> {found.greeting}")
        try:
            asyncio.run(self._session(conversation.pk, stdin or sys.stdin, quiet=quiet, matcher=matcher))
        except KeyboardInterrupt:
            self.stdout.write("")

    async def _session(self, conversation_id: int, stdin: IO[str], *, quiet: bool, matcher: Matcher) -> None:
        try:
            while True:
                self.stdout.write("you> ", ending="")
                self.stdout.flush()
                line = await asyncio.to_thread(stdin.readline)
                if not line or line.strip() in QUIT:
                    self.stdout.write("")
                    return
                if line.strip():
                    await self._reply(conversation_id, line, quiet=quiet, matcher=matcher)
        finally:
            await close_shared_client()

    async def _reply(self, conversation_id: int, text: str, *, quiet: bool, matcher: Matcher) -> None:
        self.stdout.write("bot> ", ending="")
        async for event in reply_stream(conversation_id=conversation_id, text=text, matcher=matcher):
            if isinstance(event, Delta):
                self.stdout.write(event.text, ending="")
                self.stdout.flush()
            elif isinstance(event, AgentHasConversation):
                self.stdout.write("(an agent has this conversation)")
            elif isinstance(event, Ended):
                self.stdout.write("")
                if not quiet:
                    self.stdout.write(self.style.HTTP_INFO(f"     [{describe(event)}]"))


def describe(end: Ended) -> str:
    parts = [end.source if end.status == "complete" else f"{end.source} {end.status}"]
    if end.score is not None:
        parts.append(f"score {end.score:.2f}")
    result = end.result
    if result is not None:
        estimated = " est." if result.tokens_estimated else ""
        parts += [
            f"{result.provider}/{result.model}",
            f"{result.prompt_tokens}+{result.completion_tokens} tokens{estimated}",
            f"first token {result.ttft_ms} ms",
            f"total {result.total_ms} ms",
        ]
        if result.cost is not None:
            parts.append(f"cost {result.cost}")
    if end.error:
        parts.append(end.error)
    return " · ".join(parts)
