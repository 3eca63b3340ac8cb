from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from knowledge.embeddings import get_encoder
from knowledge.evaluation import evaluate, read_queries
from knowledge.io import ImportFailed, detect_format, parse_kb


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise CommandError(f"can't read {path}: {err.strerror}") from None


def _threshold(value: str | None) -> float | str | None:
    if value is None or value == "auto":
        return value
    try:
        number = float(value)
    except ValueError:
        raise CommandError("--threshold must be a number in [0, 1] or 'auto'") from None
    if not 0 <= number <= 1:
        raise CommandError("--threshold must be in [0, 1]")
    return number


def format_report(figures: dict[str, Any]) -> str:
    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    lines = [
        f"Queries: {figures['queries']} ({figures['in_scope']} in scope)",
        f"Top-1 accuracy: {pct(figures['top1'])}   top-5: {pct(figures['top5'])}",
        f"At threshold {figures['threshold']:.2f}: precision {pct(figures['precision'])}, "
        f"coverage {pct(figures['coverage'])}, false-answer rate {pct(figures['false_answer_rate'])}",
        f"Recommended threshold for precision >= {figures['target_precision']} (chosen on these queries): "
        + (
            "none reaches it"
            if figures["recommended_threshold"] is None
            else f"{figures['recommended_threshold']:.2f}"
        ),
        "Automatic threshold (chosen from the knowledge base alone): "
        + (
            "none reaches the target"
            if figures.get("auto_threshold") is None
            else f"{figures['auto_threshold']:.2f}"
        ),
        *([f"Note: {figures['auto_warning']}"] if figures.get("auto_warning") else []),
        "",
        "threshold  precision  coverage  false-answers  answered",
    ]
    for point in figures["curve"]:
        lines.append(
            f"{point['threshold']:>9.2f}  {pct(point['precision']):>9}  {pct(point['coverage']):>8}  "
            f"{pct(point['false_answer_rate']):>13}  {point['answered']:>8}"
        )
    if figures["p50_ms"] is not None:
        lines.append(f"\nTime per query: median {figures['p50_ms']:.1f} ms, p95 {figures['p95_ms']:.1f} ms")
    return "\n".join(lines)


class Command(BaseCommand):
    help = (
        "Measure a knowledge-base file against labelled queries (writes nothing): top-1/top-5 "
        "accuracy, precision/coverage/false answers at a threshold, and the recommended threshold."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--kb", required=True, help="Knowledge base in the import format (CSV or JSON).")
        parser.add_argument("--queries", required=True, help="CSV with columns query,expected_id.")
        parser.add_argument(
            "--threshold",
            help="Report figures at this confidence threshold, or 'auto': the one the product chooses "
            "by itself for this knowledge base (the queries play no part in choosing it). "
            "Default: the recommended threshold, chosen on the queries.",
        )
        parser.add_argument("--target-precision", type=float, default=0.95)
        parser.add_argument("--mode", choices=["vector", "lexical", "blend"], default=None)
        parser.add_argument(
            "--model", help="Embedding model (a folder, e.g. from kb_tune). Default: EMBEDDING_MODEL."
        )
        parser.add_argument("--timing-sample", type=int, default=200, help="Queries timed one by one.")
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        target = options["target_precision"]
        if not 0 < target <= 1:
            raise CommandError("--target-precision must be in (0, 1]")
        threshold = _threshold(options["threshold"])
        kb_data = _read(options["kb"])
        try:
            rows = parse_kb(kb_data, fmt=detect_format(options["kb"], kb_data))
            queries = read_queries(_read(options["queries"]))
            encoder = get_encoder(options["model"])
            figures = evaluate(
                rows,
                queries,
                encoder,
                mode=options["mode"] or settings.KB_MATCH_MODE,
                threshold=threshold,
                target=target,
                timing_sample=options["timing_sample"],
            )
        except ImportFailed as err:
            raise CommandError(f"cannot evaluate:\n{err.report()}") from None
        except FileNotFoundError as err:  # --model names no model folder
            raise CommandError(str(err)) from None
        if options["json"]:
            self.stdout.write(json.dumps(figures))
        else:
            self.stdout.write(format_report(figures))
