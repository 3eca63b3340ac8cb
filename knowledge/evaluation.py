"""Measure how well a knowledge base answers a set of labelled questions.

Nothing here touches the database: the knowledge base is built in memory from import
rows, so ``kb_evaluate`` can try a file before anyone imports it, and benchmarks can
build many variants. ``kb_calibrate`` feeds a bot's live index through the same figures.
"""

from __future__ import annotations

import csv
import io
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from knowledge.answer_text import plain
from knowledge.calibration import CalibrationImpossible, Reference, calibrate, optimism_warning
from knowledge.confidence import Calibrator
from knowledge.embeddings import passages_encoded_by
from knowledge.io import ImportFailed
from knowledge.ranking import Mode, Ranker

# Confidences crowd near 1, so the grid is finer there.
GRID = sorted(
    {round(0.01 * i, 2) for i in range(100)}
    | {round(0.99 + 0.001 * i, 3) for i in range(10)}
    | {round(0.999 + 0.0001 * i, 4) for i in range(11)}
)
CURVE_POINTS = [round(0.05 * i, 2) for i in range(21)]
DEFAULT_THRESHOLD = 0.8


@dataclass(frozen=True)
class Query:
    text: str
    expected: str  # external id of the right entry; "" = out of scope


@dataclass(frozen=True)
class Outcome:
    expected: str
    ranked: tuple[str, ...]  # external ids, best first (top 5)
    confidence: float  # of the best entry

    @property
    def in_scope(self) -> bool:
        return bool(self.expected)

    @property
    def correct(self) -> bool:
        return self.in_scope and bool(self.ranked) and self.ranked[0] == self.expected


class EncoderLike(Protocol):
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...

    def unknown_fraction(self, text: str) -> float: ...


def read_queries(data: bytes) -> list[Query]:
    """Parse ``query,expected_id`` CSV (UTF-8, optional BOM); every bad line reported at once."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ImportFailed([(None, f"the file is not UTF-8 ({err.reason} at byte {err.start})")]) from None
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or not {"query", "expected_id"} <= {f.strip() for f in reader.fieldnames}:
        raise ImportFailed([(1, "the header must have the columns query,expected_id")])
    queries: list[Query] = []
    errors: list[tuple[int | None, str]] = []
    for record in reader:
        record = {(k or "").strip(): (v or "").strip() for k, v in record.items() if isinstance(v, str)}
        if not record.get("query"):
            errors.append((reader.line_num, "the query is empty"))
            continue
        queries.append(Query(record["query"], record.get("expected_id", "")))
    if errors:
        raise ImportFailed(errors)
    if not queries:
        raise ImportFailed([(None, "the file has no queries")])
    return queries


def ranker_from_rows(rows: Sequence[Any], encoder: EncoderLike, *, mode: Mode) -> tuple[Ranker, list[str]]:
    """An in-memory ranker over import rows; entry n is rows[n]; returns it and the ids."""
    ids: list[int] = []
    texts: list[str] = []
    for n, row in enumerate(rows):
        for text in dict.fromkeys([row.question, *row.alternatives]):
            ids.append(n)
            texts.append(text)
    vectors = encoder.encode(texts) if texts else np.zeros((0, encoder.dim), dtype=np.float32)
    external = [row.external_id or f"#{n + 1}" for n, row in enumerate(rows)]
    answers = _answer_vectors(rows, encoder)
    return Ranker(np.array(ids, dtype=np.int64), texts, vectors, mode=mode, answers=answers), external


def _answer_vectors(rows: Sequence[Any], encoder: EncoderLike) -> dict[int, np.ndarray]:
    """Row number -> its answer's vector (the model's passage side where it has one), as
    ``knowledge.services.entries_embed`` stores them for a bot; rows without an answer have none."""
    answers = {n: plain(getattr(row, "answer", "") or "") for n, row in enumerate(rows)}
    answers = {n: text for n, text in answers.items() if text}
    if not answers:
        return {}
    return dict(zip(answers, passages_encoded_by(encoder, list(answers.values())), strict=True))


def run_queries(
    ranker: Ranker,
    external_ids: Sequence[str],
    queries: Sequence[Query],
    encoder: EncoderLike,
    *,
    timing_sample: int = 200,
) -> tuple[list[Outcome], list[float]]:
    """Rank every query. The first ``timing_sample`` queries go one at a time through the
    single-query path (encode one, rank) and are timed; the rest are encoded in batches,
    which gives the same vectors, faster."""
    outcomes: list[Outcome] = []
    times: list[float] = []
    for query in queries[:timing_sample]:
        started = time.perf_counter()
        vector = encoder.encode([query.text])[0]
        ranked = ranker.rank(vector, query.text, 5, unknown=encoder.unknown_fraction(query.text))
        times.append((time.perf_counter() - started) * 1000)
        outcomes.append(_outcome(query, ranked, external_ids))
    rest = list(queries[timing_sample:])
    vectors = encoder.encode([q.text for q in rest]) if rest else []
    for query, vector in zip(rest, vectors, strict=True):
        ranked = ranker.rank(vector, query.text, 5, unknown=encoder.unknown_fraction(query.text))
        outcomes.append(_outcome(query, ranked, external_ids))
    return outcomes, times


def _outcome(query: Query, ranked: list[Any], external_ids: Sequence[str]) -> Outcome:
    return Outcome(
        expected=query.expected,
        ranked=tuple(external_ids[r.entry_id] for r in ranked),
        confidence=ranked[0].confidence if ranked else 0.0,
    )


def at_threshold(outcomes: Sequence[Outcome], threshold: float) -> dict[str, float | None]:
    """Precision, coverage and false-answer rate when answering at ``threshold``."""
    answered = [o for o in outcomes if o.ranked and o.confidence >= threshold]
    right = sum(o.correct for o in answered)
    in_scope = sum(o.in_scope for o in outcomes)
    out_scope = len(outcomes) - in_scope
    return {
        "threshold": threshold,
        "precision": right / len(answered) if answered else None,
        "coverage": right / in_scope if in_scope else None,
        "false_answer_rate": sum(not o.in_scope for o in answered) / out_scope if out_scope else None,
        "answered": len(answered),
    }


def recommended_threshold(outcomes: Sequence[Outcome], target: float) -> float | None:
    """The lowest threshold (0.01 steps, finer above 0.99) whose precision reaches ``target``."""
    for threshold in GRID:
        precision = at_threshold(outcomes, threshold)["precision"]
        if precision is not None and precision >= target:
            return threshold
    return None


def report(
    outcomes: Sequence[Outcome],
    times: Sequence[float],
    *,
    threshold: float | str | None,
    target: float,
    auto: float | None = None,
) -> dict[str, Any]:
    """Figures at ``threshold``: a number, "auto" (the threshold the product chose by
    itself, ``auto``), or None (the recommended one, chosen on these queries)."""
    in_scope = [o for o in outcomes if o.in_scope]
    recommended = recommended_threshold(outcomes, target)
    if threshold == "auto":
        chosen = auto if auto is not None else 1.0
    elif threshold is not None:
        chosen = float(threshold)
    else:
        chosen = recommended if recommended is not None else DEFAULT_THRESHOLD
    figures = at_threshold(outcomes, chosen)
    ordered = sorted(times)
    return {
        "queries": len(outcomes),
        "in_scope": len(in_scope),
        "top1": sum(o.correct for o in in_scope) / len(in_scope) if in_scope else None,
        "top5": sum(o.expected in o.ranked for o in in_scope) / len(in_scope) if in_scope else None,
        "threshold": chosen,
        "precision": figures["precision"],
        "coverage": figures["coverage"],
        "false_answer_rate": figures["false_answer_rate"],
        "target_precision": target,
        "recommended_threshold": recommended,
        "auto_threshold": auto,
        "curve": [at_threshold(outcomes, t) for t in CURVE_POINTS],
        "p50_ms": statistics.median(ordered) if ordered else None,
        "p95_ms": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else None,
    }


def evaluate(
    rows: Sequence[Any],
    queries: Sequence[Query],
    encoder: EncoderLike,
    *,
    mode: Mode,
    threshold: float | str | None = None,
    target: float = 0.95,
    timing_sample: int = 200,
    progress: Callable[[str], None] | None = None,
    calibrator: Calibrator | None = None,
    auto_calibrate: bool = True,
) -> dict[str, Any]:
    """Figures as the product would reach them: the knowledge base is calibrated from
    itself first (``knowledge.calibration``; the queries play no part in it), unless
    ``calibrator`` is given (a live bot's), and confidences are calibrated probabilities.
    ``auto_calibrate=False``: the uncalibrated confidence, for encoders that mean nothing
    outside a test."""
    known = {row.external_id for row in rows if row.external_id}
    unknown = sorted({q.expected for q in queries if q.expected and q.expected not in known})
    if unknown:
        shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise ImportFailed([(None, f"expected_id not found among the knowledge base ids: {shown}")])
    ranker, external = ranker_from_rows(rows, encoder, mode=mode)
    auto, warning = None, None
    if calibrator is None and auto_calibrate:
        try:
            reference = Reference.encode(encoder.encode)
            fitted = calibrate(
                ranker,
                unknown=encoder.unknown_fraction,
                reference=reference,
                encode=encoder.encode,
                target=target,
            )
        except CalibrationImpossible as err:
            if progress:
                progress(f"not calibrated ({err}): confidences are uncalibrated")
        else:
            calibrator, auto = fitted.calibrator, fitted.answer_threshold
            warning = optimism_warning(fitted.counts)
    ranker.calibrator = calibrator
    if progress:
        progress(
            f"indexed {len(rows)} entries ({len(ranker.plain)} phrasings); ranking {len(queries)} queries"
        )
    outcomes, times = run_queries(ranker, external, queries, encoder, timing_sample=timing_sample)
    return {**report(outcomes, times, threshold=threshold, target=target, auto=auto), "auto_warning": warning}
