"""The document fetcher's HTTP client: the one module that imports aiohttp for documents.

Every request is guarded (``knowledge.docs.fetch_guard``): http(s) only, no credentials,
and every address a host name resolves to is checked by the connector's resolver, i.e. the
addresses the connection actually uses, so a DNS answer that changes between a check and
the connection (rebinding) cannot slip through; a host written as an IP address is never
resolved, so URLs are checked too. Redirects are followed here, one by one (at most
``MAX_REDIRECTS``), each checked the same way and against robots.txt. A ``Client`` is made
per call (one fetch, sitemap or crawl): its own session, without proxies from the
environment (a proxy would hide the address actually reached) and without cookies.

Limits are settings: ``DOCS_FETCH_TIMEOUT`` for each request (connection to last byte),
``DOCS_MAX_PAGE_BYTES`` per body (read in chunks, TooLarge past it); ``DOCS_USER_AGENT``
names us, to servers and to robots.txt.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urldefrag, urljoin

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from django.conf import settings

from knowledge.docs import fetch_guard
from knowledge.docs.errors import BlockedAddress, FetchError, TooLarge
from knowledge.docs.fetch_links import same_site
from knowledge.docs.fetch_robots import ROBOTS_MAX_BYTES, Robots, RobotsAnswer

MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
CHUNK_BYTES = 64 * 1024
ACCEPT = "text/html,application/xhtml+xml,application/pdf,text/markdown,text/plain;q=0.9,*/*;q=0.5"


@dataclass(frozen=True)
class Fetched:
    url: str  # the final URL, after redirects
    status: int  # 200 (or another 2xx), or 304 for a conditional fetch of an unchanged page
    content_type: str  # the Content-Type header as sent, charset included ("" when none)
    data: bytes  # the body, decompressed; empty for 304
    etag: str
    last_modified: str


class HTTPError(FetchError):
    """The server answered with an error status (kept in ``status``)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class Gone(HTTPError):
    """404 or 410: the page is not there (any more)."""


class OffSite(FetchError):
    """A crawled page redirects to another site."""


class GuardedResolver(AbstractResolver):
    """Resolves through ``inner``, then refuses the host if any of its addresses is blocked."""

    def __init__(self, inner: AbstractResolver) -> None:
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        for answer in answers:
            if fetch_guard.address_blocked(answer["host"]):
                raise BlockedAddress(
                    f"{host} resolves to {answer['host']}, a loopback, private or reserved address"
                )
        return answers

    async def close(self) -> None:
        await self._inner.close()


def system_resolver() -> AbstractResolver:
    """The DNS the guard sits in front of (tests put a fake DNS answer here)."""
    return aiohttp.ThreadedResolver()


class Client:
    """One session, and the robots.txt rules read through it, for one call."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._resolver: AbstractResolver | None = None
        self._robots = Robots(self._robots_answer, settings.DOCS_USER_AGENT)

    async def __aenter__(self) -> Client:
        timeout = float(settings.DOCS_FETCH_TIMEOUT)
        self._resolver = GuardedResolver(system_resolver())
        self._session = aiohttp.ClientSession(
            # A resolver passed in is not closed with the connector: __aexit__ closes it.
            connector=aiohttp.TCPConnector(resolver=self._resolver, limit=4),
            headers={"User-Agent": settings.DOCS_USER_AGENT, "Accept": ACCEPT},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout),
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
        )
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
        if self._resolver is not None:
            await self._resolver.close()

    async def get(
        self,
        url: str,
        *,
        etag: str = "",
        last_modified: str = "",
        robots: bool = True,
        limit: int = 0,
        within: str = "",
    ) -> Fetched:
        """``url`` after its redirects (each guarded, each robots-checked when ``robots``);
        with ``limit`` the body is cut there instead of raising TooLarge; with ``within`` (a
        URL) a redirect off that URL's site raises OffSite before it is followed."""
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        current = urldefrag(url.strip())[0]
        for _ in range(MAX_REDIRECTS + 1):
            fetch_guard.url_checked(current)
            if robots:
                await self._robots.check(current)
            seconds = float(settings.DOCS_FETCH_TIMEOUT)
            try:
                async with asyncio.timeout(seconds):
                    answer = await self._request(current, headers, limit)
            except TimeoutError as err:
                raise FetchError(f"{current} did not answer within {seconds:g} s") from err
            except aiohttp.ClientError as err:
                raise FetchError(f"could not fetch {current}: {err or type(err).__name__}") from err
            if isinstance(answer, Fetched):
                return answer
            if within and not same_site(answer, within):
                raise OffSite(f"{current} redirects off the site, to {answer}")
            current = answer
        raise FetchError(f"{url} redirects more than {MAX_REDIRECTS} times")

    async def _request(self, url: str, headers: dict[str, str], limit: int) -> Fetched | str:
        """The page, or the URL it redirects to."""
        assert self._session is not None, "use Client in async with"
        async with self._session.get(url, headers=headers, allow_redirects=False) as response:
            status = response.status
            if status in REDIRECT_STATUSES and response.headers.get("Location"):
                return urldefrag(urljoin(url, response.headers["Location"].strip()))[0]
            if status != 304 and not 200 <= status < 300:
                error = Gone if status in (404, 410) else HTTPError
                raise error(f"{url} answered HTTP {status} {response.reason or ''}".rstrip(), status=status)
            data = b"" if status == 304 else await _body(response, url, limit)
            return Fetched(
                url=url,
                status=status,
                content_type=response.headers.get("Content-Type", ""),
                data=data,
                etag=response.headers.get("ETag", ""),
                last_modified=response.headers.get("Last-Modified", ""),
            )

    async def _robots_answer(self, url: str) -> RobotsAnswer:
        try:
            fetched = await self.get(url, robots=False, limit=ROBOTS_MAX_BYTES)
        except HTTPError as err:
            return RobotsAnswer(err.status, b"")
        return RobotsAnswer(fetched.status, fetched.data)


async def _body(response: aiohttp.ClientResponse, url: str, cut_at: int) -> bytes:
    """The body, at most ``DOCS_MAX_PAGE_BYTES`` (TooLarge past it) or cut at ``cut_at``."""
    limit = cut_at or int(settings.DOCS_MAX_PAGE_BYTES)
    if not cut_at and (response.content_length or 0) > limit:
        raise TooLarge(f"{url} is {response.content_length} bytes, over the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            if cut_at:
                return b"".join(chunks)[:cut_at]
            raise TooLarge(f"{url} is over the limit of {limit} bytes")
    return b"".join(chunks)
