"""The fake provider's scripts: how one reply behaves (text, pacing, failures), from the
command line's defaults, an ``X-Fake-LLM`` header or a ``[[fake: ...]]`` marker."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, fields, replace
from typing import Any

MARKER = re.compile(r"\[\[fake:(.*?)\]\]", re.S)
FAILURE_KEYS = (
    "status",
    "stall_ms",
    "malformed_after",
    "drop_after",
    "error_after",
    "headers_delay_ms",
    "retry_after",
    "retry_after_ms",
    "bad_vector",
)


@dataclass(frozen=True)
class Script:
    text: str | None = None
    tokens: int | None = None
    delay_ms: float = 0.0
    first_delay_ms: float = 0.0
    headers_delay_ms: float = 0.0
    status: int = 200
    code: str = ""
    retry_after: str | None = None
    retry_after_ms: str | None = None
    stall_ms: float = 0.0
    stall_after: int = 0
    malformed_after: int | None = None
    drop_after: int | None = None
    error_after: int | None = None
    finish: str = "stop"
    usage: bool = True
    bad_vector: str = ""
    times: int | None = None
    id: str = ""


_TYPES = {f.name: f.type for f in fields(Script)}


def parse_script(spec: str, base: Script) -> Script:
    lexer = shlex.shlex(spec, posix=True)
    lexer.whitespace += ","
    lexer.whitespace_split = True
    changes: dict[str, Any] = {}
    for item in lexer:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in _TYPES:
            raise ValueError(f"unknown fake script item {item!r}")
        kind = str(_TYPES[key])
        if "bool" in kind:
            changes[key] = value.lower() not in ("0", "false", "no", "off")
        elif "int" in kind:
            changes[key] = int(value)
        elif "float" in kind:
            changes[key] = float(value)
        else:
            changes[key] = value
    return replace(base, **changes)
