"""Adapt the embedding model to a knowledge base (``manage.py kb_tune``).

The general-purpose model places two phrasings of one entry ("I still haven't received
my card", "when will my card arrive?") less close than a company would like, and an
out-of-scope question is then hard to tell from a weakly matching in-scope one. Tuning
pulls each entry's phrasings together and pushes the other entries' apart: contrastive
training (in-batch negatives, symmetric cross-entropy over cosines) on pairs of
phrasings of one entry, every other pair of the batch from a different entry.

Only the knowledge base's own phrasings are used; no visitor question. The result is a
sentence-transformers folder: point EMBEDDING_MODEL at it and the phrasings are
re-embedded (``kb_reindex``). bench/bench_kb_quality.py measures what it does.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from knowledge import embeddings

MIN_ENTRIES = 4  # fewer, and a batch has almost no other entry to be told apart from
MAX_STEPS = 500  # the default number of steps: one pass over the pairs, at most this many
DEFAULT_BATCH = 64  # pairs per step, each from a different entry
LEARNING_RATE = 5e-5
SCALE = 20.0  # cosines x this are the logits


class TuningError(Exception):
    """The knowledge base or the output folder does not allow tuning; nothing was written."""


@dataclass(frozen=True)
class TuneReport:
    entries: int
    phrasings: int
    steps: int
    first_loss: float
    last_loss: float
    seconds: float
    folder: Path


def usable_groups(groups: Sequence[Sequence[str]]) -> list[list[str]]:
    """Each entry's distinct phrasings, for the entries that have at least two."""
    usable = []
    for group in groups:
        distinct = list(dict.fromkeys(text.strip() for text in group if text.strip()))
        if len(distinct) >= 2:
            usable.append(distinct)
    return usable


def tune(
    groups: Sequence[Sequence[str]],
    out: Path,
    *,
    base: str | None = None,
    steps: int | None = None,
    batch: int = DEFAULT_BATCH,
    learning_rate: float = LEARNING_RATE,
    seed: int = 0,
    progress: Callable[[int, int, float], None] | None = None,
) -> TuneReport:
    """Tune ``base`` (default: the EMBEDDING_MODEL setting) on ``groups`` (one list of
    phrasings per entry) and save it to ``out``, which must not exist yet: a folder once
    used as EMBEDDING_MODEL names the vectors stored with it, so a new model gets a new
    folder. ``steps`` defaults to one pass over the distinct pairs of phrasings (more
    over-fits a knowledge base with few phrasings per entry: measured on banking77 with
    three, 50 steps lost a fifth of the coverage the untuned model had).
    ``progress(step, steps, loss)`` after each step."""
    usable = usable_groups(groups)
    if len(usable) < MIN_ENTRIES:
        raise TuningError(
            f"tuning needs at least {MIN_ENTRIES} active entries with two or more phrasings "
            f"(question + alternatives); this knowledge base has {len(usable)}"
        )
    if batch < 2 or (steps is not None and steps < 1):
        raise TuningError("steps must be at least 1 and batch at least 2")
    steps = steps or one_pass(usable, batch)
    out = Path(out)
    if out.exists():
        raise TuningError(f"{out} already exists: tune into a new folder")
    started = time.perf_counter()
    model = embeddings.trainable_model(base)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    losses = []
    model.train()
    for step in range(1, steps + 1):
        anchors, positives = _pairs(usable, batch, rng)
        loss = _contrastive_loss(model, anchors, positives)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step, steps, losses[-1])
    model.eval()
    _save(model, out)
    return TuneReport(
        entries=len(usable),
        phrasings=sum(len(g) for g in usable),
        steps=steps,
        first_loss=losses[0],
        last_loss=losses[-1],
        seconds=time.perf_counter() - started,
        folder=out,
    )


def one_pass(groups: Sequence[Sequence[str]], batch: int) -> int:
    """Steps for about one pass over every pair of phrasings of one entry."""
    pairs = sum(len(group) * (len(group) - 1) // 2 for group in groups)
    return max(1, min(MAX_STEPS, math.ceil(pairs / min(batch, len(groups)))))


def _pairs(groups: list[list[str]], batch: int, rng: random.Random) -> tuple[list[str], list[str]]:
    """Two different phrasings of each of ``batch`` different entries."""
    anchors, positives = [], []
    for group in rng.sample(groups, min(batch, len(groups))):
        anchor, positive = rng.sample(group, 2)
        anchors.append(anchor)
        positives.append(positive)
    return anchors, positives


def _contrastive_loss(model: torch.nn.Module, anchors: list[str], positives: list[str]) -> torch.Tensor:
    """Row i's right answer is column i: each anchor must pick its own entry's phrasing
    out of the batch, and each phrasing its anchor."""
    a = torch.nn.functional.normalize(embeddings.trainable_vectors(model, anchors), dim=-1)
    p = torch.nn.functional.normalize(embeddings.trainable_vectors(model, positives), dim=-1)
    logits = SCALE * (a @ p.T)
    labels = torch.arange(len(anchors))
    cross_entropy = torch.nn.functional.cross_entropy
    return (cross_entropy(logits, labels) + cross_entropy(logits.T, labels)) / 2


def _save(model: torch.nn.Module, out: Path) -> None:
    """Written under a temporary name and renamed: a half-written folder is never a model."""
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        embeddings.save_model(model, partial)
        partial.rename(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
