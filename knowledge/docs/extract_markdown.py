"""Markdown and plain text (already decoded). Markdown: ATX (``## Title``) and setext
(underlined) headings outside fenced code, YAML front matter's ``title``, links reduced to
their text and images dropped; the rest kept as written (the model reads Markdown well),
except that a paragraph's soft line breaks (lines wrapped in the source) are joined, so a
passage shown to a visitor reads as prose. Plain text: paragraphs (unwrapped the same
way), no headings."""

from __future__ import annotations

import re

from knowledge.docs.extract_outline import Document, Outline

_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n(?:---|\.\.\.)[ \t]*\n", re.DOTALL)
_FRONT_TITLE = re.compile(r"^title:[ \t]*[\"']?(.*?)[\"']?[ \t]*$", re.MULTILINE)
_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
# Lines that are not wrapped prose: lists, tables, quotes, indented or fenced code.
_STRUCTURED = re.compile(r"^(?: {4}|\t| {0,3}(?:[-*+]\s|\d{1,9}[.)]\s|\||>|```|~~~))")
_CJK_END = re.compile(r"[\u3000-\u9fff\uac00-\ud7af\uff00-\uffef]$")
_CJK_START = re.compile(r"^[\u3000-\u9fff\uac00-\ud7af\uff00-\uffef]")


def markdown_document(text: str, *, title: str = "") -> Document:
    text = _COMMENT.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    front_title = ""
    front = _FRONT_MATTER.match(text)
    if front:
        found = _FRONT_TITLE.search(front.group(1))
        front_title = found.group(1) if found else ""
        text = text[front.end() :]
    outline = Outline()
    lines: list[str] = []
    fenced = False
    for line in text.split("\n"):
        if _FENCE.match(line):
            fenced = not fenced
        atx = None if fenced else _ATX.match(line)
        setext = None if fenced or not lines or not lines[-1].strip() else _SETEXT.match(line)
        if atx:
            outline.block(_inline("\n".join(lines)))
            lines = []
            outline.heading(len(atx.group(1)), _inline(atx.group(2)))
        elif setext and not _is_table_rule(lines[-1]):
            heading = lines.pop()
            outline.block(_inline("\n".join(lines)))
            lines = []
            outline.heading(1 if setext.group(1)[0] == "=" else 2, _inline(heading))
        else:
            lines.append(line)
    outline.block(_inline("\n".join(lines)))
    return outline.document(front_title, fallback=title)


def text_document(text: str, *, title: str) -> Document:
    outline = Outline()
    outline.block(unwrap(text))
    return outline.document("", fallback=title)


def _inline(text: str) -> str:
    return unwrap(_LINK.sub(r"\1", _IMAGE.sub("", text)))


def unwrap(text: str) -> str:
    """Each paragraph of prose on one line (blank lines separate paragraphs); paragraphs
    holding a list, a table, a quote or code are left as they are. Chinese, Japanese and
    Korean lines join without a space."""
    out = []
    fenced = False  # inside a fenced code block that has blank lines
    for paragraph in re.split(r"\n[ \t]*\n", text):
        out.append(paragraph if fenced else _joined(paragraph))
        fences = sum(1 for line in paragraph.split("\n") if _FENCE.match(line))
        fenced ^= fences % 2 == 1
    return "\n\n".join(out)


def _joined(paragraph: str) -> str:
    lines = paragraph.split("\n")
    if len(lines) < 2 or any(_STRUCTURED.match(line) for line in lines):
        return paragraph
    out = lines[0].rstrip()
    for line in lines[1:]:
        line = line.strip()
        if not line:
            continue
        glue = "" if _CJK_END.search(out) and _CJK_START.match(line) else " "
        out = f"{out}{glue}{line}" if out else line
    return out


def _is_table_rule(previous: str) -> bool:
    # "| a | b |" followed by "|---|---|" is a table, not a heading underlined with dashes.
    return "|" in previous
