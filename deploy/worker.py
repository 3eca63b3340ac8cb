"""One server process: daphne serving ``chatbot.asgi:application``, drained on SIGTERM.

    .venv/bin/python deploy/worker.py -u /run/chatbot/worker-1.sock --proxy-headers
    .venv/bin/python deploy/worker.py -b 127.0.0.1 -p 8001

It listens once the embedding model has loaded, so that the proxy sends visitors to the
other processes meanwhile. daphne's own signal handling stops everything at once: websockets
drop (1006) and replies in progress are cut. Here SIGTERM (or SIGINT) instead
1. closes the listening sockets: the proxy's next connections go to the other processes
   (a unix socket's file is removed; nginx's ``proxy_next_upstream error`` moves on);
2. drains (``chatbot.draining``): /readyz answers 503 at once, idle sockets close with 1012,
   busy ones after their reply's end; past SHUTDOWN_GRACE_SECONDS (``--grace``) the replies
   still running are stored as partial and their sockets closed with 1012;
3. waits a moment for the closed sockets' handlers to finish (they leave their groups),
   settles this process's replies and closes its runtime (``chatbot.lifecycle.process_stop``),
   stops the reactor and exits 0.
A second SIGTERM or SIGINT during the grace cuts it short (step 2's "past the grace" now).
"""

from __future__ import annotations

# daphne.server installs Twisted's asyncio reactor: it comes before anything that imports one.
import daphne.server  # isort: skip

import argparse
import asyncio
import contextvars
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from daphne.access import AccessLogGenerator
from daphne.endpoints import build_endpoint_description_strings
from daphne.utils import import_by_path
from twisted.internet import reactor

# Twisted listens with a backlog of 50: a burst past it is refused by the kernel and nginx
# answers 502 at once (bench_serve: 112 of 500 lost at 400 new sockets/s). The kernel caps
# it at net.core.somaxconn (4096 here).
LISTEN_BACKLOG = 1024

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the project's packages

from chatbot import draining  # noqa: E402  (no Django needed: closecodes and the runtime)

log = logging.getLogger("deploy.worker")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
# After the drain: how long the closed sockets' handlers get to finish (leave their groups).
HANDLERS_SECONDS = 5.0


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-u", "--unix-socket", help="listen on this unix socket")
    parser.add_argument("-b", "--bind", dest="host", help=f"listen on this address (default {DEFAULT_HOST})")
    parser.add_argument("-p", "--port", type=int, help=f"listen on this TCP port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--proxy-headers",
        action="store_true",
        help="take the client's address and scheme from X-Forwarded-For/-Port/-Proto (behind nginx)",
    )
    parser.add_argument(
        "--grace", type=float, help="seconds replies may take to finish (SHUTDOWN_GRACE_SECONDS)"
    )
    parser.add_argument(
        "--websocket-connect-timeout",
        "--websocket_connect_timeout",
        type=float,
        default=10,
        help="seconds a websocket handshake may take (default 10; daphne's is 5): its timer "
        "starts at accept, so a burst queued on a busy event loop uses it up",
    )
    parser.add_argument("-v", "--verbosity", type=int, default=1, choices=range(4), help="as daphne's")
    parser.add_argument("application", nargs="?", default="chatbot.asgi:application")
    args = parser.parse_args(argv)
    if not args.unix_socket and args.host is None and args.port is None:
        args.host, args.port = DEFAULT_HOST, DEFAULT_PORT
    elif args.host is not None and args.port is None:
        args.port = DEFAULT_PORT
    elif args.port is not None and args.host is None:
        args.host = DEFAULT_HOST
    return args


def stale_socket_remove(path: Path) -> None:
    """A socket file left by a process that was killed: removed, or the bind would fail. One
    that a live process still answers on is left alone (the bind fails, loudly)."""
    if not path.exists():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        path.unlink(missing_ok=True)
    except OSError:
        pass
    finally:
        probe.close()


def say(text: str) -> None:
    print(f"worker {os.getpid()}: {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(
        level={0: logging.WARNING, 1: logging.INFO}.get(args.verbosity, logging.DEBUG),
        format="%(asctime)-15s %(levelname)-8s %(message)s",
    )
    os.chdir(ROOT)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
    application = import_by_path(args.application)
    # Only now that the application has set Django up.
    from django.conf import settings

    from chatbot.lifecycle import process_stop
    from chatbot.readiness import accepting_chats
    from chatbot.runtime import runtime

    grace = settings.SHUTDOWN_GRACE_SECONDS if args.grace is None else args.grace
    # Listening only once the embedding model has loaded (the preload chatbot.asgi started):
    # meanwhile nginx sends visitors to the other workers, rather than to this one, which
    # would turn their chats away (4013) and, having the fewest connections, get them again.
    for signum in (signal.SIGTERM, signal.SIGINT):  # nothing to drain yet
        signal.signal(signum, lambda signum, frame: sys.exit(0))
    waited = time.monotonic()
    while not accepting_chats():
        time.sleep(0.1)
    if time.monotonic() - waited > 1:
        say(f"embedding model loaded in {time.monotonic() - waited:.1f} s: listening now")
    if args.unix_socket:
        stale_socket_remove(Path(args.unix_socket))

    proxy = args.proxy_headers
    server = DrainingServer(
        application=application,
        endpoints=[
            f"{endpoint}:backlog={LISTEN_BACKLOG}"
            for endpoint in build_endpoint_description_strings(
                host=args.host, port=args.port, unix_socket=args.unix_socket
            )
        ],
        signal_handlers=False,
        action_logger=AccessLogGenerator(sys.stdout) if args.verbosity >= 1 else None,
        websocket_connect_timeout=args.websocket_connect_timeout,  # as daphne's command line
        websocket_handshake_timeout=args.websocket_connect_timeout,
        verbosity=args.verbosity,
        proxy_forwarded_address_header="X-Forwarded-For" if proxy else None,
        proxy_forwarded_port_header="X-Forwarded-Port" if proxy else None,
        proxy_forwarded_proto_header="X-Forwarded-Proto" if proxy else None,
    )
    Shutdown(server, grace, lambda: process_stop(runtime())).install()
    server.run()
    return 1 if server.abort_start else 0


class DrainingServer(daphne.server.Server):
    """daphne's server, keeping its listening ports so that they can be closed."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.ports: list[Any] = []

    def listen_success(self, port: Any) -> None:
        self.ports.append(port)
        super().listen_success(port)


class Shutdown:
    """The SIGTERM/SIGINT handling described in the module's docstring."""

    def __init__(self, server: DrainingServer, grace: float, stop: Callable[[], Awaitable[None]]) -> None:
        self.server = server
        self.grace = grace
        self.stop = stop  # settles the replies and closes the runtime
        self.signals = 0
        self.task: asyncio.Task[None] | None = None

    def install(self) -> None:
        loop = reactor._asyncioEventloop  # the loop daphne runs the application on
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.signalled, signum)

    def signalled(self, signum: int) -> None:
        self.signals += 1
        name = signal.Signals(signum).name
        if self.signals == 1:
            # A context of its own, not the one of whatever callback ran last.
            loop = asyncio.get_running_loop()
            self.task = loop.create_task(self.drain(name), context=contextvars.Context())
        else:
            say(f"{name} again: replies still running are stopped now")
            draining.drain().hurry()

    async def drain(self, name: str) -> None:
        try:
            for port in self.server.ports:
                port.stopListening()
            drain = draining.drain()
            sockets, grace = drain.open_sockets(), self.grace
            say(f"{name}: not listening any more; draining {sockets} socket(s), grace {grace:g} s")
            done = await drain.run(grace=self.grace)
            say(
                f"drained in {done.seconds:.1f} s: {done.sockets} socket(s), {done.stopped} reply(ies) "
                f"stopped past the grace, {done.left} left open"
            )
            await self.handlers_finished()
        except Exception:
            log.exception("drain failed; stopping anyway")
        try:
            # Now, while the loop runs: once the reactor stops, the interpreter is exiting
            # and the threads the database calls need are gone.
            await self.stop()
        except Exception:
            log.exception("settling this process's replies at shutdown failed")
        finally:
            reactor.stop()

    async def handlers_finished(self) -> None:
        """Until no application instance runs (each closed socket's disconnect handler leaves
        its groups), at most HANDLERS_SECONDS: daphne cancels what is left when it stops."""
        deadline = time.monotonic() + HANDLERS_SECONDS
        while time.monotonic() < deadline:
            running = [
                details
                for details in self.server.connections.values()
                if (task := details.get("application_instance")) is not None and not task.done()
            ]
            if not running:
                return
            await asyncio.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
