"""A file's or a page's bytes to a ``Document``: the format chosen by content type, then
file extension, then by sniffing the bytes; each format read by its own module
(extract_html, extract_markdown, extract_pdf, extract_docx), text decoded by
extract_encoding. Everything refused raises ``ExtractError`` (or ``TooLarge``)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from django.conf import settings

from knowledge.docs.errors import ExtractError, TooLarge
from knowledge.docs.extract_docx import docx_document
from knowledge.docs.extract_encoding import decode
from knowledge.docs.extract_html import html_document
from knowledge.docs.extract_markdown import markdown_document, text_document
from knowledge.docs.extract_outline import Document, Section
from knowledge.docs.extract_pdf import pdf_document

__all__ = ["Document", "Section", "extract", "text_hash"]

_BY_TYPE = {
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
}
_BY_EXTENSION = {
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".pdf": "pdf",
    ".docx": "docx",
}
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # .doc, .xls, .ppt (before 2007)
_HTML_START = re.compile(
    r"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)\b", re.IGNORECASE | re.DOTALL
)


def extract(data: bytes, *, filename: str = "", content_type: str = "", url: str = "") -> Document:
    limit = settings.DOCS_MAX_FILE_BYTES
    if len(data) > limit:
        raise TooLarge(f"The file is {_mb(len(data))} MB, over the {_mb(limit)} MB limit.")
    name = filename or unquote(urlsplit(url).path)
    fallback_title = _title_from_name(name) or urlsplit(url).hostname or ""
    kind = _kind(data, content_type=content_type, name=name)
    if kind == "pdf":
        document = pdf_document(data, title=fallback_title)
    elif kind == "docx":
        document = docx_document(data, title=fallback_title)
    else:
        text = decode(data, content_type=content_type, html=kind in ("html", ""))
        if kind == "" and _HTML_START.match(text[:4096]):
            kind = "html"
        if kind == "html":
            document = html_document(text, url=url, fallback=fallback_title)
        elif kind == "markdown":
            document = markdown_document(text, title=fallback_title)
        else:
            document = text_document(text, title=fallback_title)
    if not any(section.text.strip() for section in document.sections):
        raise ExtractError("No text was found in the document.")
    return document


def text_hash(document: Document) -> str:
    """sha256 (hex) of the extracted text: title, heading paths and section texts."""
    body = [document.title, [[list(section.headings), section.text] for section in document.sections]]
    return hashlib.sha256(json.dumps(body, ensure_ascii=False).encode()).hexdigest()


def _kind(data: bytes, *, content_type: str, name: str) -> str:
    """The format: html, markdown, text, pdf, docx, or "" for text whose kind is sniffed
    after decoding; ExtractError for a binary format we don't read. Other content types
    (text/plain, application/octet-stream...) say too little: the extension decides."""
    mime = content_type.split(";")[0].strip().lower()
    if mime in _BY_TYPE:
        return _BY_TYPE[mime]
    by_extension = _BY_EXTENSION.get(PurePosixPath(name).suffix.lower())
    if by_extension:
        return by_extension
    head = data[:1024]
    if b"%PDF-" in head:
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        if b"word/" in data:
            return "docx"
        raise ExtractError("The file is a zip archive, not a Word (.docx) document; it can't be read.")
    if head.startswith(_OLE):
        raise ExtractError(
            "Old Office files (.doc, .xls, .ppt) can't be read; save the file as .docx or PDF."
        )
    return "text" if mime == "text/plain" else ""


def _title_from_name(name: str) -> str:
    stem = PurePosixPath(name.rstrip("/")).stem
    return " ".join(re.sub(r"[_\-+]+", " ", stem).split())


def _mb(size: int) -> str:
    megabytes = size / 2**20
    text = f"{megabytes:.1f}" if megabytes >= 0.1 else f"{megabytes:.3f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
