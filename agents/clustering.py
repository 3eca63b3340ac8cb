"""Group L2-normalised vectors into clusters of similar ones (pure numpy, deterministic).

Greedy densest-centre clustering: the vector with the most unclustered neighbours
(cosine >= threshold, itself included) becomes a centre and takes those neighbours as its
cluster; repeat until no vector has an unclustered neighbour left; the rest stand alone.
Every member is within the threshold of its centre, so a cluster never drifts along a
chain of near-neighbours.

Cost: neighbour counts are computed once, in row blocks (memory stays near
``BLOCK_CELLS`` floats whatever the input size). Afterwards a count is only an upper
bound (clustered vectors leave the pool), so candidates are re-counted lazily when they
reach the top of a heap, several at a time when the counts turn out to be stale. Vectors
with no neighbour at all never enter the pool, and the pool is compacted as it shrinks.

Index order is the caller's priority: on equal counts the lower index wins, and clusters
come largest first, then by their lowest index (callers pass newest first).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

BLOCK_CELLS = 4_000_000  # similarity cells held at once (16 MB of float32)
TIE_TOLERANCE = 1e-6  # per member summed: float32 sums of equal similarities differ by rounding
COMPACT_BELOW = 0.75  # compact the pool when fewer than this share of its rows are still free
MAX_RECOUNT = 64  # candidates re-counted in one matrix product


@dataclass(frozen=True)
class Cluster:
    members: list[int]  # indices into the input, ascending
    medoid: int  # the member with the highest mean similarity to the other members


def neighbour_counts(vectors: np.ndarray, *, threshold: float) -> np.ndarray:
    """For each row, how many rows (itself included) have cosine >= ``threshold`` with it."""
    n = len(vectors)
    counts = np.zeros(n, dtype=np.int64)
    block = max(1, BLOCK_CELLS // max(n, 1))
    for start in range(0, n, block):
        counts[start : start + block] = (vectors[start : start + block] @ vectors.T >= threshold).sum(axis=1)
    return np.maximum(counts, 1)  # itself, even if rounding puts its self-similarity below 1.0


def medoid_of(vectors: np.ndarray, members: list[int]) -> int:
    """The member with the highest mean cosine to the others (the lowest index on ties,
    within float rounding).

    The sum of a member's similarities to all members is its dot product with their sum,
    so no members x members matrix is built."""
    rows = vectors[members]
    to_all = rows @ rows.sum(axis=0)
    to_others = to_all - np.einsum("ij,ij->i", rows, rows)
    near_best = to_others >= to_others.max() - TIE_TOLERANCE * len(members)
    return members[int(np.argmax(near_best))]


class _Pool:
    """The vectors that may still join a cluster; clustered ones are masked, then dropped."""

    def __init__(self, vectors: np.ndarray, indices: np.ndarray, threshold: float) -> None:
        self.vectors, self.threshold = vectors, threshold
        self.index = indices  # input index of each pool row, ascending
        self.rows = vectors[indices]
        self.free = np.ones(len(indices), dtype=bool)

    def near(self, centres: list[int]) -> np.ndarray:
        """One row per centre (an input index): which pool rows are free neighbours of it."""
        return (self.vectors[centres] @ self.rows.T >= self.threshold) & self.free

    def take(self, near: np.ndarray, centre: int) -> list[int]:
        """Remove the centre and the pool rows marked in ``near``; returns their input indices."""
        near = near.copy()
        near[np.searchsorted(self.index, centre)] = True  # even if rounding left it out
        self.free &= ~near
        taken = self.index[near].tolist()
        if self.free.sum() < COMPACT_BELOW * len(self.free):
            self.index, self.rows = self.index[self.free], self.rows[self.free]
            self.free = np.ones(len(self.index), dtype=bool)
        return taken


def _groups(vectors: np.ndarray, threshold: float) -> list[list[int]]:
    counts = neighbour_counts(vectors, threshold=threshold)
    heap = [(-int(count), index) for index, count in enumerate(counts) if count > 1]
    heapq.heapify(heap)
    pool = _Pool(vectors, np.flatnonzero(counts > 1), threshold)
    clustered = np.zeros(len(vectors), dtype=bool)
    # Re-counted since the last cluster was taken -> its free neighbours (kept for the latest
    # batch only, so memory stays at MAX_RECOUNT pool rows).
    exact: dict[int, np.ndarray | None] = {}
    groups: list[list[int]] = []
    batch = 1
    while heap and -heap[0][0] > 1:  # a count of 1 is the vector alone: the rest stand alone
        top = heap[0][1]
        if clustered[top]:
            heapq.heappop(heap)
        elif top in exact:  # an exact count, and every count below it is an upper bound
            heapq.heappop(heap)
            near = exact[top]
            members = pool.take(pool.near([top])[0] if near is None else near, top)
            clustered[members] = True
            groups.append(members)
            exact, batch = {}, 1
        else:
            picked: list[int] = []
            while heap and len(picked) < batch:
                index = heapq.heappop(heap)[1]
                if not clustered[index]:
                    picked.append(index)
            exact = dict.fromkeys(exact)
            for index, near in zip(picked, pool.near(picked), strict=True):
                exact[index] = near
                heapq.heappush(heap, (-max(int(near.sum()), 1), index))
            batch = min(2 * batch, MAX_RECOUNT)  # stale counts come in runs: re-count more at once
    groups.extend([int(index)] for index in np.flatnonzero(~clustered))
    return groups


def cluster_vectors(vectors: np.ndarray, *, threshold: float) -> list[Cluster]:
    """Partition the rows of ``vectors`` (L2-normalised) into clusters, largest first."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if len(vectors) == 0:
        return []
    groups = sorted(_groups(vectors, threshold), key=lambda members: (-len(members), members[0]))
    return [Cluster(members=members, medoid=medoid_of(vectors, members)) for members in groups]
