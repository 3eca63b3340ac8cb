"""GroupCommit: writes that arrive together go to the ORM thread as one batch."""

from __future__ import annotations

import asyncio
import threading

import pytest

from chatbot.group_commit import GroupCommit


class Recorder:
    """A batch function that records its batches and can be held while one is stored."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()

    def __call__(self, items: list[str]) -> list[str | BaseException]:
        self.entered.set()
        self.release.wait(5)
        self.batches.append(list(items))
        return [ValueError(f"bad {item}") if item.startswith("bad") else item.upper() for item in items]


async def queued_behind_a_first_write(
    writer: GroupCommit[str, str], recorder: Recorder, *names: str
) -> tuple[asyncio.Future[str], list[asyncio.Future[str]]]:
    """Start the write "first", hold it on the ORM thread, and queue ``names`` behind it
    (not released: the test does that)."""
    recorder.release.clear()
    first = asyncio.ensure_future(writer("first"))
    await asyncio.to_thread(recorder.entered.wait, 5)
    others = [asyncio.ensure_future(writer(name)) for name in names]
    await asyncio.sleep(0.05)
    return first, others


async def test_a_lone_write_goes_at_once_in_a_batch_of_its_own() -> None:
    recorder = Recorder()
    writer = GroupCommit(recorder)
    assert await writer("a") == "A"
    assert await writer("b") == "B"
    assert recorder.batches == [["a"], ["b"]]
    assert (writer.batches, writer.items) == (2, 2)


async def test_writes_that_arrive_while_one_is_stored_share_the_next_batch() -> None:
    recorder = Recorder()
    writer = GroupCommit(recorder)
    first, others = await queued_behind_a_first_write(writer, recorder, "b", "c", "d")
    recorder.release.set()
    assert await first == "FIRST"
    assert await asyncio.gather(*others) == ["B", "C", "D"]  # each caller gets its own result
    assert recorder.batches == [["first"], ["b", "c", "d"]]


async def test_a_batch_is_never_larger_than_max_batch() -> None:
    recorder = Recorder()
    writer = GroupCommit(recorder, max_batch=2)
    first, others = await queued_behind_a_first_write(writer, recorder, *"bcde")
    recorder.release.set()
    await asyncio.gather(first, *others)
    assert recorder.batches == [["first"], ["b", "c"], ["d", "e"]]


async def test_an_item_that_fails_fails_only_its_own_caller() -> None:
    recorder = Recorder()
    writer = GroupCommit(recorder)
    first, (good, bad) = await queued_behind_a_first_write(writer, recorder, "good", "bad one")
    recorder.release.set()
    await first
    assert await good == "GOOD"
    with pytest.raises(ValueError, match="bad one"):
        await bad


async def test_a_batch_function_that_raises_fails_every_caller_of_that_batch_only() -> None:
    calls: list[list[str]] = []

    def broken(items: list[str]) -> list[str | BaseException]:
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("database is down")
        return list(items)

    writer = GroupCommit(broken)
    results = await asyncio.gather(writer("a"), writer("b"), return_exceptions=True)
    assert [type(r) for r in results] == [RuntimeError, RuntimeError]
    assert await writer("c") == "c"  # the writer survives


async def test_retry_alone_stores_the_good_items_of_a_batch_that_one_bad_item_broke() -> None:
    calls: list[list[str]] = []

    def strict(items: list[str]) -> list[str | BaseException]:
        calls.append(items)
        if "orphan" in items:  # like a foreign key that fails the whole transaction
            raise LookupError("no such conversation")
        return [item.upper() for item in items]

    writer = GroupCommit(strict, retry_alone=(LookupError,))
    results = await asyncio.gather(writer("a"), writer("orphan"), writer("b"), return_exceptions=True)
    assert results[0] == "A" and results[2] == "B"
    assert isinstance(results[1], LookupError)
    assert calls == [["a", "orphan", "b"], ["a"], ["orphan"], ["b"]]


async def test_a_caller_that_gives_up_does_not_cancel_the_write() -> None:
    recorder = Recorder()
    writer = GroupCommit(recorder)
    first, (leaving, staying) = await queued_behind_a_first_write(writer, recorder, "leaving", "staying")
    leaving.cancel()
    recorder.release.set()
    assert await first == "FIRST"
    assert await staying == "STAYING"
    assert recorder.batches == [["first"], ["leaving", "staying"]]  # stored all the same


async def test_a_result_list_of_the_wrong_length_is_an_error_for_every_caller() -> None:
    writer: GroupCommit[str, str] = GroupCommit(lambda items: [])
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        await writer("a")
