"""Knowledge-base files: parse and check CSV or JSON, import all-or-nothing, export.

Parsing never touches the database, so a whole file is checked (every bad line reported
at once) before anything is written.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import PurePath
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_unicode_slug
from django.db import transaction

from chatbot.models import Bot
from knowledge import services
from knowledge.models import Entry, Tag

FORMATS = ("csv", "json")
COLUMNS = ("id", "question", "answer", "alternatives", "tags", "active")
REQUIRED_COLUMNS = ("question", "answer")
ALTERNATIVE_SEPARATOR = "|"
TAG_SEPARATOR = ","
MAX_ID_LENGTH: int = Entry._meta.get_field("external_id").max_length
MAX_TAG_LENGTH: int = Tag._meta.get_field("name").max_length
_TRUE = frozenset({"true", "1", "yes", "y"})
_FALSE = frozenset({"false", "0", "no", "n"})

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


class _Invalid(ValueError):
    """One field's problem, collected with the others of its record."""


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
        yield start, f"malformed CSV: {err}"


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
    return {name: cell for name, cell in zip(columns, cells, strict=False) if name in COLUMNS}


def _parse_json(text: str) -> list[EntryRow]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as err:
        raise ImportFailed([(err.lineno, f"not valid JSON: {err.msg} (column {err.colno})")]) from None
    if not isinstance(items, list):
        raise ImportFailed([(None, f"The file must hold a JSON list of objects, not {_json_type(items)}.")])
    raw: list[tuple[int, Mapping[str, object] | str]] = [
        (n, item if isinstance(item, dict) else f"must be an object, not {_json_type(item)}")
        for n, item in enumerate(items, start=1)
    ]
    return _rows(raw, unit="item")


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}
    return names.get(type(value), "a number")


def _rows(raw: list[tuple[int, Mapping[str, object] | str]], *, unit: str) -> list[EntryRow]:
    """Check each record; a record given as a string is already known to be bad."""
    rows: list[EntryRow] = []
    errors: list[Error] = []
    first_line_of_id: dict[str, int] = {}
    for line, record in raw:
        if isinstance(record, str):
            errors.append((line, record))
            continue
        values, problems = _check_record(record)
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


def _check_record(record: Mapping[str, object]) -> tuple[dict[str, Any], list[str]]:
    values: dict[str, Any] = {}
    problems: list[str] = []
    for key, check in _CHECKS.items():
        try:
            values[key] = check(record.get(key))
        except _Invalid as err:
            problems.append(f"{key}: {err}")
    return values, problems


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


# --- Field checks: each takes a cell (CSV: always text) or a JSON value ---------------


def _check_id(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    text = _check_text(value)
    if len(text) > MAX_ID_LENGTH:
        raise _Invalid(f"longer than {MAX_ID_LENGTH} characters")
    return text


def _check_text(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Invalid(f"must be text, not {_json_type(value)}")
    return value.strip()


def _check_required(value: object) -> str:
    text = _check_text(value)
    if not text:
        raise _Invalid("missing or empty")
    return text


def _check_list(value: object, *, separator: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split(separator)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _Invalid(f"must be a list of strings or one string separated by {separator!r}")
    return tuple(item.strip() for item in value if item.strip())


def _check_tags(value: object) -> tuple[str, ...]:
    tags = _check_list(value, separator=TAG_SEPARATOR)
    for tag in tags:
        if len(tag) > MAX_TAG_LENGTH:
            raise _Invalid(f"{tag[:20]!r}... is longer than {MAX_TAG_LENGTH} characters")
        try:
            validate_unicode_slug(tag)
        except ValidationError:
            raise _Invalid(f"{tag!r} is not a tag: use letters, numbers, hyphens or underscores") from None
    return tags


def _check_active(value: object) -> bool:
    if value is None or isinstance(value, bool):
        return value is not False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    word = value.strip().lower() if isinstance(value, str) else None
    if word == "" or word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise _Invalid(f"{value!r} is not true or false")


_CHECKS: dict[str, Callable[[object], Any]] = {
    "id": _check_id,
    "question": _check_required,
    "answer": _check_required,
    "alternatives": partial(_check_list, separator=ALTERNATIVE_SEPARATOR),
    "tags": _check_tags,
    "active": _check_active,
}


# --- Import and export ---------------------------------------------------------------


def kb_import(*, bot: Bot, rows: Sequence[EntryRow]) -> ImportSummary:
    """Upsert every row by its id in one transaction, then compute missing embeddings."""
    created = 0
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
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for record in records:
        writer.writerow(
            [
                record["id"],
                record["question"],
                record["answer"],
                ALTERNATIVE_SEPARATOR.join(record["alternatives"]),
                TAG_SEPARATOR.join(record["tags"]),
                "true" if record["active"] else "false",
            ]
        )
    return ("\ufeff" + out.getvalue()).encode("utf-8")
