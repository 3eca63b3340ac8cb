"""The runtime (chatbot.runtime): one object owning the process's state, in parts."""

from __future__ import annotations

import threading

import pytest

from chatbot.runtime import Runtime, RuntimeClosed, install, runtime

closed: list[str] = []


class Counter:
    def __init__(self) -> None:
        self.count = 0


class SyncPart:
    def close(self) -> None:
        closed.append("sync")


class AsyncPart:
    async def aclose(self) -> None:
        closed.append("async")


class Broken:
    def close(self) -> None:
        raise OSError("cannot close")


class NeedsSync:
    """Asks for another part in its constructor, and uses it while closing."""

    def __init__(self) -> None:
        self.other = runtime().part(SyncPart)

    def close(self) -> None:
        closed.append("needs-sync")
        assert runtime().peek(SyncPart) is self.other  # not closed yet: reachable


@pytest.fixture(autouse=True)
def clear_closed() -> None:
    closed.clear()


def test_a_part_is_made_once_and_shared() -> None:
    rt = Runtime()
    rt.part(Counter).count += 1
    rt.part(Counter).count += 1
    assert rt.part(Counter).count == 2
    assert rt.peek(SyncPart) is None and rt.kinds() == [Counter]


def test_two_runtimes_share_nothing() -> None:
    first, second = Runtime(), Runtime()
    first.part(Counter).count = 5
    assert second.part(Counter).count == 0


def test_threads_racing_for_a_part_get_the_same_one() -> None:
    rt, seen = Runtime(), []
    barrier = threading.Barrier(8)

    def take() -> None:
        barrier.wait()
        seen.append(rt.part(Counter))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(part) for part in seen}) == 1


async def test_aclose_closes_parts_last_made_first_and_survives_a_failing_one(caplog) -> None:
    rt = Runtime()
    rt.part(SyncPart), rt.part(Broken), rt.part(AsyncPart)
    await rt.aclose()
    assert closed == ["async", "sync"]
    assert "closing Broken failed" in caplog.text
    with pytest.raises(RuntimeClosed):
        rt.part(Counter)


def test_close_from_synchronous_code() -> None:
    rt = Runtime()
    rt.part(AsyncPart)
    rt.close()
    assert closed == ["async"] and rt.closed


async def test_close_inside_a_loop_is_refused() -> None:
    with pytest.raises(RuntimeError, match="await aclose"):
        Runtime().close()


def test_the_accessor_gives_the_installed_runtime_and_a_new_one_after_close() -> None:
    mine = Runtime()
    previous = install(mine)
    try:
        assert runtime() is mine
        mine.close()
        replacement = runtime()
        assert replacement is not mine and not replacement.closed
    finally:
        install(previous)


async def test_a_part_made_by_anothers_constructor_is_closed_after_it_and_reachable_meanwhile() -> None:
    mine = Runtime()
    previous = install(mine)
    try:
        mine.part(NeedsSync)
        assert mine.kinds() == [SyncPart, NeedsSync]
        await mine.aclose()
    finally:
        install(previous)
    assert closed == ["needs-sync", "sync"]


async def test_no_part_is_made_while_closing() -> None:
    mine, refused = Runtime(), []

    class Late:
        def close(self) -> None:
            try:
                mine.part(Counter)
            except RuntimeClosed:
                refused.append(True)

    mine.part(Late)
    await mine.aclose()
    assert refused == [True] and mine.closed


def test_an_adopted_part_is_the_runtimes_own_and_is_closed_with_it() -> None:
    rt, carried = Runtime(), SyncPart()
    assert rt.adopt(carried) is carried and rt.part(SyncPart) is carried
    with pytest.raises(ValueError, match="has a SyncPart already"):
        rt.adopt(SyncPart())
    rt.close()
    assert closed == ["sync"]
    with pytest.raises(RuntimeClosed):
        rt.adopt(Counter())
