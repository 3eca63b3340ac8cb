"""Knowledge-base match() latency and the micro-batching gain.

A throw-away SQLite database gets one bot per size (1k, 10k, 100k phrasings: entries
of five phrasings each). Phrasing vectors are synthetic (random directions around each
entry's centre) and written straight to the database, so the benchmark needs no hour of
encoding; queries are real questions, really encoded, through the full match() path
(revision check, encoding, ranking). The query cache is off.

The micro-batching gain is bounded by the model's own gain from batching on this CPU:
the last line prints the model alone in batches of 32 against one caller's whole match:
the ratio 32 callers would reach if nothing but the model cost anything.

Run: .venv/bin/python bench/bench_kb_speed.py
"""

from __future__ import annotations

import asyncio
import csv
import os
import statistics
import tempfile
import time

import numpy as np
from _setup import DATASETS, require

DB = os.path.join(tempfile.mkdtemp(prefix="kb-speed-"), "bench.sqlite3")
os.environ["DATABASE_URL"] = f"sqlite:///{DB}"
os.environ["EMBEDDING_QUERY_CACHE"] = "0"
# Seeding writes the vectors directly; a background calibration of the 100k-phrasing bot
# would compete with the timings for the two cores.
os.environ["KB_AUTO_CALIBRATE"] = "0"

from _setup import setup  # noqa: E402

setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from chatbot.models import Bot  # noqa: E402
from knowledge import embeddings, matching  # noqa: E402
from knowledge.models import Alternative, Embedding, Entry  # noqa: E402

PER_ENTRY = 5


def seed(phrasings: int, rng: np.random.Generator) -> Bot:
    bot = Bot.objects.create(name=f"bench-{phrasings}")
    model, dim = embeddings.model_name(), embeddings.get_encoder().dim
    entries = Entry.objects.bulk_create(
        [
            Entry(bot=bot, question=f"question {n}", answer=f"answer {n}")
            for n in range(phrasings // PER_ENTRY)
        ]
    )
    alternatives, vectors = [], []
    for entry in entries:
        centre = rng.normal(size=dim)
        texts = [entry.question] + [f"{entry.question} variant {v}" for v in range(1, PER_ENTRY)]
        alternatives += [Alternative(entry=entry, text=t) for t in texts[1:]]
        for text in texts:
            vector = centre + 0.5 * rng.normal(size=dim)
            vector = (vector / np.linalg.norm(vector)).astype("<f4")
            vectors.append(
                Embedding(
                    entry=entry,
                    text=text,
                    text_hash=Embedding.hash_text(text),
                    model_name=model,
                    dim=dim,
                    vector=vector.tobytes(),
                )
            )
    Alternative.objects.bulk_create(alternatives, batch_size=5000)
    Embedding.objects.bulk_create(vectors, batch_size=2000)
    Bot.objects.filter(pk=bot.pk).update(kb_revision=1)
    bot.refresh_from_db()
    return bot


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def questions() -> list[str]:
    path = require(DATASETS / "banking77" / "test.csv")
    with open(path, encoding="utf-8") as handle:
        return [row["text"] for row in csv.DictReader(handle)]


def latency(bot: Bot, texts: list[str]) -> tuple[float, float, float]:
    matching.match(bot, "warm up the index")  # first call builds the in-memory index
    times = []
    for text in texts:
        started = time.perf_counter()
        matching.match(bot, text)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), percentile(times, 0.95), len(matching.snapshot_for(bot.pk).ranker.plain)


async def throughput(bot: Bot, texts: list[str], callers: int) -> float:
    queue = list(texts)

    async def caller() -> None:
        while queue:
            await matching.amatch(bot, queue.pop())

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return len(texts) / (time.perf_counter() - started)


def encode_only(texts: list[str]) -> float:
    encoder = embeddings.get_encoder()
    times = []
    for text in texts:
        started = time.perf_counter()
        encoder.encode([text])
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def model_per_query(texts: list[str], batch: int) -> float:
    """Milliseconds per query of the model alone, ``batch`` queries per call."""
    encoder = embeddings.get_encoder()
    encoder.encode(texts[:batch])
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        encoder.encode(texts[start : start + batch])
    return (time.perf_counter() - started) * 1000 / len(texts)


def main() -> None:
    call_command("migrate", verbosity=0)
    rng = np.random.default_rng(0)
    texts = questions()
    print(
        f"encoding alone (one query, fast path {embeddings.get_encoder().fast}): "
        f"median {encode_only(texts[:100]):.1f} ms"
    )
    print("match() for one query, sequential (200 distinct questions each):")
    bots = {}
    for size in (1_000, 10_000, 100_000):
        started = time.perf_counter()
        bots[size] = seed(size, rng)
        seeded = time.perf_counter() - started
        p50, p95, rows = latency(bots[size], texts[(size // 1000) * 3 : (size // 1000) * 3 + 200])
        print(
            f"  {rows:>7,} phrasings: median {p50:6.1f} ms   p95 {p95:6.1f} ms   (seeded in {seeded:.0f} s)"
        )
    bot = bots[10_000]
    batcher = embeddings.get_batcher()
    # This machine's speed drifts by tens of percent within a minute: one caller and 32
    # callers take turns, three rounds each, and the medians are compared.
    ones, manys, batches, encoded = [], [], 0, 0
    for _ in range(3):
        ones.append(asyncio.run(throughput(bot, texts[1000:1300], 1)))
        before = (batcher.batches, batcher.encoded)
        manys.append(asyncio.run(throughput(bot, texts[1300:2260], 32)))
        batches, encoded = batches + batcher.batches - before[0], encoded + batcher.encoded - before[1]
    one, many = statistics.median(ones), statistics.median(manys)
    print(
        f"amatch() throughput at 10k phrasings (median of 3 alternating rounds): 1 caller {one:.0f}/s, "
        f"32 concurrent callers {many:.0f}/s = {many / one:.2f}x (target >= 3x; per round "
        f"{', '.join(f'{m / o:.2f}x' for o, m in zip(ones, manys, strict=True))}; "
        f"average batch {encoded / max(batches, 1):.1f} queries)"
    )
    # What this CPU allows: if nothing but the model cost anything under load, 32 callers
    # would go at the model's own batched rate.
    batched = model_per_query(texts[1300:2260], 32)
    print(
        f"ceiling on this machine: the model alone (EMBEDDING_THREADS={settings.EMBEDDING_THREADS}) takes "
        f"{batched:.2f} ms per query in batches of 32; with every other cost of a match at zero, 32 "
        f"callers would reach {1000 / batched:.0f}/s = {1000 / batched / one:.2f}x the one caller's rate"
    )


if __name__ == "__main__":
    main()
