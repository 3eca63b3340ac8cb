"""Writes for the knowledge base."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from django.db import transaction
from django.db.models import F, QuerySet

from chatbot.models import Bot
from knowledge.answer_text import plain
from knowledge.models import Alternative, AnswerEmbedding, Embedding, Entry, Tag

if TYPE_CHECKING:
    import numpy as np


def _clean_unique(texts: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(t.strip() for t in texts if t and t.strip()))


@transaction.atomic
def entry_upsert(
    *,
    bot: Bot,
    question: str,
    answer: str,
    alternatives: Iterable[str] = (),
    tags: Iterable[str] = (),
    external_id: str = "",
    is_active: bool = True,
) -> tuple[Entry, bool]:
    """Create an entry, or update the one with the same ``external_id`` in this bot.

    Returns ``(entry, created)``. Alternatives and tags are replaced, not merged, so
    re-importing a file gives the same knowledge base as importing it once.
    """
    question, answer = question.strip(), answer.strip()
    if not question or not answer:
        raise ValueError("An entry needs both a question and an answer.")
    entry = Entry.objects.filter(bot=bot, external_id=external_id).first() if external_id else None
    created = entry is None
    if entry is None:
        entry = Entry(bot=bot, external_id=external_id)
    entry.question, entry.answer, entry.is_active = question, answer, is_active
    entry.save()

    wanted = [t for t in _clean_unique(alternatives) if t != question]
    current = list(entry.alternatives.order_by("id").values_list("text", flat=True))
    if current != wanted:
        entry.alternatives.all().delete()
        Alternative.objects.bulk_create(Alternative(entry=entry, text=text) for text in wanted)

    tag_names = [name.lower() for name in _clean_unique(tags)]
    entry.tags.set([Tag.objects.get_or_create(name=name)[0] for name in tag_names])
    return entry, created


def bot_kb_touch(*, bot_id: int) -> None:
    """Mark a bot's knowledge base as changed, so every process reloads its index."""
    Bot.objects.filter(pk=bot_id).update(kb_revision=F("kb_revision") + 1)


def entries_set_active(*, entries: QuerySet[Entry], active: bool) -> int:
    """Bulk (de)activate; a queryset update sends no signals, so bump revisions here."""
    bot_ids = set(entries.values_list("bot_id", flat=True))
    with transaction.atomic():
        count = entries.update(is_active=active)
        for bot_id in bot_ids:
            bot_kb_touch(bot_id=bot_id)
    return count


def bot_embedding_model(bot_id: int, also: Iterable[str] = ()) -> str:
    """The model a bot's phrasings are embedded with: its own setting, else chosen by the
    language of its entries' questions (``embeddings.model_for``). ``also``: more texts
    whose language counts with them (its passages, for ``knowledge.docs.documents_model``)."""
    from knowledge import embeddings

    configured = Bot.objects.filter(pk=bot_id).values_list("embedding_model", flat=True).first() or ""
    questions = Entry.objects.filter(bot_id=bot_id, is_active=True).values_list("question", flat=True)
    return embeddings.model_for(configured, [*questions, *also])


def entries_embed(
    *,
    bot: Bot | None = None,
    entries: Iterable[Entry] | None = None,
    force: bool = False,
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
    model: str | None = None,
) -> int:
    """Store a vector for every phrasing that lacks one for its bot's model (``model``, if
    given, for all the entries), and one for each entry's answer (``_answers_embed``).

    Vectors of phrasings that no longer exist, and of other models, are removed. With
    ``force`` every phrasing and answer is encoded again. Returns the number of phrasings
    encoded.
    """
    from knowledge import embeddings

    if entries is None:
        if bot is None:
            raise ValueError("entries_embed needs a bot or entries")
        entries = Entry.objects.filter(bot=bot)
    entries = list(
        Entry.objects.filter(pk__in=[e.pk for e in entries]).prefetch_related(
            "alternatives", "embeddings", "answer_embeddings"
        )
    )
    models = {bot_id: model or bot_embedding_model(bot_id) for bot_id in {e.bot_id for e in entries}}
    todo: list[tuple[Entry, str]] = []
    stale: list[int] = []
    for entry in entries:
        wanted = {Embedding.hash_text(text): text for text in entry.phrasings()}
        have = set()
        for row in entry.embeddings.all():
            if force or row.model_name != models[entry.bot_id] or row.text_hash not in wanted:
                stale.append(row.pk)
            else:
                have.add(row.text_hash)
        todo.extend((entry, text) for digest, text in wanted.items() if digest not in have)
    Embedding.objects.filter(pk__in=stale).delete()

    def phrasing_row(entry: Entry, text: str, name: str, vector: np.ndarray) -> Embedding:
        return Embedding(
            entry=entry,
            text=text,
            text_hash=Embedding.hash_text(text),
            model_name=name,
            dim=len(vector),
            vector=vector.astype("<f4").tobytes(),
        )

    _vectors_store(todo, models, embeddings.encode_documents, phrasing_row, batch_size, progress)
    _answers_embed(entries, models, force=force, batch_size=batch_size)
    return len(todo)


def _answers_embed(entries: list[Entry], models: dict[int, str], *, force: bool, batch_size: int) -> int:
    """Give each entry one AnswerEmbedding, of its bot's model (``models``) and made from its
    current answer (``answer_text.plain``); others are replaced. An entry whose answer is
    empty once made plain has none. Entries need ``answer_embeddings`` prefetched. Returns
    the number of answers encoded."""
    from knowledge import embeddings

    todo: list[tuple[Entry, str]] = []
    stale: list[int] = []
    for entry in entries:
        text = plain(entry.answer)
        digest = Embedding.hash_text(text) if text else None
        current = False
        for row in entry.answer_embeddings.all():
            if force or row.model_name != models[entry.bot_id] or row.text_hash != digest:
                stale.append(row.pk)
            else:
                current = True
        if text and not current:
            todo.append((entry, text))
    AnswerEmbedding.objects.filter(pk__in=stale).delete()

    def answer_row(entry: Entry, text: str, name: str, vector: np.ndarray) -> AnswerEmbedding:
        return AnswerEmbedding(
            entry=entry,
            model_name=name,
            text_hash=Embedding.hash_text(text),
            dim=len(vector),
            vector=vector.astype("<f4").tobytes(),
        )

    _vectors_store(todo, models, embeddings.encode_passages, answer_row, batch_size)
    return len(todo)


def _vectors_store(
    todo: list[tuple[Entry, str]],
    models: dict[int, str],
    encode: Callable[[list[str], str], np.ndarray],
    row: Callable[[Entry, str, str, np.ndarray], Embedding | AnswerEmbedding],
    batch_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Encode the (entry, text) pairs with their bot's model (``models``), ``batch_size`` at a
    time, and store the rows ``row`` makes of each; a row another process made meanwhile wins."""
    done = 0
    for name in set(models.values()):
        work = [item for item in todo if models[item[0].bot_id] == name]
        for start in range(0, len(work), batch_size):
            chunk = work[start : start + batch_size]
            vectors = encode([text for _, text in chunk], name)
            made = [
                row(entry, text, name, vector) for (entry, text), vector in zip(chunk, vectors, strict=True)
            ]
            type(made[0]).objects.bulk_create(made, ignore_conflicts=True)
            done += len(chunk)
            if progress:
                progress(done, len(todo))
