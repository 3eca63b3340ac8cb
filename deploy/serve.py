"""`make serve`: the production topology on one machine, in the foreground.

Debian's nginx on --port in front of --workers daphne processes (deploy/worker.py, one unix
socket each under the run directory, .serve/ by default), nginx serving the collected static
files itself. Prepares like `make run` (migrate, the demo bot, an admin, collectstatic),
writes nginx.conf from deploy/nginx.conf.template, starts the workers, waits until each
answers /readyz, then starts nginx, and writes its own pid to serve.pid in the run directory.

Ctrl-C or SIGTERM stops everything: the workers first (each drains: replies in progress
finish, up to SHUTDOWN_GRACE_SECONDS, websockets close with 1012), then nginx. SIGHUP
(`make restart`) restarts the workers one at a time: a new one starts on the slot's other
socket, and once it answers /readyz nginx is reloaded to send new connections to it, and the
old one is drained (its visitors reconnect, to the new one among others): capacity never
drops, even with one worker. A worker that dies (a crash, the OOM killer) is
started again on its socket, as systemd's Restart=always would, while the others serve; one
that dies CRASH_LIMIT times within CRASH_WINDOW seconds, or nginx exiting, stops everything
and this exits 1.

DATABASE_URL and REDIS_URL come from the environment; more than one worker needs
REDIS_URL (their channel layer), else this exits 2 before touching anything.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = Path(__file__).resolve().with_name("nginx.conf.template")
NGINX = os.environ.get("NGINX", "/usr/sbin/nginx")
WORKER = Path(__file__).resolve().with_name("worker.py")
STOP_MARGIN = 15  # seconds past a worker's grace (its replies) for its exit, before SIGKILL
READY_SECONDS = 120  # a worker's start, its embedding model included
RELOAD_SECONDS = 5.0  # nginx starting its new workers after a reload
CRASH_LIMIT = 3  # a worker's deaths within CRASH_WINDOW seconds before giving up
CRASH_WINDOW = 60.0


class Refused(Exception):
    """A configuration this refuses to start with (exit 2)."""


def preconditions(*, workers: int, nginx: str, env: dict[str, str]) -> None:
    if workers < 1:
        raise Refused(f"WORKERS must be 1 or more, got {workers}")
    if workers > 1 and not env.get("REDIS_URL"):
        raise Refused(
            f"WORKERS={workers} needs REDIS_URL: several processes share conversations through "
            "Redis (the channel layer). Set REDIS_URL=redis://host:6379/0, or run WORKERS=1."
        )
    if not os.access(nginx, os.X_OK):
        raise Refused(f"nginx not found at {nginx} (apt-get install -y nginx, or set NGINX=/path/to/nginx)")


def nginx_config(
    *, run_dir: Path, host: str, port: int, sockets: list[Path], static_url: str, static_root: Path
) -> str:
    # Run as root (a container, CI), nginx's workers would switch to an unprivileged user
    # that cannot reach the project's sockets and files: keep them as whoever runs this.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    # max_fails=0: nginx never counts a worker out. A worker being restarted has no socket for a
    # moment; connecting fails at once and nginx moves to the next (proxy_next_upstream error).
    # Counted out instead (max_fails=1), it would be let back only one connection per
    # fail_timeout until one of them ended, and a websocket does not end: during a rolling
    # restart, the worker just restarted took one visitor every 2 s, the rest got 502.
    servers = "\n".join(f"        server unix:{path} max_fails=0;" for path in sockets)
    values = {
        "@USER@": user,
        "@RUN@": str(run_dir),
        "@SERVERS@": servers,
        "@HOST@": host,
        "@PORT@": str(port),
        "@STATIC_URL@": "/" + static_url.strip("/") + "/",
        "@STATIC_ROOT@": str(static_root),
    }
    text = TEMPLATE.read_text()
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


def manage(*args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, check=True)


def die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervisor dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: no such safety net
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    # A session of its own: Ctrl-C reaches only this supervisor, which stops the children in order.
    return subprocess.Popen(argv, cwd=ROOT, start_new_session=True, preexec_fn=die_with_parent)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float = 2) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(str(self.path))


def status(path: Path, url: str) -> int | None:
    connection = UnixHTTPConnection(path)
    try:
        connection.request("GET", url)
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def ready(path: Path) -> bool:
    """/readyz answers 200 (database, channel layer, embedding model); a build without
    /readyz (404) is ready once /healthz answers."""
    readyz = status(path, "/readyz")
    return readyz == 200 or (readyz == 404 and status(path, "/healthz") == 200)


@dataclass
class Slot:
    """One worker's place: its name and the unix socket its process listens on now. A slot
    has two sockets (``daphne-1a.sock``, ``daphne-1b.sock``): a replacement starts on the
    other one while the old process still serves."""

    name: str
    path: Path

    def argv(self, path: Path) -> list[str]:
        return [sys.executable, str(WORKER), "-u", str(path), "--proxy-headers"]

    def twin(self) -> Path:
        stem = self.path.name.removesuffix(".sock")
        return self.path.with_name(stem[:-1] + ("b" if stem.endswith("a") else "a") + ".sock")


def children(pid: int) -> dict[int, list[bytes]]:
    """The processes whose parent is ``pid``, each with its argv (empty when unreadable,
    e.g. a zombie's), from /proc."""
    found: dict[int, list[bytes]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent != pid:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            argv = []
        found[int(entry.name)] = argv
    return found


def nginx_workers(master: int) -> set[int]:
    """nginx's worker processes (the master's children)."""
    return set(children(master))


def nginx_reload(nginx: subprocess.Popen[bytes]) -> None:
    """SIGHUP to nginx's master (config read again, new workers, the old ones finish their
    connections and exit); returns once its new workers run, at most RELOAD_SECONDS."""
    before = nginx_workers(nginx.pid)
    nginx.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + RELOAD_SECONDS
    while time.monotonic() < deadline and not (nginx_workers(nginx.pid) - before):
        time.sleep(0.05)
    time.sleep(0.2)  # the old workers close their listening sockets on the master's signal


class Supervisor:
    def __init__(self, *, stop_seconds: float) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.stopping: str | None = None
        self.restart_asked = False
        self.stop_seconds = stop_seconds
        self.deaths: dict[str, list[float]] = {}
        signal.signal(signal.SIGINT, self._signalled)
        signal.signal(signal.SIGTERM, self._signalled)
        signal.signal(signal.SIGHUP, self._hangup)

    def _signalled(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = signal.Signals(signum).name

    def _hangup(self, signum: int, frame: FrameType | None) -> None:
        self.restart_asked = True

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        process = spawn(argv)
        self.children.append((name, process))
        print(f"serve: started {name} (pid {process.pid})", flush=True)
        return process

    def exited(self) -> str | None:
        for name, process in self.children:
            if process.poll() is not None:
                return f"{name} exited with status {process.returncode}"
        return None

    def wait_ready(self, sockets: list[Path]) -> str | None:
        """None once every worker is ready, else why not: nginx sends no visitor to a worker
        still loading its model."""
        deadline = time.monotonic() + READY_SECONDS
        waiting = list(sockets)
        while waiting:
            if self.stopping or (why := self.exited()):
                return self.stopping or why
            if time.monotonic() > deadline:
                return f"workers not answering within {READY_SECONDS} s: {', '.join(map(str, waiting))}"
            waiting = [path for path in waiting if not (path.exists() and ready(path))]
            time.sleep(0.2)
        return None

    def watch(self, slots: list[Slot], reroute: Callable[[], None]) -> str:
        """Until a signal or a child's exit says stop (why); SIGHUP restarts the workers."""
        while True:
            if self.restart_asked and not self.stopping:
                self.restart_asked = False
                if why := self.rolling_restart(slots, reroute):
                    return why
            if self.stopping:
                return f"{self.stopping} received"
            if why := self.revive(slots):
                return why
            time.sleep(0.2)

    def revive(self, slots: list[Slot]) -> str | None:
        """A worker that exited on its own is started again on its socket (nginx sends it
        nobody until it listens, once its model is loaded); None, or why everything must stop."""
        by_name = {slot.name: slot for slot in slots}
        for name, process in list(self.children):
            if process.poll() is None:
                continue
            why = f"{name} exited with status {process.returncode}"
            slot = by_name.get(name)
            if slot is None:
                return why
            now = time.monotonic()
            deaths = [t for t in self.deaths.get(name, []) if now - t < CRASH_WINDOW] + [now]
            self.deaths[name] = deaths
            if len(deaths) >= CRASH_LIMIT:
                return f"{why}, {len(deaths)} times within {CRASH_WINDOW:g} s"
            print(f"serve: {why}; starting it again", flush=True)
            self.children.remove((name, process))
            slot.path.unlink(missing_ok=True)  # a killed worker leaves its socket file
            self.start(name, slot.argv(slot.path))
        return None

    def rolling_restart(self, slots: list[Slot], reroute: Callable[[], None]) -> str | None:
        """Each worker in turn: a new one started on the slot's other socket and ready, nginx
        rerouted to it (``reroute``: new connections go there), then the old one drained
        (SIGTERM: its replies finish, its websockets close with 1012 and reconnect, to the
        new one among others). Capacity never drops, even with one worker. None when done
        (or given up with the old worker still serving), else why everything must stop."""
        started = time.monotonic()
        print(f"serve: rolling restart of {len(slots)} worker(s)", flush=True)
        for slot in slots:
            old = next(p for n, p in self.children if n == slot.name and p.poll() is None)
            path = slot.twin()
            path.unlink(missing_ok=True)  # left by a worker that had to be killed
            new = self.start(slot.name, slot.argv(path))
            if why := self.wait_ready([path]):
                if self.stopping:
                    return f"{self.stopping} received during the rolling restart"
                self.children.remove((slot.name, new))
                self.terminate([new])
                print(
                    f"serve: rolling restart stopped: {slot.name}: {why}; the old one serves on", flush=True
                )
                return None
            slot.path = path
            reroute()
            self.children.remove((slot.name, old))  # its exit is asked for, not a failure
            self.terminate([old])
            if self.stopping:
                return f"{self.stopping} received during the rolling restart"
        print(f"serve: rolling restart done in {time.monotonic() - started:.1f} s", flush=True)
        return None

    def terminate(self, group: list[subprocess.Popen[bytes]]) -> None:
        """SIGTERM, then SIGKILL for whatever outlives stop_seconds."""
        for process in group:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_seconds
        for process in group:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop(self) -> None:
        """Workers first (they end their replies and close their websockets through nginx),
        then nginx; whatever outlives stop_seconds is killed."""
        self.terminate([p for name, p in self.children if name != "nginx"])
        self.terminate([p for name, p in self.children if name == "nginx"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--run-dir", type=Path, default=ROOT / ".serve", help="sockets, nginx.conf, logs")
    args = parser.parse_args(argv)
    try:
        preconditions(workers=args.workers, nginx=NGINX, env=dict(os.environ))
    except Refused as err:
        print(f"serve: {err}", file=sys.stderr)
        return 2

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
    sys.path.insert(0, str(ROOT))
    from django.conf import settings

    manage("migrate", "--noinput")
    manage("load_demo", "--skip-checks")
    manage("ensure_admin", "--skip-checks")
    manage("collectstatic", "--noinput", "--verbosity", "0")

    run_dir = args.run_dir.resolve()
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (run_dir / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    slots = [Slot(f"worker {n}", run_dir / f"daphne-{n}a.sock") for n in range(1, args.workers + 1)]
    for slot in slots:
        slot.path.unlink(missing_ok=True)  # left by a run that was killed
        slot.twin().unlink(missing_ok=True)
    config = run_dir / "nginx.conf"

    def configure() -> None:
        config.write_text(
            nginx_config(
                run_dir=run_dir,
                host=args.host,
                port=args.port,
                sockets=[slot.path for slot in slots],
                static_url=settings.STATIC_URL,
                static_root=Path(settings.STATIC_ROOT),
            )
        )

    configure()
    supervisor = Supervisor(stop_seconds=settings.SHUTDOWN_GRACE_SECONDS + STOP_MARGIN)
    pid_file = run_dir / "serve.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    for slot in slots:
        supervisor.start(slot.name, slot.argv(slot.path))
    why = supervisor.wait_ready([slot.path for slot in slots])
    if why is None:
        nginx = supervisor.start(
            "nginx", [NGINX, "-p", f"{run_dir}/", "-c", str(config), "-e", "stderr", "-g", "daemon off;"]
        )

        def reroute() -> None:
            configure()
            nginx_reload(nginx)

        print(
            f"serve: http://{args.host}:{args.port}/ via nginx, {args.workers} worker(s) "
            f"(demo: /demo/, admin: /admin/); Ctrl-C stops all, SIGHUP (make restart) restarts the workers",
            flush=True,
        )
        why = supervisor.watch(slots, reroute)
    print(f"serve: stopping ({why})", flush=True)
    supervisor.stop()
    pid_file.unlink(missing_ok=True)
    print("serve: stopped", flush=True)
    return 0 if supervisor.stopping else 1


if __name__ == "__main__":
    sys.exit(main())
