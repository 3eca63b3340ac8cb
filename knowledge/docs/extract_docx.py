"""Word (.docx) text with python-docx (the only module importing it), in reading order:
paragraphs styled "Heading N" give the heading path, "Title" the title, tables are kept
a row per line."""

from __future__ import annotations

import io
import re
import zipfile

import docx
from docx.table import Table
from docx.text.paragraph import Paragraph

from knowledge.docs.errors import ExtractError, TooLarge
from knowledge.docs.extract_outline import Document, Outline

_HEADING = re.compile(r"^heading\s+([1-9])$", re.IGNORECASE)
# A table of contents repeats the headings with page numbers: noise for search.
_TOC = re.compile(r"^toc\b", re.IGNORECASE)
# A .docx is a zip of XML: refuse archives that would unpack to more than this (zip bombs).
_MAX_UNPACKED = 256 * 1024 * 1024


def docx_document(data: bytes, *, title: str) -> Document:
    _check_archive(data)
    try:
        document = docx.Document(io.BytesIO(data))
        outline = Outline()
        style_title = ""
        for item in document.iter_inner_content():
            if isinstance(item, Table):
                outline.block(_table(item))
                continue
            style = _style_name(item)
            heading = _HEADING.match(style)
            if heading:
                outline.heading(int(heading.group(1)), item.text)
            elif style.lower() == "title" and not style_title:
                style_title = item.text.strip()
            elif not _TOC.match(style):
                outline.block(item.text)
        core_title = document.core_properties.title or ""
    except Exception as err:  # a third-party parser: any failure means "damaged"
        raise ExtractError(f"The Word document could not be read; it may be damaged ({err}).") from err
    # The core property often survives from a template ("Document1"): the visible title wins.
    return outline.document(style_title or core_title, fallback=title)


def _check_archive(data: bytes) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError) as err:
        raise ExtractError("The Word document could not be read: it is not a valid .docx file.") from err
    if unpacked > _MAX_UNPACKED:
        raise TooLarge(f"The Word document unpacks to {unpacked / 2**20:.0f} MB, over the 256 MB limit.")


def _style_name(paragraph: Paragraph) -> str:
    style = paragraph.style
    return (style.name or "") if style is not None else ""


def _table(table: Table) -> str:
    rows = []
    for row in table.rows:
        cells: list[str] = []
        for cell in row.cells:
            text = " ".join(cell.text.split())
            # A merged cell is returned once per grid column it spans.
            if not cells or text != cells[-1]:
                cells.append(text)
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)
