"""A source's text as passages with vectors: stored in one transaction once splitting and
embedding succeeded, skipped when the text and the vectors are those stored already."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Substr

from chatbot.models import Bot
from knowledge import embeddings
from knowledge.docs.errors import DocumentError, ExtractError
from knowledge.docs.extract import Document, text_hash
from knowledge.docs.split import Chunk, split
from knowledge.models import Passage, PassageEmbedding, Source
from knowledge.services import bot_embedding_model

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
EMBED_BATCH = 32
# A passage's script is told from its first characters, and a bot's from this many passages.
SCRIPT_HEAD = 200
SCRIPT_SAMPLE = 5000


def documents_touch(bot_id: int) -> None:
    """The bot's passages or their vectors changed: its passage index is rebuilt (retrieval)."""
    Bot.objects.filter(pk=bot_id).update(docs_revision=F("docs_revision") + 1)


class Interrupted(Exception):
    """Raised by a progress callback when the process stops: the source goes back to the
    queue (``queued``) with its passages untouched, for the next process to index."""


def documents_model(bot_id: int, texts: Sequence[str] = (), *, without: Source | None = None) -> str:
    """The model a bot's passages are embedded with: the bot's own setting (or the
    provider's), else chosen by ``embeddings.model_for`` from the language of its entries'
    questions *and* its passages, so Chinese documents of an English FAQ, or of a bot with
    no entries, are read by a model that reads them, and a Chinese FAQ's English documents
    by one that matches Chinese questions to them. The entries keep their own choice
    (``bot_embedding_model``); when the two differ a question is encoded once for each.
    ``texts``: passages about to be stored, counted with the stored ones (less those of
    ``without``, which they replace)."""
    stored = Passage.objects.filter(bot_id=bot_id)
    if without is not None:
        stored = stored.exclude(source=without)
    heads = stored.order_by("id").annotate(head=Substr("text", 1, SCRIPT_HEAD)).values_list("head", flat=True)
    return bot_embedding_model(bot_id, [*heads[:SCRIPT_SAMPLE], *texts])


def document_index(source: Source, document: Document, *, progress: Progress | None = None) -> bool:
    """Store the document as the source's passages, unless its text and vectors are those
    stored already. True if the passages were replaced. If they change the bot's passage
    model, the other passages keep their vectors until ``passages_embed`` runs (the end
    of every indexing job)."""
    digest = text_hash(document)
    if digest == source.content_hash and is_embedded(source, documents_model(source.bot_id)):
        return False
    chunks = split(document)
    if not chunks:
        raise ExtractError("No text was found in it.")
    model = documents_model(source.bot_id, [chunk.text for chunk in chunks], without=source)
    title = (document.title or source.label)[:500]
    vectors = passage_vectors([embedding_text(title, chunk) for chunk in chunks], model, progress)
    with transaction.atomic():
        source.passages.all().delete()
        Passage.objects.bulk_create(
            Passage(
                source=source,
                bot_id=source.bot_id,
                position=position,
                title=title,
                headings=list(chunk.headings),
                text=chunk.text,
                tokens=chunk.tokens,
                text_hash=Passage.hash_text(chunk.text),
            )
            for position, chunk in enumerate(chunks)
        )
        ids = list(source.passages.order_by("position").values_list("id", flat=True))
        PassageEmbedding.objects.bulk_create(
            PassageEmbedding(passage_id=pk, model_name=model, dim=len(row), vector=vector_blob(row))
            for pk, row in zip(ids, vectors, strict=True)
        )
        source.content_hash = digest
        source.save(update_fields=["content_hash"])
        documents_touch(source.bot_id)
    return True


def is_embedded(source: Source, model: str) -> bool:
    """The source has passages, each with a vector of ``model``."""
    passages = source.passages.all()
    count = passages.count()
    return count > 0 and passages.filter(embeddings__model_name=model).count() == count


def embedding_text(title: str, chunk: Chunk) -> str:
    # The heading path says what a passage is about when its text doesn't repeat it.
    path = [part for part in (title, *chunk.headings) if part]
    path = [part for i, part in enumerate(path) if i == 0 or part != path[i - 1]]
    return f"{' › '.join(path)}\n{chunk.text}" if path else chunk.text


def vector_blob(row: np.ndarray) -> bytes:
    return row.astype("<f4").tobytes()


def passage_vectors(texts: list[str], model: str, progress: Progress | None) -> np.ndarray:
    rows = []
    for start in range(0, len(texts), EMBED_BATCH):
        # With the model's document prefix (multilingual-e5's "passage: "): questions are
        # matched against passages, not question to question as entries are.
        rows.append(embeddings.encode_passages(texts[start : start + EMBED_BATCH], model))
        if progress:
            progress(min(start + EMBED_BATCH, len(texts)), len(texts))
    return np.concatenate(rows) if rows else np.zeros((0, 0), dtype=np.float32)


def passages_embed(
    *, bot: Bot, model: str | None = None, force: bool = False, progress: Progress | None = None
) -> int:
    """Give every passage of the bot a vector of its current model (after the model
    changed; with ``force`` all again); vectors of other models are removed. Returns how
    many passages were encoded."""
    model = model or documents_model(bot.pk)
    stale = PassageEmbedding.objects.filter(passage__bot=bot)
    if (stale if force else stale.exclude(model_name=model)).delete()[0]:
        documents_touch(bot.pk)
    todo = list(Passage.objects.filter(bot=bot).exclude(embeddings__model_name=model).order_by("id"))
    if not todo:
        return 0
    texts = [embedding_text(p.title, Chunk(tuple(p.headings), p.text, p.tokens)) for p in todo]
    vectors = passage_vectors(texts, model, progress)
    PassageEmbedding.objects.bulk_create(
        [
            PassageEmbedding(passage=p, model_name=model, dim=len(row), vector=vector_blob(row))
            for p, row in zip(todo, vectors, strict=True)
        ],
        ignore_conflicts=True,
    )
    documents_touch(bot.pk)
    return len(todo)


def failure_reason(err: Exception, label: str) -> str:
    """What ``last_error`` says: a DocumentError's message, else a bug's type and message
    (logged with its traceback)."""
    if isinstance(err, DocumentError):
        return str(err)
    log.exception("indexing %s failed", label)
    return f"Unexpected error: {type(err).__name__}: {err}"


def status_set(source: Source, status: str) -> None:
    source.status = status
    Source.objects.filter(pk=source.pk).update(status=status)


def failed_set(source: Source, reason: str) -> None:
    source.status, source.last_error = Source.Status.FAILED, reason
    Source.objects.filter(pk=source.pk).update(status=Source.Status.FAILED, last_error=reason[:2000])
