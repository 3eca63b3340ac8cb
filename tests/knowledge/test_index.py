from __future__ import annotations

import numpy as np

from knowledge.index import PhrasingMatrix


def brute_force(
    entry_ids: np.ndarray, vectors: np.ndarray, query: np.ndarray, k: int
) -> list[tuple[int, float]]:
    best: dict[int, float] = {}
    for entry, vector in zip(entry_ids.tolist(), vectors, strict=True):
        best[entry] = max(best.get(entry, -9.0), float(vector @ query))
    return sorted(best.items(), key=lambda item: -item[1])[:k]


def normalised(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_search_agrees_with_a_brute_force_reference() -> None:
    rng = np.random.default_rng(7)
    entry_ids = rng.integers(0, 300, size=2000)  # unsorted, several phrasings per entry
    vectors = normalised(rng.normal(size=(2000, 32)))
    index = PhrasingMatrix(entry_ids, vectors)
    for _ in range(20):
        query = normalised(rng.normal(size=(1, 32)))[0]
        found = index.search(query, 10)
        expected = brute_force(entry_ids, vectors, query, 10)
        assert found.entry_ids.tolist() == [entry for entry, _ in expected]
        assert np.allclose(found.scores, [score for _, score in expected], atol=1e-5)


def test_an_entry_scores_its_best_phrasing() -> None:
    vectors = normalised(np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32))
    index = PhrasingMatrix(np.array([5, 5, 9]), vectors)
    found = index.search(np.array([0, 1], dtype=np.float32), 5)
    assert found.entry_ids.tolist() == [5, 9]
    assert np.allclose(found.scores, [1.0, 0.70710677])
    assert index.entry_count == 2 and len(index) == 3


def test_an_empty_index_finds_nothing() -> None:
    index = PhrasingMatrix(np.zeros(0, dtype=np.int64), np.zeros((0, 4), dtype=np.float32))
    assert index.search(np.ones(4, dtype=np.float32), 5).entry_ids.tolist() == []
