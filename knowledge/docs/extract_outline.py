"""What every extractor produces: a document as a title and sections, each section the text
under one heading path. The per-format readers feed an ``Outline`` headings and blocks in
reading order; it keeps the heading stack and groups the blocks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_SPACES = re.compile(r"[ \t\u00a0\u3000]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


@dataclass(frozen=True)
class Section:
    """Text under one heading path (outermost first; () before the first heading). A
    heading equal to the document's title is left out of the path."""

    headings: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class Document:
    title: str
    sections: list[Section]


def clean_line(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def clean_block(text: str) -> str:
    """Paragraphs separated by one blank line, lines trimmed, runs of spaces collapsed."""
    lines = [clean_line(line) for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


@dataclass
class Outline:
    _stack: list[tuple[int, str]] = field(default_factory=list)
    _blocks: list[str] = field(default_factory=list)
    _sections: list[tuple[tuple[str, ...], str]] = field(default_factory=list)
    first_heading: str = ""

    def heading(self, level: int, text: str) -> None:
        text = clean_line(text)
        if not text:
            return
        self._flush()
        self.first_heading = self.first_heading or text
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, text))

    def block(self, text: str) -> None:
        text = clean_block(text)
        if text:
            self._blocks.append(text)

    def document(self, title: str, *, fallback: str = "") -> Document:
        """The sections collected so far, titled ``title``, else by the first heading, else
        ``fallback`` (a name made from the file name or the URL)."""
        self._flush()
        title = clean_line(title) or self.first_heading or clean_line(fallback)
        sections = [Section(headings=_without_title(path, title), text=text) for path, text in self._sections]
        return Document(title=title, sections=sections)

    def _flush(self) -> None:
        if self._blocks:
            path = tuple(text for _, text in self._stack)
            self._sections.append((path, "\n\n".join(self._blocks)))
            self._blocks = []


def _without_title(path: tuple[str, ...], title: str) -> tuple[str, ...]:
    # A page's h1 usually repeats its <title>; the title is stored beside the path anyway.
    if path and path[0].casefold() == title.casefold():
        return path[1:]
    return path
