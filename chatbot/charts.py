"""Inline SVG charts, built as strings by code (no charting library, no JavaScript).

Every piece of text (titles, labels, series names, tooltips, CSS classes) goes through
``escape`` before the whole is marked safe. Empty or all-zero data draws the frame and a
"No data" note: nothing is ever divided by a zero peak. Colours come from CSS classes
(``static/agents/agents.css``): a series' own class, else ``s0``, ``s1``, ...
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

Number = int | float | Decimal
Formatter = Callable[[float], str]

FONT = 11
TICKS = 4
MAX_X_LABELS = 12
LABEL_CHARS = 30


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[Number]
    css: str = ""


@dataclass(frozen=True)
class Bar:
    label: str
    value: Number
    note: str = ""  # written after the bar, e.g. "42 (35.0%)"; the value when empty
    css: str = ""


def number_format(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.4g}"


def axis_step(peak: float, *, integer: bool = False) -> float:
    """A round step (1, 2 or 5 times a power of ten) of which TICKS cover ``peak``."""
    if peak <= 0:
        return 1.0
    raw = peak / TICKS
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw * (1 - 1e-9))
    return max(1.0, float(math.ceil(step))) if integer else step


def _n(value: float) -> str:
    """A coordinate: two decimals at most, no trailing zeros."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _text(x: float, y: float, text: str, *, anchor: str = "middle", css: str = "") -> str:
    klass = f' class="{escape(css)}"' if css else ""
    return (
        f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}" font-size="{FONT}"{klass}>'
        f"{escape(text)}</text>"
    )


def _rect(x: float, y: float, width: float, height: float, *, css: str, tooltip: str) -> str:
    return (
        f'<rect class="bar {escape(css)}" x="{_n(x)}" y="{_n(y)}" width="{_n(width)}" '
        f'height="{_n(height)}"><title>{escape(tooltip)}</title></rect>'
    )


def _open(width: int, height: int, title: str) -> str:
    return (
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>"
    )


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


def _no_data(x: float, y: float) -> str:
    return _text(x, y, "No data", css="empty")


def column_chart_render(
    *,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    stacked: bool = False,
    fmt: Formatter = number_format,
    width: int = 720,
    height: int = 220,
) -> SafeString:
    """Vertical bars, one column per label; several series side by side or stacked."""
    left, right, top, bottom = 52, 8, (26 if len(series) > 1 else 10), 34
    plot_w, plot_h = width - left - right, height - top - bottom
    columns = [[float(s.values[i]) for s in series] for i in range(len(labels))]
    peak = max((sum(c) if stacked else max(c, default=0.0) for c in columns), default=0.0)
    parts = [_open(width, height, title)]
    parts.append(
        f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}"/>'
    )
    if peak <= 0:
        parts.append(_no_data(left + plot_w / 2, top + plot_h / 2))
    else:
        integer = all(isinstance(v, int) for s in series for v in s.values)
        step = axis_step(peak, integer=integer)
        axis_max = step * math.ceil(peak / step - 1e-9)
        parts += _y_axis(
            left=left, top=top, plot_w=plot_w, plot_h=plot_h, step=step, axis_max=axis_max, fmt=fmt
        )
        scale = plot_h / axis_max
        slot = plot_w / len(labels)
        for i, label in enumerate(labels):
            parts += _column(
                x=left + i * slot,
                slot=slot,
                base=top + plot_h,
                scale=scale,
                label=label,
                values=columns[i],
                series=series,
                stacked=stacked,
                fmt=fmt,
            )
    parts += _x_labels(labels=labels, left=left, plot_w=plot_w, y=top + plot_h + 14)
    if len(series) > 1:
        parts += _legend(series=series, x=left, y=14)
    parts.append("</svg>")
    return mark_safe("".join(parts))  # every text above went through escape()


def _y_axis(
    *, left: int, top: int, plot_w: int, plot_h: int, step: float, axis_max: float, fmt: Formatter
) -> list[str]:
    parts = []
    for k in range(round(axis_max / step) + 1):
        value = k * step
        y = top + plot_h - value / axis_max * plot_h
        if k:
            parts.append(f'<line class="grid" x1="{left}" y1="{_n(y)}" x2="{left + plot_w}" y2="{_n(y)}"/>')
        parts.append(_text(left - 4, y + FONT / 3, fmt(value), anchor="end"))
    return parts


def _column(
    *,
    x: float,
    slot: float,
    base: float,
    scale: float,
    label: str,
    values: list[float],
    series: Sequence[Series],
    stacked: bool,
    fmt: Formatter,
) -> list[str]:
    inner = slot * 0.8
    bar_w = inner if stacked else inner / len(series)
    parts, y = [], base
    for j, (value, one) in enumerate(zip(values, series, strict=True)):
        if value <= 0:
            continue
        height = value * scale
        bar_x = x + slot * 0.1 + (0 if stacked else j * bar_w)
        bar_y = y - height if stacked else base - height
        name = f" · {one.name}" if one.name else ""
        tooltip = f"{label}{name}: {fmt(value)}"
        parts.append(_rect(bar_x, bar_y, bar_w, height, css=one.css or f"s{j}", tooltip=tooltip))
        if stacked:
            y -= height
    return parts


def _x_labels(*, labels: Sequence[str], left: int, plot_w: int, y: float) -> list[str]:
    if not labels:
        return []
    every = math.ceil(len(labels) / MAX_X_LABELS)
    slot = plot_w / len(labels)
    return [_text(left + (i + 0.5) * slot, y, label) for i, label in enumerate(labels) if i % every == 0]


def _legend(*, series: Sequence[Series], x: float, y: float) -> list[str]:
    parts = []
    for j, one in enumerate(series):
        css = escape(one.css or f"s{j}")
        parts.append(f'<rect class="bar {css}" x="{_n(x)}" y="{_n(y - 9)}" width="10" height="10"/>')
        parts.append(_text(x + 14, y, one.name, anchor="start"))
        x += 24 + 7 * len(one.name)
    return parts


def bar_chart_render(
    *,
    title: str,
    bars: Sequence[Bar],
    scale: Number | None = None,
    fmt: Formatter = number_format,
    width: int = 720,
    label_w: int = 190,
    note_w: int = 110,
    row_h: int = 24,
) -> SafeString:
    """Horizontal bars, one row per item. A bar's length is its value over ``scale`` (for
    shares: the total) or, without one, over the largest value."""
    top = 6
    height = top * 2 + max(len(bars), 1) * row_h
    plot_w = width - label_w - note_w
    peak = float(scale) if scale is not None else max((float(b.value) for b in bars), default=0.0)
    parts = [_open(width, height, title)]
    if peak <= 0 or not bars:
        parts.append(_no_data(label_w + plot_w / 2, top + row_h * 0.65))
    for i, bar in enumerate(bars):
        y = top + i * row_h
        value = float(bar.value)
        note = bar.note or fmt(value)
        parts.append(_text(label_w - 6, y + row_h * 0.65, _short(bar.label), anchor="end"))
        length = value / peak * plot_w if peak > 0 and value > 0 else 0.0
        if length:
            tooltip = f"{bar.label}: {note}"
            parts.append(
                _rect(label_w, y + 4, length, row_h - 8, css=bar.css or f"s{i % 5}", tooltip=tooltip)
            )
        parts.append(_text(label_w + length + 4, y + row_h * 0.65, note, anchor="start"))
    parts.append("</svg>")
    return mark_safe("".join(parts))  # every text above went through escape()


@dataclass(frozen=True)
class Marker:
    """A labelled vertical line across a line chart, e.g. a threshold in force."""

    x: float
    label: str
    css: str = ""


def line_chart_render(
    *,
    title: str,
    x: Sequence[Number],
    series: Sequence[Series],
    x_range: tuple[float, float] | None = None,
    y_max: Number | None = None,
    markers: Sequence[Marker] = (),
    x_fmt: Formatter = number_format,
    y_fmt: Formatter = number_format,
    width: int = 480,
    height: int = 220,
) -> SafeString:
    """One polyline per series over a numeric x axis (``x`` holds the points' positions,
    each series one value per point). The y axis runs from 0 to ``y_max`` (default: a
    round step above the peak); the x axis over ``x_range`` (default: the points' span)."""
    left, right, top, bottom = 44, 12, (26 if len(series) > 1 else 10), 22
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [float(v) for v in x]
    peak = max((float(v) for s in series for v in s.values), default=0.0)
    parts = [_open(width, height, title)]
    parts.append(
        f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}"/>'
    )
    if not xs or (peak <= 0 and y_max is None):
        parts.append(_no_data(left + plot_w / 2, top + plot_h / 2))
        parts.append("</svg>")
        return mark_safe("".join(parts))  # every text above went through escape()
    lo, hi = x_range if x_range is not None else (min(xs), max(xs))
    span = hi - lo or 1.0

    def at_x(value: float) -> float:
        return left + (value - lo) / span * plot_w

    ceiling = float(y_max) if y_max is not None else peak
    step = axis_step(ceiling)
    axis_max = step * math.ceil(ceiling / step - 1e-9)
    parts += _y_axis(
        left=left, top=top, plot_w=plot_w, plot_h=plot_h, step=step, axis_max=axis_max, fmt=y_fmt
    )
    parts += _x_ticks(lo=lo, hi=hi, at_x=at_x, y=top + plot_h + 14, fmt=x_fmt)
    for i, marker in enumerate(markers):
        if lo <= marker.x <= hi:
            flip = marker.x > lo + 0.8 * span  # label on the line's left near the right edge
            parts += _marker(marker, x=at_x(marker.x), top=top, bottom=top + plot_h, row=i, flip=flip)
    for j, one in enumerate(series):
        points = [
            (at_x(xv), top + plot_h - float(v) / axis_max * plot_h)
            for xv, v in zip(xs, one.values, strict=True)
        ]
        parts += _polyline(one, points, xs=xs, css=one.css or f"l{j}", x_fmt=x_fmt, y_fmt=y_fmt)
    if len(series) > 1:
        parts += _line_legend(series=series, x=left, y=14)
    parts.append("</svg>")
    return mark_safe("".join(parts))  # every text above went through escape()


def _x_ticks(*, lo: float, hi: float, at_x: Callable[[float], float], y: float, fmt: Formatter) -> list[str]:
    step = axis_step(hi - lo)
    first = math.ceil(lo / step - 1e-9)
    count = math.floor(hi / step + 1e-9) - first + 1
    return [_text(at_x((first + k) * step), y, fmt((first + k) * step)) for k in range(max(count, 0))]


def _marker(marker: Marker, *, x: float, top: float, bottom: float, row: int, flip: bool) -> list[str]:
    css = escape(f"marker {marker.css}".strip())
    label_y = top + FONT * (row + 1)  # one row per marker, so close markers' labels don't overlap
    return [
        f'<line class="{css}" x1="{_n(x)}" y1="{_n(top)}" x2="{_n(x)}" y2="{_n(bottom)}" '
        f'stroke-dasharray="4 3"><title>{escape(marker.label)}</title></line>',
        _text(
            x - 3 if flip else x + 3, label_y, marker.label, anchor="end" if flip else "start", css=marker.css
        ),
    ]


def _polyline(
    one: Series,
    points: list[tuple[float, float]],
    *,
    xs: list[float],
    css: str,
    x_fmt: Formatter,
    y_fmt: Formatter,
) -> list[str]:
    klass = escape(css)
    coords = " ".join(f"{_n(px)},{_n(py)}" for px, py in points)
    parts = [f'<polyline class="line {klass}" fill="none" points="{coords}"/>']
    for (px, py), xv, value in zip(points, xs, one.values, strict=True):
        tooltip = f"{x_fmt(xv)} · {one.name}: {y_fmt(float(value))}"
        parts.append(
            f'<circle class="dot {klass}" cx="{_n(px)}" cy="{_n(py)}" r="2.5">'
            f"<title>{escape(tooltip)}</title></circle>"
        )
    return parts


def _line_legend(*, series: Sequence[Series], x: float, y: float) -> list[str]:
    parts = []
    for j, one in enumerate(series):
        css = escape(one.css or f"l{j}")
        parts.append(
            f'<line class="line {css}" x1="{_n(x)}" y1="{_n(y - 4)}" x2="{_n(x + 14)}" y2="{_n(y - 4)}"/>'
        )
        parts.append(_text(x + 18, y, one.name, anchor="start"))
        x += 28 + 7 * len(one.name)
    return parts
