"""Local day and hour of a stored datetime, for grouping in the database.

``LocalDate`` and ``LocalHour`` are Django's ``TruncDate`` and ``ExtractHour`` with a time
zone, and compile exactly as those on every database but SQLite. There, Django calls a
Python function for every row (a few microseconds each: most of a statistics page over
100,000 messages), so these compile to SQLite's own ``date()``/``strftime()`` on the stored
UTC text shifted by the zone's UTC offset. The offset may change inside the period (summer
time), so the shift is a ``CASE`` over the offsets in force during ``span``.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from itertools import pairwise
from typing import Any

from django.db.models.functions import ExtractHour, TruncDate

Span = tuple[datetime, datetime]
DAY = 86_400


def _offset(tz: tzinfo, timestamp: int) -> int:
    return int(datetime.fromtimestamp(timestamp, tz).utcoffset().total_seconds())  # type: ignore[union-attr]


def utc_offsets(*, tz: tzinfo, span: Span) -> list[tuple[datetime, int]]:
    """(instant from which, UTC offset in seconds) for every offset in force during the
    span, the first from span[0]. Looks once a day and narrows a change down to the
    second (zones change offset at most once a day, on a whole second)."""
    start, end = (int(moment.timestamp()) for moment in span)
    found = [(start, _offset(tz, start))]
    for day in range(start, end, DAY):
        following = min(day + DAY, end)
        if _offset(tz, following) == found[-1][1]:
            continue
        low, high = day, following  # the change is in (low, high]
        while high - low > 1:
            middle = (low + high) // 2
            if _offset(tz, middle) == found[-1][1]:
                low = middle
            else:
                high = middle
        found.append((high, _offset(tz, high)))
    return [(datetime.fromtimestamp(timestamp, UTC), offset) for timestamp, offset in found]


def _shift_sql(
    field_sql: str, field_params: list[Any], *, offsets: list[tuple[datetime, int]], connection: Any
) -> tuple[str, list[Any]]:
    """An SQLite date-function modifier such as '+3600 seconds', chosen by the instant."""
    if len(offsets) == 1:
        return "%s", [f"{offsets[0][1]:+d} seconds"]
    whens, params = [], []
    for (_, offset), (next_from, _) in pairwise(offsets):
        whens.append(f"WHEN {field_sql} < %s THEN %s")
        params += [*field_params, connection.ops.adapt_datetimefield_value(next_from), f"{offset:+d} seconds"]
    return f"CASE {' '.join(whens)} ELSE %s END", [*params, f"{offsets[-1][1]:+d} seconds"]


class _Local:
    def __init__(self, expression: Any, *, tzinfo: tzinfo, span: Span, **extra: Any) -> None:
        self.span = span
        super().__init__(expression, tzinfo=tzinfo, **extra)  # type: ignore[call-arg]

    def _shifted(self, compiler: Any, connection: Any) -> tuple[str, list[Any], str, list[Any]]:
        sql, params = compiler.compile(self.lhs)  # type: ignore[attr-defined]
        offsets = utc_offsets(tz=self.tzinfo, span=self.span)  # type: ignore[attr-defined]
        shift, shift_params = _shift_sql(sql, list(params), offsets=offsets, connection=connection)
        return sql, list(params), shift, shift_params


class LocalDate(_Local, TruncDate):
    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        sql, params, shift, shift_params = self._shifted(compiler, connection)
        return f"date({sql}, {shift})", [*params, *shift_params]


class LocalHour(_Local, ExtractHour):
    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        sql, params, shift, shift_params = self._shifted(compiler, connection)
        return f"CAST(strftime('%%H', {sql}, {shift}) AS INTEGER)", [*params, *shift_params]
