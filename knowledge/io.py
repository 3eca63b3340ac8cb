"""Knowledge-base files: parse and check CSV or JSON, import all-or-nothing, export.

Parsing never touches the database, so a whole file is checked (every bad line reported
at once) before anything is written.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import PurePath
from typing import Any

from django.db import DataError, IntegrityError, transaction

from chatbot import bounded_json
from chatbot.csv_cells import CSV_BOM, csv_line, formula_restore
from chatbot.models import Bot
from knowledge import services
from knowledge.io_fields import (
    ALTERNATIVE_SEPARATOR,
    MAX_ANSWER_CHARS,
    TAG_SEPARATOR,
    json_type,
    record_check,
)
from knowledge.models import Entry

FORMATS = ("csv", "json")
COLUMNS = ("id", "question", "answer", "alternatives", "tags", "active")
REQUIRED_COLUMNS = ("question", "answer")
# A knowledge-base file nests 3 levels (list, entry, alternatives); extra keys get room.
MAX_JSON_DEPTH = 32
MAX_FILE_BYTES = 64 * 1024 * 1024

Error = tuple[int | None, str]


@dataclass(frozen=True)
class EntryRow:
    line: int
    external_id: str
    question: str
    answer: str
    alternatives: tuple[str, ...]
    tags: tuple[str, ...]
    active: bool = True


@dataclass(frozen=True)
class ImportSummary:
    created: int
    updated: int


class ImportFailed(Exception):
    """A file that can't be imported, with every problem found in it.

    ``errors`` holds ``(number, reason)`` pairs; ``unit`` says what the number counts:
    ``"line"`` (physical line of the file) or ``"item"`` (1-based index in a JSON list).
    """

    def __init__(self, errors: list[Error], *, unit: str = "line") -> None:
        self.errors = errors
        self.unit = unit
        super().__init__(self.report())

    def report(self) -> str:
        return "\n".join(reason if n is None else f"{self.unit} {n}: {reason}" for n, reason in self.errors)


class ExportFailed(Exception):
    """The entries can't be written in the requested format without losing data."""


# --- Parsing -------------------------------------------------------------------------


def detect_format(filename: str, data: bytes) -> str:
    """``"csv"`` or ``"json"``: by the file's extension, else by its first character."""
    suffix = PurePath(filename).suffix.lower().lstrip(".")
    if suffix in FORMATS:
        return suffix
    if data.startswith(b"PK\x03\x04"):
        raise ImportFailed([(None, "This looks like a spreadsheet (.xlsx): save it as CSV (UTF-8) or JSON.")])
    head = data.removeprefix(codecs.BOM_UTF8).lstrip()[:1]
    return "json" if head in (b"[", b"{") else "csv"


def parse_kb(data: bytes, *, fmt: str) -> list[EntryRow]:
    """Every entry of a CSV or JSON file, or ImportFailed listing every problem in it."""
    if fmt not in FORMATS:
        raise ValueError(f"Unknown format {fmt!r}; expected one of {', '.join(FORMATS)}.")
    if len(data) > MAX_FILE_BYTES:
        raise ImportFailed([(None, f"The file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB.")])
    text = _decode(data)
    if not text.strip():
        raise ImportFailed([(None, "The file is empty.")])
    return _parse_csv(text) if fmt == "csv" else _parse_json(text)


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ImportFailed([(None, "The file is UTF-16 text: save it as UTF-8.")])
    bad_lines = [n for n, line in enumerate(data.splitlines(), start=1) if not _is_utf8(line)]
    raise ImportFailed([(n, "not UTF-8 text (save the file as UTF-8)") for n in bad_lines])


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _csv_records(text: str) -> Iterator[tuple[int, list[str] | str]]:
    """``(line where the record starts, cells)``, counting lines inside quoted fields.

    A record the csv module can't read comes as ``(line, reason)`` and ends the file.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    start = 1
    try:
        for cells in reader:
            yield start, cells
            start = reader.line_num + 1
    except csv.Error as err:
        yield start, _csv_problem(err)


def _csv_problem(err: csv.Error) -> str:
    if "field larger than field limit" in str(err):
        limit = csv.field_size_limit()
        return f"a field is longer than {limit:,} characters (an answer may have {MAX_ANSWER_CHARS:,})"
    return f"malformed CSV: {err}"


def _parse_csv(text: str) -> list[EntryRow]:
    records = _csv_records(text)
    header_line, header = next((r for r in records if _has_content(r[1])), (1, []))
    if isinstance(header, str):
        raise ImportFailed([(header_line, header)])
    columns = [name.strip().lower() for name in header]
    header_errors = _check_header(columns)
    if header_errors:
        raise ImportFailed([(header_line, reason) for reason in header_errors])
    raw = [(line, _csv_record(columns, cells)) for line, cells in records if _has_content(cells)]
    return _rows(raw, unit="line")


def _has_content(cells: list[str] | str) -> bool:
    return isinstance(cells, str) or any(cell.strip() for cell in cells)


def _check_header(columns: list[str]) -> list[str]:
    errors = [f"column {name!r} appears twice" for name in COLUMNS if columns.count(name) > 1]
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        errors.append(f"missing required column(s) {', '.join(missing)} (columns: {', '.join(COLUMNS)})")
    return errors


def _csv_record(columns: list[str], cells: list[str] | str) -> Mapping[str, object] | str:
    if isinstance(cells, str):
        return cells
    if _has_content(cells[len(columns) :]):
        return (
            f"{len(cells)} cells but the header has {len(columns)} columns (quote fields that contain commas)"
        )
    # Exports neutralise formulas (chatbot.csv_cells); reading restores the text.
    return {
        name: formula_restore(cell) for name, cell in zip(columns, cells, strict=False) if name in COLUMNS
    }


def _parse_json(text: str) -> list[EntryRow]:
    try:
        items = bounded_json.loads(text, max_depth=MAX_JSON_DEPTH)
    except json.JSONDecodeError as err:
        raise ImportFailed([(err.lineno, f"not valid JSON: {err.msg} (column {err.colno})")]) from None
    except bounded_json.TooDeep as err:
        reason = f"nested deeper than {err.max_depth} levels (column {err.colno}); entries need 3"
        raise ImportFailed([(err.lineno, reason)]) from None
    if not isinstance(items, list):
        raise ImportFailed([(None, f"The file must hold a JSON list of objects, not {json_type(items)}.")])
    raw: list[tuple[int, Mapping[str, object] | str]] = [
        (n, item if isinstance(item, dict) else f"must be an object, not {json_type(item)}")
        for n, item in enumerate(items, start=1)
    ]
    return _rows(raw, unit="item")


def _rows(raw: list[tuple[int, Mapping[str, object] | str]], *, unit: str) -> list[EntryRow]:
    """Check each record; a record given as a string is already known to be bad."""
    rows: list[EntryRow] = []
    errors: list[Error] = []
    first_line_of_id: dict[str, int] = {}
    for line, record in raw:
        if isinstance(record, str):
            errors.append((line, record))
            continue
        values, problems = record_check(record)
        external_id = values.get("id", "")
        if external_id and external_id in first_line_of_id:
            problems.append(f"id {external_id!r} is also used by {unit} {first_line_of_id[external_id]}")
        first_line_of_id.setdefault(external_id, line)
        errors.extend((line, problem) for problem in problems)
        if not problems:
            rows.append(_entry_row(line, values))
    if errors:
        raise ImportFailed(errors, unit=unit)
    if not rows:
        raise ImportFailed([(None, "The file has no entries.")])
    return rows


def _entry_row(line: int, values: Mapping[str, Any]) -> EntryRow:
    return EntryRow(
        line=line,
        external_id=values["id"],
        question=values["question"],
        answer=values["answer"],
        alternatives=values["alternatives"],
        tags=values["tags"],
        active=values["active"],
    )


# --- Import and export ---------------------------------------------------------------


def kb_import(*, bot: Bot, rows: Sequence[EntryRow]) -> ImportSummary:
    """Upsert every row by its id in one transaction, then compute missing embeddings.

    Rows come from ``parse_kb``, so the database should accept them all; if it doesn't
    (another import adding the same id at the same moment), nothing is kept and the
    reason is an ``ImportFailed`` like any other.
    """
    created = 0
    row: EntryRow | None = None
    try:
        with transaction.atomic():
            for row in rows:
                _, was_created = services.entry_upsert(
                    bot=bot,
                    external_id=row.external_id,
                    question=row.question,
                    answer=row.answer,
                    alternatives=row.alternatives,
                    tags=row.tags,
                    is_active=row.active,
                )
                created += was_created
    except (DataError, IntegrityError) as err:
        where = f" at the entry {row.question[:60]!r}" if row else ""
        raise ImportFailed([(None, f"The database refused the import{where}: {err}. Try again.")]) from err
    # The entries are saved whatever happens to the embeddings; a failure there is logged.
    transaction.on_commit(partial(services.entries_embed, bot=bot), robust=True)
    return ImportSummary(created=created, updated=len(rows) - created)


def kb_export(*, bot: Bot, fmt: str) -> bytes:
    """Every entry of the bot (active or not) ordered by id; CSV starts with a UTF-8 BOM."""
    entries = Entry.objects.filter(bot=bot).order_by("id").prefetch_related("alternatives", "tags")
    records = [_export_record(entry) for entry in entries]
    if fmt == "json":
        return (json.dumps(records, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    if fmt == "csv":
        return _csv_bytes(records)
    raise ValueError(f"Unknown format {fmt!r}; expected one of {', '.join(FORMATS)}.")


def _export_record(entry: Entry) -> dict[str, Any]:
    return {
        "id": entry.external_id,
        "question": entry.question,
        "answer": entry.answer,
        "alternatives": [alternative.text for alternative in entry.alternatives.all()],
        "tags": [tag.name for tag in entry.tags.all()],
        "active": entry.is_active,
    }


def _csv_bytes(records: list[dict[str, Any]]) -> bytes:
    clashes = [
        f"{record['question'][:60]!r}: alternative {text!r}"
        for record in records
        for text in record["alternatives"]
        if ALTERNATIVE_SEPARATOR in text
    ]
    if clashes:
        raise ExportFailed(
            f"These alternatives contain {ALTERNATIVE_SEPARATOR!r}, which separates alternatives in CSV; "
            "export JSON instead, or edit them: " + "; ".join(clashes)
        )
    lines = [CSV_BOM, csv_line(COLUMNS)]
    lines.extend(
        csv_line(
            [
                record["id"],
                record["question"],
                record["answer"],
                ALTERNATIVE_SEPARATOR.join(record["alternatives"]),
                TAG_SEPARATOR.join(record["tags"]),
                "true" if record["active"] else "false",
            ]
        )
        for record in records
    )
    return "".join(lines).encode("utf-8")
