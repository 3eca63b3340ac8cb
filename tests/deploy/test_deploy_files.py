"""deploy/ for real servers: the TLS site nginx runs (rendered with a self-signed certificate,
checked by `nginx -t`, then served for real on free ports in front of workers on unix
sockets), the systemd units, the rolling restart, and the environment file template."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from django.conf import settings

from tests.browser.conftest import free_port
from tests.deploy.conftest import NGINX

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
sys.path.insert(0, str(DEPLOY))
from render_site import site_config  # noqa: E402  (deploy/ is scripts, not a package)

NAME = "chat.test"
OPENSSL = shutil.which("openssl")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
CURL = shutil.which("curl")
HASHED = "demo/shop.0123456789ab.css"
needs_nginx = pytest.mark.skipif(
    not os.access(NGINX, os.X_OK) or OPENSSL is None, reason=f"needs nginx ({NGINX}) and openssl"
)


class Worker(BaseHTTPRequestHandler):
    """A stand-in for one daphne worker on a unix socket: answers with the headers it got
    (and an HSTS header of its own, as Django sends one), /readyz per ``Upstream.ready``,
    and a websocket handshake with 101, then echoes the tunnel's bytes."""

    protocol_version = "HTTP/1.1"
    server: Upstream

    def log_message(self, format: str, *args: object) -> None:
        pass

    def address_string(self) -> str:
        return "unix"

    def do_GET(self) -> None:
        seen = {k.lower(): v for k, v in self.headers.items()}
        self.server.requests.append((self.path, seen))
        if self.path == "/readyz":
            status = 200 if self.server.ready() else 503
            self.server.events.write(f"readyz {self.server.number} {status}")
            self.reply(status, b"{}")
        elif seen.get("upgrade", "").lower() == "websocket":
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.flush()
            while chunk := self.rfile.read1(1024):
                self.wfile.write(chunk)
                self.wfile.flush()
            self.close_connection = True
        else:
            self.reply(200, json.dumps({"worker": self.server.number, "headers": seen}).encode())

    def reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Strict-Transport-Security", "max-age=1")
        self.end_headers()
        self.wfile.write(body)


class Events:
    """One log file the fake workers and the fake systemctl both append to, in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        path.touch()

    def write(self, line: str) -> None:
        with self.lock, self.path.open("a") as out:
            out.write(line + "\n")

    def lines(self) -> list[str]:
        return self.path.read_text().splitlines()


class Upstream(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, number: int, events: Events) -> None:
        self.number = number
        self.events = events
        self.requests: list[tuple[str, dict[str, str]]] = []
        # Written by the fake systemctl's "restart": answer 503 this many more times.
        self.not_ready = path.with_name(f"not-ready-{number}")
        super().__init__(str(path), Worker)

    def ready(self) -> bool:
        if not self.not_ready.exists():
            return True
        left = int(self.not_ready.read_text() or 0)
        if left <= 0:
            return False  # never ready
        if left == 1:
            self.not_ready.unlink()
        else:
            self.not_ready.write_text(str(left - 1))
        return False


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[Path, list[Upstream], Events]]:
    # A short directory: a unix socket's path is limited to 107 bytes.
    sockets = Path(f"/tmp/chatbot-deploy-{os.getpid()}-{free_port()}")
    sockets.mkdir()
    events = Events(tmp_path / "events.log")
    upstreams = [Upstream(sockets / f"worker-{n}.sock", n, events) for n in (1, 2)]
    for upstream in upstreams:
        threading.Thread(target=upstream.serve_forever, daemon=True).start()
    try:
        yield sockets, upstreams, events
    finally:
        for upstream in upstreams:
            upstream.shutdown()
            upstream.server_close()
        shutil.rmtree(sockets, ignore_errors=True)


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={NAME}"]
    files = ["-keyout", str(key), "-out", str(cert), "-addext", f"subjectAltName=DNS:{NAME},IP:127.0.0.1"]
    subprocess.run([OPENSSL or "openssl", *request, *files], check=True, capture_output=True)
    return cert, key


def main_config(run: Path, site: Path) -> str:
    """What Debian's /etc/nginx/nginx.conf gives a site, with every path under ``run``."""
    user = "user root;" if os.geteuid() == 0 else ""  # root: workers must reach the sockets
    temp = "\n".join(
        f"    {kind}_temp_path {run}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}
worker_processes 1;
pid {run}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 64; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {run}/access.log;
{temp}
    include {site};
}}
"""


class Nginx:
    def __init__(self, tmp_path: Path, sockets: Path) -> None:
        self.run = tmp_path / "nginx"
        self.run.mkdir()
        self.cert, key = self_signed(tmp_path)
        static = tmp_path / "staticfiles"
        (static / "chatbot").mkdir(parents=True)
        (static / "demo").mkdir()
        (static / "chatbot" / "widget.js").write_text("/* the widget */ new WebSocket(url);\n")
        (static / HASHED).write_text("body { color: #333; }\n")
        self.http, self.https = free_port(), free_port()
        site = self.run / "chatbot.conf"
        site.write_text(
            site_config(
                server_name=NAME,
                workers=2,
                socket_dir=sockets,
                certificate=self.cert,
                certificate_key=key,
                static_root=static,
                http_port=self.http,
                https_port=self.https,
                listen=["127.0.0.1"],
                acme_root=tmp_path / "acme",
            )
        )
        self.config = self.run / "nginx.conf"
        self.config.write_text(main_config(self.run, site))
        self.argv = [NGINX, "-p", f"{self.run}/", "-c", str(self.config), "-e", "stderr"]
        self.process: subprocess.Popen[bytes] | None = None

    def test(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.argv, "-t"], capture_output=True, text=True, timeout=30)

    def start(self) -> None:
        self.log = self.run / "stderr.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen([*self.argv, "-g", "daemon off;"], stdout=out, stderr=out)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                socket.create_connection(("127.0.0.1", self.https), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"nginx not listening: {self.log.read_text()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.cert))
        context.check_hostname = True
        return context

    def get(self, path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
        # The certificate names 127.0.0.1 too; the Host header says which site.
        connection = http.client.HTTPSConnection("127.0.0.1", self.https, context=self.tls(), timeout=10)
        connection.request("GET", path, headers={"Host": NAME, **(headers or {})})
        response = connection.getresponse()
        response.read()
        connection.close()
        return response


@pytest.fixture
def nginx(tmp_path: Path, workers: tuple[Path, list[Upstream], Events]) -> Iterator[Nginx]:
    server = Nginx(tmp_path, workers[0])
    try:
        yield server
    finally:
        server.stop()


def body_of(nginx: Nginx, path: str) -> dict[str, object]:
    connection = http.client.HTTPSConnection("127.0.0.1", nginx.https, context=nginx.tls(), timeout=10)
    connection.request("GET", path, headers={"Host": NAME})
    response = connection.getresponse()
    assert response.status == 200, response.status
    return json.loads(response.read())


@needs_nginx
def test_the_tls_site_passes_nginx_t_and_serves_for_real(
    nginx: Nginx, workers: tuple[Path, list[Upstream], Events]
) -> None:
    checked = nginx.test()
    assert checked.returncode == 0, checked.stderr
    assert "syntax is ok" in checked.stderr and "test is successful" in checked.stderr
    nginx.start()

    # Plain HTTP: 301 to the same URL over HTTPS.
    connection = http.client.HTTPConnection("127.0.0.1", nginx.http, timeout=10)
    connection.request("GET", "/agent/live/?tab=2", headers={"Host": NAME})
    redirect = connection.getresponse()
    assert redirect.status == 301
    assert redirect.headers["Location"] == f"https://{NAME}:{nginx.https}/agent/live/?tab=2"

    # HTTPS, proxied to a worker: HSTS once (nginx's, the worker's dropped), and the worker
    # told the request came over HTTPS for this host.
    response = nginx.get("/agent/live/")
    assert response.status == 200
    assert response.headers.get_all("Strict-Transport-Security") == ["max-age=31536000; includeSubDomains"]
    sent = {path: headers for upstream in workers[1] for path, headers in upstream.requests}["/agent/live/"]
    assert sent["x-forwarded-proto"] == "https" and sent["host"] == NAME
    assert sent["connection"] == "close" and "127.0.0.1" in sent["x-forwarded-for"]
    # Both workers take requests (least_conn over the two sockets).
    seen = {body_of(nginx, f"/healthz?n={n}")["worker"] for n in range(6)}
    assert seen == {1, 2}

    # The widget under its stable URL: revalidated each time (a 304 when unchanged).
    widget = nginx.get("/static/chatbot/widget.js")
    assert widget.status == 200 and widget.headers["Cache-Control"] == "no-cache"
    assert widget.headers["ETag"] and widget.headers["Last-Modified"]
    assert widget.headers["X-Content-Type-Options"] == "nosniff"
    assert widget.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert widget.headers["Content-Type"].startswith(("application/javascript", "text/javascript"))
    unchanged = nginx.get("/static/chatbot/widget.js", {"If-None-Match": widget.headers["ETag"]})
    assert unchanged.status == 304
    # A file under its hashed name: a year, immutable.
    hashed = nginx.get("/static/" + HASHED)
    assert hashed.status == 200 and hashed.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert nginx.get("/static/missing.js").status == 404

    # A websocket: the upgrade headers reach the worker, its 101 comes back, then the tunnel.
    raw = nginx.tls().wrap_socket(
        socket.create_connection(("127.0.0.1", nginx.https), timeout=10), server_hostname=NAME
    )
    with raw:
        raw.sendall(
            f"GET /ws/chat/key/ HTTP/1.1\r\nHost: {NAME}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += raw.recv(1024)
        assert head.startswith(b"HTTP/1.1 101"), head
        assert re.search(rb"(?im)^upgrade: websocket\r$", head) and re.search(
            rb"(?im)^connection: upgrade\r$", head
        )
        raw.sendall(b"frames both ways")
        echoed = b""
        while len(echoed) < len(b"frames both ways"):
            echoed += raw.recv(1024)
        assert echoed == b"frames both ways"
    sent = {path: headers for upstream in workers[1] for path, headers in upstream.requests}["/ws/chat/key/"]
    assert sent["upgrade"] == "websocket" and sent["connection"] == "upgrade"
    assert sent["x-forwarded-proto"] == "https"


def test_the_site_names_the_sockets_the_worker_units_listen_on() -> None:
    text = site_config(server_name="chat.example.com", workers=3)
    assert re.findall(r"server unix:(\S+) ", text) == [f"/run/chatbot/worker-{n}.sock" for n in (1, 2, 3)]
    assert "/etc/letsencrypt/live/chat.example.com/fullchain.pem" in text
    assert "listen 443 ssl http2;" in text and "listen [::]:80;" in text
    assert "return 301 https://$host$request_uri;" in text
    assert "@" not in re.sub(r"#.*", "", text).replace("@*", ""), "a placeholder left"
    unit = units()["chatbot-worker@.service"]
    assert "-u /run/chatbot/worker-%i.sock" in unit["Service"]["ExecStart"][0]


# --- systemd ------------------------------------------------------------------------------


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file's sections; a key may repeat (ExecStart= of a oneshot)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        else:
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def units() -> dict[str, dict[str, dict[str, list[str]]]]:
    return {path.name: parse_unit(path.read_text()) for path in sorted((DEPLOY / "systemd").iterdir())}


def seconds(value: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(min|ms|s|h)?", value):
        total += float(number) * {"ms": 0.001, "s": 1, "min": 60, "h": 3600, "": 1}[unit]
    return total


def test_the_worker_unit_drains_longer_than_the_grace_and_restarts_always() -> None:
    service = units()["chatbot-worker@.service"]["Service"]
    grace = float(getattr(settings, "SHUTDOWN_GRACE_SECONDS", 20.0))
    assert seconds(service["TimeoutStopSec"][-1]) > grace >= 20
    assert service["Restart"] == ["always"] and service["KillSignal"] == ["SIGTERM"]
    assert service["User"][0] not in ("", "root") and service["EnvironmentFile"] == [
        "/etc/chatbot/chatbot.env"
    ]
    # One /run/chatbot for every instance: not removed when one of them stops.
    assert service["RuntimeDirectory"] == ["chatbot"] and service["RuntimeDirectoryPreserve"] == ["yes"]
    template_grace = environment_template()["SHUTDOWN_GRACE_SECONDS"]
    assert seconds(service["TimeoutStopSec"][-1]) > float(template_grace)


def test_every_command_the_units_run_exists_in_the_repository() -> None:
    commands = [
        command
        for unit in units().values()
        for key in ("ExecStart", "ExecStartPre")
        for command in unit.get("Service", {}).get(key, [])
    ]
    scripts = [c.split()[1] for c in commands if c.startswith("/srv/chatbot/.venv/bin/python ")]
    assert {"deploy/worker.py", "manage.py"} <= set(scripts)
    for script in scripts:
        assert (ROOT / script).is_file(), script
    migrate = units()["chatbot-migrate.service"]["Service"]
    assert migrate["Type"] == ["oneshot"] and migrate["RemainAfterExit"] == ["yes"]
    assert [c.split()[2] for c in migrate["ExecStart"]] == ["check", "migrate", "collectstatic"]
    worker = units()["chatbot-worker@.service"]["Unit"]
    assert "chatbot-migrate.service" in worker["After"][0] and "chatbot-migrate.service" in worker["Wants"][0]


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    # Pointed at this checkout, so that the commands' executables exist.
    for path in (DEPLOY / "systemd").iterdir():
        (tmp_path / path.name).write_text(path.read_text().replace("/srv/chatbot", str(ROOT)))
    names = ["chatbot-worker@1.service", "chatbot-migrate.service", "chatbot.target"]
    done = subprocess.run(
        [SYSTEMD_ANALYZE or "", "verify", "--man=no", *(f"./{n}" for n in names)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr


# --- rolling restart -----------------------------------------------------------------------

FAKE_SYSTEMCTL = """#!/usr/bin/env bash
# systemctl as far as deploy/rolling-restart.sh uses it: two active worker instances.
set -eu
case "$1" in
  list-units) printf 'chatbot-worker@2.service loaded active running Chatbot worker 2\\n'
              printf 'chatbot-worker@1.service loaded active running Chatbot worker 1\\n' ;;
  restart) echo "restart $2" >> "$EVENTS"
           n=${2#chatbot-worker@}; n=${n%.service}
           echo "$NOT_READY" > "$SOCKET_DIR/not-ready-$n" ;;
  *) exit 3 ;;
esac
"""


def rolling_restart(
    tmp_path: Path, sockets: Path, events: Events, not_ready: int
) -> subprocess.CompletedProcess[str]:
    systemctl = tmp_path / "systemctl"
    systemctl.write_text(FAKE_SYSTEMCTL)
    systemctl.chmod(0o755)
    env = {
        **os.environ,
        "SYSTEMCTL": str(systemctl),
        "SOCKET_DIR": str(sockets),
        "EVENTS": str(events.path),
        "NOT_READY": str(not_ready),
        "READY_SECONDS": "4",
    }
    return subprocess.run(
        ["bash", str(DEPLOY / "rolling-restart.sh")], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(CURL is None, reason="curl not installed")
def test_the_rolling_restart_waits_for_each_worker_to_be_ready_before_the_next(
    tmp_path: Path, workers: tuple[Path, list[Upstream], Events]
) -> None:
    sockets, _, events = workers
    done = rolling_restart(tmp_path, sockets, events, not_ready=2)
    assert done.returncode == 0, done.stdout + done.stderr
    assert events.lines() == [
        "restart chatbot-worker@1.service",
        "readyz 1 503",
        "readyz 1 503",
        "readyz 1 200",
        "restart chatbot-worker@2.service",
        "readyz 2 503",
        "readyz 2 503",
        "readyz 2 200",
    ]
    assert "restarted 2 worker(s): 1 2" in done.stdout


@pytest.mark.skipif(CURL is None, reason="curl not installed")
def test_the_rolling_restart_stops_at_a_worker_that_never_gets_ready(
    tmp_path: Path, workers: tuple[Path, list[Upstream], Events]
) -> None:
    sockets, _, events = workers
    done = rolling_restart(tmp_path, sockets, events, not_ready=0)
    assert done.returncode == 1
    assert "worker 1 not ready within 4 s" in done.stdout
    assert "restart chatbot-worker@2.service" not in events.lines()  # the other one keeps serving


# --- environment file -----------------------------------------------------------------------


def environment_template() -> dict[str, str]:
    pairs = re.findall(r"(?m)^([A-Z][A-Z0-9_]*)=(.*)$", (DEPLOY / "chatbot.env.template").read_text())
    return dict(pairs)


def code_text() -> str:
    sources = [ROOT / "deploy" / "worker.py"]
    for package in ("chatbot", "knowledge", "agents"):
        sources += [p for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts]
    return "\n".join(p.read_text() for p in sources)


def test_every_variable_of_the_environment_template_is_read_by_the_code() -> None:
    names = environment_template()
    assert {"DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL", "LLM_PROVIDER"} <= set(names)
    assert names["DEBUG"] == "0"
    code = code_text()
    unread = [name for name in names if f'"{name}"' not in code]
    assert unread == [], f"in deploy/chatbot.env.template but read nowhere: {unread}"


def test_the_environment_template_passes_check_deploy() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(environment_template())
    env["SECRET_KEY"] = "template-" + "t" * 40 + "Qz7!pW3x"
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
