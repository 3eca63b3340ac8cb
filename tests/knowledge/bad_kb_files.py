"""Import files an attacker (or an unlucky export) could hand us, with the exact report each
must give. Shared by the parser, command and admin tests, so all three refuse the same way."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

HEADER = "id,question,answer,alternatives,tags,active\n"
SURROGATE = "half of a UTF-16 surrogate pair, which is not text"


@dataclass(frozen=True)
class BadFile:
    filename: str
    data: bytes
    report: list[str]


def _json(**fields: object) -> bytes:
    # json.dumps writes a lone surrogate as the escape \udXXX, as an attacker would.
    return json.dumps([{"question": "Q?", "answer": "A.", **fields}]).encode()


def _csv(row: str) -> bytes:
    return (HEADER + row + "\n").encode()


BAD_FILES = {
    "json-nested-100000-deep": BadFile(
        "kb.json", b"[" * 100_000, ["line 1: nested deeper than 32 levels (column 33); entries need 3"]
    ),
    "json-extra-key-nested-too-deep": BadFile(
        "kb.json",
        b'[\n{"question": "Q?", "answer": "A.", "x": ' + b"[" * 40 + b"]" * 40 + b"}]",
        ["line 2: nested deeper than 32 levels (column 71); entries need 3"],
    ),
    "json-id-of-5000-digits": BadFile(
        "kb.json",
        b'[{"id": ' + b"9" * 5000 + b', "question": "Q?", "answer": "A."}]',
        [
            "item 1: id: a 5,000-digit number is out of range: a number must be between "
            "-9223372036854775808 and 9223372036854775807 (write a longer id as text, up to 100 characters)"
        ],
    ),
    "csv-id-of-5000-digits": BadFile(
        "kb.csv", _csv("9" * 5000 + ",Q?,A.,,,"), ["line 2: id: longer than 100 characters (5,000)"]
    ),
    "json-id-past-bigint": BadFile(
        "kb.json",
        _json(id=2**63),
        [
            "item 1: id: 9223372036854775808 is out of range: a number must be between "
            "-9223372036854775808 and 9223372036854775807 (write a longer id as text, up to 100 characters)"
        ],
    ),
    "json-active-of-5000-digits": BadFile(
        "kb.json",
        b'[{"question": "Q?", "answer": "A.", "active": ' + b"1" * 5000 + b"}]",
        ["item 1: active: a 5,000-digit number is not true or false"],
    ),
    "json-lone-surrogate-in-question": BadFile(
        "kb.json",
        _json(question="Where is \ud800 my parcel?"),
        [f"item 1: question: contains '\\ud800' (character 10), {SURROGATE}"],
    ),
    "json-lone-surrogate-in-alternative": BadFile(
        "kb.json",
        _json(alternatives=["fine", "x\udfff"]),
        [f"item 1: alternatives: contains '\\udfff' (character 2), {SURROGATE}"],
    ),
    "csv-encoded-surrogate": BadFile(
        "kb.csv",
        HEADER.encode() + b"x,Where \xed\xa0\x80?,A.,,,\n",
        ["line 2: not UTF-8 text (save the file as UTF-8)"],
    ),
    "json-nul-in-answer": BadFile(
        "kb.json", _json(answer="Yes\x00."), ["item 1: answer: contains a NUL character (character 4)"]
    ),
    "csv-nul-in-question": BadFile(
        "kb.csv", _csv("x,Wh\x00at?,A.,,,"), ["line 2: question: contains a NUL character (character 3)"]
    ),
    "csv-nul-in-id": BadFile(
        "kb.csv", _csv("\x00,Q?,A.,,,"), ["line 2: id: contains a NUL character (character 1)"]
    ),
    "json-answer-over-the-limit": BadFile(
        "kb.json", _json(answer="a" * 100_001), ["item 1: answer: longer than 100,000 characters (100,001)"]
    ),
    "csv-answer-over-the-limit": BadFile(
        "kb.csv",
        _csv("x,Q?," + "a" * 100_001 + ",,,"),
        ["line 2: answer: longer than 100,000 characters (100,001)"],
    ),
    "csv-answer-over-the-csv-field-limit": BadFile(
        "kb.csv",
        _csv("x,Q?,A.,,,") + _csv("y,Q?," + "a" * 200_000 + ",,,")[len(HEADER) :],
        ["line 3: a field is longer than 131,072 characters (an answer may have 100,000)"],
    ),
    "json-answer-of-1-mb": BadFile(
        "kb.json",
        _json(answer="a" * 1_000_000),
        ["item 1: answer: longer than 100,000 characters (1,000,000)"],
    ),
    "json-question-over-the-limit": BadFile(
        "kb.json", _json(question="q" * 4_001), ["item 1: question: longer than 4,000 characters (4,001)"]
    ),
    "csv-alternatives-over-the-limit-together": BadFile(
        "kb.csv",
        _csv("x,Q?,A.," + "|".join(f"{n:02d}" + "a" * 3_998 for n in range(30)) + ",,"),
        ["line 2: alternatives: longer than 100,000 characters together (120,029)"],
    ),
    "json-alternative-over-the-limit": BadFile(
        "kb.json",
        _json(alternatives=["ok", "b" * 4_001]),
        ["item 1: alternatives: 'bbbbbbbbbbbbbbbbbbbb'... is longer than 4,000 characters"],
    ),
}

bad_files = pytest.mark.parametrize("bad", list(BAD_FILES.values()), ids=list(BAD_FILES))
