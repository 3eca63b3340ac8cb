from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from chatbot.models import Bot
from chatbot.selectors import DEMO_BOT_NAME, demo_bot
from knowledge.docs.services import source_add_file, source_process
from knowledge.models import Source
from knowledge.services import entries_embed, entry_upsert

DEMO_KB = Path(__file__).resolve().parents[2] / "demo" / "shop_kb.json"
# The shop's help-center pages: what its entries don't say (care, assembly, gift cards ...).
DEMO_DOCS = Path(__file__).resolve().parents[2] / "demo" / "help_center"
DEMO_ORIGINS = ["http://127.0.0.1:8000", "http://localhost:8000"]


class Command(BaseCommand):
    help = "Create (or refresh) the demo shop bot and its knowledge base. Safe to run again."

    def handle(self, *args: Any, **options: Any) -> None:
        bot = self._load()
        self._calibrate(bot)
        self._documents(bot)

    @transaction.atomic
    def _load(self) -> Bot:
        bot = demo_bot()
        if bot is None:
            bot = Bot.objects.create(
                name=DEMO_BOT_NAME,
                allowed_origins=DEMO_ORIGINS,
                greeting="Hi! I'm the shop assistant. Ask me about orders, shipping, returns or payment. "
                "你好！有关订单、配送、退货或支付的问题都可以问我。",
                system_prompt=(
                    "You are the customer-service assistant of a small online home-goods shop. "
                    "Answer briefly and kindly, in the visitor's language. If you are not sure, "
                    "say so and offer to connect the visitor with a person."
                ),
            )
        created = updated = 0
        for item in json.loads(DEMO_KB.read_text(encoding="utf-8")):
            _, was_created = entry_upsert(
                bot=bot,
                external_id=item["id"],
                question=item["question"],
                answer=item["answer"],
                alternatives=item.get("alternatives", []),
                tags=[*item.get("tags", []), item.get("lang", "")],
            )
            created += was_created
            updated += not was_created
        embedded = entries_embed(bot=bot)
        self.stdout.write(
            f"Demo bot {bot.name!r} (public key {bot.public_key}): {embedded} phrasings embedded, "
            f"{created} entries created, {updated} refreshed."
        )
        return bot

    def _calibrate(self, bot: Bot) -> None:
        """Thresholds from the knowledge base itself, so the demo answers from the start."""
        from knowledge.matching import calibrate_now  # loads the embedding model

        row = calibrate_now(Bot.objects.get(pk=bot.pk))
        if row.answer_threshold is None:
            self.stdout.write(f"Calibrated: {row.get_status_display()} {row.message}")
            return
        self.stdout.write(
            f"Calibrated in {row.seconds:.1f} s: answers at confidence >= {row.answer_threshold:.2f} "
            f"(estimated precision {row.estimated.get('precision', 0):.2f}), "
            f"references the LLM at >= {row.reference_threshold:.2f}."
        )

    def _documents(self, bot: Bot) -> None:
        """The help-center pages as the bot's documents (indexed again only when changed)."""
        passages = 0
        for path in sorted(DEMO_DOCS.glob("*.md")):
            source = source_process(source_add_file(bot=bot, filename=path.name, data=path.read_bytes()).pk)
            if source.status != Source.Status.READY:
                self.stderr.write(f"Demo document {path.name}: {source.last_error}")
            passages += source.passages.count()
        self.stdout.write(f"Demo documents: {passages} passages from {DEMO_DOCS.name}/.")
