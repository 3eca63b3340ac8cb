"""The links a crawl follows from an HTML page, and the URL forms it compares. No I/O here."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import SplitResult, urljoin, urlsplit

# Links to these are not documents: not worth a fetch (PDF and DOCX are documents: kept).
SKIPPED_EXTENSIONS = (
    ".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg", ".ico", ".bmp", ".tif", ".tiff",
    ".css", ".js", ".mjs", ".json", ".woff", ".woff2", ".ttf", ".otf", ".eot",
    ".zip", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".tar", ".dmg", ".exe", ".msi", ".apk",
    ".mp3", ".mp4", ".m4a", ".wav", ".ogg", ".webm", ".mov", ".avi", ".mkv",
)  # fmt: skip


def page_links(data: bytes, base_url: str) -> list[str]:
    """The http(s) links of an HTML page, absolute (``<base href>`` honoured), without their
    fragment, each once, in page order. ``rel="nofollow"`` links are left out, and every
    link when a ``<meta name="robots">`` says nofollow."""
    parser = _LinkParser()
    parser.feed(data.decode("utf-8", errors="replace"))
    parser.close()
    if parser.nofollow:
        return []
    base = urljoin(base_url, parser.base) if parser.base else base_url
    links: list[str] = []
    seen: set[str] = set()
    for href in parser.hrefs:
        try:
            url = normalized(urljoin(base, href))
        except ValueError:  # a malformed link (a bad IPv6 host, a port out of range)
            continue
        if url and url not in seen:
            seen.add(url)
            links.append(url)
    return links


def normalized(url: str) -> str:
    """``url`` without its fragment, scheme and host lower-cased, the default port dropped and
    an empty path made ``/``; "" when it is not an http(s) URL with a host and no credentials."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return ""
    return _joined(parts, scheme)


def same_site(url: str, start: str) -> bool:
    """Same scheme, host and port (``www.`` is another host)."""
    a, b = urlsplit(url), urlsplit(start)
    return (a.scheme.lower(), a.hostname, _port(a)) == (b.scheme.lower(), b.hostname, _port(b))


def worth_fetching(url: str) -> bool:
    return not urlsplit(url).path.lower().endswith(SKIPPED_EXTENSIONS)


def is_html(content_type: str) -> bool:
    mime = content_type.partition(";")[0].strip().lower()
    return mime in ("text/html", "application/xhtml+xml")


def _port(parts: SplitResult) -> int:
    return parts.port or (443 if parts.scheme.lower() == "https" else 80)


def _joined(parts: SplitResult, scheme: str) -> str:
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port in (None, 80 if scheme == "http" else 443) else f"{host}:{parts.port}"
    path, query = (parts.path or "/").replace(" ", "%20"), parts.query.replace(" ", "%20")
    return SplitResult(scheme, netloc, path, query, "").geturl()


class _LinkParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []
        self.base = ""
        self.nofollow = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "base" and not self.base and values.get("href"):
            self.base = values["href"].strip()
        elif tag in ("a", "area") and values.get("href"):
            if "nofollow" not in values.get("rel", "").lower().split():
                self.hrefs.append(values["href"].strip())
        elif tag == "meta" and values.get("name", "").lower() == "robots":
            directives = {d.strip() for d in values.get("content", "").lower().split(",")}
            self.nofollow = self.nofollow or bool(directives & {"nofollow", "none"})

    handle_startendtag = handle_starttag
