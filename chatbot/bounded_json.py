"""JSON from untrusted text that no input can crash: the websockets' frames
(``chatbot.chat.frames``) and knowledge-base imports (``knowledge.io``) both parse here.

``json.loads`` recurses once per ``[`` or ``{`` ("[" * 1000 raises RecursionError), converts
every integer literal with ``int()`` (quadratic in its digits, refused past 4,300) and
accepts ``NaN`` and ``Infinity``. Here the nesting is measured before parsing (brackets
inside strings don't count), and integer literals longer than any 64-bit integer are never
converted: ``loads`` keeps them as a ``BigNumber`` for the caller to refuse in its own words,
``object_loads`` (frames) refuses them, and ``NaN``/``Infinity`` with them.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_INT = 2**63 - 1
MAX_INT_DIGITS = len(str(MAX_INT)) + 1  # 20: enough for any 64-bit integer; longer ones are never converted
# A whole string literal (escapes included), an unterminated one's opening quote, or a
# bracket. The string pattern is the unrolled-loop form: no backtracking, linear on any text.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|["\[\]{}]', re.DOTALL)


class TooDeep(ValueError):
    """The text nests more than the caller allows; ``lineno``/``colno`` of the bracket."""

    def __init__(self, *, max_depth: int, lineno: int, colno: int) -> None:
        self.max_depth, self.lineno, self.colno = max_depth, lineno, colno
        super().__init__(f"nested deeper than {max_depth} levels (line {lineno}, column {colno})")


class BadJSON(ValueError):
    """Not one JSON object within the bounds (``object_loads``); ``str(err)`` is for the client."""


class BigNumber:
    """An integer literal too long to convert; its repr gives the count of digits, not them."""

    def __init__(self, literal: str) -> None:
        self.literal = literal

    def __repr__(self) -> str:
        return f"a {len(self.literal.lstrip('-')):,}-digit number"


def depth_check(text: str, *, max_depth: int) -> None:
    """Raise ``TooDeep`` at the first bracket that opens level ``max_depth + 1``.

    Malformed text is left to the parser: the scan stops at an unterminated string, and
    unbalanced closing brackets only make levels shallower."""
    if text.count("[") + text.count("{") <= max_depth:  # most texts: no scan at all
        return
    depth = 0
    for match in _TOKENS.finditer(text):
        start = match.start()
        char = text[start]
        if char == '"':
            if match.end() - start == 1:  # a quote that never closes
                return
            continue
        depth += 1 if char in "[{" else -1
        if depth > max_depth:
            line_start = text.rfind("\n", 0, start) + 1
            raise TooDeep(
                max_depth=max_depth, lineno=text.count("\n", 0, start) + 1, colno=start - line_start + 1
            )


def loads(text: str, *, max_depth: int) -> Any:
    """``json.loads`` for an untrusted document: raises ``json.JSONDecodeError`` or ``TooDeep``;
    an integer literal of more than ``MAX_INT_DIGITS`` digits comes back as a ``BigNumber``."""
    depth_check(text, max_depth=max_depth)
    return json.loads(text, parse_int=_lenient_int)


def object_loads(text: str, *, max_depth: int) -> dict[str, Any]:
    """One JSON object, every integer a signed 64-bit one, no ``NaN``/``Infinity``: else ``BadJSON``."""
    try:
        depth_check(text, max_depth=max_depth)
    except TooDeep:
        raise BadJSON(f"A frame may nest at most {max_depth} levels.") from None
    try:
        data = json.loads(text, parse_int=_strict_int, parse_constant=_constant)
    except BadJSON:
        raise
    except (ValueError, RecursionError):  # RecursionError: not expected past depth_check
        raise BadJSON("A frame must be valid JSON.") from None
    if not isinstance(data, dict):
        raise BadJSON("A frame must be a JSON object.")
    return data


def _lenient_int(literal: str) -> int | BigNumber:
    return BigNumber(literal) if len(literal.lstrip("-")) > MAX_INT_DIGITS else int(literal)


def _strict_int(literal: str) -> int:
    # The length is checked before int(): converting thousands of digits costs quadratic time.
    if len(literal) > MAX_INT_DIGITS or not -MAX_INT - 1 <= (value := int(literal)) <= MAX_INT:
        raise BadJSON(f"Integers in a frame must be between {-MAX_INT - 1} and {MAX_INT}.")
    return value


def _constant(name: str) -> float:
    raise BadJSON(f"{name} is not JSON.")
