"""Fetching documents against a real web site on 127.0.0.1 (tests.knowledge.docs.site_server):
single URLs and their limits, the address guard, robots.txt, sitemaps and crawls."""

from __future__ import annotations

import gzip
import ipaddress
import re
import socket
import time
from collections.abc import Iterator
from contextlib import aclosing
from typing import Any

import pytest

from knowledge.docs import fetch_client, fetch_guard
from knowledge.docs.errors import BlockedAddress, FetchError, RobotsDisallowed, TooLarge
from knowledge.docs.fetch import (
    Fetched,
    FetchFailure,
    Gone,
    HTTPError,
    crawl,
    fetch,
    page_links,
    sitemap_urls,
)
from knowledge.docs.fetch_client import GuardedResolver
from tests.knowledge.docs.site_server import Request, Response, SiteServer, page, redirect, text


@pytest.fixture
def site(settings: Any) -> Iterator[SiteServer]:
    settings.DOCS_FETCH_ALLOW_PRIVATE = True
    settings.DOCS_FETCH_TIMEOUT = 3.0
    with SiteServer() as server:
        yield server


class FakeDns:
    """A DNS that answers from a table: each host's answers in turn, the last one repeated."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict[str, Any]]:
        host = host.rstrip(".")
        self.asked.append(host)
        answers = self.table.get(host)
        if not answers:
            raise OSError(socket.EAI_NONAME, f"{host}: no such host")
        addresses = answers.pop(0) if len(answers) > 1 else answers[0]
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        pass


def use_dns(monkeypatch: pytest.MonkeyPatch, table: dict[str, list[list[str]]]) -> FakeDns:
    dns = FakeDns(table)
    monkeypatch.setattr(fetch_client, "system_resolver", lambda: dns)
    return dns


def loopback_is_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the test site on 127.0.0.1 stand for a public one, every other address judged as usual."""
    judge = fetch_guard.ip_blocked
    monkeypatch.setattr(fetch_guard, "ip_blocked", lambda ip: not ip.is_loopback and judge(ip))


# --- single URLs ---------------------------------------------------------------------------


async def test_it_fetches_a_page_with_its_validators_and_our_user_agent(
    site: SiteServer, settings: Any
) -> None:
    site.routes["/faq"] = page("<h1>FAQ</h1>", ETag='"v1"', Last_Modified="Tue, 01 Dec 2026 10:00:00 GMT")

    fetched = await fetch(site.url("/faq#shipping"))

    assert fetched == Fetched(
        url=site.url("/faq"),
        status=200,
        content_type="text/html; charset=utf-8",
        data=b"<h1>FAQ</h1>",
        etag='"v1"',
        last_modified="Tue, 01 Dec 2026 10:00:00 GMT",
    )
    assert site.paths() == ["/robots.txt", "/faq"]  # robots.txt missing: everything allowed
    assert {r.headers["user-agent"] for r in site.requests} == {settings.DOCS_USER_AGENT}


async def test_it_sends_a_conditional_get_and_returns_304_with_no_data(site: SiteServer) -> None:
    def faq(request: Request) -> Response:
        if request.headers.get("if-none-match") == '"v1"':
            return 304, {"ETag": '"v1"'}, b""
        return page("<h1>FAQ</h1>", ETag='"v1"')

    site.routes["/faq"] = faq

    fetched = await fetch(site.url("/faq"), etag='"v1"', last_modified="Tue, 01 Dec 2026 10:00:00 GMT")

    assert (fetched.status, fetched.data, fetched.etag) == (304, b"", '"v1"')
    sent = site.requests[-1].headers
    assert sent["if-none-match"] == '"v1"'
    assert sent["if-modified-since"] == "Tue, 01 Dec 2026 10:00:00 GMT"
    assert (await fetch(site.url("/faq"))).data == b"<h1>FAQ</h1>"  # no validators: the page


@pytest.mark.parametrize(
    ("status", "gone"), [(404, True), (410, True), (403, False), (500, False), (503, False)]
)
async def test_it_raises_for_an_error_status_and_tells_gone_pages_apart(
    site: SiteServer, status: int, gone: bool
) -> None:
    site.routes["/page"] = page("nope", status=status)

    with pytest.raises(HTTPError) as raised:
        await fetch(site.url("/page"))

    assert raised.value.status == status
    assert str(status) in str(raised.value)
    assert isinstance(raised.value, Gone) is gone


async def test_it_follows_up_to_five_redirects_and_reports_the_final_url(site: SiteServer) -> None:
    site.routes.update({f"/r{i}": redirect(f"/r{i + 1}#frag") for i in range(6)})
    site.routes["/r6"] = page("arrived")

    fetched = await fetch(site.url("/r1"))  # five redirects
    assert (fetched.url, fetched.data) == (site.url("/r6"), b"arrived")

    with pytest.raises(FetchError, match="more than 5"):
        await fetch(site.url("/r0"))  # six
    assert "/r6" not in site.paths()[site.paths().index("/r0") :]


async def test_it_stops_a_redirect_loop(site: SiteServer) -> None:
    site.routes.update({"/a": redirect("/b", status=301), "/b": redirect(site.url("/a"), status=308)})

    with pytest.raises(FetchError, match="redirects more than"):
        await fetch(site.url("/a"))


async def test_it_refuses_a_page_over_the_byte_limit(site: SiteServer, settings: Any) -> None:
    settings.DOCS_MAX_PAGE_BYTES = 1000
    site.routes.update(
        {
            "/fits": page("x" * 1000),
            "/declared": page("x" * 5000),  # Content-Length says it all
            "/streamed": page([b"x" * 400] * 1000),  # no Content-Length: counted while read
            "/bomb": page(gzip.compress(b"x" * 50_000_000), Content_Encoding="gzip"),  # 48 KiB sent
        }
    )

    assert len((await fetch(site.url("/fits"))).data) == 1000
    with pytest.raises(TooLarge, match="1000"):
        await fetch(site.url("/declared"))
    with pytest.raises(TooLarge, match="1000"):
        await fetch(site.url("/streamed"))
    with pytest.raises(TooLarge, match="1000"):  # counted decompressed
        await fetch(site.url("/bomb"))


async def test_it_gives_up_on_a_server_that_does_not_answer_in_time(site: SiteServer, settings: Any) -> None:
    settings.DOCS_FETCH_TIMEOUT = 0.5

    def slow(request: Request) -> Response:
        time.sleep(1.5)
        return page("late")

    site.routes["/slow"] = slow
    started = time.monotonic()

    with pytest.raises(FetchError, match=re.escape("did not answer within 0.5 s")):
        await fetch(site.url("/slow"))

    assert time.monotonic() - started < 1.4


async def test_it_reports_a_host_that_does_not_resolve(
    site: SiteServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_dns(monkeypatch, {})

    with pytest.raises(FetchError, match=re.escape("nowhere.test")):
        await fetch("http://nowhere.test/")


# --- the address guard ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/",
        "http://localhost:{port}/",  # resolved, then refused
        "http://[::1]:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://0.0.0.0:{port}/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        "https://[fe80::1]/",
    ],
)
async def test_it_refuses_private_addresses_unless_allowed(site: SiteServer, settings: Any, url: str) -> None:
    settings.DOCS_FETCH_ALLOW_PRIVATE = False

    with pytest.raises(BlockedAddress):
        await fetch(url.format(port=site.port))

    assert site.requests == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/file.txt", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("javascript:alert(1)", "only http and https"),
        ("http://admin:secret@example.com/", "user name or password"),
        ("http:///nohost", "no host"),
        ("http://example.com:99999/", "not a valid URL"),
        ("http://2130706433/", "not a canonical IPv4"),
        ("http://127.1/", "not a canonical IPv4"),
        ("http://0x7f.0.0.1/", "not a canonical IPv4"),
    ],
)
async def test_it_refuses_urls_it_must_not_fetch(url: str, reason: str) -> None:
    with pytest.raises(BlockedAddress, match=reason) as raised:
        await fetch(url)

    assert "secret" not in str(raised.value)


async def test_it_refuses_a_redirect_to_a_private_address(
    site: SiteServer, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.DOCS_FETCH_ALLOW_PRIVATE = False
    loopback_is_public(monkeypatch)
    use_dns(monkeypatch, {"docs.test": [["127.0.0.1"]], "intranet.test": [["10.0.0.7"]]})
    site.routes.update(
        {
            "/metadata": redirect("http://169.254.169.254/latest/meta-data/"),
            "/intranet": redirect(f"http://intranet.test:{site.port}/secret"),
            "/ok": page("public"),
        }
    )

    assert (await fetch(site.url("/ok", host="docs.test"))).data == b"public"
    with pytest.raises(BlockedAddress, match=re.escape("169.254.169.254")):
        await fetch(site.url("/metadata", host="docs.test"))
    with pytest.raises(BlockedAddress, match=re.escape("intranet.test resolves to 10.0.0.7")):
        await fetch(site.url("/intranet", host="docs.test"))
    assert "/secret" not in site.paths()


async def test_it_checks_every_dns_answer_so_rebinding_cannot_slip_through(
    site: SiteServer, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.DOCS_FETCH_ALLOW_PRIVATE = False
    loopback_is_public(monkeypatch)
    dns = use_dns(monkeypatch, {"rebind.test": [["127.0.0.1"], ["127.0.0.1", "10.0.0.9"]]})
    site.routes["/"] = page("hello")

    assert (await fetch(site.url("/", host="rebind.test"))).data == b"hello"
    with pytest.raises(BlockedAddress, match=re.escape("10.0.0.9")):
        await fetch(site.url("/", host="rebind.test"))  # same name, now also a private address

    assert dns.asked == ["rebind.test", "rebind.test"]
    assert site.paths() == ["/robots.txt", "/"]


async def test_the_resolver_passes_public_answers_and_refuses_any_private_one(settings: Any) -> None:
    settings.DOCS_FETCH_ALLOW_PRIVATE = False
    dns = FakeDns(
        {
            "shop.test": [["93.184.216.34", "2606:2800:220:1::1"]],
            "mixed.test": [["93.184.216.34", "10.1.2.3"]],
        }
    )
    resolver = GuardedResolver(dns)  # type: ignore[arg-type]

    answers = await resolver.resolve("shop.test", 443)
    assert [a["host"] for a in answers] == ["93.184.216.34", "2606:2800:220:1::1"]
    with pytest.raises(BlockedAddress, match=re.escape("mixed.test resolves to 10.1.2.3")):
        await resolver.resolve("mixed.test", 443)

    settings.DOCS_FETCH_ALLOW_PRIVATE = True
    assert len(await resolver.resolve("mixed.test", 443)) == 2


@pytest.mark.parametrize(
    ("address", "blocked"),
    [
        ("93.184.216.34", False),
        ("2606:4700::1111", False),
        ("::ffff:93.184.216.34", False),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("10.0.0.1", True),
        ("172.16.0.1", True),
        ("192.168.0.1", True),
        ("169.254.169.254", True),
        ("100.64.0.1", True),  # shared address space (carrier-grade NAT)
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("239.255.255.250", True),
        ("240.0.0.1", True),
        ("255.255.255.255", True),
        ("::1", True),
        ("::", True),
        ("fe80::1", True),
        ("fc00::1", True),
        ("ff02::1", True),
        ("::ffff:127.0.0.1", True),  # IPv4-mapped
        ("::ffff:10.0.0.1", True),
        ("2002:7f00:1::", True),  # 6to4 around 127.0.0.1
        ("64:ff9b::a00:1", True),  # NAT64 around 10.0.0.1
    ],
)
def test_ip_blocked(address: str, blocked: bool) -> None:
    assert fetch_guard.ip_blocked(ipaddress.ip_address(address)) is blocked


# --- robots.txt ----------------------------------------------------------------------------


async def test_it_honours_robots_txt_for_our_user_agent(site: SiteServer, settings: Any) -> None:
    settings.DOCS_USER_AGENT = "TestDocsBot/2.0 (+tests)"
    site.routes["/robots.txt"] = text(
        "User-agent: testdocsbot\nDisallow: /private\n\nUser-agent: *\nDisallow: /\n"
    )
    site.routes.update({"/private/plan": page("secret"), "/public": page("hello")})

    with pytest.raises(RobotsDisallowed, match="/private/plan"):
        await fetch(site.url("/private/plan"))
    assert (await fetch(site.url("/public"))).data == b"hello"

    assert "/private/plan" not in site.paths()


async def test_it_checks_robots_txt_of_a_redirect_target(site: SiteServer) -> None:
    site.routes["/robots.txt"] = text("User-agent: *\nDisallow: /private\n")
    site.routes.update({"/go": redirect("/private/x"), "/private/x": page("secret")})

    with pytest.raises(RobotsDisallowed):
        await fetch(site.url("/go"))

    assert site.paths() == ["/robots.txt", "/go"]


async def test_it_fetches_nothing_from_a_site_whose_robots_txt_fails(site: SiteServer) -> None:
    site.routes["/robots.txt"] = text("down", status=503)
    site.routes["/page"] = page("hello")

    with pytest.raises(FetchError, match=re.escape("robots.txt could not be read")) as raised:
        await fetch(site.url("/page"))

    assert not isinstance(raised.value, RobotsDisallowed)
    assert site.paths() == ["/robots.txt"]


# --- sitemaps ------------------------------------------------------------------------------

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


def urlset(*locs: str) -> str:
    entries = "".join(f"<url><loc> {loc} </loc><lastmod>2026-12-01</lastmod></url>" for loc in locs)
    return f'<?xml version="1.0" encoding="UTF-8"?><urlset {NS}>{entries}</urlset>'


def index(*locs: str) -> str:
    return (
        f"<sitemapindex {NS}>"
        + "".join(f"<sitemap><loc>{loc}</loc></sitemap>" for loc in locs)
        + "</sitemapindex>"
    )


async def test_it_reads_a_sitemap_keeping_http_urls_on_its_host(site: SiteServer) -> None:
    u = site.url
    site.routes["/sitemap.xml"] = page(
        urlset(
            u("/a"),
            u("/b?lang=en#top"),
            u("/a"),
            f"http://localhost:{site.port}/elsewhere",
            "ftp://x/y",
            "/relative",
        ),
        content_type="application/xml",
    )

    assert await sitemap_urls(u("/sitemap.xml")) == [u("/a"), u("/b?lang=en")]


async def test_it_reads_a_sitemap_index_with_a_gzipped_child(site: SiteServer) -> None:
    u = site.url
    site.routes.update(
        {
            "/sitemap.xml": page(index(u("/pages.xml"), u("/posts.xml.gz"), "http://other.test/x.xml")),
            "/pages.xml": page(urlset(u("/about"), u("/faq"))),
            "/posts.xml.gz": page(
                gzip.compress(urlset(u("/post/1"), u("/faq")).encode()), content_type="application/gzip"
            ),
        }
    )

    assert await sitemap_urls(u("/sitemap.xml")) == [u("/about"), u("/faq"), u("/post/1")]
    assert "/x.xml" not in site.paths()


async def test_it_lists_at_most_docs_max_pages_urls(site: SiteServer, settings: Any) -> None:
    settings.DOCS_MAX_PAGES = 3
    site.routes.update(
        {
            "/sitemap.xml": page(index(site.url("/one.xml"), site.url("/two.xml"))),
            "/one.xml": page(urlset(*(site.url(f"/p{i}") for i in range(5)))),
            "/two.xml": page(urlset(site.url("/q"))),
        }
    )

    assert await sitemap_urls(site.url("/sitemap.xml")) == [site.url(f"/p{i}") for i in range(3)]
    assert "/two.xml" not in site.paths()  # the limit was reached without it


async def test_it_reads_a_text_sitemap(site: SiteServer) -> None:
    site.routes["/sitemap.txt"] = text(f"{site.url('/a')}\n\n{site.url('/b')}\n")

    assert await sitemap_urls(site.url("/sitemap.txt")) == [site.url("/a"), site.url("/b")]


ENTITY = '<!DOCTYPE urlset [<!ENTITY a "aaaa">]><urlset><url><loc>&a;</loc></url></urlset>'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (ENTITY, "document type"),
        ('<!DOCTYPE urlset SYSTEM "http://127.0.0.1/evil.dtd"><urlset/>', "document type"),
        ("<html><body>Not found</body></html>", "neither a <urlset>"),
        ("<urlset><url><loc>http://x/</loc></url>", "not well-formed"),
        ("hello world", "neither XML nor a list of URLs"),
    ],
)
async def test_it_refuses_what_is_not_a_safe_sitemap(site: SiteServer, body: str, message: str) -> None:
    site.routes["/sitemap.xml"] = page(body, content_type="application/xml")

    with pytest.raises(FetchError, match=message):
        await sitemap_urls(site.url("/sitemap.xml"))


async def test_it_refuses_a_gzip_bomb(site: SiteServer, settings: Any) -> None:
    settings.DOCS_MAX_PAGE_BYTES = 10_000
    bomb = gzip.compress(f"<urlset {NS}>".encode() + b" " * 5_000_000 + b"</urlset>")
    assert len(bomb) < 10_000
    site.routes["/sitemap.xml.gz"] = page(bomb, content_type="application/gzip")

    with pytest.raises(TooLarge, match="decompressed"):
        await sitemap_urls(site.url("/sitemap.xml.gz"))


async def test_it_raises_when_a_child_sitemap_is_missing(site: SiteServer) -> None:
    site.routes["/sitemap.xml"] = page(index(site.url("/pages.xml"), site.url("/gone.xml")))
    site.routes["/pages.xml"] = page(urlset(site.url("/a")))

    with pytest.raises(Gone, match=re.escape("/gone.xml")):
        await sitemap_urls(site.url("/sitemap.xml"))


# --- links ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("html_text", "links"),
    [
        ("<a href='faq'>x</a><a href='/b#top'>y</a><a href='/b'>z</a>",
         ["https://shop.test/help/faq", "https://shop.test/b"]),
        ("<a href='?page=2'>next</a>", ["https://shop.test/help/index.html?page=2"]),
        ("<base href='https://shop.test/docs/'><a href='faq'>x</a>", ["https://shop.test/docs/faq"]),
        ("<a href='/late'>x</a><base href='/docs/'>", ["https://shop.test/late"]),  # base applies to all
        ("<a href='HTTPS://Shop.Test:443'>home</a>", ["https://shop.test/"]),
        ("<a href='mailto:a@b.c'>m</a><a href='javascript:go()'>j</a><a href='tel:1'>t</a>", []),
        ("<a href='data:,x'>d</a><a href=' /trimmed '>t</a>", ["https://shop.test/trimmed"]),
        ("<a href='ftp://shop.test/x'>f</a><a href='//other.test/y'>o</a>", ["https://other.test/y"]),
        ("<a rel='author nofollow' href='/cart'>c</a><a rel='noopener' href='/ok'>o</a>", ["https://shop.test/ok"]),
        ("<meta name='robots' content='noindex, nofollow'><a href='/x'>x</a>", []),
        ("<map><area href='/area' shape='rect'></map><a>no href</a><a href=''>self</a>", ["https://shop.test/area"]),
        ("<a href='http://[::1'>bad</a><a href='http://user:pw@shop.test/'>creds</a><a href='/ok'>ok</a>",
         ["https://shop.test/ok"]),
        ("<a href='/caf%C3%A9'>x</a><a href='/a b?q=c d'>y</a>",
         ["https://shop.test/caf%C3%A9", "https://shop.test/a%20b?q=c%20d"]),
    ],
)  # fmt: skip
def test_page_links(html_text: str, links: list[str]) -> None:
    assert page_links(html_text.encode(), "https://shop.test/help/index.html") == links


# --- crawls --------------------------------------------------------------------------------


def html(*links: str, extra: str = "") -> Response:
    return page(
        "<html><body>" + "".join(f"<a href='{link}'>{link}</a>" for link in links) + extra + "</body></html>"
    )


@pytest.fixture
def shop(site: SiteServer) -> SiteServer:
    """/ -> /a, /b, /c?x=1, /missing, /broken, /guide.pdf, /private (robots), off-site and odd links;
    /a -> /a1 -> /a2 (depths 2 and 3); the PDF's "links" are not followed."""
    site.routes.update(
        {
            "/robots.txt": text("User-agent: *\nDisallow: /private\n"),
            "/": html(
                "/a",
                "/b#reviews",
                "/b",
                "/c?x=1",
                "/missing",
                "/broken",
                "/guide.pdf",
                "/private/admin",
                "/logo.png",
                f"http://localhost:{site.port}/offsite",
                "mailto:help@shop.test",
                "javascript:void(0)",
                "tel:+123",
                extra="<a rel='nofollow' href='/cart'>cart</a>",
            ),
            "/a": html("/a1", "/"),
            "/a1": html("/a2"),
            "/a2": html(),
            "/b": html("/a"),
            "/c": html(),
            "/broken": page("oops", status=500),
            "/guide.pdf": page(b"%PDF-1.4 <a href='/hidden'>", content_type="application/pdf"),
        }
    )
    return site


async def crawled(start: str, **limits: int) -> list[Fetched | FetchFailure]:
    return [item async for item in crawl(start, **limits)]


def outcome(site: SiteServer, items: list[Fetched | FetchFailure]) -> list[str]:
    def path(url: str) -> str:
        return url.removeprefix(site.url(""))

    return [path(i.url) if isinstance(i, Fetched) else f"{path(i.url)} failed {i.status}" for i in items]


async def test_it_crawls_the_site_breadth_first_within_the_depth(shop: SiteServer) -> None:
    items = await crawled(shop.url("/"), max_pages=50, max_depth=2)

    assert outcome(shop, items) == [
        "/",
        "/a",
        "/b",
        "/c?x=1",
        "/missing failed 404",
        "/broken failed 500",
        "/guide.pdf",
        "/a1",
    ]
    asked = shop.paths()
    assert asked.count("/robots.txt") == 1
    for never in ("/a2", "/private/admin", "/offsite", "/cart", "/logo.png", "/hidden"):
        assert never not in asked


async def test_it_reports_why_a_page_failed_and_goes_on(shop: SiteServer) -> None:
    items = await crawled(shop.url("/"), max_pages=50, max_depth=1)

    failures = [i for i in items if isinstance(i, FetchFailure)]
    assert [(f.url, f.status) for f in failures] == [(shop.url("/missing"), 404), (shop.url("/broken"), 500)]
    assert "HTTP 500" in failures[1].error
    assert isinstance(items[-1], Fetched)


@pytest.mark.parametrize(("max_pages", "expected"), [(1, ["/"]), (3, ["/", "/a", "/b"])])
async def test_it_stops_at_the_page_limit(shop: SiteServer, max_pages: int, expected: list[str]) -> None:
    items = await crawled(shop.url("/"), max_pages=max_pages, max_depth=5)

    assert outcome(shop, items) == expected
    assert [p for p in shop.paths() if p != "/robots.txt"] == expected


async def test_depth_zero_is_the_start_page_only(shop: SiteServer) -> None:
    assert outcome(shop, await crawled(shop.url("/"), max_pages=50, max_depth=0)) == ["/"]


async def test_a_crawl_stopped_early_fetches_no_more(shop: SiteServer) -> None:
    async with aclosing(crawl(shop.url("/"), max_pages=50, max_depth=3)) as pages:
        async for _page in pages:
            break

    assert shop.paths() == ["/robots.txt", "/"]


async def test_it_raises_when_the_start_page_fails(shop: SiteServer) -> None:
    with pytest.raises(Gone):
        await crawled(shop.url("/nothing-here"), max_pages=5, max_depth=2)
    with pytest.raises(RobotsDisallowed):
        await crawled(shop.url("/private/"), max_pages=5, max_depth=2)


async def test_the_start_pages_redirect_sets_the_site(site: SiteServer) -> None:
    moved = f"http://localhost:{site.port}"
    site.routes.update(
        {
            "/": redirect(f"{moved}/home"),
            "/home": html("/faq", site.url("/old")),  # the old host is off the new site
            "/faq": html(),
        }
    )

    items = await crawled(site.url("/"), max_pages=10, max_depth=2)

    assert [i.url for i in items] == [f"{moved}/home", f"{moved}/faq"]
    assert "/old" not in site.paths()


async def test_a_page_redirected_off_the_site_is_left_out(site: SiteServer) -> None:
    site.routes.update(
        {"/": html("/out", "/in"), "/out": redirect(f"http://localhost:{site.port}/x"), "/in": html()}
    )

    items = await crawled(site.url("/"), max_pages=10, max_depth=2)

    assert outcome(site, items) == ["/", "/in"]
    assert "/x" not in site.paths()
