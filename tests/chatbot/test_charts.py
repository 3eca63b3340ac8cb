"""SVG chart builders: proportional bars, escaped text, empty data."""

from __future__ import annotations

import re
from decimal import Decimal
from xml.etree import ElementTree

import pytest
from django.utils.safestring import SafeString

from chatbot.charts import (
    Bar,
    Marker,
    Series,
    axis_step,
    bar_chart_render,
    column_chart_render,
    line_chart_render,
)

SVG = "{http://www.w3.org/2000/svg}"


def bars(svg: str) -> list[dict[str, str]]:
    """The data bars (legend swatches have no tooltip)."""
    root = ElementTree.fromstring(svg)
    return [
        {**rect.attrib, "title": rect.find(f"{SVG}title").text or ""}
        for rect in root.iter(f"{SVG}rect")
        if rect.find(f"{SVG}title") is not None
    ]


def test_it_draws_columns_proportional_to_their_values() -> None:
    svg = column_chart_render(
        title="Per day", labels=["a", "b", "c", "d"], series=[Series("n", [10, 40, 20, 0])]
    )
    drawn = bars(svg)
    assert [b["title"] for b in drawn] == ["a · n: 10", "b · n: 40", "c · n: 20"]  # no bar for 0
    heights = [float(b["height"]) for b in drawn]
    assert heights[1] == pytest.approx(4 * heights[0], abs=0.02)
    assert heights[2] == pytest.approx(2 * heights[0], abs=0.02)
    # Bars stand on the same base line.
    assert len({round(float(b["y"]) + float(b["height"]), 1) for b in drawn}) == 1


def test_it_stacks_series_and_keeps_the_scale() -> None:
    svg = column_chart_render(
        title="Cost",
        labels=["Mar 1", "Mar 2"],
        series=[
            Series("gpt-a", [Decimal("0.0015"), 0]),
            Series("glm-b", [Decimal("0.0030"), Decimal("0.0020")]),
        ],
        stacked=True,
    )
    drawn = bars(svg)
    assert [b["title"] for b in drawn] == [
        "Mar 1 · gpt-a: 0.0015",
        "Mar 1 · glm-b: 0.003",
        "Mar 2 · glm-b: 0.002",
    ]
    first, second, third = (float(b["height"]) for b in drawn)
    assert second == pytest.approx(2 * first, abs=0.02)
    assert third == pytest.approx(first * 4 / 3, abs=0.02)
    # The second bar of a stack sits on top of the first.
    assert float(drawn[1]["y"]) + second == pytest.approx(float(drawn[0]["y"]), abs=0.02)
    assert drawn[0]["x"] == drawn[1]["x"]


def test_it_draws_horizontal_bars_as_shares_of_a_scale() -> None:
    svg = bar_chart_render(
        title="Sources",
        bars=[Bar("Knowledge", 5, note="5 (50.0%)"), Bar("LLM", 3), Bar("Agent", 0)],
        scale=10,
    )
    drawn = bars(svg)
    assert [b["title"] for b in drawn] == ["Knowledge: 5 (50.0%)", "LLM: 3"]
    plot_w = 720 - 190 - 110
    assert [float(b["width"]) for b in drawn] == [
        pytest.approx(plot_w / 2, abs=0.01),
        pytest.approx(plot_w * 0.3),
    ]
    assert "5 (50.0%)" in svg and ">0<" in svg  # every row keeps its label and value


@pytest.mark.parametrize(
    "svg",
    [
        column_chart_render(
            title="<script>t</script>", labels=["<script>x</script>"], series=[Series("<b>", [1])]
        ),
        column_chart_render(
            title="t",
            labels=["a"],
            series=[Series("<script>x</script>", [1]), Series("s", [2])],
            stacked=True,
        ),
        bar_chart_render(title="<script>t</script>", bars=[Bar("<script>x</script>", 1, note="<i>n</i>")]),
    ],
)
def test_it_escapes_every_text(svg: SafeString) -> None:
    assert isinstance(svg, SafeString)
    assert "<script>" not in svg and "<b>" not in svg and "<i>" not in svg
    assert "&lt;script&gt;" in svg
    ElementTree.fromstring(svg)  # still well-formed


def test_it_escapes_the_css_class() -> None:
    svg = bar_chart_render(title="t", bars=[Bar("a", 1, css='x" onclick="alert(1)')])
    assert 'onclick="' not in svg
    ElementTree.fromstring(svg)


@pytest.mark.parametrize(
    "svg",
    [
        column_chart_render(title="Empty", labels=[], series=[Series("n", [])]),
        column_chart_render(title="Zeros", labels=["a", "b"], series=[Series("n", [0, 0])]),
        column_chart_render(title="No series", labels=["a"], series=[]),
        bar_chart_render(title="Empty", bars=[]),
        bar_chart_render(title="Zeros", bars=[Bar("a", 0)], scale=0),
    ],
)
def test_it_renders_empty_data_as_an_empty_chart(svg: SafeString) -> None:
    assert bars(svg) == []
    assert "No data" in svg
    ElementTree.fromstring(svg)


def test_it_is_an_accessible_image() -> None:
    svg = column_chart_render(title="Messages per hour", labels=["00"], series=[Series("n", [3])])
    root = ElementTree.fromstring(svg)
    assert (root.get("role"), root.get("aria-label")) == ("img", "Messages per hour")
    assert root.find(f"{SVG}title").text == "Messages per hour"


def test_it_labels_the_axes() -> None:
    svg = column_chart_render(title="t", labels=[f"d{i}" for i in range(30)], series=[Series("n", [7] * 30)])
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    # A round axis 0, 2, 4, 6, 8 above the peak of 7; every third day named (30 days, 12 labels at most).
    assert texts[:5] == ["0", "2", "4", "6", "8"]
    assert texts[5:] == [f"d{i}" for i in range(0, 30, 3)]


@pytest.mark.parametrize(
    ("peak", "integer", "step"),
    [(7, True, 2), (1, True, 1), (3, False, 1), (0.0065, False, 0.002), (100, True, 50), (0, True, 1)],
)
def test_it_picks_round_axis_steps(peak: float, integer: bool, step: float) -> None:
    assert axis_step(peak, integer=integer) == pytest.approx(step)


def polylines(svg: str) -> dict[str, list[tuple[float, float]]]:
    root = ElementTree.fromstring(svg)
    return {
        line.get("class"): [tuple(float(c) for c in point.split(",")) for point in line.get("points").split()]
        for line in root.iter(f"{SVG}polyline")
    }


def test_it_draws_lines_at_their_positions_on_a_fixed_range() -> None:
    svg = line_chart_render(
        title="Curve",
        x=[0.25, 0.5, 1.0],
        series=[Series("precision", [0.5, 0.75, 1.0], css="precision"), Series("coverage", [1.0, 0.5, 0.0])],
        x_range=(0.0, 1.0),
        y_max=1.0,
    )
    lines = polylines(svg)
    assert list(lines) == ["line precision", "line l1"]
    precision = lines["line precision"]
    left, right = 44, 480 - 12
    assert [x for x, _ in precision] == pytest.approx([left + (right - left) * f for f in (0.25, 0.5, 1.0)])
    base, top = lines["line l1"][2][1], lines["line l1"][0][1]  # coverage 0 and 1
    assert [y for _, y in precision] == pytest.approx([base + (top - base) * f for f in (0.5, 0.75, 1.0)])
    assert "0.5 · precision: 0.75" in svg  # a tooltip per point


def test_it_marks_values_on_the_x_axis_and_skips_those_off_it() -> None:
    svg = line_chart_render(
        title="t",
        x=[0.1, 0.9],
        series=[Series("s", [1, 2])],
        x_range=(0.0, 1.0),
        markers=[Marker(0.5, "answer <0.5>", "answer"), Marker(1.01, "never")],
    )
    root = ElementTree.fromstring(svg)
    marks = [line for line in root.iter(f"{SVG}line") if "marker" in (line.get("class") or "")]
    assert [(m.get("class"), float(m.get("x1"))) for m in marks] == [("marker answer", (44 + 468) / 2)]
    assert "answer &lt;0.5&gt;" in svg and "never" not in svg


@pytest.mark.parametrize(
    "svg",
    [
        line_chart_render(title="Empty", x=[], series=[Series("s", [])]),
        line_chart_render(title="Zeros", x=[1, 2], series=[Series("s", [0, 0])]),
    ],
)
def test_it_renders_an_empty_line_chart(svg: SafeString) -> None:
    assert polylines(svg) == {}
    assert "No data" in svg


def test_it_escapes_every_text_of_a_line_chart() -> None:
    svg = line_chart_render(
        title="<script>t</script>",
        x=[1, 2],
        series=[Series("<b>", [1, 2], css='x" onclick="alert(1)'), Series("s", [2, 1])],
        markers=[Marker(1.5, "<i>m</i>")],
    )
    assert "<script>" not in svg and "<b>" not in svg and "<i>" not in svg and 'onclick="' not in svg
    ElementTree.fromstring(svg)
