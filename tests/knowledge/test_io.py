from __future__ import annotations

import codecs
import json
import re
from pathlib import Path
from typing import Any

import pytest

from chatbot.management.commands.load_demo import DEMO_KB
from knowledge import services
from knowledge.io import (
    EntryRow,
    ExportFailed,
    ImportFailed,
    detect_format,
    kb_export,
    kb_import,
    parse_kb,
)
from knowledge.models import Alternative, Entry
from tests.factories import make_bot

DATA = Path(__file__).parent / "data"
HEADER = b"id,question,answer,alternatives,tags,active\n"


def failure(data: bytes, fmt: str) -> ImportFailed:
    with pytest.raises(ImportFailed) as info:
        parse_kb(data, fmt=fmt)
    return info.value


def entry_snapshot(bot: Any) -> list[tuple[Any, ...]]:
    return [
        (
            entry.external_id,
            entry.question,
            entry.answer,
            [a.text for a in entry.alternatives.all()],
            [t.name for t in entry.tags.all()],
            entry.is_active,
        )
        for entry in Entry.objects.filter(bot=bot).order_by("id")
    ]


# --- Parsing CSV ---------------------------------------------------------------------


@pytest.mark.parametrize("bom", [b"", codecs.BOM_UTF8], ids=["no-bom", "bom"])
def test_it_reads_csv_with_or_without_a_bom(bom: bytes) -> None:
    rows = parse_kb(bom + HEADER + "faq-1,运费多少？,免运费。,邮费|包邮吗,shipping,\n".encode(), fmt="csv")
    assert rows == [
        EntryRow(
            line=2,
            external_id="faq-1",
            question="运费多少？",
            answer="免运费。",
            alternatives=("邮费", "包邮吗"),
            tags=("shipping",),
            active=True,
        )
    ]


def test_it_reads_a_multi_line_quoted_answer_and_counts_its_lines() -> None:
    rows = parse_kb((DATA / "kb_good.csv").read_bytes(), fmt="csv")
    assert [(row.line, row.external_id) for row in rows] == [(2, "ship-1"), (3, "ret-1"), (6, "old-1")]
    returns = rows[1]
    assert returns.answer == "Yes, within 30 days.\r\n\r\nSend us an email first."
    assert returns.tags == ("returns", "policy")
    assert rows[0].alternatives == ("delivery time?", "when will it arrive?")
    assert [row.active for row in rows] == [True, True, False]


def test_it_reports_every_bad_csv_line_at_once() -> None:
    err = failure((DATA / "kb_bad.csv").read_bytes(), "csv")
    assert err.unit == "line"
    assert [(line, reason.split(":")[0]) for line, reason in err.errors] == [
        (3, "question"),
        (4, "answer"),
        (7, "id 'ship-1' is also used by line 2"),
        (8, "active"),
        (9, "tags"),
        (10, "7 cells but the header has 6 columns (quote fields that contain commas)"),
    ]
    report = err.report().splitlines()
    assert report[0] == "line 3: question: missing or empty"
    assert report[1] == "line 4: answer: missing or empty"
    assert "'Shipping Costs' is not a tag" in report[4]


def test_a_duplicate_id_is_reported_even_when_its_first_line_is_bad_too() -> None:
    err = failure(HEADER + b"a,,x,,,\na,q,x,,,\n", "csv")
    assert err.errors == [(2, "question: missing or empty"), (3, "id 'a' is also used by line 2")]


def test_it_matches_column_names_loosely_and_ignores_unknown_columns() -> None:
    rows = parse_kb(b" Question ,ANSWER,lang\nQ?,A.,en\n", fmt="csv")
    assert [(row.external_id, row.question, row.answer, row.tags) for row in rows] == [("", "Q?", "A.", ())]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"id,question,alternatives\nx,Q,\n", [(1, "missing required column(s) answer")]),
        (b"question,answer,question\nQ,A,Q\n", [(1, "column 'question' appears twice")]),
        (b'id,question,answer\n"open,quote\n', [(2, "malformed CSV: unexpected end of data")]),
    ],
    ids=["missing-column", "duplicate-column", "unclosed-quote"],
)
def test_it_rejects_a_broken_csv_structure(data: bytes, expected: list[tuple[int, str]]) -> None:
    err = failure(data, "csv")
    assert [(line, reason.split(" (")[0]) for line, reason in err.errors] == expected


@pytest.mark.parametrize(
    ("data", "fmt", "reason"),
    [
        (b"", "csv", "The file is empty."),
        (b" \r\n\n", "json", "The file is empty."),
        (HEADER, "csv", "The file has no entries."),
        (HEADER + b",,,,,\n\n", "csv", "The file has no entries."),
        (b"[]", "json", "The file has no entries."),
        (
            b'{"question": "Q", "answer": "A"}',
            "json",
            "The file must hold a JSON list of objects, not an object.",
        ),
        ("question,answer\n".encode("utf-16"), "csv", "The file is UTF-16 text: save it as UTF-8."),
    ],
)
def test_it_rejects_a_file_without_entries(data: bytes, fmt: str, reason: str) -> None:
    assert failure(data, fmt).errors == [(None, reason)]


def test_it_rejects_text_that_is_not_utf8_naming_each_line() -> None:
    data = "id,question,answer\n1,été,oui\n2,plain,ascii\n3,à la carte,oui\n".encode("latin-1")
    err = failure(data, "csv")
    assert err.errors == [
        (2, "not UTF-8 text (save the file as UTF-8)"),
        (4, "not UTF-8 text (save the file as UTF-8)"),
    ]


# --- Parsing JSON --------------------------------------------------------------------


def test_it_reads_json_with_lists_or_separated_strings_and_ignores_extra_keys() -> None:
    rows = parse_kb((DATA / "kb_good.json").read_bytes(), fmt="json")
    assert rows[0].alternatives == ("delivery time?", "when will it arrive?")
    assert rows[0].tags == ("shipping",) and rows[0].active
    assert rows[1] == EntryRow(
        line=2,
        external_id="zh-ship-1",
        question="运费是多少？",
        answer="满 50 元包邮。",
        alternatives=("邮费", "包邮吗"),
        tags=("shipping", "zh"),
        active=False,
    )


def test_it_reports_every_bad_json_item_at_once() -> None:
    items = [
        {"id": 7, "question": "Q", "answer": "A"},
        {"question": "Q"},
        "not an object",
        {"id": 7, "question": 3, "answer": "A", "alternatives": [1], "active": "sometimes"},
        {"question": "Q", "answer": "A", "tags": {"a": 1}},
    ]
    err = failure(json.dumps(items).encode(), "json")
    assert err.unit == "item"
    assert err.report().splitlines() == [
        "item 2: answer: missing or empty",
        "item 3: must be an object, not a string",
        "item 4: question: must be text, not a number",
        "item 4: alternatives: must be a list of strings or one string separated by '|'",
        "item 4: active: 'sometimes' is not true or false",
        "item 4: id '7' is also used by item 1",
        "item 5: tags: must be a list of strings or one string separated by ','",
    ]


def test_it_reports_where_json_syntax_breaks() -> None:
    err = failure(b'[\n  {"question": "Q", "answer": "A"},\n]\n', "json")
    assert err.errors == [(3, "not valid JSON: Expecting value (column 1)")]
    assert err.report() == "line 3: not valid JSON: Expecting value (column 1)"


def test_it_parses_the_demo_knowledge_base() -> None:
    rows = parse_kb(DEMO_KB.read_bytes(), fmt="json")
    assert len(rows) == 44
    assert len({row.external_id for row in rows}) == 44
    assert all(row.question and row.answer and len(row.alternatives) >= 3 for row in rows)


@pytest.mark.parametrize(
    ("filename", "data", "fmt"),
    [
        ("kb.CSV", b"[", "csv"),
        ("kb.json", b"id,question", "json"),
        ("upload", b"\xef\xbb\xbf \n[{}]", "json"),
        ("upload.txt", b"id,question,answer", "csv"),
    ],
)
def test_it_detects_the_format_by_extension_then_content(filename: str, data: bytes, fmt: str) -> None:
    assert detect_format(filename, data) == fmt


def test_it_refuses_a_spreadsheet_with_advice() -> None:
    with pytest.raises(ImportFailed, match="save it as CSV"):
        detect_format("kb.xlsx", b"PK\x03\x04rest-of-zip")


# --- Import --------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_upserts_by_id_and_replaces_alternatives() -> None:
    bot = make_bot()
    first = kb_import(bot=bot, rows=parse_kb((DATA / "kb_good.csv").read_bytes(), fmt="csv"))
    assert (first.created, first.updated) == (3, 0)
    changed = HEADER + b"ship-1,How long is delivery?,2 days.,parcel time?,,false\nnew-1,Q?,A.,,,\n"
    second = kb_import(bot=bot, rows=parse_kb(changed, fmt="csv"))
    assert (second.created, second.updated) == (1, 1)
    assert Entry.objects.filter(bot=bot).count() == 4
    shipping = Entry.objects.get(bot=bot, external_id="ship-1")
    assert (shipping.question, shipping.answer, shipping.is_active) == (
        "How long is delivery?",
        "2 days.",
        False,
    )
    assert [a.text for a in shipping.alternatives.all()] == ["parcel time?"]
    assert shipping.tags.count() == 0


@pytest.mark.django_db
def test_an_import_that_fails_half_way_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    bot = make_bot()
    rows = parse_kb((DATA / "kb_good.csv").read_bytes(), fmt="csv")
    real_upsert = services.entry_upsert
    calls: list[str] = []

    def upsert_then_fail(**fields: Any) -> Any:
        calls.append(fields["external_id"])
        if len(calls) == 2:
            raise RuntimeError("database went away")
        return real_upsert(**fields)

    monkeypatch.setattr(services, "entry_upsert", upsert_then_fail)
    with pytest.raises(RuntimeError):
        kb_import(bot=bot, rows=rows)
    assert calls == ["ship-1", "ret-1"]
    assert not Entry.objects.exists() and not Alternative.objects.exists()


@pytest.mark.django_db
def test_it_embeds_the_bot_once_the_import_is_committed(
    monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    bot = make_bot()
    embedded: list[Any] = []
    monkeypatch.setattr(services, "entries_embed", lambda *, bot: embedded.append(bot), raising=False)
    rows = parse_kb((DATA / "kb_good.json").read_bytes(), fmt="json")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        kb_import(bot=bot, rows=rows)
    assert embedded == []
    assert len(callbacks) == 1
    callbacks[0]()
    assert embedded == [bot]


# --- Export --------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_exports_every_entry_of_the_bot_by_id_with_exactly_the_known_columns() -> None:
    bot = make_bot()
    services.entry_upsert(
        bot=bot, question="B?", answer="Two,\n lines", alternatives=["b2", "b3"], tags=["y"]
    )
    services.entry_upsert(
        bot=bot, external_id="a", question="A?", answer="1", tags=["z", "x"], is_active=False
    )
    services.entry_upsert(bot=make_bot(), question="Other bot?", answer="no")
    data = kb_export(bot=bot, fmt="csv")
    assert data.startswith(codecs.BOM_UTF8)
    assert data.decode("utf-8-sig").split("\r\n") == [
        "id,question,answer,alternatives,tags,active",
        ',B?,"Two,\n lines",b2|b3,y,true',
        'a,A?,1,,"x,z",false',
        "",
    ]
    assert json.loads(kb_export(bot=bot, fmt="json")) == [
        {
            "id": "",
            "question": "B?",
            "answer": "Two,\n lines",
            "alternatives": ["b2", "b3"],
            "tags": ["y"],
            "active": True,
        },
        {"id": "a", "question": "A?", "answer": "1", "alternatives": [], "tags": ["x", "z"], "active": False},
    ]


@pytest.mark.django_db
def test_json_export_keeps_chinese_readable() -> None:
    bot = make_bot()
    services.entry_upsert(bot=bot, question="运费多少？", answer="免运费。")
    assert "运费多少？".encode() in kb_export(bot=bot, fmt="json")


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_an_export_imports_into_another_bot_as_the_same_entries(fmt: str) -> None:
    source, target = make_bot(name="source"), make_bot(name="target")
    kb_import(bot=source, rows=parse_kb(DEMO_KB.read_bytes(), fmt="json"))
    kb_import(bot=source, rows=parse_kb((DATA / "kb_good.csv").read_bytes(), fmt="csv"))
    services.entry_upsert(
        bot=source, question="No id, 多行\n答案?", answer='Say "hi",\nthen | bye', tags=["x"]
    )
    summary = kb_import(bot=target, rows=parse_kb(kb_export(bot=source, fmt=fmt), fmt=fmt))
    assert summary.created == Entry.objects.filter(bot=source).count() == 48
    assert entry_snapshot(target) == entry_snapshot(source)
    assert any(not active for *_, active in entry_snapshot(target))


@pytest.mark.django_db
def test_csv_export_refuses_an_alternative_holding_the_separator() -> None:
    bot = make_bot()
    services.entry_upsert(bot=bot, question="Q?", answer="A", alternatives=["this | that"])
    with pytest.raises(ExportFailed, match=re.escape("'this | that'")):
        kb_export(bot=bot, fmt="csv")
    assert json.loads(kb_export(bot=bot, fmt="json"))[0]["alternatives"] == ["this | that"]
