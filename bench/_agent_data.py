"""Seed a workspace-sized history for bench_agent.py: two bots, ~20,000 conversations of
3-7 messages (100,000 messages in all) over the last 60 days, written with bulk_create.

Mix: the bot answers from the knowledge base (59%), the LLM (33%, two models, with tokens
and cost) or the fallback (8%); ~7% of conversations ask for a person, after which an
agent answers; ~10% of replies are rated (70% up). A quarter of the visitors write Chinese.
One word, SEARCH_WORD, is in ~1% of messages, for the search benchmark.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from chatbot.models import Bot, Conversation, Feedback, Message, Visitor
from knowledge.models import Entry

SEARCH_WORD = "warranty"
DAYS = 60
BATCH = 5000
MODELS = (("gpt-4o-mini", Decimal("0.15"), Decimal("0.60")), ("qwen-plus", Decimal("0.8"), Decimal("2")))
QUESTIONS = {
    "en": [
        "Where is my order {n}?",
        "How do I return item {n}?",
        "Can I pay with Alipay for order {n}?",
        "How long does delivery to zone {n} take?",
        "I forgot my password, account {n}",
        "Do you ship to country code {n}?",
        "Can I get an invoice for order {n}?",
        "Why was I charged twice, order {n}?",
    ],
    "zh": [
        "我的订单 {n} 到哪了？",
        "订单 {n} 怎么退货？",
        "能开发票吗？订单号 {n}",
        "忘记密码怎么办，账号 {n}",
        "快递 {n} 几天能到？",
    ],
}
SEARCHED = {
    "en": "Is order {n} still under " + SEARCH_WORD + "?",
    "zh": "订单 {n} 还在保修期(" + SEARCH_WORD + ")内吗？",
}
ANSWERS = {
    "en": "Thanks for asking! Here is what we know about case {n}.",
    "zh": "感谢咨询，关于 {n} 的情况如下。",
}


@dataclass
class Seeded:
    conversations: int = 0
    messages: int = 0
    replies: int = 0
    feedback: int = 0
    handoffs: int = 0
    search_hits: int = 0
    seconds: float = 0.0


def seed(*, messages: int = 100_000, seed_value: int = 6) -> Seeded:
    """Conversations are built in memory, then written oldest first, as a live system
    writes them (so ids grow with time, and rows of one day sit together)."""
    started = time.perf_counter()
    rng = random.Random(seed_value)
    now = timezone.now()
    done = Seeded()
    with transaction.atomic():
        bots = [Bot.objects.create(name="Shop EN"), Bot.objects.create(name="商店 CN")]
        entries = {
            bot.pk: Entry.objects.bulk_create(
                Entry(bot=bot, question=q.format(n=k), answer=f"Answer {k}")
                for k in range(25)
                for q in QUESTIONS["en"][:2]
            )
            for bot in bots
        }
        planned: list[tuple[Conversation, list[Message]]] = []
        budget = messages
        while budget > 0:
            length = min(budget, rng.randint(3, 7))
            budget -= length
            visitor = Visitor(bot=rng.choice(bots), language=rng.choice(["en", "en", "en", "zh-hans"]))
            planned.append(
                _conversation_build(rng=rng, now=now, visitor=visitor, length=length, entries=entries)
            )
        planned.sort(key=lambda plan: plan[0].started_at)
        for first in range(0, len(planned), BATCH // 5):
            _conversations_write(rng=rng, planned=planned[first : first + BATCH // 5], done=done)
    done.seconds = time.perf_counter() - started
    return done


def _conversations_write(
    *, rng: random.Random, planned: list[tuple[Conversation, list[Message]]], done: Seeded
) -> None:
    Visitor.objects.bulk_create([conversation.visitor for conversation, _ in planned])
    conversations = Conversation.objects.bulk_create([conversation for conversation, _ in planned])
    flat = []
    for conversation, messages in planned:
        for message in messages:
            message.conversation = conversation
            flat.append(message)
    Message.objects.bulk_create(flat, batch_size=BATCH)
    feedback = [
        Feedback(message=m, rating="up" if rng.random() < 0.7 else "down", created_at=m.created_at)
        for m in flat
        if m.role == Message.Role.BOT and rng.random() < 0.10
    ]
    Feedback.objects.bulk_create(feedback)
    done.conversations += len(conversations)
    done.messages += len(flat)
    done.replies += sum(m.role != Message.Role.VISITOR for m in flat)
    done.feedback += len(feedback)
    done.handoffs += sum(c.handoff_requested_at is not None for c in conversations)
    done.search_hits += sum(SEARCH_WORD in m.text for m in flat)


def _moment(rng: random.Random, now: datetime) -> datetime:
    """A time in the last DAYS days, busier in office hours."""
    day = now - timedelta(days=rng.randrange(DAYS))
    hour = int(rng.triangular(0, 24, 14)) % 24
    moment = day.replace(hour=hour, minute=rng.randrange(60), second=rng.randrange(60))
    # Today's later hours haven't happened yet: the same hour of the day before instead.
    return moment - timedelta(days=1) if moment > now - timedelta(minutes=15) else moment


def _conversation_build(
    *, rng: random.Random, now: datetime, visitor: Visitor, length: int, entries: dict[int, list[Entry]]
) -> tuple[Conversation, list[Message]]:
    lang = "zh" if visitor.language.startswith("zh") else "en"
    clock = _moment(rng, now)
    handoff_at = None
    handoff_turn = rng.randrange(1, length) if rng.random() < 0.07 and length > 1 else None
    messages = []
    for turn in range(length):
        clock += timedelta(seconds=rng.randint(2, 90))
        if turn % 2 == 0:
            messages.append(_visitor_message(rng=rng, lang=lang, when=clock))
            continue
        if handoff_turn is not None and turn >= handoff_turn:
            handoff_at = handoff_at or clock - timedelta(seconds=1)
            messages.append(
                Message(role="agent", source="agent", text=ANSWERS[lang].format(n=turn), created_at=clock)
            )
            continue
        messages.append(_bot_reply(rng=rng, lang=lang, when=clock, entries=entries[visitor.bot_id]))
    conversation = Conversation(
        bot_id=visitor.bot_id,
        visitor=visitor,
        status="closed" if handoff_at is None else "waiting_for_agent",
        needs_followup=handoff_at is not None or any(m.source == "fallback" for m in messages),
        handoff_requested_at=handoff_at,
        started_at=messages[0].created_at,
        last_activity_at=clock,
    )
    return conversation, messages


def _visitor_message(*, rng: random.Random, lang: str, when: datetime) -> Message:
    n = rng.randrange(100_000)
    # 1% of all messages: visitor messages are about half of them.
    template = SEARCHED[lang] if rng.random() < 0.02 else rng.choice(QUESTIONS[lang])
    return Message(role="visitor", text=template.format(n=n), created_at=when)


def _bot_reply(*, rng: random.Random, lang: str, when: datetime, entries: list[Entry]) -> Message:
    draw, n = rng.random(), rng.randrange(100_000)
    if draw < 0.59:
        entry = rng.choice(entries)
        return Message(
            role="bot",
            source="knowledge",
            text=entry.answer,
            matched_entry=entry,
            score=round(rng.uniform(0.8, 1.0), 3),
            ttft_ms=rng.randint(12, 80),
            total_ms=rng.randint(12, 90),
            created_at=when,
        )
    if draw < 0.92:
        model, prompt_price, completion_price = rng.choice(MODELS)
        prompt, completion = rng.randint(300, 2500), rng.randint(20, 400)
        cost = (prompt * prompt_price + completion * completion_price) / 1_000_000
        return Message(
            role="bot",
            source="llm",
            text=ANSWERS[lang].format(n=n),
            llm_model=model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost=cost.quantize(Decimal("0.000001")),
            ttft_ms=rng.randint(250, 3000),
            total_ms=rng.randint(1000, 9000),
            created_at=when,
        )
    return Message(
        role="bot",
        source="fallback",
        text="Sorry, I can't answer that right now.",
        ttft_ms=rng.randint(3, 30),
        total_ms=rng.randint(3, 30),
        created_at=when,
    )
