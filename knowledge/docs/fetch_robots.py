"""robots.txt for the document fetcher: each site's rules read once per ``Robots`` (one
fetch, one sitemap, one crawl) and applied to our user agent.

What a site's robots.txt answer means follows RFC 9309: a 4xx answer (none there) allows
everything; a 5xx answer or no answer at all means the site is unreachable, so nothing is
fetched from it; a redirect is followed (by the loader). Only the first 500 KiB are read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit
from urllib.robotparser import RobotFileParser

from knowledge.docs.errors import BlockedAddress, FetchError, RobotsDisallowed

ROBOTS_MAX_BYTES = 500 * 1024  # RFC 9309 asks crawlers to parse at least 500 KiB


@dataclass(frozen=True)
class RobotsAnswer:
    status: int
    data: bytes  # at most ROBOTS_MAX_BYTES, cut there if longer


# Fetches robots.txt at a URL: its answer, or FetchError when the site can't be reached.
RobotsLoader = Callable[[str], Awaitable[RobotsAnswer]]


@dataclass(frozen=True)
class _Verdict:
    parser: RobotFileParser | None
    unreachable: str = ""  # why the site's rules could not be read (then nothing is allowed)


class Robots:
    """The robots.txt rules of every site asked about, read once each through ``load``."""

    def __init__(self, load: RobotsLoader, user_agent: str) -> None:
        self._load = load
        self._agent = user_agent
        self._sites: dict[str, _Verdict] = {}

    async def check(self, url: str) -> None:
        """Return if ``url`` may be fetched; else RobotsDisallowed, or FetchError when the
        site's robots.txt could not be read."""
        site = site_of(url)
        verdict = self._sites.get(site)
        if verdict is None:
            verdict = self._sites[site] = await self._read(site)
        if verdict.parser is None:
            raise FetchError(
                f"{site}/robots.txt could not be read ({verdict.unreachable}), so not fetching {url}"
            )
        if not verdict.parser.can_fetch(self._agent, url):
            raise RobotsDisallowed(f"{site}/robots.txt does not allow fetching {url}")

    async def _read(self, site: str) -> _Verdict:
        try:
            answer = await self._load(f"{site}/robots.txt")
        except BlockedAddress:
            raise  # the page itself would be refused for the same reason: say that
        except FetchError as err:
            return _Verdict(None, str(err))
        if answer.status >= 500:
            return _Verdict(None, f"HTTP {answer.status}")
        parser = RobotFileParser()
        if answer.status >= 400:
            parser.allow_all = True
        else:
            parser.parse(answer.data.decode("utf-8", errors="replace").splitlines())
        parser.modified()  # can_fetch answers False for a parser never marked as read
        return _Verdict(parser)


def site_of(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, lower-cased, default port left out."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is None or (scheme, port) in (("http", 80), ("https", 443)):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"
