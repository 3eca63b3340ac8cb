"""The main text of a web page with trafilatura (the only module importing it): navigation,
footers, scripts and cookie banners are dropped, headings, lists and tables kept. We ask
for trafilatura's XML, whose ``<head rend="hN">`` elements give the heading path."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import trafilatura
from trafilatura.settings import use_config

from knowledge.docs.errors import ExtractError
from knowledge.docs.extract_outline import Document, Outline

_CONFIG = use_config()
# Short help pages are the norm: below this size trafilatura falls back to the whole page
# text (navigation and footer included, headings lost), so accept any size of main text.
_CONFIG.set("DEFAULT", "MIN_EXTRACTED_SIZE", "1")
# Dates are not used; the extensive search costs about half the extraction time.
_CONFIG.set("DEFAULT", "EXTENSIVE_DATE_SEARCH", "off")
# Our own limit (DOCS_MAX_FILE_BYTES) is checked before; trafilatura's 20 MB must not differ.
_CONFIG.set("DEFAULT", "MAX_FILE_SIZE", str(2**31))


def html_document(text: str, *, url: str = "", fallback: str = "") -> Document:
    try:
        xml = trafilatura.extract(
            text,
            url=url or None,
            output_format="xml",
            with_metadata=True,
            include_comments=False,
            include_tables=True,
            include_formatting=False,
            include_links=False,
            include_images=False,
            config=_CONFIG,
        )
    except Exception as err:  # a third-party parser: any failure means "cannot read this page"
        raise ExtractError(f"The page could not be parsed as HTML ({err}).") from err
    if not xml:
        raise ExtractError("No main text was found on the page.")
    root = ET.fromstring(xml)
    outline = Outline()
    main = root.find("main")
    if main is not None:
        _walk(main, outline)
    return outline.document(root.get("title", ""), fallback=fallback)


def _walk(main: ET.Element, outline: Outline) -> None:
    outline.block(main.text or "")
    for element in main:
        if element.tag == "head":
            outline.heading(_level(element.get("rend", "")), _text(element))
        elif element.tag == "table":
            outline.block(_table(element))
        elif element.tag == "list":
            outline.block("\n".join("- " + _text(item).strip() for item in element.findall("item")))
        else:
            outline.block(_text(element))
        outline.block(element.tail or "")


def _level(rend: str) -> int:
    # rend is "h1".."h6"; a heading trafilatura could not rank sits below the ranked ones.
    return int(rend[1]) if len(rend) == 2 and rend[0] == "h" and rend[1].isdigit() else 6


def _text(element: ET.Element) -> str:
    parts = [element.text or ""]
    for child in element:
        parts.append("\n" if child.tag == "lb" else _text(child))
        parts.append(child.tail or "")
    return "".join(parts)


def _table(table: ET.Element) -> str:
    rows = []
    for row in table.iter("row"):
        cells = [" ".join(_text(cell).split()) for cell in row.findall("cell")]
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)
