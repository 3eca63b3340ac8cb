"""Passage retrieval: quality on a help center made of StackFAQ, and search latency.

Quality: each of StackFAQ's 125 threads becomes a help-center page (a Markdown file: its
question as the heading, its answers as the text) indexed by the real pipeline
(``source_add_file`` + ``source_process``: extract, split, embed). Questions: every
paraphrase of a thread (expected: its page) and banking77 test questions (out of scope
for a web-apps FAQ: expected nothing). Printed: recall@1/3/5 of the right page among the
passages ``passages_search`` returns, the share of out-of-scope questions that retrieved
nothing, the fitted threshold, and ingestion throughput.

Latency: bots of 1,000 and 5,000 passages (texts cut from the StackFAQ answers, vectors
random unit vectors written straight to the database, as bench_kb_speed does); questions
really encoded, the query cache off, through the whole ``passages_search`` path (revision
read, encoding, scoring). Also the time of the fit and the index's memory.

Run: .venv/bin/python bench/bench_docs.py [--models all-MiniLM-L6-v2 multilingual-e5-small]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import statistics
import tempfile
import time

import numpy as np
from _setup import DATASETS, require

DB = os.path.join(tempfile.mkdtemp(prefix="docs-bench-"), "bench.sqlite3")
os.environ["DATABASE_URL"] = f"sqlite:///{DB}"
os.environ["EMBEDDING_QUERY_CACHE"] = "0"
os.environ["KB_AUTO_CALIBRATE"] = "0"  # fits on this thread: the timings are not shared

from _setup import setup  # noqa: E402

setup()

from django.core.management import call_command  # noqa: E402

from chatbot.models import Bot  # noqa: E402
from knowledge import embeddings  # noqa: E402
from knowledge.docs.retrieval import passages_search  # noqa: E402
from knowledge.docs.retrieval_index import top_rows  # noqa: E402
from knowledge.docs.retrieval_store import Searchable, searchable_for  # noqa: E402
from knowledge.docs.services import source_add_file, source_process  # noqa: E402
from knowledge.models import Passage, PassageEmbedding, Source  # noqa: E402

OUT_OF_SCOPE = 500  # banking77 test questions asked


def stackfaq() -> list[dict]:
    path = require(DATASETS / "stackfaq" / "stackExchange-FAQ.json")
    return json.loads(path.read_text(encoding="utf-8"))["root"]["qapair"]


def paraphrases(thread: dict) -> list[str]:
    return [p.strip() for p in thread["rephr"] if p and p.strip() not in ("", "*")]  # "*": a separator


def banking_questions(n: int) -> list[str]:
    with open(require(DATASETS / "banking77" / "test.csv"), encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    return random.Random(0).sample(texts, n)


def build_help_center(threads: list[dict], model: str) -> tuple[Bot, dict[int, int], float]:
    """The bot, thread number -> its source id, and pages indexed per minute."""
    bot = Bot.objects.create(name=f"stackfaq-{model}", embedding_model=model)
    pages: dict[int, int] = {}
    started = time.perf_counter()
    for n, thread in enumerate(threads):
        text = "\n\n".join(a.strip() for a in thread["answer"] if a and a.strip())
        markdown = f"# {thread['question'].strip()}\n\n{text}\n"
        source = source_add_file(bot=bot, filename=f"faq-{n}.md", data=markdown.encode())
        source = source_process(source.pk)
        if source.status != Source.Status.READY:
            print(f"  page {n} failed: {source.last_error}")
        pages[n] = source.pk
    per_minute = len(threads) / (time.perf_counter() - started) * 60
    return bot, pages, per_minute


async def ask(bot: Bot, questions: list[str]) -> tuple[list[list[int]], list[float]]:
    hits, times = [], []
    await passages_search(bot, "warm up")  # builds the index and its fit
    for question in questions:
        started = time.perf_counter()
        found = await passages_search(bot, question, limit=5)
        times.append((time.perf_counter() - started) * 1000)
        hits.append([h.source_id for h in found])
    return hits, times


def quality(model: str, threads: list[dict], out_of_scope: list[str]) -> None:
    bot, pages, per_minute = build_help_center(threads, model)
    passages = Passage.objects.filter(bot=bot).count()
    queries = [(p, pages[n]) for n, t in enumerate(threads) for p in paraphrases(t)]
    started = time.perf_counter()
    searchable = searchable_for(bot.pk)
    fit_seconds = time.perf_counter() - started
    hits, times = asyncio.run(ask(bot, [q for q, _ in queries] + out_of_scope))
    answerable = hits[: len(queries)]
    recall = {
        k: sum(expected in found[:k] for (_, expected), found in zip(queries, answerable, strict=True))
        / len(queries)
        for k in (1, 3, 5)
    }
    answered = sum(bool(found) for found in answerable) / len(queries)
    ranked = ranking_alone(searchable, model, [q for q, _ in queries])
    ungated = {
        k: sum(expected in found[:k] for (_, expected), found in zip(queries, ranked, strict=True))
        / len(queries)
        for k in (1, 3, 5)
    }
    nothing = sum(not found for found in hits[len(queries) :]) / len(out_of_scope)
    fits = searchable.fitted
    thresholds = {("CJK" if k else "latin"): round(f.threshold, 3) for k, f in fits.by_script.items()}
    print(
        f"{model}: {len(threads)} pages, {passages} passages, indexed at {per_minute:.0f} pages/min; "
        f"index + fit {fit_seconds:.2f}s, threshold {thresholds}"
    )
    print(
        f"  {len(queries)} paraphrases: recall@1 {recall[1]:.3f}  @3 {recall[3]:.3f}  @5 {recall[5]:.3f}  "
        f"(some passage returned: {answered:.3f})"
    )
    print(
        f"  ranking alone (every question's 5 best pages, no relevance judged): recall@1 {ungated[1]:.3f}  "
        f"@3 {ungated[3]:.3f}  @5 {ungated[5]:.3f}"
    )
    print(f"  {len(out_of_scope)} banking77 questions (out of scope) that retrieved nothing: {nothing:.3f}")
    print(f"  search: median {statistics.median(times):.1f} ms")


def ranking_alone(searchable: Searchable, model: str, questions: list[str]) -> list[list[int]]:
    """Each question's five best pages (source ids) as the index ranks them."""
    index, encoder = searchable.index, embeddings.get_encoder(model)
    vectors = encoder.encode(questions)
    scored = index.scored(vectors, questions, [encoder.unknown_fraction(q) for q in questions])
    out = []
    for rows in top_rows(scored.score, 30):
        pages = list(dict.fromkeys(index.rows[r].source_id for r in rows if r >= 0))
        out.append(pages[:5])
    return out


def synthetic_bot(size: int, texts: list[str], rng: np.random.Generator) -> Bot:
    bot = Bot.objects.create(name=f"docs-{size}")
    model, dim = embeddings.model_name(), embeddings.get_encoder().dim
    per_page = 5
    sources = Source.objects.bulk_create(
        [
            Source(bot=bot, kind=Source.Kind.URL, url=f"https://docs.example/{n}", status="ready")
            for n in range(size // per_page)
        ]
    )
    rows = [
        Passage(
            source=source,
            bot=bot,
            position=p,
            title=f"Page {source.pk}",
            headings=[f"Page {source.pk}", f"Section {p} of page {source.pk}"],
            text=texts[(source.pk * per_page + p) % len(texts)],
            text_hash=str(source.pk * per_page + p),
        )
        for source in sources
        for p in range(per_page)
    ]
    Passage.objects.bulk_create(rows, batch_size=2000)
    vectors = rng.normal(size=(len(rows), dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = Passage.objects.filter(bot=bot).order_by("id").values_list("id", flat=True)
    PassageEmbedding.objects.bulk_create(
        [
            PassageEmbedding(passage_id=pid, model_name=model, dim=dim, vector=v.astype("<f4").tobytes())
            for pid, v in zip(ids, vectors, strict=True)
        ],
        batch_size=2000,
    )
    return bot


def latency(threads: list[dict], sizes: list[int]) -> None:
    texts = [a.strip()[:1500] for t in threads for a in t["answer"] if a and a.strip()]
    questions = [p for t in threads for p in paraphrases(t)][:300]
    rng = np.random.default_rng(0)
    for size in sizes:
        bot = synthetic_bot(size, texts, rng)
        started = time.perf_counter()
        searchable = searchable_for(bot.pk)
        build = time.perf_counter() - started
        index = searchable.index
        megabytes = (index.matrix.nbytes + index.centroids.nbytes) / 2**20
        if index.bm25 is not None:
            bm25 = index.bm25.matrix
            megabytes += (bm25.data.nbytes + bm25.indices.nbytes + bm25.indptr.nbytes) / 2**20
            megabytes += (index.bm25.dense.nbytes if index.bm25.dense is not None else 0) / 2**20
        fits = searchable.fitted
        seconds = max((f.seconds for f in fits.by_script.values()), default=0.0)
        _, times = asyncio.run(ask(bot, questions))
        print(
            f"{size:>5} passages: search median {statistics.median(times):.1f} ms, "
            f"p95 {sorted(times)[int(0.95 * (len(times) - 1))]:.1f} ms; index + fit {build:.2f}s "
            f"(fit {seconds:.2f}s); vectors + BM25 {megabytes:.1f} MB"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="*", default=[embeddings.DEFAULT_MODEL], help="None: latency only.")
    parser.add_argument("--sizes", nargs="*", type=int, default=[1000, 5000], help="Passages per bot timed.")
    parser.add_argument("--no-latency", action="store_true")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    threads = stackfaq()
    out_of_scope = banking_questions(OUT_OF_SCOPE)
    for model in args.models:
        quality(model, threads, out_of_scope)
    if not args.no_latency:
        latency(threads, args.sizes)


if __name__ == "__main__":
    main()
