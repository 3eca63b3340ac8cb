from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from chatbot.models import Bot
from knowledge.evaluation import (
    Outcome,
    Query,
    at_threshold,
    evaluate,
    read_queries,
    recommended_threshold,
    report,
)
from knowledge.io import EntryRow, ImportFailed
from knowledge.models import Entry
from knowledge.services import entry_upsert
from tests.factories import make_bot

# Six hand-made outcomes: four in scope (two right with high confidence, one right with
# low confidence, one wrong), two out of scope (one confidently answered).
OUTCOMES = [
    Outcome("a", ("a", "b"), 0.95),
    Outcome("b", ("b", "a"), 0.90),
    Outcome("c", ("c", "a"), 0.40),
    Outcome("a", ("b", "a"), 0.85),
    Outcome("", ("a",), 0.92),
    Outcome("", ("b",), 0.10),
]


def test_figures_at_a_threshold_are_what_a_person_computes_by_hand() -> None:
    figures = at_threshold(OUTCOMES, 0.8)
    # answered: 0.95 right, 0.90 right, 0.85 wrong, 0.92 out of scope -> 2 right of 4
    assert figures["precision"] == pytest.approx(2 / 4)
    assert figures["coverage"] == pytest.approx(2 / 4)  # 2 right of 4 in scope
    assert figures["false_answer_rate"] == pytest.approx(1 / 2)
    assert at_threshold(OUTCOMES, 0.93)["precision"] == pytest.approx(1.0)  # only the 0.95 one
    assert at_threshold(OUTCOMES, 0.99)["precision"] is None


def test_the_recommended_threshold_is_the_lowest_reaching_the_target() -> None:
    # 0.91..0.92 still answer the out-of-scope 0.92 (precision 2/3); 0.93 -> 1/1.
    assert recommended_threshold(OUTCOMES, 0.95) == pytest.approx(0.93)
    assert recommended_threshold(OUTCOMES, 0.5) == pytest.approx(0.0)  # everything: 3 right of 6
    assert recommended_threshold(OUTCOMES, 0.6) == pytest.approx(0.11)  # drops the 0.10 one: 3 of 5
    assert recommended_threshold([Outcome("a", ("b",), 0.9)], 0.9) is None


def test_the_report_has_accuracy_curve_and_timing() -> None:
    figures = report(OUTCOMES, [1.0, 2.0, 3.0, 10.0], threshold=None, target=0.95)
    assert figures["top1"] == pytest.approx(3 / 4)
    assert figures["top5"] == pytest.approx(1.0)
    assert figures["threshold"] == figures["recommended_threshold"] == pytest.approx(0.93)
    assert figures["coverage"] == pytest.approx(1 / 4)
    assert len(figures["curve"]) == 21 and figures["curve"][0]["answered"] == 6
    assert figures["p50_ms"] == 2.5 and figures["p95_ms"] == 10.0


class AxisEncoder:
    """Each known word is an axis, so similarities are exact and computable by hand."""

    dim = 4
    axes = {"ship": 0, "refund": 1, "password": 2, "weather": 3}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word, axis in self.axes.items():
                if word in text:
                    out[row, axis] = 1.0
        out[~out.any(axis=1), 3] = 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def unknown_fraction(self, text: str) -> float:
        return 0.0


def row(external_id: str, question: str, *alternatives: str) -> EntryRow:
    return EntryRow(0, external_id, question, "answer", tuple(alternatives), ())


def test_evaluate_ranks_queries_against_an_in_memory_knowledge_base() -> None:
    rows = [row("s", "ship time"), row("r", "refund please"), row("p", "password reset")]
    queries = [Query("when ship", "s"), Query("my refund", "r"), Query("password", "p"), Query("weather", "")]
    # The axis encoder reads none of the shipped reference texts: no automatic calibration.
    figures = evaluate(
        rows, queries, AxisEncoder(), mode="vector", target=0.95, timing_sample=2, auto_calibrate=False
    )
    assert figures["auto_threshold"] is None
    assert figures["top1"] == 1.0
    assert figures["false_answer_rate"] == 0.0  # "weather" is orthogonal to every entry
    assert figures["coverage"] == 1.0


def test_an_expected_id_missing_from_the_knowledge_base_is_an_error() -> None:
    with pytest.raises(ImportFailed, match=r"expected_id not found.*nope"):
        evaluate([row("s", "ship")], [Query("x", "nope")], AxisEncoder(), mode="vector")


def test_query_files_are_checked_line_by_line() -> None:
    assert read_queries("\ufeffquery,expected_id\nwhere?,a\nweather?,\n".encode()) == [
        Query("where?", "a"),
        Query("weather?", ""),
    ]
    with pytest.raises(ImportFailed) as err:
        read_queries(b"query,expected_id\nok,a\n,b\n ,c\n")
    assert [line for line, _ in err.value.errors] == [3, 4]
    with pytest.raises(ImportFailed, match="query,expected_id"):
        read_queries(b"question,id\nx,y\n")


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    kb = tmp_path / "kb.csv"
    kb.write_text(
        "id,question,answer,alternatives,tags\n"
        "ship,How long does shipping take?,3-5 days,delivery time|when will my parcel arrive,\n"
        "refund,How do I get a refund?,Returns page,I want my money back|refund an item,\n"
        "pw,How do I reset my password?,Forgot password link,I forgot my password|can't log in,\n"
    )
    queries = tmp_path / "q.csv"
    queries.write_text(
        "query,expected_id\nhow many days for delivery,ship\ngive me my money back,refund\n"
        "lost my password,pw\nwhat is the capital of France,\n"
    )
    return kb, queries


@pytest.mark.django_db
def test_kb_evaluate_prints_json_figures_and_writes_nothing(files: tuple[Path, Path]) -> None:
    out = io.StringIO()
    call_command("kb_evaluate", kb=str(files[0]), queries=str(files[1]), json=True, stdout=out)
    figures = json.loads(out.getvalue())
    assert set(figures) >= {
        "top1",
        "top5",
        "threshold",
        "precision",
        "coverage",
        "false_answer_rate",
        "recommended_threshold",
        "curve",
        "p50_ms",
        "p95_ms",
    }
    assert figures["top1"] == 1.0
    assert figures["precision"] >= 0.95
    assert not Entry.objects.exists() and not Bot.objects.exists()


@pytest.mark.django_db
def test_kb_evaluate_says_when_the_automatic_estimate_is_optimistic(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    out = io.StringIO()
    call_command("kb_evaluate", kb=str(files[0]), queries=str(files[1]), json=True, stdout=out)
    assert json.loads(out.getvalue())["auto_warning"] is None  # three phrasings each
    single = tmp_path / "single.csv"
    single.write_text(
        "id,question,answer,alternatives,tags\n"
        "ship,How long does shipping take?,3-5 days,,\n"
        "refund,How do I get a refund?,Returns page,,\n"
        "pw,How do I reset my password?,Forgot password link,I forgot my password,\n"
    )
    out = io.StringIO()
    call_command("kb_evaluate", kb=str(single), queries=str(files[1]), json=True, stdout=out)
    warning = json.loads(out.getvalue())["auto_warning"]
    assert warning.startswith("2 of 3 entries have a single phrasing") and "kb_calibrate" in warning
    out = io.StringIO()
    call_command("kb_evaluate", kb=str(single), queries=str(files[1]), stdout=out)
    assert f"Note: {warning}" in out.getvalue()


@pytest.mark.django_db
def test_kb_evaluate_threshold_auto_reports_figures_at_the_threshold_chosen_without_the_queries(
    files: tuple[Path, Path],
) -> None:
    out = io.StringIO()
    args = {"kb": str(files[0]), "json": True, "stdout": out}
    call_command("kb_evaluate", queries=str(files[1]), threshold="auto", **args)
    figures = json.loads(out.getvalue())
    assert figures["auto_threshold"] is not None and 0 < figures["auto_threshold"] < 1
    assert figures["threshold"] == figures["auto_threshold"]
    assert "recommended_threshold" in figures
    # The queries play no part in choosing it: other queries, the same threshold.
    other = files[1].parent / "other.csv"
    other.write_text("query,expected_id\nrefund an item,refund\ntell me a joke,\n")
    out2 = io.StringIO()
    call_command(
        "kb_evaluate", queries=str(other), threshold="auto", kb=str(files[0]), json=True, stdout=out2
    )
    assert json.loads(out2.getvalue())["auto_threshold"] == figures["auto_threshold"]


@pytest.mark.django_db
def test_kb_evaluate_rejects_a_threshold_that_is_neither_a_number_nor_auto(files: tuple[Path, Path]) -> None:
    with pytest.raises(CommandError, match="'auto'"):
        call_command("kb_evaluate", kb=str(files[0]), queries=str(files[1]), threshold="high")
    with pytest.raises(CommandError, match=r"\[0, 1\]"):
        call_command("kb_evaluate", kb=str(files[0]), queries=str(files[1]), threshold="1.5")


@pytest.mark.django_db
def test_kb_evaluate_explains_a_bad_file(tmp_path: Path, files: tuple[Path, Path]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,question,answer\nx,,no question\n")
    with pytest.raises(CommandError, match="line 2"):
        call_command("kb_evaluate", kb=str(bad), queries=str(files[1]), stdout=io.StringIO())


@pytest.mark.django_db
def test_kb_calibrate_sets_the_recommended_threshold(files: tuple[Path, Path]) -> None:
    bot = make_bot(answer_threshold=0.99, reference_threshold=0.5)
    entry_upsert(
        bot=bot,
        external_id="ship",
        question="How long does shipping take?",
        answer="3-5 days",
        alternatives=["delivery time", "when will my parcel arrive"],
    )
    entry_upsert(
        bot=bot,
        external_id="refund",
        question="How do I get a refund?",
        answer="Returns page",
        alternatives=["I want my money back", "refund an item"],
    )
    entry_upsert(
        bot=bot,
        external_id="pw",
        question="How do I reset my password?",
        answer="Link",
        alternatives=["I forgot my password", "can't log in"],
    )
    out = io.StringIO()
    call_command("kb_calibrate", f"--bot={bot.public_key}", queries=str(files[1]), stdout=out)
    bot.refresh_from_db()
    recommended = float(out.getvalue().split("(chosen on these queries): ")[1].split()[0])
    assert bot.answer_threshold == pytest.approx(recommended)
    assert bot.reference_threshold <= bot.answer_threshold
    assert bot.threshold_source == Bot.ThresholdSource.LABELLED  # wins over the automatic thresholds
    assert "answer threshold 0.99 ->" in out.getvalue()
