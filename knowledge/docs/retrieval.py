"""Search a bot's documents for the passages that answer a visitor's question.

The same embeddings as entries (the question goes through the model's query batcher, so
matching and retrieval encode it once between them), the same lexical blend, and a
confidence calibrated with the same machinery (``knowledge.docs.retrieval_fit``), so
"relevant enough" is decided as for entries: by the bot's target precision. The index
and its fit live in the runtime (``knowledge.docs.retrieval_store``).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future

from chatbot.models import Bot
from chatbot.runtime import runtime
from knowledge import embeddings
from knowledge.docs.retrieval_index import PassageHit
from knowledge.docs.retrieval_store import PassageIndexes, Searchable, searchable_for
from knowledge.docs.split import count_tokens
from knowledge.matching import normalise_query
from knowledge.query_batcher import QueryVector
from knowledge.shared_reads import shared_read

__all__ = ["PassageHit", "passages_for_prompt", "passages_search"]

log = logging.getLogger(__name__)


async def passages_search(bot: Bot, question: str, *, limit: int = 5) -> list[PassageHit]:
    """The passages judged relevant to ``question``, most relevant first; [] when the bot
    has none or none is relevant. An embedding failure means words alone, never an error."""
    text = normalise_query(question)
    if not text or limit <= 0:
        return []
    known = runtime().part(PassageIndexes).by_bot.get(bot.pk)
    # The question is encoded while the revision is read, unless the bot had no passages.
    pending = await _submit(known.model, text) if known is not None and len(known.index) else None
    searchable = await _searchable_shared(bot.pk)
    if not len(searchable.index):
        return []
    if pending is None or known is None or known.model != searchable.model:
        pending = await _submit(searchable.model, text)
    return searchable.hits(await _vector(pending), text, limit)


def passages_for_prompt(hits: list[PassageHit], *, token_budget: int) -> list[PassageHit]:
    """The first ``hits`` (most relevant first) whose text fits in ``token_budget`` together."""
    chosen: list[PassageHit] = []
    used = 0
    for hit in hits:
        used += count_tokens(" ".join([hit.title, *hit.headings, hit.text]))
        if used > token_budget:
            break
        chosen.append(hit)
    return chosen


async def _submit(model: str, text: str) -> Future[QueryVector] | None:
    try:
        batcher = embeddings.loaded_batcher(model) or await asyncio.to_thread(embeddings.get_batcher, model)
        return batcher.submit(text)
    except Exception:
        log.warning(
            "the embedding model %s is unavailable; searching passages by words", model, exc_info=True
        )
        return None


async def _vector(pending: Future[QueryVector] | None) -> QueryVector | None:
    if pending is None:
        return None
    try:
        return pending.result() if pending.done() else await asyncio.wrap_future(pending)
    except Exception:
        log.warning("embedding the question failed; searching passages by words", exc_info=True)
        return None


async def _searchable_shared(bot_id: int) -> Searchable:
    """``searchable_for`` for concurrent async callers: those arriving while a read for the
    same bot is under way share it (the database thread is one thread). The read is a task
    of its own, so a caller that is cancelled does not fail the others."""
    return await shared_read(runtime().part(PassageIndexes).reads, bot_id, searchable_for)
