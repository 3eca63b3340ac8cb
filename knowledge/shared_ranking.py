"""Rank the queries of one turn of the event loop together.

The callers of one encoding batch (``knowledge.query_batcher.QueryBatcher``) wake up in the
same turn of the event loop; ranking their queries one by one would read the knowledge
base's whole matrix from memory once each, which is most of a big knowledge base's
search cost while the model runs beside it. ``rank_with_others`` collects the queries of
the turn and ranks each knowledge base's share with one ``Ranker.rank_many``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from chatbot.runtime import runtime
from knowledge.ranking import Ranked, Ranker

THREAD_ABOVE_ROWS = 20_000  # a bigger matrix product would stall the event loop: a thread


@dataclass(frozen=True)
class _Query:
    vector: np.ndarray
    text: str
    k: int
    unknown: float
    future: asyncio.Future[list[Ranked]]


class Turns:
    """The queries waiting for the end of their loop's turn, per event loop, and the
    searches running on threads (a runtime part)."""

    def __init__(self) -> None:
        self.waiting: dict[asyncio.AbstractEventLoop, list[tuple[Ranker, _Query]]] = {}
        self.threads: set[asyncio.Task[None]] = set()  # the loop keeps only weak references


def rank_with_others(
    ranker: Ranker, vector: np.ndarray, text: str, k: int, *, unknown: float = 0.0
) -> asyncio.Future[list[Ranked]]:
    """``ranker.rank(vector, text, k, unknown=unknown)``, at the end of this turn of the loop."""
    loop = asyncio.get_running_loop()
    turns = runtime().part(Turns)
    waiting = turns.waiting.get(loop)
    if waiting is None:  # the first query of this turn
        for ended in [other for other in turns.waiting if other.is_closed()]:
            del turns.waiting[ended]  # a loop that closed before its turn ended: nobody waits now
        waiting = turns.waiting[loop] = []
        loop.call_soon(_rank_waiting, turns, loop)  # after every callback already queued for this turn
    future: asyncio.Future[list[Ranked]] = loop.create_future()
    waiting.append((ranker, _Query(vector, text, k, unknown, future)))
    return future


def _rank_waiting(turns: Turns, loop: asyncio.AbstractEventLoop) -> None:
    groups: dict[int, tuple[Ranker, list[_Query]]] = {}
    for ranker, query in turns.waiting.pop(loop, []):
        if not query.future.cancelled():  # its caller gave up
            groups.setdefault(id(ranker), (ranker, []))[1].append(query)
    for ranker, queries in groups.values():
        if len(ranker.plain) > THREAD_ABOVE_ROWS:
            task = asyncio.ensure_future(_rank_in_thread(ranker, queries))
            turns.threads.add(task)
            task.add_done_callback(turns.threads.discard)
        else:
            _deliver(queries, _ranked(ranker, queries))


async def _rank_in_thread(ranker: Ranker, queries: list[_Query]) -> None:
    _deliver(queries, await asyncio.to_thread(_ranked, ranker, queries))


def _ranked(ranker: Ranker, queries: list[_Query]) -> list[list[Ranked]] | Exception:
    try:
        ranked = ranker.rank_many(
            np.stack([query.vector for query in queries]),
            [query.text for query in queries],
            max(query.k for query in queries),
            unknowns=[query.unknown for query in queries],
        )
    except Exception as err:  # every caller of the group gets the failure
        return err
    return [rows[: query.k] for rows, query in zip(ranked, queries, strict=True)]


def _deliver(queries: list[_Query], results: list[list[Ranked]] | Exception) -> None:
    for index, query in enumerate(queries):
        if query.future.cancelled():
            continue
        if isinstance(results, Exception):
            query.future.set_exception(results)
        else:
            query.future.set_result(results[index])
