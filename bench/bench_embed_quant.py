"""Query encoding: the float ONNX model against its int8 (dynamic quantization) copies.

For each variant: single-query latency (median, p95) over 300 banking77 test questions,
per-query time in batches of 32, and the cosine of its vectors with the float model's
(the 300 English questions plus 100 Chinese afqmc questions). The variants are timed
interleaved, query by query, so load from other processes hits them all alike.

Run: .venv/bin/python bench/bench_embed_quant.py
"""

from __future__ import annotations

import os
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _setup import DATASETS, require

os.environ["EMBEDDING_QUANTIZE"] = "0"  # load the float model; the variants are swapped in below

from _setup import setup

setup()

from knowledge import embeddings, onnx_models  # noqa: E402

VARIANTS = [("QInt8", False), ("QInt8", True), ("QUInt8", False), ("QUInt8", True)]
SAMPLE = 300
BATCH = 32


def english_questions() -> list[str]:
    import csv

    with open(require(DATASETS / "banking77" / "test.csv"), encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    return random.Random(0).sample(texts, SAMPLE)


def chinese_questions(count: int = 100) -> list[str]:
    path = require(DATASETS / "afqmc_atec_zh" / "atec_nlp_sim_train.csv")
    with open(path, encoding="utf-8-sig") as handle:
        texts = [line.split("\t")[1].strip() for line in handle if line.count("\t") == 3]
    return random.Random(0).sample(texts, count)


def sessions(float_file: Path) -> dict[str, Any]:
    found = {"float": onnx_models.session(float_file)}
    for weight_type, per_channel in VARIANTS:
        target = onnx_models.quantized_file(float_file, weight_type=weight_type, per_channel=per_channel)
        if not target.exists():
            started = time.perf_counter()
            onnx_models.quantize(float_file, target, weight_type=weight_type, per_channel=per_channel)
            print(f"  quantized {target.name} in {time.perf_counter() - started:.1f} s")
        label = f"{weight_type}{' per-channel' if per_channel else ''}"
        found[label] = onnx_models.session(target)
        print(f"  {label:<20} {target.stat().st_size / 1e6:6.1f} MB")
    print(f"  {'float':<20} {float_file.stat().st_size / 1e6:6.1f} MB")
    return found


def encode_with(encoder: embeddings.Encoder, session: Any, texts: list[str]) -> np.ndarray:
    encoder._session = session
    return encoder.encode(texts, batch_size=BATCH)


def timed(encoder: embeddings.Encoder, session: Any, texts: list[str]) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    vectors = encode_with(encoder, session, texts)
    return (time.perf_counter() - started) * 1000, vectors


@dataclass
class Run:
    single_ms: list[float] = field(default_factory=list)
    batch_ms: float = 0.0
    alone: list[np.ndarray] = field(default_factory=list)  # each query encoded on its own


def timings(encoder: embeddings.Encoder, variants: dict[str, Any], texts: list[str]) -> dict[str, Run]:
    runs = {label: Run() for label in variants}
    for text in texts:
        for label, session in variants.items():
            elapsed, vectors = timed(encoder, session, [text])
            runs[label].single_ms.append(elapsed)
            runs[label].alone.append(vectors[0])
    for start in range(0, len(texts), BATCH):
        for label, session in variants.items():
            runs[label].batch_ms += timed(encoder, session, texts[start : start + BATCH])[0]
    return runs


def report(
    encoder: embeddings.Encoder,
    variants: dict[str, Any],
    runs: dict[str, Run],
    texts: list[str],
    chinese: list[str],
) -> None:
    float_en = np.stack(runs["float"].alone)
    float_zh = encode_with(encoder, variants["float"], chinese)
    check = list(embeddings.CHECK_SENTENCES)
    truth = encoder._reference(check)
    print(f"\n{len(texts)} short questions: single query median / p95 ms, batch of {BATCH}: ms per query;")
    print("cosine with the float ONNX vectors, mean / min (en: those questions, zh: 100 afqmc);")
    print("alone~batch: min cosine of a query encoded alone and in a batch of 32;")
    print("check: min cosine with sentence-transformers on the start-up check sentences")
    for label, session in variants.items():
        run = runs[label]
        times, alone = sorted(run.single_ms), np.stack(run.alone)
        en = embeddings.row_cosines(alone, float_en)
        zh = embeddings.row_cosines(encode_with(encoder, session, chinese), float_zh)
        together = embeddings.row_cosines(alone, encode_with(encoder, session, texts)).min()
        startup = embeddings.row_cosines(encode_with(encoder, session, check), truth).min()
        print(
            f"  {label:<19} single {statistics.median(times):5.2f} / {times[int(0.95 * len(times))]:5.2f}"
            f"  batch {run.batch_ms / len(texts):5.2f}  en {en.mean():.4f} / {en.min():.4f}"
            f"  zh {zh.mean():.4f} / {zh.min():.4f}  alone~batch {together:.4f}  check {startup:.4f}"
        )


def main() -> None:
    encoder = embeddings.get_encoder()
    if not encoder.fast:
        raise SystemExit("the ONNX fast path is off or failed: nothing to compare")
    texts = english_questions()
    print(f"sessions ({embeddings.settings.EMBEDDING_THREADS} threads):")
    variants = sessions(encoder._onnx_file())
    for session in variants.values():  # warm up every session's buffers
        for _ in range(3):
            encode_with(encoder, session, texts[:BATCH])
    report(encoder, variants, timings(encoder, variants, texts), texts, chinese_questions())


if __name__ == "__main__":
    main()
