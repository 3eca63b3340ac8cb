"""Private Redis and PostgreSQL servers for the fault tests: started on free ports, in
directories of their own, so that a test may stop and restart them. The machine's shared
services (PostgreSQL on 5432, Redis on 6379) are never touched."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg

from tests.browser import conftest as live

REDIS_SERVER = "/usr/bin/redis-server"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
UP_SECONDS = 60  # for a private server to answer


def wait_until(condition: Any, what: str, seconds: float = UP_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.1)


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class PrivateRedis:
    """redis-server on a free port, keeping nothing on disk (a restart comes back empty)."""

    def __init__(self, workdir: Path) -> None:
        self.port = live.free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        no_disk = ["--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", *no_disk],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
        )
        wait_until(lambda: answers(self.port), f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


class PrivatePostgres:
    """PostgreSQL 15 in a temporary data directory, as the postgres user, on a free port."""

    def __init__(self, workdir: Path) -> None:
        self.port = live.free_port()
        self.data = workdir / "pgdata"
        self.sockets = workdir / "pgsock"
        self.log = live.ARTIFACTS / "faults-postgres.log"
        for path in (workdir, self.data, self.sockets):
            path.mkdir(exist_ok=True)
            shutil.chown(path, "postgres", "postgres")
        self.as_postgres(PG_BIN / "initdb", "-D", self.data, "--auth=trust", "-U", "postgres", "-E", "UTF8")
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/chatbot"

    def as_postgres(self, *argv: Any) -> None:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", *map(str, argv)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"{argv[0]}: {done.stderr or done.stdout}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1"
        live.ARTIFACTS.mkdir(exist_ok=True)
        self.log.touch()
        shutil.chown(self.log, "postgres", "postgres")
        self.as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-o", options, "-l", self.log, "-w", "start")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def create_database(self) -> None:
        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as db:
            db.execute('CREATE DATABASE "chatbot"')
