"""What the entries' answers add to the confidence (knowledge.confidence.ENTRY_FEATURES).

Each knowledge base is calibrated from itself (``knowledge.calibration``; no test query
is seen) twice: with its phrasings only, and with the answers' vectors too. Figures are
at the automatic threshold, as the product serves.

- stackfaq (English, ../shared/datasets/stackfaq): one entry per StackExchange thread,
  its question and 3 of its rephrasings as phrasings, its first answer as the answer;
  the other rephrasings are the queries; 25 threads left out give out-of-scope queries.
- the demo shop (chatbot/demo/shop_kb.json, English and Chinese) against
  bench/demo_paraphrases.csv: natural questions we wrote for its entries, none of them
  a stored phrasing, plus unrelated questions (a development set: the held-out one is
  not ours). Per language: how many are answered with the right entry, and how many
  unrelated questions are answered at all; and, as an LLM would get them, for how many
  the right entry is among the references (confidence at or above the reference
  threshold), and how many unrelated questions bring any reference.

Run: .venv/bin/python bench/bench_kb_answers.py [--models a,b]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from _setup import DATASETS, ROOT, require, setup

setup()

from knowledge import calibration, multilingual_models  # noqa: E402
from knowledge.answer_text import plain  # noqa: E402
from knowledge.embeddings import DEFAULT_MODEL, encode_passages, get_encoder  # noqa: E402
from knowledge.evaluation import Outcome, at_threshold  # noqa: E402
from knowledge.lexical import is_cjk  # noqa: E402
from knowledge.ranking import Ranker  # noqa: E402

DEMO_KB = ROOT / "chatbot" / "demo" / "shop_kb.json"
DEMO_QUERIES = Path(__file__).resolve().parent / "demo_paraphrases.csv"
Entry = tuple[list[str], str]  # phrasings, answer


def stackfaq_kb(alternatives: int = 3, left_out: int = 25) -> tuple[list[Entry], list[tuple[str, int]]]:
    data = json.loads(require(DATASETS / "stackfaq" / "stackExchange-FAQ.json").read_text(encoding="utf-8"))
    threads = []
    for pair in data["root"]["qapair"]:
        rephrasings = pair["rephr"] if isinstance(pair["rephr"], list) else [pair["rephr"]]
        answers = pair["answer"] if isinstance(pair["answer"], list) else [pair["answer"]]
        rephrasings = [r.strip() for r in rephrasings if r and len(r.strip()) > 3]
        answers = [re.sub(r"\s+", " ", a) for a in answers if a]
        threads.append((pair["question"].strip(), rephrasings, answers[0] if answers else ""))
    order = list(range(len(threads)))
    random.Random(0).shuffle(order)
    out = set(order[:left_out])
    kb: list[Entry] = []
    queries: list[tuple[str, int]] = []
    for n, (question, rephrasings, answer) in enumerate(threads):
        shuffled = rephrasings[:]
        random.Random(n).shuffle(shuffled)
        if n in out:
            queries += [(text, -1) for text in shuffled[:5]]
            continue
        queries += [(text, len(kb)) for text in shuffled[alternatives:]]
        kb.append(([question, *shuffled[:alternatives]], answer))
    return kb, queries


def demo_kb() -> tuple[list[Entry], list[tuple[str, int]]]:
    entries = json.loads(DEMO_KB.read_text(encoding="utf-8"))
    position = {item["id"]: n for n, item in enumerate(entries)}
    kb = [([item["question"], *item["alternatives"]], item["answer"]) for item in entries]
    with open(DEMO_QUERIES, encoding="utf-8") as handle:
        queries = [
            (r["query"], position[r["expected_id"]] if r["expected_id"] else -1)
            for r in csv.DictReader(handle)
        ]
    return kb, queries


def outcomes(
    kb: list[Entry], queries: list[tuple[str, int]], model: str, *, answers: bool
) -> tuple[list, dict]:
    encoder = get_encoder(model)
    ids = np.array([n for n, (phrasings, _) in enumerate(kb) for _ in phrasings])
    texts = [t for phrasings, _ in kb for t in phrasings]
    answer_vectors = None
    if answers:  # as knowledge.services.entries_embed stores them for a bot
        answer_vectors = dict(enumerate(encode_passages([plain(a) for _, a in kb], model)))
    ranker = Ranker(ids, texts, encoder.encode(texts), mode="blend", answers=answer_vectors)
    started = time.perf_counter()
    fitted = calibration.calibrate(
        ranker,
        unknown=encoder.unknown_fraction,
        reference=calibration.Reference.encode(encoder.encode),
        encode=encoder.encode,
    )
    ranker.calibrator = fitted.calibrator
    info: dict = {"threshold": fitted.answer_threshold, "seconds": time.perf_counter() - started}
    result = []
    references = []  # per query: the entries that would reach an LLM as references
    vectors = encoder.encode([q for q, _ in queries])
    for (text, expected), vector in zip(queries, vectors, strict=True):
        ranked = ranker.rank(vector, text, 5, unknown=encoder.unknown_fraction(text))
        entries = tuple(str(r.entry_id) for r in ranked)
        result.append(Outcome(str(expected) if expected >= 0 else "", entries, ranked[0].confidence))
        references.append({str(r.entry_id) for r in ranked if r.confidence >= fitted.reference_threshold})
    info["references"] = references
    return result, info


def fmt(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:.3f}"


def stackfaq(models: Sequence[str]) -> None:
    kb, queries = stackfaq_kb()
    in_scope = sum(e >= 0 for _, e in queries)
    print(
        f"stackfaq: {len(kb)} entries (question + 3 rephrasings, an answer), {len(queries)} queries "
        f"({in_scope} in scope), target precision 0.95"
    )
    for model in models:
        for answers in (False, True):
            results, info = outcomes(kb, queries, model, answers=answers)
            inside = [o for o in results if o.in_scope]
            at = at_threshold(results, info["threshold"]) if info["threshold"] is not None else {}
            print(
                f"  {model[:22]:<22} answers {'yes' if answers else 'no ':<3}  top1 "
                f"{fmt(sum(o.correct for o in inside) / len(inside))}  "
                f"AUTO {fmt(info['threshold'])}: precision "
                f"{fmt(at.get('precision'))}  coverage {fmt(at.get('coverage', 0.0))}  false answers "
                f"{fmt(at.get('false_answer_rate'))}  (calibrated in {info['seconds']:.1f} s)"
            )


def demo(models: Sequence[str]) -> None:
    kb, queries = demo_kb()
    chinese = [is_cjk(q) for q, _ in queries]
    totals = {
        "en": sum(e >= 0 and not c for (_, e), c in zip(queries, chinese, strict=True)),
        "zh": sum(e >= 0 and c for (_, e), c in zip(queries, chinese, strict=True)),
        "unrelated": sum(e < 0 for _, e in queries),
    }
    print(
        f"\ndemo shop: {len(kb)} entries; {totals['en']} English and {totals['zh']} Chinese "
        "natural questions, "
        f"{totals['unrelated']} unrelated ones (bench/demo_paraphrases.csv)"
    )
    for model in models:
        for answers in (False, True):
            results, info = outcomes(kb, queries, model, answers=answers)
            threshold = info["threshold"] if info["threshold"] is not None else 1.01
            answered = {"en": 0, "zh": 0, "unrelated": 0}
            referred = {"en": 0, "zh": 0, "unrelated": 0}
            for outcome, is_chinese, references in zip(results, chinese, info["references"], strict=True):
                kind = "unrelated" if not outcome.in_scope else "zh" if is_chinese else "en"
                # An LLM gets the right entry (in scope), or any entry at all (unrelated).
                referred[kind] += outcome.expected in references if outcome.in_scope else bool(references)
                if outcome.confidence < threshold:
                    continue
                if not outcome.in_scope:
                    answered["unrelated"] += 1
                elif outcome.correct:
                    answered[kind] += 1
            print(
                f"  {model[:22]:<22} answers {'yes' if answers else 'no ':<3}  "
                f"AUTO {fmt(info['threshold'])}: answered right: English {answered['en']}/{totals['en']}, "
                f"Chinese {answered['zh']}/{totals['zh']}; "
                f"unrelated answered {answered['unrelated']}/{totals['unrelated']}\n"
                f"  {'':<34}with an LLM, the right entry among its references: English "
                f"{referred['en']}/{totals['en']}, Chinese {referred['zh']}/{totals['zh']}; "
                f"unrelated with any reference {referred['unrelated']}/{totals['unrelated']}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models",
        default=",".join([DEFAULT_MODEL, multilingual_models.E5]),
        help="embedding models, comma-separated",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    chosen = [m for m in args.models.split(",") if m]
    stackfaq(chosen)
    demo(chosen)
    print(f"\n({time.perf_counter() - started:.0f} s)")
