"""The fields of one knowledge-base entry in an imported file: checks and limits.

Each check takes a cell (CSV: always text) or a JSON value and returns the clean value or
raises ``Invalid`` with the reason. The limits are the same for CSV and JSON, so whatever
one format imports the other can carry too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_unicode_slug

from chatbot import bounded_json
from knowledge.models import Entry, Tag

ALTERNATIVE_SEPARATOR = "|"
TAG_SEPARATOR = ","
MAX_ID_LENGTH: int = Entry._meta.get_field("external_id").max_length
MAX_TAG_LENGTH: int = Tag._meta.get_field("name").max_length
# Python's csv module refuses a field over 131,072 characters (csv.field_size_limit()), so
# every exported cell must stay under it, the apostrophe that neutralises a formula
# included: an answer, and the alternatives (or tags) joined by their separator, up to
# 100,000 characters. A question or an alternative needs no more than the longest visitor
# message (4,000 characters, chatbot.replying.MAX_QUESTION_LENGTH).
MAX_QUESTION_CHARS = 4_000
MAX_ANSWER_CHARS = 100_000
MAX_LIST_CHARS = 100_000
# A JSON id that is a number must fit a 64-bit integer (a database bigint).
MAX_NUMERIC_ID = 2**63 - 1
MIN_NUMERIC_ID = -(2**63)
_TRUE = frozenset({"true", "1", "yes", "y"})
_FALSE = frozenset({"false", "0", "no", "n"})


class Invalid(ValueError):
    """One field's problem, collected with the others of its record."""


def record_check(record: Mapping[str, object]) -> tuple[dict[str, Any], list[str]]:
    """The clean value of every known field, and ``"<field>: <reason>"`` for each bad one."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for key, check in _CHECKS.items():
        try:
            values[key] = check(record.get(key))
        except Invalid as err:
            problems.append(f"{key}: {err}")
    return values, problems


def json_type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}
    return names.get(type(value), "a number")


def _check_id(value: object) -> str:
    if isinstance(value, int | bounded_json.BigNumber) and not isinstance(value, bool):
        if isinstance(value, bounded_json.BigNumber) or not MIN_NUMERIC_ID <= value <= MAX_NUMERIC_ID:
            raise Invalid(
                f"{value!r} is out of range: a number must be between {MIN_NUMERIC_ID} and "
                f"{MAX_NUMERIC_ID} (write a longer id as text, up to {MAX_ID_LENGTH} characters)"
            )
        value = str(value)
    return _check_text(value, limit=MAX_ID_LENGTH)


def _check_text(value: object, *, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Invalid(f"must be text, not {json_type(value)}")
    text = value.strip()
    if len(text) > limit:
        raise Invalid(f"longer than {limit:,} characters ({len(text):,})")
    _check_characters(text)
    return text


def _check_characters(text: str) -> None:
    """Refuse what no database stores as text: NUL (PostgreSQL) and lone UTF-16 surrogates
    (a JSON escape such as ``\\ud800`` without its pair; SQLite can't encode them)."""
    if "\x00" in text:
        raise Invalid(f"contains a NUL character (character {text.index(chr(0)) + 1:,})")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise Invalid(
            f"contains {text[err.start]!r} (character {err.start + 1:,}), half of a UTF-16 surrogate pair, "
            "which is not text"
        ) from None


def _check_required(value: object, *, limit: int) -> str:
    text = _check_text(value, limit=limit)
    if not text:
        raise Invalid("missing or empty")
    return text


def _check_list(value: object, *, separator: str, item_limit: int) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split(separator)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise Invalid(f"must be a list of strings or one string separated by {separator!r}")
    items = tuple(item.strip() for item in value if item.strip())
    # Measured as the CSV cell that exports them: joined by the separator.
    total = sum(map(len, items)) + max(len(items) - 1, 0)
    if total > MAX_LIST_CHARS:
        raise Invalid(f"longer than {MAX_LIST_CHARS:,} characters together ({total:,})")
    for item in items:
        if len(item) > item_limit:
            raise Invalid(f"{item[:20]!r}... is longer than {item_limit:,} characters")
        _check_characters(item)
    return items


def _check_tags(value: object) -> tuple[str, ...]:
    tags = _check_list(value, separator=TAG_SEPARATOR, item_limit=MAX_TAG_LENGTH)
    for tag in tags:
        try:
            validate_unicode_slug(tag)
        except ValidationError:
            raise Invalid(f"{tag!r} is not a tag: use letters, numbers, hyphens or underscores") from None
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
    shown = value[:20] + "..." if isinstance(value, str) and len(value) > 20 else value
    raise Invalid(f"{shown!r} is not true or false")


_CHECKS: dict[str, Callable[[object], Any]] = {
    "id": _check_id,
    "question": partial(_check_required, limit=MAX_QUESTION_CHARS),
    "answer": partial(_check_required, limit=MAX_ANSWER_CHARS),
    "alternatives": partial(_check_list, separator=ALTERNATIVE_SEPARATOR, item_limit=MAX_QUESTION_CHARS),
    "tags": _check_tags,
    "active": _check_active,
}
