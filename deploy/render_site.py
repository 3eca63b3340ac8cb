"""Writes the nginx site for a real server from deploy/nginx-site.conf.template.

    python deploy/render_site.py --server-name chat.example.com --workers 4 \\
        > /etc/nginx/sites-available/chatbot

HTTPS on 443 (HTTP on 80 redirects to it), the certificate certbot writes for that name,
static files from /srv/chatbot/staticfiles, and one upstream server per worker socket
(/run/chatbot/worker-N.sock, chatbot-worker@N.service): keep --workers equal to the number
of worker instances enabled on the machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().with_name("nginx-site.conf.template")


def listen_lines(*, addresses: list[str], port: int, tls: bool) -> str:
    # nginx 1.22 (Debian 12) takes http2 on the listen line; 1.25.1+ accepts it with a warning.
    suffix = " ssl http2" if tls else ""
    return "\n".join(f"    listen {address}{port}{suffix};" for address in addresses)


def site_config(
    *,
    server_name: str,
    workers: int,
    socket_dir: Path = Path("/run/chatbot"),
    certificate: Path | None = None,
    certificate_key: Path | None = None,
    static_url: str = "/static/",
    static_root: Path = Path("/srv/chatbot/staticfiles"),
    http_port: int = 80,
    https_port: int = 443,
    listen: list[str] | None = None,
    hsts_seconds: int = 31536000,
    acme_root: Path = Path("/var/www/letsencrypt"),
) -> str:
    if workers < 1:
        raise ValueError(f"workers must be 1 or more, got {workers}")
    live = Path("/etc/letsencrypt/live") / server_name.split()[0]
    addresses = [f"{a}:" for a in listen] if listen else ["", "[::]:"]
    # max_fails=0: a worker restarting has no socket for a moment and nginx moves on to the
    # next; counted out instead, it would get one new websocket per fail_timeout afterwards
    # (see deploy/serve.py), and visitors got 502 during rolling restarts.
    servers = "\n".join(
        f"    server unix:{socket_dir}/worker-{n}.sock max_fails=0;" for n in range(1, workers + 1)
    )
    values = {
        "@SERVERS@": servers,
        "@SERVER_NAME@": server_name,
        "@LISTEN_HTTP@": listen_lines(addresses=addresses, port=http_port, tls=False),
        "@LISTEN_HTTPS@": listen_lines(addresses=addresses, port=https_port, tls=True),
        "@HTTPS_PORT_SUFFIX@": "" if https_port == 443 else f":{https_port}",
        "@CERTIFICATE@": str(certificate or live / "fullchain.pem"),
        "@CERTIFICATE_KEY@": str(certificate_key or live / "privkey.pem"),
        "@STATIC_URL@": "/" + static_url.strip("/") + "/",
        "@STATIC_ROOT@": str(static_root).rstrip("/"),
        "@HSTS_SECONDS@": str(hsts_seconds),
        "@ACME_ROOT@": str(acme_root),
    }
    text = TEMPLATE.read_text()
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server-name", required=True, help="the public host name(s), e.g. chat.example.com")
    parser.add_argument("--workers", type=int, required=True, help="worker instances on this machine")
    parser.add_argument("--socket-dir", type=Path, default=Path("/run/chatbot"))
    parser.add_argument("--certificate", type=Path, help="default: /etc/letsencrypt/live/NAME/fullchain.pem")
    parser.add_argument(
        "--certificate-key", type=Path, help="default: /etc/letsencrypt/live/NAME/privkey.pem"
    )
    parser.add_argument("--static-url", default="/static/")
    parser.add_argument("--static-root", type=Path, default=Path("/srv/chatbot/staticfiles"))
    parser.add_argument("--http-port", type=int, default=80)
    parser.add_argument("--https-port", type=int, default=443)
    parser.add_argument(
        "--listen", action="append", help="an address to listen on (repeatable); default: all, IPv4 and IPv6"
    )
    parser.add_argument("--hsts-seconds", type=int, default=31536000)
    parser.add_argument("--acme-root", type=Path, default=Path("/var/www/letsencrypt"))
    args = parser.parse_args(argv)
    try:
        text = site_config(**{k: v for k, v in vars(args).items()})
    except ValueError as err:
        print(f"render_site: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
