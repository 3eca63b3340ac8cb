"""What an import refuses (limits, characters, nesting, numbers) and what it still accepts."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import IntegrityError

from knowledge import io, services
from knowledge.io import ImportFailed, detect_format, kb_import, parse_kb
from knowledge.io_fields import MAX_ANSWER_CHARS, MAX_LIST_CHARS, MAX_QUESTION_CHARS
from knowledge.models import Alternative, Entry
from tests.factories import make_bot
from tests.knowledge.bad_kb_files import HEADER, BadFile, bad_files


def report(data: bytes, fmt: str) -> list[str]:
    with pytest.raises(ImportFailed) as info:
        parse_kb(data, fmt=fmt)
    return info.value.report().splitlines()


def entry(**fields: Any) -> dict[str, Any]:
    return {"question": "Q?", "answer": "A.", **fields}


@bad_files
def test_it_refuses_each_bad_file_with_a_numbered_reason(bad: BadFile) -> None:
    assert report(bad.data, detect_format(bad.filename, bad.data)) == bad.report


def test_it_refuses_a_50_mb_json_answer() -> None:
    data = json.dumps([entry(answer="a" * 50_000_000)]).encode()
    assert report(data, "json") == ["item 1: answer: longer than 100,000 characters (50,000,000)"]


def test_it_reports_every_entry_with_a_bad_character_at_once() -> None:
    items = [entry(question="nul\x00"), entry(), entry(answer="\udc00"), entry(tags=["ok", "x\x00"])]
    assert [line.split(": contains")[0] for line in report(json.dumps(items).encode(), "json")] == [
        "item 1: question",
        "item 3: answer",
        "item 4: tags",
    ]


def test_it_refuses_a_file_larger_than_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(io, "MAX_FILE_BYTES", 1024 * 1024)
    data = json.dumps([entry(answer="a" * 1024 * 1024)]).encode()
    assert report(data, "json") == ["The file is larger than 1 MB."]


def test_brackets_inside_text_are_not_nesting() -> None:
    [row] = parse_kb(json.dumps([entry(answer="[" * 10_000 + "{" * 10_000)]).encode(), fmt="json")
    assert row.answer == "[" * 10_000 + "{" * 10_000


def test_numeric_ids_are_read_across_the_whole_bigint_range() -> None:
    items = [entry(id=2**63 - 1), entry(id=-(2**63)), entry(id=0)]
    rows = parse_kb(json.dumps(items).encode(), fmt="json")
    assert [row.external_id for row in rows] == [str(2**63 - 1), str(-(2**63)), "0"]


def at_the_limits() -> dict[str, Any]:
    """An entry with every field as long as it may be: 24 alternatives of 4,000 characters
    and one of 3,976 with their 24 separators make 100,000."""
    alternatives = [f"{n:02d}" + "b" * (MAX_QUESTION_CHARS - 2) for n in range(24)] + ["c" * 3_976]
    assert len("|".join(alternatives)) == MAX_LIST_CHARS
    return entry(
        id="x" * 100,
        question="q" * MAX_QUESTION_CHARS,
        answer="a" * MAX_ANSWER_CHARS,
        alternatives=alternatives,
    )


def test_every_field_at_its_limit_is_accepted_in_json_and_csv() -> None:
    fields = at_the_limits()
    [from_json] = parse_kb(json.dumps([fields]).encode(), fmt="json")
    cells = [fields["id"], fields["question"], fields["answer"], "|".join(fields["alternatives"]), "", ""]
    [from_csv] = parse_kb((HEADER + ",".join(cells) + "\n").encode(), fmt="csv")
    assert from_json.answer == from_csv.answer == fields["answer"]
    assert from_json.alternatives == from_csv.alternatives == tuple(fields["alternatives"])


@pytest.mark.django_db
def test_a_database_refusal_is_a_report_and_keeps_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    bot = make_bot()
    rows = parse_kb(
        json.dumps([entry(id="a", question="First?"), entry(id="b", question="Second?")]).encode(), fmt="json"
    )
    real_upsert = services.entry_upsert

    def upsert_then_clash(**fields: Any) -> Any:
        if fields["external_id"] == "b":
            raise IntegrityError(
                "UNIQUE constraint failed: knowledge_entry.bot_id, knowledge_entry.external_id"
            )
        return real_upsert(**fields)

    monkeypatch.setattr(services, "entry_upsert", upsert_then_clash)
    with pytest.raises(ImportFailed) as info:
        kb_import(bot=bot, rows=rows)
    assert info.value.report() == (
        "The database refused the import at the entry 'Second?': UNIQUE constraint failed: "
        "knowledge_entry.bot_id, knowledge_entry.external_id. Try again."
    )
    assert not Entry.objects.exists() and not Alternative.objects.exists()
