"""Extraction from documents the tests build themselves: web pages with boilerplate,
Markdown, text in GBK and UTF-16, PDFs written by hand (plain, bookmarked, encrypted,
scanned, damaged), a Word file made with python-docx, and files we must refuse."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable

import docx
import pytest
from django.test import override_settings
from docx.enum.style import WD_STYLE_TYPE
from pypdf import PdfReader, PdfWriter

from knowledge.docs.errors import ExtractError, TooLarge
from knowledge.docs.extract import Document, extract, text_hash

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Shipping and returns | Acme Shop</title>
<script>var tracking = "SCRIPT_MARKER";</script><style>.x{color:red}</style></head>
<body>
<nav><ul><li><a href="/">Home</a></li><li><a href="/lamps">NAV_MARKER lamps</a></li></ul></nav>
<div id="cookie-banner" class="cookie-consent">We use cookies COOKIE_MARKER. <button>Accept</button></div>
<main><article>
<h1>Shipping and returns</h1>
<p>We ship every order within two business days from our warehouse in Lyon. Orders above
50 euros ship free of charge to any address in the European Union.</p>
<h2>Returns</h2>
<p>You can return any unused item within 30 days of delivery for a full refund. Use the
prepaid label that came in the box and keep the tracking number until the refund arrives.</p>
<h3>Damaged items</h3>
<p>If an item arrives damaged, send us a photo within 7 days and we send a replacement.</p>
<table><tr><th>Zone</th><th>Days</th></tr><tr><td>France</td><td>2</td></tr></table>
</article></main>
<footer><p>FOOTER_MARKER Copyright 2026 Acme Shop.</p></footer>
</body></html>"""

ZH = (
    "退货政策\n\n收到商品后七天内可以无理由退货，请保持商品和包装完好。"
    "质量问题产生的退货运费由我们承担，其他情况由顾客承担。"
    "我们的客服每天早上九点到晚上六点在线，周末也有人值班。"
)


def _text(document: Document) -> str:
    return "\n".join(section.text for section in document.sections)


def test_it_keeps_the_main_text_and_headings_of_a_page_and_drops_the_boilerplate() -> None:
    document = extract(PAGE.encode(), content_type="text/html", url="https://shop.example/help/ship")

    text = _text(document)
    assert document.title == "Shipping and returns"
    assert "within two business days" in text
    assert "France | 2" in text  # tables are kept, a row per line
    for marker in ("SCRIPT_MARKER", "NAV_MARKER", "COOKIE_MARKER", "FOOTER_MARKER", "color:red"):
        assert marker not in text
    # The h1 repeats the title, so paths start below it.
    assert [section.headings for section in document.sections] == [
        (),
        ("Returns",),
        ("Returns", "Damaged items"),
    ]
    assert document.sections[1].text.startswith("You can return any unused item")


def test_it_keeps_the_items_of_a_list_once_each() -> None:
    page = (
        "<html><body><main><h1>Care</h1><p>Before you start, unplug the lamp and let it cool.</p>"
        "<ul><li>Dust the shade weekly</li><li>Polish the base<ul><li>with a soft cloth</li></ul></li></ul>"
        "</main></body></html>"
    )

    text = _text(extract(page.encode(), filename="care.html"))

    assert "- Dust the shade weekly\n- Polish the base" in text
    assert text.count("with a soft cloth") == 1


def test_it_names_a_page_without_a_title_by_its_first_heading() -> None:
    page = PAGE.replace("<title>Shipping and returns | Acme Shop</title>", "")

    assert extract(page.encode(), filename="ship.html").title == "Shipping and returns"


def test_it_reads_a_gbk_page_by_its_meta_charset_and_by_the_http_charset() -> None:
    body = (
        "<main><h1>退货政策</h1><p>收到商品后七天内可以无理由退货。</p>"
        "<h2>运费</h2><p>质量问题由我们承担运费。</p></main>"
    )
    with_meta = f'<html><head><meta charset="gbk"><title>退货政策</title></head><body>{body}</body></html>'
    without_meta = f"<html><head><title>退货政策</title></head><body>{body}</body></html>"

    for document in (
        extract(with_meta.encode("gbk"), content_type="text/html"),
        extract(without_meta.encode("gbk"), content_type="text/html; charset=GB2312"),
    ):
        assert document.title == "退货政策"
        assert [s.headings for s in document.sections] == [(), ("运费",)]
        assert document.sections[1].text == "质量问题由我们承担运费。"


def test_it_detects_gbk_text_with_no_declaration() -> None:
    document = extract(ZH.encode("gbk"), filename="退货_政策.txt")

    assert _text(document) == ZH
    assert document.title == "退货 政策"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-8-sig"])
def test_it_reads_chinese_text_in_utf16_with_or_without_a_byte_order_mark(encoding: str) -> None:
    assert _text(extract(ZH.encode(encoding), filename="policy.txt")) == ZH


def test_a_wrong_declared_charset_falls_back_to_detection() -> None:
    document = extract(ZH.encode("utf-8"), filename="policy.txt", content_type="text/plain; charset=ascii")

    assert _text(document) == ZH


def test_the_same_text_in_two_encodings_has_one_hash() -> None:
    gbk = extract(ZH.encode("gbk"), filename="policy.txt")
    utf16 = extract(ZH.encode("utf-16"), filename="policy.txt")
    changed = extract((ZH + "新规定。").encode("utf-8"), filename="policy.txt")

    assert text_hash(gbk) == text_hash(utf16)
    assert len(text_hash(gbk)) == 64
    assert text_hash(changed) != text_hash(gbk)


def test_it_reads_markdown_headings_outside_code_and_reduces_links_to_their_text() -> None:
    markdown = (
        "# Care guide\n\nRead this first, see [our shop](https://shop.example) ![lamp](l.png).\n\n"
        "## Leather\n\nWipe it with a dry cloth.\n\n```sh\n# not a heading\n```\n\n"
        "### Stains\n\nUse saddle soap.\n\nWood\n----\n\nOil it twice a year.\n"
    )

    document = extract(markdown.encode(), filename="care.md")

    assert document.title == "Care guide"
    assert [(s.headings, s.text) for s in document.sections] == [
        ((), "Read this first, see our shop ."),
        (("Leather",), "Wipe it with a dry cloth.\n\n```sh\n# not a heading\n```"),
        (("Leather", "Stains"), "Use saddle soap."),
        (("Wood",), "Oil it twice a year."),
    ]


def test_markdown_front_matter_gives_the_title() -> None:
    markdown = '---\ntitle: "Warranty terms"\nlayout: page\n---\n## Coverage\n\nTwo years.\n'

    document = extract(markdown.encode(), content_type="text/markdown")

    assert document.title == "Warranty terms"
    assert document.sections[0].headings == ("Coverage",)


def test_plain_text_keeps_its_paragraphs_and_is_named_after_its_file() -> None:
    text = "First paragraph,\nstill the first.\n\n\n\n  Second   paragraph.  \n"

    document = extract(text.encode(), filename="shipping-and_returns.txt")

    assert document.title == "shipping and returns"
    assert _text(document) == "First paragraph, still the first.\n\nSecond paragraph."


def _pdf(pages: list[list[str]], *, title: str = "") -> bytes:
    """A minimal valid PDF: one Helvetica text stream per page, a correct xref table."""
    objects: list[bytes] = [b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    count = len(pages)
    pages_id, catalog_id = 2 + 2 * count, 3 + 2 * count
    for number, lines in enumerate(pages):
        shown = b" ".join(b"(" + line.encode("latin-1") + b") '" for line in lines)
        ops = b"BT /F1 12 Tf 72 720 Td 14 TL " + shown + b" ET"
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(ops), ops))
        objects.append(
            b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Contents %d 0 R"
            b" /Resources << /Font << /F1 1 0 R >> >> >>" % (pages_id, 2 + 2 * number)
        )
    kids = b" ".join(b"%d 0 R" % (3 + 2 * n) for n in range(count))
    objects.append(b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, count))
    objects.append(b"<< /Type /Catalog /Pages %d 0 R >>" % pages_id)
    objects.append(b"<< /Title (%s) >>" % title.encode())
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    info = b" /Info %d 0 R" % len(objects) if title else b""
    out += b"trailer\n<< /Size %d /Root %d 0 R%s >>\n" % (len(objects) + 1, catalog_id, info)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


PDF_PAGES = [["Warranty terms", "Every lamp is covered for two years."], ["Claims", "Send us the receipt."]]


def _rewritten(pdf: bytes, change: Callable[[PdfWriter], None]) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    change(writer)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_it_reads_the_text_of_every_pdf_page_and_its_title() -> None:
    document = extract(_pdf(PDF_PAGES, title="Acme warranty"), filename="warranty.pdf")

    assert document.title == "Acme warranty"
    assert _text(document) == (
        "Warranty terms\nEvery lamp is covered for two years.\n\nClaims\nSend us the receipt."
    )


def test_pdf_bookmarks_give_the_heading_path_and_the_file_name_the_title() -> None:
    def bookmark(writer: PdfWriter) -> None:
        writer.add_outline_item(title="Coverage", page_number=0)
        writer.add_outline_item(title="Claims", page_number=1)

    document = extract(_rewritten(_pdf(PDF_PAGES), bookmark), filename="acme_warranty.pdf")

    assert document.title == "acme warranty"
    assert [(s.headings, s.text.splitlines()[-1]) for s in document.sections] == [
        (("Coverage",), "Every lamp is covered for two years."),
        (("Claims",), "Send us the receipt."),
    ]


def test_a_pdf_locked_only_by_an_owner_password_is_read() -> None:
    def lock(writer: PdfWriter) -> None:
        writer.encrypt(user_password="", owner_password="owner", algorithm="RC4-128")

    assert "two years" in _text(extract(_rewritten(_pdf(PDF_PAGES), lock), filename="w.pdf"))


def test_a_password_protected_pdf_is_refused() -> None:
    def lock(writer: PdfWriter) -> None:
        writer.encrypt(user_password="secret", owner_password="owner", algorithm="RC4-128")

    with pytest.raises(ExtractError, match="password"):
        extract(_rewritten(_pdf(PDF_PAGES), lock), filename="w.pdf")


def test_a_pdf_without_a_text_layer_is_refused_as_such() -> None:
    writer = PdfWriter()
    writer.add_blank_page(width=612, height=792)
    scan = io.BytesIO()
    writer.write(scan)

    with pytest.raises(ExtractError, match="no text layer"):
        extract(scan.getvalue(), filename="scan.pdf")


@pytest.mark.parametrize("cut", [0.5, 0.8])
def test_a_damaged_pdf_is_refused(cut: float) -> None:
    pdf = _pdf(PDF_PAGES)

    with pytest.raises(ExtractError, match="damaged"):
        extract(pdf[: int(len(pdf) * cut)], content_type="application/pdf")


def _docx() -> bytes:
    document = docx.Document()
    document.add_heading("Product manual", level=0)
    document.styles.add_style("toc 1", WD_STYLE_TYPE.PARAGRAPH)
    document.add_paragraph("Cleaning\t3", style="toc 1")
    document.add_paragraph("Read this before first use.")
    document.add_heading("Cleaning", level=1)
    document.add_paragraph("Wipe the shade with a dry cloth.")
    document.add_heading("Bulbs", level=2)
    table = document.add_table(rows=2, cols=2)
    for (row, column), text in {(0, 0): "Model", (0, 1): "Bulb", (1, 0): "Luna", (1, 1): "E27 LED"}.items():
        table.cell(row, column).text = text
    document.add_paragraph("Use LED bulbs only.")
    document.add_heading("Safety", level=1)
    document.add_paragraph("Unplug the lamp first.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def test_it_reads_a_word_document_with_its_headings_and_tables() -> None:
    document = extract(_docx(), filename="manual.docx")

    assert document.title == "Product manual"
    assert [(s.headings, s.text) for s in document.sections] == [
        ((), "Read this before first use."),
        (("Cleaning",), "Wipe the shade with a dry cloth."),
        (("Cleaning", "Bulbs"), "Model | Bulb\nLuna | E27 LED\n\nUse LED bulbs only."),
        (("Safety",), "Unplug the lamp first."),
    ]


def test_the_format_is_sniffed_when_neither_type_nor_extension_says() -> None:
    vague = {"content_type": "application/octet-stream", "filename": "upload"}

    assert extract(_docx(), **vague).title == "Product manual"
    assert extract(_pdf(PDF_PAGES, title="Acme warranty"), **vague).title == "Acme warranty"
    assert extract(PAGE.encode(), **vague).title == "Shipping and returns"
    assert _text(extract(b"Just some words.", **vague)) == "Just some words."


def _zip(**members: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "filename", "message"),
    [
        (b"\x89PNG\r\n\x1a\n" + os.urandom(4000), "photo.png", "not text"),
        (os.urandom(4000), "", "not text"),
        (_zip(**{"xl/workbook.xml": b"<x/>"}), "", "zip archive"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600), "old.doc", "Old Office"),
        (b"not a zip at all", "broken.docx", "not a valid .docx"),
        (_zip(**{"word/document.xml": b"<broken"}), "broken.docx", "damaged"),
        (b"", "empty.txt", "No text"),
        (b" \n\n \t\n", "blank.md", "No text"),
    ],
)
def test_it_refuses_what_it_cannot_read_with_a_clear_error(data: bytes, filename: str, message: str) -> None:
    with pytest.raises(ExtractError, match=message):
        extract(data, filename=filename)


@override_settings(DOCS_MAX_FILE_BYTES=1024 * 1024)
def test_a_file_over_the_size_limit_is_refused_with_both_sizes() -> None:
    with pytest.raises(TooLarge) as refused:
        extract(b"a" * (1024 * 1024 * 3 // 2), filename="big.txt")

    assert str(refused.value) == "The file is 1.5 MB, over the 1 MB limit."
    assert extract(b"a " * (1024 * 512), filename="fits.txt").sections


def test_wrapped_lines_of_a_paragraph_are_joined_but_lists_tables_and_code_are_not() -> None:
    source = (
        "# Care\n\nRinse with hot water and a brush,\nthen dry it on the hob.\n\n"
        "- oil it\n- never soak it\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        "```\nfirst line\n\nsecond line\nthird line\n```\n\n每消费一元积一分，\n一百积分可兑换五元。\n"
    )
    text = extract(source.encode(), filename="care.md").sections[0].text
    assert "Rinse with hot water and a brush, then dry it on the hob." in text
    assert "- oil it\n- never soak it" in text
    assert "| a | b |\n|---|---|\n| 1 | 2 |" in text
    assert "second line\nthird line" in text
    assert "每消费一元积一分，一百积分可兑换五元。" in text


def test_a_plain_text_files_wrapped_paragraphs_are_joined() -> None:
    document = extract(b"Returns are free\nwithin 30 days.\n\nAsk us first.", filename="returns.txt")
    assert document.sections[0].text == "Returns are free within 30 days.\n\nAsk us first."
