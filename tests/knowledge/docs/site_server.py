"""A small real web site for tests: an HTTP/1.1 server on 127.0.0.1, in a thread, serving a
dict of routes. Fetch from it with ``settings.DOCS_FETCH_ALLOW_PRIVATE = True``.

    with SiteServer({
        "/": page("<a href='/faq'>FAQ</a>"),
        "/faq": page("<h1>FAQ</h1>", headers={"ETag": '"v1"'}),
        "/old": redirect("/faq"),
        "/robots.txt": text("User-agent: *\\nDisallow: /private"),
        "/slow": lambda request: (time.sleep(2), page("late"))[1],
    }) as site:
        fetched = await fetch(site.url("/faq"))
        assert site.paths() == ["/robots.txt", "/faq"]

A route is a response ``(status, headers, body)`` or a function of the ``Request`` that
returns one (to sleep, answer a conditional GET, count calls). A body of ``bytes`` or
``str`` (UTF-8) is sent with its Content-Length; a list of ``bytes`` chunks is sent without
one, the connection closed after it. A path is looked up with its query string, then
without it; anything else is a 404. ``routes`` may be changed while the server runs (a site
that changes between two syncs). Every request is kept in ``requests``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

Body = bytes | str | list[bytes]
Response = tuple[int, Mapping[str, str], Body]


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # with the query string
    headers: dict[str, str]  # names lower-cased


Handler = Callable[[Request], Response]
Route = Response | Handler

NOT_FOUND: Response = (404, {"Content-Type": "text/plain"}, "not found")


def page(
    body: Body, *, status: int = 200, content_type: str = "text/html; charset=utf-8", **headers: str
) -> Response:
    """An answer with ``body``; extra headers as keywords, ``_`` for ``-`` (``Last_Modified=...``)."""
    return (
        status,
        {"Content-Type": content_type, **{k.replace("_", "-"): v for k, v in headers.items()}},
        body,
    )


def text(body: Body, *, status: int = 200) -> Response:
    return page(body, status=status, content_type="text/plain; charset=utf-8")


def redirect(location: str, *, status: int = 302) -> Response:
    return status, {"Location": location}, b""


class SiteServer:
    def __init__(self, routes: Mapping[str, Route] | None = None, *, host: str = "127.0.0.1") -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.requests: list[Request] = []
        self._host = host
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "the server is not running"
        return self._server.server_address[1]

    def url(self, path: str = "/", *, host: str = "") -> str:
        """``path`` on this server; ``host`` to name it otherwise (``localhost``, a name the
        test's fake DNS maps to 127.0.0.1)."""
        return f"http://{host or self._host}:{self.port}{path}"

    def paths(self) -> list[str]:
        """The paths asked for so far, in order (query strings included)."""
        return [request.path for request in self.requests]

    def start(self) -> SiteServer:
        self._server = _Server((self._host, 0), _handler_for(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="site-server", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> SiteServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def answer(self, request: Request) -> Response:
        self.requests.append(request)
        route = self.routes.get(request.path) or self.routes.get(urlsplit(request.path).path)
        if route is None:
            return NOT_FOUND
        return route(request) if callable(route) else route


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a sleeping handler must not hold up close()

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hung up mid-body (a byte limit, a timeout) is what tests do


def _handler_for(site: SiteServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            headers = {name.lower(): value for name, value in self.headers.items()}
            status, extra, body = site.answer(Request(self.command, self.path, headers))
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            if isinstance(body, list):  # streamed: no length, the end of the body is the close
                self.send_header("Connection", "close")
                self.end_headers()
                for chunk in body:
                    self.wfile.write(chunk)
                self.close_connection = True
                return
            data = body.encode() if isinstance(body, str) else body
            if status != 304:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: tests assert on site.requests instead

    return Handler
