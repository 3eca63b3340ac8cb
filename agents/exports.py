"""CSV and JSON writers for conversation exports.

Rows are built as plain dicts of Python values; the writers turn them into text, so the
CSV and the JSON of one export always carry the same fields.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Generator, Iterable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest
from django.utils import timezone

from agents.models import Note
from agents.selectors.conversations import ConversationRow
from chatbot.csv_cells import CSV_BOM, Cell, csv_line
from chatbot.models import Message

CONVERSATION_FIELDS = [
    "id",
    "bot_id",
    "bot_name",
    "visitor_uid",
    "visitor_name",
    "visitor_email",
    "visitor_language",
    "visitor_page_url",
    "status",
    "needs_followup",
    "resolved_at",
    "handoff_requested_at",
    "assigned_agent",
    "started_at",
    "last_activity_at",
    "labels",
    "message_count",
    "first_question",
    "sources",
    "up",
    "down",
]
MESSAGE_FIELDS = [
    "id",
    "created_at",
    "role",
    "text",
    "source",
    "status",
    "matched_entry_id",
    "matched_entry_question",
    "score",
    "llm_model",
    "prompt_tokens",
    "completion_tokens",
    "tokens_estimated",
    "cost",
    "ttft_ms",
    "total_ms",
    "feedback_rating",
    "feedback_comment",
    "sources",
]


def conversation_record(row: ConversationRow) -> dict[str, Any]:
    c, visitor = row.conversation, row.conversation.visitor
    return {
        "id": c.pk,
        "bot_id": c.bot_id,
        "bot_name": c.bot.name,
        "visitor_uid": visitor.uid,
        "visitor_name": visitor.name,
        "visitor_email": visitor.email,
        "visitor_language": visitor.language,
        "visitor_page_url": visitor.page_url,
        "status": c.status,
        "needs_followup": c.needs_followup,
        "resolved_at": c.resolved_at,
        "handoff_requested_at": c.handoff_requested_at,
        "assigned_agent": c.assigned_agent.get_username() if c.assigned_agent else "",
        "started_at": c.started_at,
        "last_activity_at": c.last_activity_at,
        "labels": row.labels,
        "message_count": row.message_count,
        "first_question": row.first_question,
        "sources": list(row.sources),
        "up": row.up,
        "down": row.down,
    }


def message_record(message: Message) -> dict[str, Any]:
    entry = message.matched_entry
    feedback = getattr(message, "feedback", None)
    return {
        "id": message.pk,
        "created_at": message.created_at,
        "role": message.role,
        "text": message.text,
        "source": message.source,
        "status": message.status,
        "matched_entry_id": message.matched_entry_id,
        "matched_entry_question": entry.question if entry else "",
        "score": message.score,
        "llm_model": message.llm_model,
        "prompt_tokens": message.prompt_tokens,
        "completion_tokens": message.completion_tokens,
        "tokens_estimated": message.tokens_estimated,
        "cost": message.cost,
        "ttft_ms": message.ttft_ms,
        "total_ms": message.total_ms,
        "feedback_rating": feedback.rating if feedback else "",
        "feedback_comment": feedback.comment if feedback else "",
        # The company's documents the reply drew on: [{"title", "url", "passage_id"}].
        "sources": list(message.sources or []),
    }


def note_record(note: Note) -> dict[str, Any]:
    return {
        "id": note.pk,
        "author": note.author.get_username() if note.author else "",
        "created_at": note.created_at,
        "text": note.text,
    }


def _plain(value: Any) -> Any:
    """A JSON-ready value: ISO 8601 times in the current time zone, exact decimals as strings."""
    if isinstance(value, datetime):
        return timezone.localtime(value).isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def csv_cell(value: Any) -> Cell:
    """The value as a cell for ``csv_line``, which neutralises formulas in text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return value
    if isinstance(value, list):
        value = "; ".join(document_label(item) if isinstance(item, dict) else str(item) for item in value)
    return str(_plain(value))


def document_label(source: dict[str, Any]) -> str:
    """A document a reply drew on, in a CSV cell: ``title <url>`` (a file has no URL)."""
    title, url = str(source.get("title") or ""), str(source.get("url") or "")
    return f"{title} <{url}>" if title and url else title or url


def csv_chunks(
    *, fields: list[str], batches: Iterable[Iterable[dict[str, Any]]]
) -> Generator[str, None, None]:
    """The BOM and header row, then one chunk of CSV text per batch of records."""
    yield CSV_BOM + csv_line(fields)
    for batch in batches:
        yield "".join(csv_line([csv_cell(record[name]) for name in fields]) for record in batch)


def json_chunks(*, key: str, batches: Iterable[Iterable[dict[str, Any]]]) -> Generator[str, None, None]:
    """``{"<key>": [records...]}``, one chunk per batch of records."""
    yield f'{{"{key}": ['
    separator = ""
    for batch in batches:
        parts = [json.dumps(_plain(record), ensure_ascii=False) for record in batch]
        if parts:
            yield separator + ", ".join(parts)
            separator = ", "
    yield "]}\n"


def conversation_list_chunks(
    *, batches: Iterable[list[ConversationRow]], fmt: str
) -> Generator[str, None, None]:
    records = ([conversation_record(row) for row in batch] for batch in batches)
    if fmt == "csv":
        return csv_chunks(fields=CONVERSATION_FIELDS, batches=records)
    return json_chunks(key="conversations", batches=records)


def transcript_csv(*, messages: list[Message]) -> str:
    return "".join(csv_chunks(fields=MESSAGE_FIELDS, batches=[[message_record(m) for m in messages]]))


def transcript_json(*, row: ConversationRow, notes: list[Note], messages: list[Message]) -> str:
    conversation = conversation_record(row) | {"notes": [note_record(note) for note in notes]}
    document = {"conversation": conversation, "messages": [message_record(m) for m in messages]}
    return json.dumps(_plain(document), ensure_ascii=False, indent=2) + "\n"


async def _pulled(chunks: Generator[str, None, None]) -> AsyncIterator[str]:
    pull = sync_to_async(next, thread_sensitive=True)
    try:
        while (chunk := await pull(chunks, None)) is not None:
            yield chunk
    finally:
        await sync_to_async(chunks.close, thread_sensitive=True)()


def streamable(
    request: HttpRequest, chunks: Generator[str, None, None]
) -> Iterator[str] | AsyncIterator[str]:
    """Under ASGI Django drains a synchronous iterator into a list before the first byte
    is sent; an asynchronous one that pulls each chunk in the request's sync thread (where
    its database connection lives) really streams."""
    return _pulled(chunks) if isinstance(request, ASGIRequest) else chunks
