"""Knowledge-base matching quality on public customer-service data sets.

banking77: one entry per intent with k phrasings from train.csv (k = 1, 3, 10), 15 of
the 77 intents left out of the knowledge base so their test questions are out of scope;
queries = test.csv. afqmc/atec (Chinese): pairs labelled "same meaning": one side is an
entry, the other a query; pairs whose entry is left out give out-of-scope queries.

For each configuration: top-1, and at the recommended threshold for precision 0.95,
the precision, coverage and false-answer rate. "cosine" is the baseline: plain
best-phrasing cosine as the confidence. Run: .venv/bin/python bench/bench_kb_quality.py
"""

from __future__ import annotations

import csv
import random
import time
from collections.abc import Sequence

import numpy as np
from _setup import DATASETS, require, setup

setup()

from knowledge.embeddings import get_encoder  # noqa: E402
from knowledge.evaluation import Outcome, at_threshold, recommended_threshold  # noqa: E402
from knowledge.ranking import Ranker  # noqa: E402

TARGET = 0.95
encoder = get_encoder()
_vectors: dict[str, np.ndarray] = {}


def vectors(texts: Sequence[str]) -> np.ndarray:
    missing = [t for t in dict.fromkeys(texts) if t not in _vectors]
    for text, vector in zip(missing, encoder.encode(missing), strict=True):
        _vectors[text] = vector
    return np.stack([_vectors[t] for t in texts]) if texts else np.zeros((0, encoder.dim), np.float32)


def outcomes(kb: list[list[str]], queries: list[tuple[str, int]], config: str) -> list[Outcome]:
    ids = np.array([n for n, phrasings in enumerate(kb) for _ in phrasings])
    texts = [t for phrasings in kb for t in phrasings]
    mode = "vector" if config in ("cosine", "vector") else config
    ranker = Ranker(ids, texts, vectors(texts), mode=mode, whiten=config != "cosine")
    query_vectors = vectors([q for q, _ in queries])
    result = []
    for (text, expected), vector in zip(queries, query_vectors, strict=True):
        ranked = ranker.rank(vector, text, 5, unknown=encoder.unknown_fraction(text))
        confidence = ranked[0].similarity if config == "cosine" else ranked[0].confidence
        result.append(
            Outcome(
                str(expected) if expected >= 0 else "", tuple(str(r.entry_id) for r in ranked), confidence
            )
        )
    return result


def figures(results: list[Outcome]) -> dict[str, float | None]:
    in_scope = [o for o in results if o.in_scope]
    threshold = recommended_threshold(results, TARGET)
    at = at_threshold(results, threshold) if threshold is not None else {}
    return {
        "top1": sum(o.correct for o in in_scope) / len(in_scope),
        "threshold": threshold,
        "precision": at.get("precision"),
        "coverage": at.get("coverage", 0.0),
        "far": at.get("false_answer_rate"),
    }


def coverage_at_far(results: list[Outcome], far: float) -> float:
    """Coverage at the lowest threshold whose false-answer rate is <= ``far``."""
    for threshold in [i / 1000 for i in range(1001)]:
        at = at_threshold(results, threshold)
        if at["false_answer_rate"] is not None and at["false_answer_rate"] <= far:
            return at["coverage"] or 0.0
    return 0.0


def show(label: str, results: list[Outcome], baseline_far: float | None = None) -> dict:
    f = figures(results)

    def fmt(value: float | None) -> str:
        return "  n/a" if value is None else f"{value:.3f}"

    extra = ""
    if baseline_far is not None:
        extra = (
            f"   coverage at the baseline's false-answer rate: {coverage_at_far(results, baseline_far):.3f}"
        )
    print(
        f"  {label:<16} top1 {fmt(f['top1'])}  threshold {fmt(f['threshold'])}"
        f"  precision {fmt(f['precision'])}  coverage {fmt(f['coverage'])}"
        f"  false answers {fmt(f['far'])}{extra}"
    )
    return f


def banking77() -> None:
    folder = require(DATASETS / "banking77")
    with open(folder / "train.csv", encoding="utf-8") as handle:
        train = list(csv.DictReader(handle))
    with open(folder / "test.csv", encoding="utf-8") as handle:
        test = list(csv.DictReader(handle))
    intents = sorted({r["category"] for r in train})
    rng = random.Random(0)
    left_out = set(rng.sample(intents, 15))
    kept = [i for i in intents if i not in left_out]
    by_intent: dict[str, list[str]] = {}
    for r in train:
        by_intent.setdefault(r["category"], []).append(r["text"])
    queries = [(r["text"], kept.index(r["category"]) if r["category"] in kept else -1) for r in test]
    in_scope = sum(q[1] >= 0 for q in queries)
    print(
        f"banking77: {len(kept)} entries, {len(queries)} queries ({in_scope} in scope), "
        f"target precision {TARGET}"
    )
    for k in (1, 3, 10):
        pick = random.Random(k)
        kb = [pick.sample(by_intent[i], k) for i in kept]
        print(f" k = {k} phrasings per entry")
        base = show("cosine baseline", outcomes(kb, queries, "cosine"))
        for config in ("vector", "lexical", "blend"):
            show(config, outcomes(kb, queries, config), baseline_far=base["far"])


def afqmc(pairs_wanted: int = 3000, out_of_scope: int = 600) -> None:
    path = require(DATASETS / "afqmc_atec_zh" / "atec_nlp_sim_train.csv")
    pairs = []
    with open(path, encoding="utf-8-sig") as handle:
        for line in handle:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 4 and parts[3].strip() == "1":
                pairs.append((parts[1].strip().lstrip("\ufeff"), parts[2].strip()))
    rng = random.Random(0)
    rng.shuffle(pairs)
    entries: dict[str, int] = {}
    queries: list[tuple[str, int]] = []
    for entry_text, query in pairs[:pairs_wanted]:
        queries.append((query, entries.setdefault(entry_text, len(entries))))
    kb = [[text] for text in entries]
    extra = [(q, -1) for e, q in pairs[pairs_wanted:] if e not in entries][:out_of_scope]
    queries += extra
    print(
        f"\nafqmc/atec (Chinese): {len(kb)} entries, {len(queries)} queries ({len(extra)} out of scope), "
        f"target precision {TARGET}"
    )
    sample = [q for q, _ in queries[:500]]
    unknown = np.mean([encoder.unknown_fraction(q) for q in sample])
    print(f"  share of [UNK] tokens the default model sees in these queries: {unknown:.2f}")
    base = show("cosine baseline", outcomes(kb, queries, "cosine"))
    for config in ("vector", "lexical", "blend"):
        show(config, outcomes(kb, queries, config), baseline_far=base["far"])


if __name__ == "__main__":
    started = time.perf_counter()
    banking77()
    afqmc()
    print(f"\n(model {encoder.name}, fast path {encoder.fast}; {time.perf_counter() - started:.0f} s)")
