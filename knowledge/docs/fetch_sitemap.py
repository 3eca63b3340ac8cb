"""Reading sitemaps (sitemaps.org): a ``<urlset>`` of pages, a ``<sitemapindex>`` of child
sitemaps, either gzipped, or a plain-text list of URLs. No I/O here.

The XML is read with expat, refusing any document type declaration: without one there can
be no entity to expand (billion laughs) and no external entity to load.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Literal
from xml.parsers import expat

from knowledge.docs.errors import FetchError, TooLarge

GZIP_MAGIC = b"\x1f\x8b"


class NotASitemap(FetchError):
    """The bytes at a sitemap's URL are not a sitemap."""


@dataclass
class Sitemap:
    kind: Literal["urlset", "index"]
    locs: list[str] = field(default_factory=list)  # page URLs, or the child sitemaps' URLs


def gunzipped(data: bytes, *, limit: int) -> bytes:
    """``data`` decompressed if it is gzip (a ``.xml.gz`` sitemap), at most ``limit`` bytes."""
    if not data.startswith(GZIP_MAGIC):
        return data
    inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as err:
        raise NotASitemap(f"the gzipped sitemap is damaged ({err})") from err
    if len(out) > limit:
        raise TooLarge(f"the sitemap is over {limit} bytes once decompressed")
    return out


def parse_sitemap(data: bytes) -> Sitemap:
    """The ``<loc>`` values of a sitemap or sitemap index (any namespace), or the lines of
    a text sitemap; NotASitemap for anything else."""
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"<"):
        return _text_sitemap(head)
    reader = _Reader()
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.StartDoctypeDeclHandler = reader.refuse_doctype
    parser.EntityDeclHandler = reader.refuse_entity
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    parser.CharacterDataHandler = reader.text
    try:
        parser.Parse(data, True)
    except expat.ExpatError as err:
        raise NotASitemap(f"the sitemap is not well-formed XML ({err})") from err
    if reader.sitemap is None:
        raise NotASitemap("not a sitemap: the document is neither a <urlset> nor a <sitemapindex>")
    return reader.sitemap


def _text_sitemap(data: bytes) -> Sitemap:
    lines = [line.strip() for line in data.decode("utf-8", errors="replace").splitlines()]
    locs = [line for line in lines if line]
    if not all(line.startswith(("http://", "https://")) for line in locs):
        raise NotASitemap("not a sitemap: neither XML nor a list of URLs, one a line")
    return Sitemap("urlset", locs)


class _Reader:
    """expat handlers collecting the text of each ``<loc>`` under ``<url>``/``<sitemap>``."""

    def __init__(self) -> None:
        self.sitemap: Sitemap | None = None
        self._path: list[str] = []
        self._loc: list[str] | None = None

    def refuse_doctype(self, *args: object) -> None:
        raise NotASitemap("a sitemap with a document type declaration is refused")

    def refuse_entity(self, *args: object) -> None:
        raise NotASitemap("a sitemap with entity declarations is refused")

    def start(self, name: str, attrs: dict[str, str]) -> None:
        local = name.rpartition(" ")[2]
        if not self._path:
            if local == "urlset":
                self.sitemap = Sitemap("urlset")
            elif local == "sitemapindex":
                self.sitemap = Sitemap("index")
        elif local == "loc" and len(self._path) == 2 and self._path[1] in ("url", "sitemap"):
            self._loc = []
        self._path.append(local)

    def end(self, name: str) -> None:
        self._path.pop()
        if self._loc is not None and self.sitemap is not None:
            loc = "".join(self._loc).strip()
            if loc:
                self.sitemap.locs.append(loc)
            self._loc = None

    def text(self, data: str) -> None:
        if self._loc is not None:
            self._loc.append(data)
