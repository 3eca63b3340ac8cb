"""agents.clustering: hand-made vectors with a known answer, real sentences, and a naive
reference implementation of the same greedy rule on random data."""

from __future__ import annotations

import numpy as np
import pytest

from agents import clustering
from agents.clustering import cluster_vectors, medoid_of, neighbour_counts


def unit(*rows: list[float]) -> np.ndarray:
    matrix = np.array(rows, dtype=np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def sizes(clusters: list[clustering.Cluster]) -> list[int]:
    return [len(c.members) for c in clusters]


def reference(vectors: np.ndarray, threshold: float) -> list[list[int]]:
    """The rule spelt out: recount every free vector's free neighbours at every step."""
    sims = vectors @ vectors.T
    free = np.ones(len(vectors), dtype=bool)
    groups = []
    while free.any():
        counts = np.where(free, ((sims >= threshold) & free).sum(axis=1), -1)
        centre = int(np.argmax(counts))  # the lowest index among the largest
        members = np.flatnonzero((sims[centre] >= threshold) & free)
        free[members] = False
        groups.append(sorted({*members.tolist(), centre}))
    return sorted(groups, key=lambda g: (-len(g), g[0]))


def test_it_finds_the_known_clusters_of_hand_made_vectors_largest_first() -> None:
    vectors = unit(
        [0, 1, 0.05],  # 0: B
        [1, 0.1, 0],  # 1: A
        [0, 0, 1],  # 2: C, alone
        [1, 0, 0],  # 3: A, the centre of A
        [0.1, 1, 0],  # 4: B
        [1, -0.1, 0],  # 5: A
    )
    clusters = cluster_vectors(vectors, threshold=0.9)
    assert [c.members for c in clusters] == [[1, 3, 5], [0, 4], [2]]
    assert [c.medoid for c in clusters] == [3, 0, 2]  # B's two members tie: the lower index


def test_it_orders_clusters_of_equal_size_by_their_lowest_index() -> None:
    vectors = unit([0, 0, 1], [1, 0, 0], [0, 1, 0], [0.05, 1, 0], [1, 0.05, 0])
    clusters = cluster_vectors(vectors, threshold=0.9)
    assert [c.members for c in clusters] == [[1, 4], [2, 3], [0]]


def test_it_puts_everything_in_one_cluster_when_all_are_alike() -> None:
    vectors = unit(*([1, 0.01 * i] for i in range(40)))
    assert [c.members for c in cluster_vectors(vectors, threshold=0.9)] == [list(range(40))]


def test_it_returns_nothing_for_no_vectors() -> None:
    assert cluster_vectors(np.zeros((0, 8), dtype=np.float32), threshold=0.5) == []


def test_it_keeps_a_vector_alone_when_nothing_is_close_even_at_threshold_one() -> None:
    vectors = unit([1, 0], [0.6, 0.8], [1, 0])
    assert [c.members for c in cluster_vectors(vectors, threshold=1.0)][-1:] == [[1]]


def test_it_counts_neighbours_blockwise_like_the_full_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    vectors = unit(*np.random.default_rng(3).normal(size=(50, 6)).tolist())
    full = ((vectors @ vectors.T) >= 0.3).sum(axis=1)
    monkeypatch.setattr(clustering, "BLOCK_CELLS", 120)  # blocks of two rows
    assert neighbour_counts(vectors, threshold=0.3).tolist() == np.maximum(full, 1).tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_it_matches_the_naive_greedy_rule_on_random_clustered_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(15, 24))
    points = np.repeat(centres, rng.integers(1, 9, size=15), axis=0)
    points = np.vstack([points + rng.normal(scale=0.35, size=points.shape), rng.normal(size=(20, 24))])
    vectors = unit(*points[rng.permutation(len(points))].tolist())
    clusters = cluster_vectors(vectors, threshold=0.8)
    assert [c.members for c in clusters] == reference(vectors, 0.8)
    assert sorted(i for c in clusters for i in c.members) == list(range(len(vectors)))
    assert max(sizes(clusters)) > 1


def test_it_picks_the_member_closest_to_the_others_as_medoid() -> None:
    vectors = unit([1, 0], [0.9, 0.45], [0.7, 0.7], [0, 1])
    assert medoid_of(vectors, [0, 1, 2]) == 1
    assert medoid_of(vectors, [3]) == 3


def test_it_groups_real_paraphrases_with_the_right_medoid() -> None:
    from knowledge.embeddings import encode_documents

    texts = [
        "Where is my parcel?",
        "Reset my password please",
        "Do you sell gift cards?",
        "How do I reset my password?",
        "Where's my parcel?",
        "I forgot my password, how can I reset it?",
    ]
    clusters = cluster_vectors(encode_documents(texts), threshold=0.75)
    assert sizes(clusters) == [3, 2, 1]
    assert [texts[c.medoid] for c in clusters] == [
        "How do I reset my password?",
        "Where is my parcel?",
        "Do you sell gift cards?",
    ]
    assert {texts[i] for i in clusters[0].members} == {texts[1], texts[3], texts[5]}
