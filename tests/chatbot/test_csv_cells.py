from __future__ import annotations

import csv
import itertools
from decimal import Decimal

import pytest

from chatbot.csv_cells import FORMULA_PREFIXES, Cell, csv_line, formula_neutralise, formula_restore


@pytest.mark.parametrize(
    ("text", "cell"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("'=x", "''=x"),
        ("''@x", "'''@x"),
        ("'", "'"),
        ("'x", "'x"),
        ("a=b", "a=b"),
        ("", ""),
        ("运费 = 0", "运费 = 0"),
    ],
)
def test_it_neutralises_a_cell_that_starts_a_formula(text: str, cell: str) -> None:
    assert formula_neutralise(text) == cell
    assert formula_restore(cell) == text


def test_restore_undoes_neutralise_for_every_short_text() -> None:
    alphabet = ["'", "=", "+", "-", "@", "\t", "\r", "a"]
    for size in range(5):
        for letters in itertools.product(alphabet, repeat=size):
            text = "".join(letters)
            cell = formula_neutralise(text)
            assert not cell.startswith(FORMULA_PREFIXES), repr(text)
            assert formula_restore(cell) == text, repr(text)


def test_a_long_run_of_apostrophes_is_checked_in_linear_time() -> None:
    text = "'" * 1_000_000 + "x"
    assert formula_neutralise(text) == text
    assert formula_restore(text) == text


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("=1", "'=1"),
        (-5, "-5"),
        (0.5, "0.5"),
        (Decimal("-0.000120"), "-0.000120"),
        (True, "true"),
        ("line\r\nbreak", "line\r\nbreak"),
    ],
)
def test_csv_line_neutralises_text_but_not_numbers(cell: Cell, written: str) -> None:
    line = csv_line(["id", cell])
    assert line.endswith("\r\n")
    assert next(csv.reader([line])) == ["id", written]
