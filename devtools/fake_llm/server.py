"""A fake LLM provider for development, tests and benchmarks: a real HTTP/1.1 server on
127.0.0.1 that speaks the three wire formats, chosen by the request path (so point the
base URL at it as you would at the real provider):

    POST .../services/aigc/text-generation/generation   DashScope (base http://127.0.0.1:N/api/v1)
    POST .../paas/.../chat/completions                   Zhipu     (base http://127.0.0.1:N/api/paas/v4)
    POST .../chat/completions                            OpenAI    (base http://127.0.0.1:N/v1)
    POST .../embeddings                                  embeddings, same three (devtools.fake_llm.embeddings)
    GET  /health                                         "ok"

Run it with ``python manage.py fake_llm --port 8199`` (or ``python -m devtools.fake_llm.server``).

**Scripting.** Every reply follows a script: the defaults given on the command line
(``--tokens 40 --delay-ms 10``...), overridden per request by an ``X-Fake-LLM`` header and
then by a marker anywhere in the last user message, e.g. ``[[fake: status=429 retry_after=1]]``.
Items are ``key=value``, separated by spaces or commas; quote values with spaces
(``text="Hello there"``). Keys:

    text=...            reply text (default: "You said: <the question>"), streamed word by word
    tokens=N            instead: N deltas "tok1 ", "tok2 " ...
    delay_ms=N          pause between deltas          first_delay_ms=N  pause before the first one
    headers_delay_ms=N  pause before the response headers
    status=N            answer with this HTTP error (provider-shaped JSON body)
    code=...            provider error code in that body (e.g. DataInspectionFailed, 1301, content_filter)
    retry_after=...     Retry-After header value      retry_after_ms=...  retry-after-ms header value
    stall_ms=N          pause N ms after ``stall_after`` deltas (default 0), e.g. longer than the timeout
    malformed_after=K   send a broken JSON chunk after K deltas
    drop_after=K        drop the connection after K deltas (mid-stream)
    error_after=K       send an in-band error event after K deltas (with status/code, default 500;
                        the response itself stays 200)
    finish=...          finish reason (default stop; content_filter, sensitive, length ...)
    usage=0             report no token usage
    bad_vector=...      embeddings: spoil one vector (nan, short, missing, index, zero)
    times=N             apply the failure keys only to the first N requests with this same script,
                        then answer normally (for retry tests; add id=... to keep scripts apart)

With ``--api-key KEY`` requests must carry it (Zhipu ``id.secret`` keys: a valid HS256 JWT),
otherwise 401. Every request is kept in ``FakeLLMServer.requests`` for tests.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from devtools.fake_llm import embeddings as fake_embeddings
from devtools.fake_llm import wire
from devtools.fake_llm.script import FAILURE_KEYS, MARKER, Script, parse_script

MAX_RECORDED = 1000


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeLLMServer:
    defaults: Script = field(default_factory=Script)
    api_key: str = ""
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    #: Streams being sent now, and the most at once since the last reset(). A stream
    #: still finishing from before a reset (a test that went on) is not counted after it.
    active: int = 0
    max_active: int = 0
    connections: int = 0  # TCP connections accepted since the last reset()
    _generation: int = 0
    _counts: dict[str, int] = field(default_factory=dict)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _serial: int = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reset(self) -> None:
        self.requests.clear()
        self._counts.clear()
        self._generation += 1
        self.active = self.max_active = 0
        self.connections = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, self.host, self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @contextlib.contextmanager
    def running_in_thread(self) -> Iterator[FakeLLMServer]:
        """Serve from a background thread with its own event loop (for sync and async tests)."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start())
            ready.set()
            loop.run_forever()

        thread = threading.Thread(target=run, name="fake-llm", daemon=True)
        thread.start()
        ready.wait(10)
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self.close(), loop).result(5)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.connections += 1
        try:
            while True:
                request = await wire.read_request(reader)
                if request is None:
                    break
                keep_alive = await self._handle(request, writer)
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # close(): the server is shutting down; end quietly
        finally:
            writer.close()
            self._tasks.discard(task)  # type: ignore[arg-type]

    async def _handle(self, request: wire.Request, writer: asyncio.StreamWriter) -> bool:
        self._serial += 1
        request_id = f"fake-{self._serial}"
        if request.method == "GET" and request.path == "/health":
            await wire.send_json(writer, 200, {"status": "ok"}, {})
            return request.keep_alive
        body = wire.json_body(request.body)
        self.requests.append(Recorded(request.method, request.path, request.headers, body))
        if len(self.requests) > MAX_RECORDED:  # a long-running server keeps only the latest
            del self.requests[: len(self.requests) - MAX_RECORDED]
        if request.method == "POST" and request.path.endswith("/embeddings"):
            return await self._embeddings(request, body, writer, request_id)
        fmt = wire.format_for(request.path)
        if request.method != "POST" or fmt is None:
            await wire.send_json(writer, 404, {"error": {"message": f"no route {request.path}"}}, {})
            return request.keep_alive
        problem = wire.validate(fmt, request.headers, body) or self._auth_problem(fmt, request.headers)
        if problem:
            status, message = problem
            payload = wire.error_body(fmt, status, "", message, request_id)
            await wire.send_json(writer, status, payload, {"x-request-id": request_id})
            return request.keep_alive
        script = self._script(request.headers, wire.last_user_text(body))
        if script.headers_delay_ms:
            await asyncio.sleep(script.headers_delay_ms / 1000)
        if script.status != 200 and script.error_after is None:
            await self._send_error(writer, fmt, script, request_id)
            return request.keep_alive
        return await self._stream(writer, fmt, script, body, request_id) and request.keep_alive

    async def _embeddings(
        self, request: wire.Request, body: Any, writer: asyncio.StreamWriter, rid: str
    ) -> bool:
        fmt = fake_embeddings.format_for(request.path)
        errors = fake_embeddings.error_format(fmt)
        problem = fake_embeddings.validate(fmt, body) or self._auth_problem(fmt, request.headers)
        if problem:
            status, message = problem
            await wire.send_json(writer, status, wire.error_body(errors, status, "", message, rid), {})
            return request.keep_alive
        script = self._script(request.headers, "\n".join(fake_embeddings.inputs(body)))
        if script.headers_delay_ms:
            await asyncio.sleep(script.headers_delay_ms / 1000)
        if script.status != 200:
            await self._send_error(writer, errors, script, rid)
        else:
            await fake_embeddings.send(writer, body, script, rid)
        return request.keep_alive

    def _script(self, headers: dict[str, str], text: str) -> Script:
        """The defaults, then the X-Fake-LLM header, then a marker in ``text``."""
        script = self.defaults
        spec = headers.get("x-fake-llm", "")
        if spec:
            script = parse_script(spec, script)
        marker = MARKER.search(text)
        if marker:
            spec = f"{spec} {marker.group(1)}"
            script = parse_script(marker.group(1), script)
        if script.times is not None:
            seen = self._counts[spec] = self._counts.get(spec, 0) + 1
            if seen > script.times:
                script = replace(script, **{k: getattr(Script(), k) for k in FAILURE_KEYS})
        return script

    def _auth_problem(self, fmt: str, headers: dict[str, str]) -> tuple[int, str] | None:
        if not self.api_key:
            return None
        token = headers.get("authorization", "").removeprefix("Bearer ")
        if fmt == "zhipu" and "." in self.api_key and token.count(".") == 2:
            problem = check_zhipu_jwt(token, self.api_key)
            return (401, f"invalid token: {problem}") if problem else None
        if token != self.api_key:
            return 401, f"Incorrect API key provided: {token}"
        return None

    async def _send_error(self, writer: asyncio.StreamWriter, fmt: str, script: Script, rid: str) -> None:
        headers = {"x-request-id": rid}
        if script.retry_after is not None:
            headers["retry-after"] = script.retry_after
        if script.retry_after_ms is not None:
            headers["retry-after-ms"] = script.retry_after_ms
        payload = wire.error_body(fmt, script.status, script.code, f"fake error {script.status}", rid)
        await wire.send_json(writer, script.status, payload, headers)

    async def _stream(
        self, writer: asyncio.StreamWriter, fmt: str, script: Script, body: Any, rid: str
    ) -> bool:
        """Stream the scripted reply; False when the connection was dropped on purpose."""
        generation = self._generation
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await wire.send_stream_head(writer, {"x-request-id": rid})
            events = wire.events(fmt, body, pieces(script, body), script, rid)
            async for event in _paced(events, script):
                if event is None:
                    writer.transport.abort()
                    return False
                await wire.send_chunk(writer, event)
            await wire.send_chunk(writer, b"")
            return True
        finally:
            if generation == self._generation:
                self.active -= 1


async def _paced(events: Iterator[tuple[bool, bytes | None]], script: Script) -> AsyncIterator[bytes | None]:
    """Apply the script's timing to (is_delta, event) pairs."""
    sent = 0
    stalled = False
    for is_delta, event in events:
        if script.stall_ms and not stalled and sent == script.stall_after:
            stalled = True
            await asyncio.sleep(script.stall_ms / 1000)
        if is_delta:
            pause = script.first_delay_ms if sent == 0 else script.delay_ms
            if pause:
                await asyncio.sleep(pause / 1000)
            sent += 1
        yield event


def pieces(script: Script, body: Any) -> list[str]:
    if script.tokens is not None:
        return [f"tok{i} " for i in range(1, script.tokens + 1)]
    question = MARKER.sub("", wire.last_user_text(body)).strip()
    text = script.text if script.text is not None else f"You said: {question}"
    return re.findall(r"\S+\s*", text) or [text]


def check_zhipu_jwt(token: str, api_key: str, *, now: float | None = None) -> str:
    """'' when ``token`` is a valid Zhipu JWT for ``api_key``, else what is wrong with it."""
    key_id, _, secret = api_key.partition(".")
    try:
        head_b64, payload_b64, sig_b64 = token.split(".")
        header = json.loads(_unb64(head_b64))
        payload = json.loads(_unb64(payload_b64))
        signature = _unb64(sig_b64)
    except ValueError:
        return "not a JWT"
    expected = hmac.new(secret.encode(), f"{head_b64}.{payload_b64}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        return "bad signature"
    if header.get("alg") != "HS256" or header.get("sign_type") != "SIGN":
        return "bad header"
    if payload.get("api_key") != key_id:
        return "wrong api_key"
    now_ms = (time.time() if now is None else now) * 1000
    if not isinstance(payload.get("exp"), int) or payload["exp"] <= now_ms:
        return "expired"
    if not isinstance(payload.get("timestamp"), int) or payload["timestamp"] > now_ms + 60_000:
        return "bad timestamp"
    return ""


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake LLM provider (OpenAI, DashScope and Zhipu formats).")
    add_arguments(parser)
    serve(**vars(parser.parse_args(argv)))


def add_arguments(parser: Any) -> None:
    parser.add_argument("--port", type=int, default=8199)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--api-key", default="", help="require this key (default: accept any)")
    parser.add_argument("--tokens", type=int, default=None, help="deltas per reply (default: echo words)")
    parser.add_argument("--text", default=None, help="reply text (default: echo the question)")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="pause between deltas")
    parser.add_argument("--first-delay-ms", type=float, default=0.0, help="pause before the first delta")


def serve(
    *,
    port: int,
    host: str,
    api_key: str,
    tokens: int | None,
    text: str | None,
    delay_ms: float,
    first_delay_ms: float,
    **_: Any,
) -> None:
    defaults = Script(text=text, tokens=tokens, delay_ms=delay_ms, first_delay_ms=first_delay_ms)
    server = FakeLLMServer(defaults=defaults, api_key=api_key, host=host, port=port)

    async def run() -> None:
        await server.start()
        print(f"Fake LLM listening on {server.url} (OpenAI: {server.url}/v1)", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
