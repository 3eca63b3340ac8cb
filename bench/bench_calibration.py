"""How long automatic calibration takes (knowledge.calibration.calibrate).

The bound it has to keep: 1,000 entries x 10 phrasings in at most 10 s on two cores, off
the request path. Phrasing texts are banking77's training questions (for the lexical
index and the script check), vectors synthetic (random directions around each entry's
centre, as in bench_kb_speed.py): calibration never encodes the knowledge base, which is
embedded already, only up to 100 near-copies of phrasings (timed here); the shipped
reference texts are encoded once per model and kept on disk, so before timing. Every
entry has an answer vector, so the answer features are computed and fitted (1,000 x 1 is
calibrated with the shipped paraphrases instead, without them). Three runs per size, the
median printed.

Run: .venv/bin/python bench/bench_calibration.py
"""

from __future__ import annotations

import csv
import statistics
import time

import numpy as np
from _setup import DATASETS, require, setup

setup()

from knowledge import calibration, calibration_services, embeddings  # noqa: E402
from knowledge.ranking import Ranker  # noqa: E402


def texts_pool() -> list[str]:
    with open(require(DATASETS / "banking77") / "train.csv", encoding="utf-8") as handle:
        return [row["text"] for row in csv.DictReader(handle)]


def ranker(entries: int, per_entry: int, dim: int, rng: np.random.Generator) -> Ranker:
    pool = texts_pool()
    centres = rng.normal(size=(entries, dim))
    vectors = np.repeat(centres, per_entry, axis=0) + 0.6 * rng.normal(size=(entries * per_entry, dim))
    ids = np.repeat(np.arange(entries), per_entry)
    texts = [f"{pool[i % len(pool)]} ({i // len(pool)})" for i in range(entries * per_entry)]
    # Every entry has an answer (near its centre), so the answer features are fitted too.
    answers = centres + 0.6 * rng.normal(size=centres.shape)
    return Ranker(
        ids,
        texts,
        vectors.astype(np.float32),
        mode="blend",
        answers={n: a.astype(np.float32) for n, a in enumerate(answers)},
    )


def main() -> None:
    model = embeddings.model_name()
    encoder = embeddings.get_encoder(model)
    reference = calibration_services.reference_for(model)
    rng = np.random.default_rng(0)
    print(f"calibrate() on two cores, model {model} (reference texts encoded beforehand)")
    for entries, per_entry in ((100, 10), (1000, 1), (1000, 10), (2000, 10)):
        index = ranker(entries, per_entry, encoder.dim, rng)
        times = []
        for _ in range(3):
            started = time.perf_counter()
            result = calibration.calibrate(
                index, unknown=encoder.unknown_fraction, reference=reference, encode=encoder.encode
            )
            times.append(time.perf_counter() - started)
        features = len(result.calibrator.features)
        print(
            f"  {entries:>5} entries x {per_entry:>2} phrasings: median {statistics.median(times):.2f} s "
            f"(runs {', '.join(f'{t:.2f}' for t in times)}); {features} features; samples {result.counts}"
        )


if __name__ == "__main__":
    main()
