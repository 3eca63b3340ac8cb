"""Bytes to text: a byte-order mark first, then the charset the sender declared (HTTP
``Content-Type``, then an HTML ``<meta>``), then strict UTF-8, then detection with
charset-normalizer (the only module importing it)."""

from __future__ import annotations

import codecs
import re

from charset_normalizer import from_bytes

from knowledge.docs.errors import ExtractError

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_CHARSET_PARAM = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)
_META_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?\s*([\w.:-]+)", re.IGNORECASE)
# Labels that real pages use for a superset (as browsers do, WHATWG Encoding Standard).
_SUPERSETS = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
}
# A text file has few control characters besides tab, newline, carriage return and form feed.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def decode(data: bytes, *, content_type: str = "", html: bool = False) -> str:
    """The text of ``data``; ExtractError when it does not look like text at all."""
    text = _decode(data, content_type=content_type, html=html)
    if text is None or len(_CONTROL.findall(text[:65536])) > len(text[:65536]) // 100:
        raise ExtractError("The file is not text in any encoding we recognise (is it a binary file?).")
    return text


def declared_charset(content_type: str) -> str:
    match = _CHARSET_PARAM.search(content_type)
    return match.group(1) if match else ""


def _decode(data: bytes, *, content_type: str, html: bool) -> str | None:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom) :].decode(encoding, errors="replace")
    declared = [declared_charset(content_type)]
    if html:
        match = _META_CHARSET.search(data[:4096])
        declared.append(match.group(1).decode("ascii") if match else "")
    for label in declared:
        text = _strict(data, label)
        if text is not None:
            return text
    # NUL bytes are valid UTF-8, but in text they mean UTF-16/32 without a byte-order mark.
    text = None if b"\x00" in data[:4096] else _strict(data, "utf-8")
    if text is not None:
        return text
    best = from_bytes(data).best()
    return str(best) if best is not None else None


def _strict(data: bytes, label: str) -> str | None:
    """``data`` decoded with the encoding named ``label``; None when the label is unknown
    or the bytes are not valid in it (a wrong declaration falls through to detection)."""
    if not label:
        return None
    label = label.strip().lower()
    try:
        encoding = codecs.lookup(_SUPERSETS.get(label, label)).name
        if encoding.startswith("utf-16") and not data[:1024].count(0):
            return None  # pages declare utf-16 in a <meta> that is itself single-byte
        return data.decode(encoding)
    except (LookupError, UnicodeDecodeError):
        return None
