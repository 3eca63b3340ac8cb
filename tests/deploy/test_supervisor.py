"""deploy/serve.py's supervisor, without nginx: a worker that dies is started again on its
socket, up to CRASH_LIMIT deaths within CRASH_WINDOW; any other child's exit stops all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy import serve

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


class SleepingSlot(serve.Slot):
    def argv(self, path: Path) -> list[str]:
        return SLEEPER


@pytest.fixture
def supervisor() -> Iterator[serve.Supervisor]:
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    made = serve.Supervisor(stop_seconds=5)
    yield made
    for _, process in made.children:
        if process.poll() is None:
            process.kill()
            process.wait()
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def test_a_dead_worker_is_started_again_on_its_socket(supervisor: serve.Supervisor, tmp_path: Path) -> None:
    socket_file = tmp_path / "worker-1.sock"
    workers = [SleepingSlot("worker 1", socket_file)]
    first = supervisor.start("worker 1", SLEEPER)
    assert supervisor.revive(workers) is None  # alive: nothing to do
    socket_file.write_text("")  # what a killed worker leaves behind
    first.kill()
    first.wait()

    assert supervisor.revive(workers) is None
    ((name, second),) = supervisor.children
    assert name == "worker 1" and second.pid != first.pid and second.poll() is None
    assert not socket_file.exists()


def test_a_worker_dying_again_and_again_stops_everything(
    supervisor: serve.Supervisor, tmp_path: Path
) -> None:
    workers = [SleepingSlot("worker 1", tmp_path / "worker-1.sock")]
    supervisor.start("worker 1", SLEEPER)
    reasons = []
    for _ in range(serve.CRASH_LIMIT):
        ((_, process),) = supervisor.children
        process.kill()
        process.wait()
        reasons.append(supervisor.revive(workers))
    assert reasons[:-1] == [None] * (serve.CRASH_LIMIT - 1)
    assert reasons[-1] and f"{serve.CRASH_LIMIT} times within" in reasons[-1]


def test_nginx_exiting_stops_everything(supervisor: serve.Supervisor, tmp_path: Path) -> None:
    nginx = supervisor.start("nginx", [sys.executable, "-c", "raise SystemExit(4)"])
    nginx.wait()
    assert supervisor.revive([SleepingSlot("worker 1", tmp_path / "w.sock")]) == "nginx exited with status 4"


def test_a_slot_alternates_between_its_two_sockets(tmp_path: Path) -> None:
    slot = serve.Slot("worker 3", tmp_path / "daphne-3a.sock")
    assert slot.twin() == tmp_path / "daphne-3b.sock"
    slot.path = slot.twin()
    assert slot.twin() == tmp_path / "daphne-3a.sock"
    assert slot.argv(slot.path)[-3:] == ["-u", str(tmp_path / "daphne-3b.sock"), "--proxy-headers"]


def test_children_are_this_process_s_own_with_their_argv() -> None:
    process = subprocess.Popen(SLEEPER)
    try:
        found = serve.children(os.getpid())
        assert found[process.pid] == [arg.encode() for arg in SLEEPER] + [b""]
        assert os.getpid() not in found
        assert serve.nginx_workers(os.getpid()) == set(found)
    finally:
        process.kill()
        process.wait()
    assert process.pid not in serve.children(os.getpid())
