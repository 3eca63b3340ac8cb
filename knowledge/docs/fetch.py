"""Fetching documents: single URLs, sitemaps, same-site crawls. Requests go through
``knowledge.docs.fetch_client`` (guarded addresses, redirects, robots.txt, limits); this
module decides what to ask for. ``DOCS_MAX_PAGES`` bounds a sitemap's URLs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from knowledge.docs import fetch_guard
from knowledge.docs.errors import BlockedAddress, DocumentError, FetchError, RobotsDisallowed
from knowledge.docs.fetch_client import Client, Fetched, Gone, HTTPError, OffSite
from knowledge.docs.fetch_links import is_html, normalized, page_links, same_site, worth_fetching
from knowledge.docs.fetch_sitemap import NotASitemap, gunzipped, parse_sitemap

__all__ = ["FetchFailure", "Fetched", "Gone", "HTTPError", "crawl", "fetch", "page_links", "sitemap_urls"]

MAX_SITEMAP_FILES = 100  # read for one call (sitemaps.org allows 50,000 in an index)
MAX_SITEMAP_DEPTH = 2  # an index of indexes is outside the protocol, but seen in the wild
QUEUE_FACTOR = 20  # a crawl remembers at most this many URLs per page it may fetch


@dataclass(frozen=True)
class FetchFailure:
    """A crawled page that could not be fetched; the crawl went on without it."""

    url: str
    error: str
    status: int = 0  # the HTTP status when the server answered with an error (404, 410 ...)


async def fetch(url: str, *, etag: str = "", last_modified: str = "") -> Fetched:
    """One page or file; with ``etag``/``last_modified`` a conditional GET (status 304 and
    empty data when unchanged). Raises BlockedAddress, TooLarge, RobotsDisallowed, Gone
    (404/410), HTTPError (other statuses) or FetchError (network, timeout, redirects)."""
    async with Client() as client:
        return await client.get(url, etag=etag, last_modified=last_modified)


async def sitemap_urls(url: str) -> list[str]:
    """The page URLs of a sitemap (a sitemap index: of its child sitemaps), each once, on the
    sitemap's own host, http(s), at most ``DOCS_MAX_PAGES``. Any sitemap that can't be read
    raises (a partial list would look like pages removed)."""
    limit = settings.DOCS_MAX_PAGES
    pages: dict[str, None] = {}
    queue = deque([(url, 0)])
    seen = {normalized(url)}
    files = 0
    async with Client() as client:
        while queue and len(pages) < limit:
            files += 1
            if files > MAX_SITEMAP_FILES:
                raise FetchError(f"{url}: more than {MAX_SITEMAP_FILES} sitemaps to read")
            current, depth = queue.popleft()
            fetched = await client.get(current)
            sitemap = parse_sitemap(gunzipped(fetched.data, limit=settings.DOCS_MAX_PAGE_BYTES))
            if sitemap.kind == "index" and depth >= MAX_SITEMAP_DEPTH:
                raise NotASitemap(f"{current}: sitemap indexes nested too deep")
            for loc in sitemap.locs:
                found = normalized(loc)
                if not found or urlsplit(found).hostname != urlsplit(fetched.url).hostname:
                    continue
                if sitemap.kind == "urlset":
                    pages.setdefault(found)
                elif found not in seen:
                    seen.add(found)
                    queue.append((found, depth + 1))
    return list(pages)[:limit]


async def crawl(start: str, *, max_pages: int, max_depth: int) -> AsyncIterator[Fetched | FetchFailure]:
    """The site's pages breadth first from ``start`` (depth 0), links followed from HTML
    pages only, on the start page's scheme, host and port (after its redirects), at most
    ``max_pages`` yielded. A page robots.txt disallows, or one that redirects off the site,
    is skipped (never asked for); one that fails is yielded
    as a FetchFailure. The start page's failure raises instead (an unreachable site is not an
    empty one). Iterate inside ``contextlib.aclosing`` if you may stop early."""
    first = normalized(start)
    if not first:
        fetch_guard.url_checked(start)
        raise BlockedAddress(f"only http and https URLs can be crawled, not {start!r}")
    site = first
    queue = deque([(first, 0)])
    seen = {first}
    yielded = 0
    async with Client() as client:
        while queue and yielded < max_pages:
            url, depth = queue.popleft()
            try:
                page = await client.get(url, within="" if depth == 0 else site)
            except DocumentError as err:
                if depth == 0:
                    raise
                if isinstance(err, RobotsDisallowed | OffSite):
                    continue
                yielded += 1
                yield FetchFailure(url, str(err), getattr(err, "status", 0))
                continue
            final = normalized(page.url)
            if depth == 0:
                site = final  # the start page's redirects (http to https, a new host) set the site
            elif final != url and final in seen:
                continue  # redirected to a page reached by its own link
            seen.add(final)
            yielded += 1
            yield page
            if depth < max_depth and is_html(page.content_type):
                for link in page_links(page.data, page.url):
                    if len(seen) >= QUEUE_FACTOR * max_pages:
                        break
                    if link not in seen and same_site(link, site) and worth_fetching(link):
                        seen.add(link)
                        queue.append((link, depth + 1))
