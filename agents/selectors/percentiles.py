"""Nearest-rank percentiles of reply timings, computed in the database.

The nearest-rank p-th percentile of n sorted values is the value at 1-based rank
ceil(p / 100 * n). SQLite has no percentile function, so there each percentile is one
query fetching the single value at that offset of the sorted timings; PostgreSQL's
``percentile_disc`` gives the same value in one grouped query.
"""

from __future__ import annotations

from typing import Any

from django.db import connections
from django.db.models import Aggregate, IntegerField, QuerySet

from chatbot.models import Message

PERCENTILES = (50, 95)


class PercentileDisc(Aggregate):
    """PostgreSQL's percentile_disc(f): the first value whose cumulative share reaches f,
    i.e. the value at 1-based rank ceil(f * n), the nearest rank. PostgreSQL computes
    ceil(f * n) in float8; for f = 0.5 and 0.95 that product never lands above an exact
    integer, so the rank is the one ``nearest_rank_index`` gives."""

    function = "percentile_disc"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = IntegerField()

    def __init__(self, expression: str, *, percentile: int, **extra: Any) -> None:
        super().__init__(expression, fraction=f"{percentile / 100:.2f}", **extra)


def ttft_percentiles(
    *, replies: QuerySet[Message], timed: dict[str, int]
) -> dict[str, dict[int, int | None]]:
    """PERCENTILES of ttft_ms of these replies, for each source in ``timed`` (source -> how
    many of its replies have a ttft_ms). PostgreSQL: one grouped query; elsewhere two
    one-row queries per source that has timings."""
    if connections[replies.db].vendor == "postgresql":
        found = {
            row["source"]: {p: row[f"p{p}"] for p in PERCENTILES}
            for row in replies.filter(ttft_ms__isnull=False)
            .values("source")
            .annotate(**{f"p{p}": PercentileDisc("ttft_ms", percentile=p) for p in PERCENTILES})
            .order_by()
        }
        return {source: found.get(source, dict.fromkeys(PERCENTILES)) for source in timed}
    return {
        source: {
            p: ttft_percentile(replies=replies, source=source, count=count, percentile=p) for p in PERCENTILES
        }
        for source, count in timed.items()
    }


def nearest_rank_index(*, count: int, percentile: int) -> int:
    """0-based index of the nearest-rank percentile among ``count`` sorted values:
    ceil(percentile / 100 * count) - 1, in integers so no rounding error creeps in."""
    return max(0, (percentile * count + 99) // 100 - 1)


def ttft_percentile(*, replies: QuerySet[Message], source: str, count: int, percentile: int) -> int | None:
    """One nearest-rank percentile of ttft_ms of these replies of one source, ``count``
    being how many of them have a ttft_ms: one query, none when count is 0."""
    if count <= 0:
        return None
    index = nearest_rank_index(count=count, percentile=percentile)
    timings = (
        replies.filter(source=source, ttft_ms__isnull=False)
        .order_by("ttft_ms")
        .values_list("ttft_ms", flat=True)
    )
    found = list(timings[index : index + 1])
    return found[0] if found else None
