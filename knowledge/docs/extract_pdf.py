"""PDF text with pypdf (the only module importing it), page by page; the PDF's bookmarks,
when it has them, give the heading path."""

from __future__ import annotations

import io
import re
from typing import Any

from pypdf import PasswordType, PdfReader

from knowledge.docs.errors import ExtractError
from knowledge.docs.extract_outline import Document, Outline

# A word broken across two lines: "guaran-\ntee" -> "guarantee".
_HYPHENATED = re.compile(r"(\w)-\n(\w)")


def pdf_document(data: bytes, *, title: str) -> Document:
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise ExtractError("The PDF is password-protected; upload a copy without a password.")
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
        bookmarks = _bookmarks(reader)
    except ExtractError:
        raise
    except Exception as err:  # a third-party parser: any failure means "damaged"
        raise ExtractError(f"The PDF could not be read; it may be damaged ({err}).") from err
    if not any(page.strip() for page in pages):
        raise ExtractError("The PDF has no text layer (a scan?); only PDFs with selectable text can be read.")
    outline = Outline()
    for number, text in enumerate(pages):
        for level, heading in bookmarks.get(number, []):
            outline.heading(level, heading)
        outline.block(_HYPHENATED.sub(r"\1\2", text))
    # Bookmarks are not titles: a PDF without a Title property is named after its file.
    return outline.document(str(meta_title) or title)


def _bookmarks(reader: PdfReader) -> dict[int, list[tuple[int, str]]]:
    """Bookmarks by page number, in order, with their depth; {} when they can't be read."""
    found: dict[int, list[tuple[int, str]]] = {}

    def visit(items: list[Any], level: int) -> None:
        for item in items:
            if isinstance(item, list):
                visit(item, level + 1)
                continue
            number = reader.get_destination_page_number(item)
            if number is not None and number >= 0:
                found.setdefault(number, []).append((level, str(item.title or "")))

    try:
        visit(reader.outline, 1)
    except Exception:  # damaged bookmarks only cost the headings, never the text
        return {}
    return found
