from __future__ import annotations

import json
from typing import Any

import pytest

from chatbot.bounded_json import BigNumber, TooDeep, depth_check, loads


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("[[[]]]", [[[]]]),
        ('[{"a": [1]}]', [{"a": [1]}]),
        ('["[[[[[[", "{{{{{{{"]', ["[[[[[[", "{{{{{{{"]),
        ('["\\"[[[[", "\\\\", "[[[["]', ['"[[[[', "\\", "[[[["]),
        ("[]]]]]]]]", None),  # unbalanced closing brackets: the parser's error, not ours
    ],
    ids=["at-the-limit", "objects", "brackets-in-strings", "escaped-quotes", "extra-closers"],
)
def test_it_counts_only_brackets_outside_strings(text: str, value: Any) -> None:
    if value is None:
        with pytest.raises(json.JSONDecodeError):
            loads(text, max_depth=3)
    else:
        assert loads(text, max_depth=3) == value


@pytest.mark.parametrize(
    ("text", "lineno", "colno"),
    [
        ("[[[[", 1, 4),
        ('[{"a":\n  {"b": [1]}}]', 2, 9),
        ("[" * 100_000, 1, 4),
        ('["]", [[[', 1, 9),
    ],
)
def test_it_refuses_the_first_bracket_past_the_limit(text: str, lineno: int, colno: int) -> None:
    with pytest.raises(TooDeep) as info:
        loads(text, max_depth=3)
    assert (info.value.max_depth, info.value.lineno, info.value.colno) == (3, lineno, colno)


def test_an_unterminated_string_is_left_to_the_parser() -> None:
    depth_check('["abc' + "[" * 100, max_depth=3)
    with pytest.raises(json.JSONDecodeError, match="Unterminated string"):
        loads('["abc' + "[" * 100, max_depth=3)


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("9" * 20, int("9" * 20)),
        ("-" + "9" * 20, -int("9" * 20)),
        ("1.5", 1.5),
        ("1e400", float("inf")),
    ],
)
def test_it_converts_numbers_up_to_20_digits(literal: str, value: object) -> None:
    assert loads(f"[{literal}]", max_depth=1) == [value]


@pytest.mark.parametrize("literal", ["1" * 21, "-" + "1" * 21, "7" * 100_000])
def test_it_keeps_longer_integers_unconverted(literal: str) -> None:
    [number] = loads(f"[{literal}]", max_depth=1)
    assert isinstance(number, BigNumber)
    assert number.literal == literal
    assert repr(number) == f"a {len(literal.lstrip('-')):,}-digit number"
