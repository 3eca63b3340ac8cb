"""The one CSV writer of every export (knowledge base, conversation list, transcript).

Spreadsheet programs run a cell that starts with ``=``, ``+``, ``-``, ``@``, tab or carriage
return as a formula (OWASP "CSV injection"), and visitors' text reaches every export (the
knowledge base through "correct into the knowledge base"). Such a cell is written with a
leading apostrophe, which spreadsheets show as plain text.

The apostrophe comes off again when a file is read back (``kb_import``). For that to give
back exactly what was exported, a text that already starts with apostrophes followed by
one of those characters gets one more apostrophe too, so
``formula_restore(formula_neutralise(text)) == text`` for every text. The price: a
hand-written cell such as ``'=A1`` is read as ``=A1``; write ``''=A1`` to keep the
apostrophe.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from decimal import Decimal

# Excel guesses the encoding of a CSV file without a byte-order mark from the system
# locale and garbles Chinese; with the UTF-8 BOM it reads UTF-8. Python's csv module and
# most tools skip or tolerate it (read with encoding="utf-8-sig").
CSV_BOM = "\ufeff"
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
GUARD = "'"
# Apostrophes (possessive: no backtracking over a long run of them), then a formula prefix.
_GUARDED_START = re.compile(r"'*+[=+\-@\t\r]")

Cell = str | int | float | Decimal


def formula_neutralise(text: str) -> str:
    """The text as a cell no spreadsheet runs: one apostrophe more when it needs one."""
    return GUARD + text if _GUARDED_START.match(text) else text


def formula_restore(cell: str) -> str:
    """The text ``formula_neutralise`` was given, from the cell it returned."""
    return cell[1:] if cell.startswith(GUARD) and _GUARDED_START.match(cell, 1) else cell


class _Line:
    """A file-like object whose write() returns the line, for csv.writer to format one row."""

    def write(self, line: str) -> str:
        return line


def csv_line(cells: Iterable[Cell]) -> str:
    """One CSV record ending in CRLF: text is neutralised, numbers are written as they are
    (a number is never a formula, and ``-5`` stays a number in the spreadsheet)."""
    return csv.writer(_Line()).writerow([_text(cell) for cell in cells])


def _text(cell: Cell) -> str:
    if isinstance(cell, str):
        return formula_neutralise(cell)
    if isinstance(cell, bool):
        return "true" if cell else "false"
    return str(cell)
