"""Knowledge-base matching quality on public customer-service data sets.

banking77: one entry per intent with k phrasings from train.csv (k = 1, 3, 10), 15 of
the 77 intents left out of the knowledge base so their test questions are out of scope;
queries = test.csv. afqmc/atec (Chinese): pairs labelled "same meaning": one side is an
entry, the other a query; pairs whose entry is left out give out-of-scope queries.

For each configuration: top-1, and at the recommended threshold for precision 0.95,
the precision, coverage and false-answer rate. "cosine" is the baseline: plain
best-phrasing cosine as the confidence. Run: .venv/bin/python bench/bench_kb_quality.py

--validate tunes without touching test.csv: banking77 folds made from train.csv only
(each fold leaves out its own 15 random intents; the KB takes k phrasings per kept
intent, 40 other phrasings per intent are the queries), figures averaged over --folds.
--set NAME=VALUE overrides a knowledge.ranking constant (e.g. --set NULL_SCORE=0.7) for
either mode, so candidate settings can be compared before editing the module.

"auto" rows: the product as it serves: blend ranking, the confidence calibrated from the
knowledge base alone (``knowledge.calibration``: no test query seen) and its automatic
threshold, for each embedding model (--models); the figures at the threshold chosen on
the test queries are printed beside them for comparison only.

"tuned" rows: the model tuned on the knowledge base's own phrasings first (what
``manage.py kb_tune`` does, default settings; no test question is seen), then the same
figures. A few minutes on two cores per tuning; --no-tune skips it. With --validate the
folds' figures are printed for the tuned model too (one tuning per fold: use few folds).
"""

from __future__ import annotations

import argparse
import csv
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from _setup import DATASETS, require, setup

setup()

from django.test import override_settings  # noqa: E402

from knowledge import calibration, multilingual_models, ranking, tuning  # noqa: E402
from knowledge.embeddings import DEFAULT_MODEL, Encoder, get_encoder  # noqa: E402
from knowledge.evaluation import Outcome, at_threshold, recommended_threshold  # noqa: E402
from knowledge.index import PhrasingMatrix  # noqa: E402
from knowledge.ranking import Ranker  # noqa: E402

TARGET = 0.95
AFQMC_TARGET = 0.90
encoder = get_encoder()
_vectors: dict[str, dict[str, np.ndarray]] = {}


def use_encoder(new: Encoder) -> None:
    global encoder
    encoder = new


def tuned_encoder(kb: list[list[str]]) -> Encoder:
    """The default model tuned on ``kb``'s phrasings, as ``kb_tune`` would."""
    out = Path(tempfile.mkdtemp(prefix="kb-tune-")) / "model"
    report = tuning.tune(kb, out, base=get_encoder().name)
    print(
        f"  (tuned on {report.entries} entries, {report.steps} steps in {report.seconds:.0f} s, "
        f"loss {report.first_loss:.2f} -> {report.last_loss:.2f})"
    )
    with override_settings(EMBEDDING_FAST_PATH=False):  # a one-off model: no ONNX file cached
        return Encoder(str(out))


def with_tuned(kb: list[list[str]], queries: list[tuple[str, int]], configs: Sequence[str]) -> dict:
    """``{config: outcomes}`` with the model tuned on ``kb``; the default model afterwards."""
    default = encoder
    use_encoder(tuned_encoder(kb))
    try:
        return {config: outcomes(kb, queries, config) for config in configs}
    finally:
        use_encoder(default)


def vectors(texts: Sequence[str]) -> np.ndarray:
    cache = _vectors.setdefault(encoder.name, {})  # one per model: switching back costs nothing
    missing = [t for t in dict.fromkeys(texts) if t not in cache]
    for text, vector in zip(missing, encoder.encode(missing), strict=True):
        cache[text] = vector
    return np.stack([cache[t] for t in texts]) if texts else np.zeros((0, encoder.dim), np.float32)


_auto: dict[str, float | None] = {}  # config "auto": the threshold the product chose by itself


def outcomes(
    kb: list[list[str]], queries: list[tuple[str, int]], config: str, target: float = TARGET
) -> list[Outcome]:
    """Config: "cosine" (the baseline), a ranking mode, or "auto": blend with the automatic
    calibration, as the product serves (its threshold left in ``_auto``)."""
    ids = np.array([n for n, phrasings in enumerate(kb) for _ in phrasings])
    texts = [t for phrasings in kb for t in phrasings]
    if config == "cosine":
        return cosine_outcomes(PhrasingMatrix(ids, vectors(texts)), queries)
    ranker = Ranker(ids, texts, vectors(texts), mode="blend" if config == "auto" else config)
    if config == "auto":
        started = time.perf_counter()
        fitted = calibration.calibrate(
            ranker, unknown=encoder.unknown_fraction, reference=reference(), target=TARGET
        )
        ranker.calibrator = fitted.calibrator
        _auto.update(threshold=fitted.answer_threshold, seconds=time.perf_counter() - started)
    query_vectors = vectors([q for q, _ in queries])
    result = []
    for (text, expected), vector in zip(queries, query_vectors, strict=True):
        ranked = ranker.rank(vector, text, 5, unknown=encoder.unknown_fraction(text))
        entries = tuple(str(r.entry_id) for r in ranked)
        result.append(Outcome(str(expected) if expected >= 0 else "", entries, ranked[0].confidence))
    return result


def cosine_outcomes(index: PhrasingMatrix, queries: list[tuple[str, int]]) -> list[Outcome]:
    """The baseline: entries by best plain phrasing cosine, that cosine as the confidence."""
    result = []
    for (_, expected), vector in zip(queries, vectors([q for q, _ in queries]), strict=True):
        found = index.search(vector, 5)
        entries = tuple(str(e) for e in found.entry_ids)
        result.append(Outcome(str(expected) if expected >= 0 else "", entries, float(found.scores[0])))
    return result


_references: dict[str, calibration.Reference] = {}


def reference() -> calibration.Reference:
    if encoder.name not in _references:
        negatives, pairs = calibration.out_of_scope_questions(), calibration.paraphrase_pairs()
        texts = [*negatives, *(q for q, _ in pairs), *(p for _, p in pairs)]
        _references[encoder.name] = calibration.Reference.from_vectors(vectors(texts), negatives, pairs)
    return _references[encoder.name]


def show_auto(label: str, results: list[Outcome], target: float) -> None:
    """Figures at the automatic threshold (chosen from the knowledge base alone), and at
    the threshold chosen on the test queries, for comparison."""
    in_scope = [o for o in results if o.in_scope]
    auto = _auto.get("threshold")
    at = at_threshold(results, auto) if auto is not None else {}
    best = recommended_threshold(results, target)
    labelled = at_threshold(results, best) if best is not None else {}
    print(
        f"  {label:<16} top1 {fmt(sum(o.correct for o in in_scope) / len(in_scope))}"
        f"  AUTO threshold {fmt(auto)}: precision {fmt(at.get('precision'))}"
        f"  coverage {fmt(at.get('coverage', 0.0))}  false answers {fmt(at.get('false_answer_rate'))}"
        f"   | chosen on the test queries: {fmt(best)} coverage {fmt(labelled.get('coverage', 0.0))}"
        f" false answers {fmt(labelled.get('false_answer_rate'))}"
        f"   (calibrated in {_auto.get('seconds', 0):.1f} s)"
    )


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


def fmt(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:.3f}"


def line(label: str, f: dict[str, float | None], extra: str = "") -> None:
    print(
        f"  {label:<16} top1 {fmt(f['top1'])}  threshold {fmt(f['threshold'])}"
        f"  precision {fmt(f['precision'])}  coverage {fmt(f['coverage'])}"
        f"  false answers {fmt(f['far'])}{extra}"
    )


def show(label: str, results: list[Outcome], baseline_far: float | None = None) -> dict:
    f = figures(results)
    extra = ""
    if baseline_far is not None:
        extra = (
            f"   coverage at the baseline's false-answer rate: {coverage_at_far(results, baseline_far):.3f}"
        )
    line(label, f, extra)
    return f


def read_banking77(split: str) -> list[dict[str, str]]:
    with open(require(DATASETS / "banking77") / f"{split}.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def phrasings_by_intent(rows: list[dict[str, str]]) -> dict[str, list[str]]:
    by_intent: dict[str, list[str]] = {}
    for r in rows:
        by_intent.setdefault(r["category"], []).append(r["text"])
    return by_intent


def banking77(tune: bool, models: Sequence[str]) -> None:
    train, test = read_banking77("train"), read_banking77("test")
    intents = sorted({r["category"] for r in train})
    rng = random.Random(0)
    left_out = set(rng.sample(intents, 15))
    kept = [i for i in intents if i not in left_out]
    by_intent = phrasings_by_intent(train)
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
        for model in models:
            use_encoder(get_encoder(model))
            show_auto(f"auto {model[:11]}", outcomes(kb, queries, "auto"), TARGET)
        use_encoder(get_encoder(DEFAULT_MODEL))
        base = show("cosine baseline", outcomes(kb, queries, "cosine"))
        for config in ("vector", "lexical", "blend"):
            show(config, outcomes(kb, queries, config), baseline_far=base["far"])
        if tune and k > 1:  # one phrasing per entry gives nothing to pull together
            for config, results in with_tuned(kb, queries, ("cosine", "vector", "blend")).items():
                show(f"tuned {config}", results, baseline_far=base["far"])


def validation_fold(
    by_intent: dict[str, list[str]], k: int, fold: int, per_intent: int = 40
) -> tuple[list[list[str]], list[tuple[str, int]]]:
    """From train.csv only: its own 15 left-out intents, k phrasings per kept intent in
    the KB, up to ``per_intent`` other phrasings per intent as queries."""
    rng = random.Random(1000 + fold)
    intents = sorted(by_intent)
    left_out = set(rng.sample(intents, 15))
    kb: list[list[str]] = []
    queries: list[tuple[str, int]] = []
    for n, intent in enumerate(i for i in intents if i not in left_out):
        texts = by_intent[intent][:]
        rng.shuffle(texts)
        kb.append(texts[:k])
        queries += [(t, n) for t in texts[k:][:per_intent]]
    for intent in sorted(left_out):
        texts = by_intent[intent][:]
        rng.shuffle(texts)
        queries += [(t, -1) for t in texts[:per_intent]]
    return kb, queries


def mean_figures(rows: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Averages over folds; a fold that never reaches the target counts as coverage 0."""

    def mean(key: str) -> float | None:
        values = [r[key] for r in rows if r[key] is not None]
        return float(np.mean(values)) if values else None

    return {key: mean(key) for key in ("top1", "threshold", "precision", "coverage", "far")}


def validate(folds: int, tune: bool) -> None:
    by_intent = phrasings_by_intent(read_banking77("train"))
    print(f"banking77 validation (train.csv only): mean of {folds} folds, target precision {TARGET}")
    for k in (1, 3, 10):
        print(f" k = {k} phrasings per entry")
        results: dict[str, list[dict[str, float | None]]] = {"cosine": [], "vector": []}
        for fold in range(1, folds + 1):
            kb, queries = validation_fold(by_intent, k, fold)
            for config in ("cosine", "vector"):
                results[config].append(figures(outcomes(kb, queries, config)))
            if tune and k > 1:
                for config, tuned in with_tuned(kb, queries, ("cosine", "vector")).items():
                    results.setdefault(f"tuned {config}", []).append(figures(tuned))
        for label, rows in results.items():
            line(label.replace("cosine", "cosine baseline"), mean_figures(rows))


def override(assignments: Sequence[str]) -> None:
    for assignment in assignments:
        name, _, value = assignment.partition("=")
        if not hasattr(ranking, name) or not name.isupper():
            raise SystemExit(f"--set: knowledge.ranking has no constant {name!r}")
        setattr(ranking, name, type(getattr(ranking, name))(value))
        print(f"(knowledge.ranking.{name} = {getattr(ranking, name)!r})")


def afqmc(models: Sequence[str], pairs_wanted: int = 3000, out_of_scope: int = 600) -> None:
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
        f"target precision {AFQMC_TARGET} (0.95 for the rows below the automatic ones)"
    )
    for model in models:
        use_encoder(get_encoder(model))
        show_auto(f"auto {model[:11]}", outcomes(kb, queries, "auto", AFQMC_TARGET), AFQMC_TARGET)
    use_encoder(get_encoder(DEFAULT_MODEL))
    sample = [q for q, _ in queries[:500]]
    unknown = np.mean([encoder.unknown_fraction(q) for q in sample])
    print(f"  share of [UNK] tokens the default model sees in these queries: {unknown:.2f}")
    base = show("cosine baseline", outcomes(kb, queries, "cosine"))
    for config in ("vector", "lexical", "blend"):
        show(config, outcomes(kb, queries, config), baseline_far=base["far"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--validate", action="store_true", help="train.csv folds only (for tuning)")
    parser.add_argument("--folds", type=int, default=20)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--no-tune", action="store_true", help="skip the rows of the tuned model")
    parser.add_argument(
        "--models",
        default=",".join([DEFAULT_MODEL, *multilingual_models.NAMES]),
        help="embedding models of the automatic rows, comma-separated",
    )
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    override(args.set)
    started = time.perf_counter()
    if args.validate:
        validate(args.folds, not args.no_tune)
    else:
        banking77(not args.no_tune, models)
        afqmc(models)
    print(f"\n(model {encoder.name}, fast path {encoder.fast}; {time.perf_counter() - started:.0f} s)")
