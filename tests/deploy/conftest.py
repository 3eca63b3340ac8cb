"""`make serve` tests need Debian's nginx, PostgreSQL and Redis on this machine; without
them they are skipped, and the run says so at the end (like the browser tests)."""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest

NGINX = os.environ.get("NGINX", "/usr/sbin/nginx")
POSTGRES = ("127.0.0.1", 5432)
REDIS = ("127.0.0.1", 6379)


def answers(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=1):
            return True
    except OSError:
        return False


def serve_missing_reason() -> str | None:
    if not os.access(NGINX, os.X_OK):
        return f"nginx not found at {NGINX} (apt-get install -y nginx)"
    for name, address in (("PostgreSQL", POSTGRES), ("Redis", REDIS)):
        if not answers(address):
            return f"{name} does not answer on {address[0]}:{address[1]}"
    return None


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    reason = serve_missing_reason()
    if reason:
        terminalreporter.write_sep("!", f"MAKE SERVE TESTS SKIPPED: {reason}", yellow=True)
