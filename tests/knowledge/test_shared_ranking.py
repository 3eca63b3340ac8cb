from __future__ import annotations

import asyncio

import numpy as np
import pytest

from chatbot.runtime import runtime
from knowledge import shared_ranking
from knowledge.ranking import Ranker


def ranker_of(entries: int, seed: int) -> Ranker:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(entries * 2, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return Ranker(np.arange(entries * 2) // 2, [f"text {n}" for n in range(entries * 2)], vectors)


class Counting(Ranker):
    passes: list[int]

    def rank_many(self, queries, texts, k=5, *, unknowns=None):
        self.passes.append(len(texts))
        return super().rank_many(queries, texts, k, unknowns=unknowns)


def counting(entries: int, seed: int) -> Counting:
    plain = ranker_of(entries, seed)
    ranker = Counting(plain.entry_ids, plain.texts, plain.vectors)
    ranker.passes = []
    return ranker


async def test_queries_of_one_turn_share_one_pass_per_knowledge_base() -> None:
    shop, bank = counting(10, 1), counting(6, 2)
    asks = [(shop, 0, 3), (bank, 4, 2), (shop, 7, 5), (shop, 12, 1)]
    futures = [shared_ranking.rank_with_others(r, r.vectors[row], "text", k) for r, row, k in asks]
    results = await asyncio.gather(*futures)
    assert shop.passes == [3] and bank.passes == [1]
    for (ranker, row, k), ranked in zip(asks, results, strict=True):
        expected = Ranker(ranker.entry_ids, ranker.texts, ranker.vectors).rank(ranker.vectors[row], "text", k)
        assert [r.entry_id for r in ranked] == [r.entry_id for r in expected]
        assert ranked[0].entry_id == row // 2
    # A later turn is a new pass.
    await shared_ranking.rank_with_others(shop, shop.vectors[0], "text", 2)
    assert shop.passes == [3, 1]


async def test_a_caller_that_gave_up_is_skipped_and_a_failure_reaches_every_caller() -> None:
    shop = counting(10, 1)
    gone = shared_ranking.rank_with_others(shop, shop.vectors[0], "text", 3)
    kept = shared_ranking.rank_with_others(shop, shop.vectors[4], "text", 3)
    gone.cancel()
    assert (await kept)[0].entry_id == 2
    assert shop.passes == [1]
    broken = [shared_ranking.rank_with_others(shop, np.zeros(5, np.float32), "text", 3) for _ in range(2)]
    for future in broken:
        with pytest.raises(ValueError):
            await future


async def test_a_big_knowledge_base_is_searched_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared_ranking, "THREAD_ABOVE_ROWS", 5)
    shop = counting(10, 1)
    seen: list[bool] = []
    original = Counting.rank_many

    def where(self, *args, **kwargs):
        try:
            asyncio.get_running_loop()
            seen.append(True)
        except RuntimeError:  # a worker thread has no running loop
            seen.append(False)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Counting, "rank_many", where)
    ranked = await shared_ranking.rank_with_others(shop, shop.vectors[6], "text", 2)
    assert ranked[0].entry_id == 3 and seen == [False]


def test_a_loop_that_closed_before_its_turn_ended_leaves_nothing_for_later_loops() -> None:
    shop = counting(10, 1)

    async def ask_and_stop() -> None:
        shared_ranking.rank_with_others(shop, shop.vectors[0], "text", 2)
        asyncio.get_running_loop().stop()  # the loop ends before the shared pass runs

    loop = asyncio.new_event_loop()
    asked = loop.create_task(ask_and_stop())
    loop.run_forever()
    loop.close()
    assert asked.done() and shop.passes == []

    async def ask() -> list:
        return await asyncio.wait_for(shared_ranking.rank_with_others(shop, shop.vectors[4], "text", 2), 5)

    assert asyncio.run(ask())[0].entry_id == 2 and shop.passes == [1]
    assert runtime().part(shared_ranking.Turns).waiting == {}  # the closed loop's leftovers were dropped
