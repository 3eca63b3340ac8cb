"""The management commands' progress bar: one line, redrawn, on the command's error stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def progress_bar(stream: Any, label: str) -> Callable[[int, int], None]:
    """``show(done, total)`` drawing ``label [#####.....] done/total`` on ``stream``."""

    def show(done: int, total: int) -> None:
        width = 30
        filled = int(width * done / total) if total else width
        stream.write(f"\r{label[:24]:<24} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done >= total:
            stream.write("\n")
        stream.flush()

    return show
