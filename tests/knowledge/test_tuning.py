from __future__ import annotations

import json
from collections.abc import Sequence
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from chatbot.models import Bot
from knowledge.embeddings import DEFAULT_MODEL, Encoder, get_encoder
from knowledge.onnx_models import float_file
from knowledge.services import entry_upsert
from knowledge.tuning import MAX_STEPS, TuningError, one_pass, tune, usable_groups

KB = [
    ["Where is my order?", "Has my parcel shipped yet?", "Track my package", "When will my delivery arrive?"],
    ["How do I return an item?", "I want to send this back", "Can I get a refund for a return?"],
    ["I forgot my password", "Reset my login", "I can't sign in to my account"],
    ["Can I pay with Alipay?", "Which payment methods do you accept?", "Do you take credit cards?"],
    ["Do you ship abroad?", "International shipping", "Can you deliver to Germany?"],
    ["Can I get an invoice?", "I need a receipt for my company", "Send me a VAT invoice"],
]


def margin(vectors: np.ndarray, groups: Sequence[Sequence[str]]) -> float:
    """Mean cosine of two phrasings of one entry minus that of phrasings of two entries."""
    labels = np.array([n for n, group in enumerate(groups) for _ in group])
    cosines = vectors @ vectors.T
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    return float(cosines[same & off_diagonal].mean() - cosines[~same].mean())


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tuning") / "tuned"
    report = tune(KB, out, steps=15, batch=6)
    assert report.entries == 6 and report.phrasings == 19 and report.steps == 15
    assert report.last_loss < report.first_loss
    return out


def test_only_entries_with_two_distinct_phrasings_are_used() -> None:
    groups = [["a", " a ", ""], ["b", "c"], ["d"], ["e", "f", "e"]]
    assert usable_groups(groups) == [["b", "c"], ["e", "f"]]


def test_the_default_is_one_pass_over_the_pairs_of_phrasings() -> None:
    assert one_pass([["a"] * 10] * 62, 64) == 45  # 62 x 45 pairs, 62 a step
    assert one_pass([["a"] * 3] * 62, 64) == 3
    assert one_pass([["a"] * 3] * 62, 31) == 6
    assert one_pass([["a"] * 200] * 100, 64) == MAX_STEPS


def test_tuning_pulls_an_entrys_phrasings_together_and_the_folder_is_a_usable_model(
    tuned: Path, tmp_path: Path
) -> None:
    texts = [text for group in KB for text in group]
    before = margin(get_encoder().encode(texts), KB)
    with override_settings(EMBEDDING_CACHE_DIR=str(tmp_path)):
        encoder = Encoder(str(tuned))  # what EMBEDDING_MODEL=<folder> loads, ONNX fast path included
    assert encoder.fast and encoder.dim == 384
    after = margin(encoder.encode(texts), KB)
    assert after > before + 0.05
    assert np.allclose(encoder.encode(texts[:3]), encoder._reference(texts[:3]), atol=1e-4)
    assert not (tuned.parent / ".tuned.partial").exists()  # written under a temporary name, renamed


def test_too_few_entries_with_several_phrasings_is_refused_and_nothing_written(tmp_path: Path) -> None:
    out = tmp_path / "tuned"
    with pytest.raises(TuningError, match="at least 4 active entries with two or more phrasings"):
        tune([*KB[:3], ["only one phrasing"]], out, steps=1)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "keep.txt").write_text("mine")
    with pytest.raises(TuningError, match="already exists"):
        tune(KB, tmp_path / "model", steps=1)
    assert (tmp_path / "model" / "keep.txt").read_text() == "mine"


def test_the_onnx_export_is_named_after_the_model_folders_files(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"first")
    first = float_file("model", str(folder))
    (folder / "weights.bin").write_bytes(b"second model")  # replaced by another model
    assert float_file("model", str(folder)) != first
    assert float_file("model", str(folder)) == float_file("model", str(folder))


@pytest.mark.django_db
def test_kb_tune_tunes_on_the_bots_active_entries(tmp_path: Path) -> None:
    bot = Bot.objects.create(name="Shop")
    for question, *alternatives in KB:
        entry_upsert(bot=bot, question=question, answer="yes", alternatives=alternatives)
    entry_upsert(bot=bot, question="Lonely question", answer="yes")  # one phrasing: not used
    entry_upsert(bot=bot, question="Old", answer="no", alternatives=["Retired"], is_active=False)
    out, stdout = tmp_path / "tuned", StringIO()
    call_command(
        "kb_tune",
        "--bot",
        bot.public_key,
        "--out",
        str(out),
        "--steps",
        "2",
        stdout=stdout,
        stderr=StringIO(),
    )
    text = stdout.getvalue()
    assert (
        f"Tuning {DEFAULT_MODEL} on 6 entries with two or more phrasings (1 with one are left out)." in text
    )
    assert "after 2 steps" in text
    assert f"EMBEDDING_MODEL={out.resolve()}" in text
    assert (out / "config.json").exists() and (out / "modules.json").exists()


@pytest.mark.django_db
def test_kb_tune_reports_a_knowledge_base_too_small_to_tune(tmp_path: Path) -> None:
    bot = Bot.objects.create(name="Tiny")
    entry_upsert(bot=bot, question="Where is my order?", answer="On its way", alternatives=["Track it"])
    with pytest.raises(CommandError, match="has 1"):
        call_command("kb_tune", "--bot", bot.public_key, "--out", str(tmp_path / "t"), stdout=StringIO())
    with pytest.raises(CommandError, match="No bot has the public key"):
        call_command("kb_tune", "--bot", "nope", "--out", str(tmp_path / "t"), stdout=StringIO())
    assert not (tmp_path / "t").exists()


def test_kb_evaluate_measures_a_tuned_model_named_by_model(
    tuned: Path, tmp_path: Path, settings: Any
) -> None:
    kb_file, queries_file = tmp_path / "kb.csv", tmp_path / "q.csv"
    kb_file.write_text(
        "id,question,answer,alternatives\n"
        + "".join(f'e{n},"{group[0]}",answer {n},"{group[1]}"\n' for n, group in enumerate(KB)),
        encoding="utf-8",
    )
    queries_file.write_text(
        "query,expected_id\n"
        + "".join(f'"{text}",e{n}\n' for n, group in enumerate(KB) for text in group[2:])
        + "What is the capital of France?,\n",
        encoding="utf-8",
    )

    def evaluate(*model: str) -> dict:
        out = StringIO()
        args = ["--kb", str(kb_file), "--queries", str(queries_file), "--json", "--timing-sample", "0"]
        call_command("kb_evaluate", *args, *model, stdout=out)
        return json.loads(out.getvalue())

    settings.EMBEDDING_CACHE_DIR = str(tmp_path / "cache")
    default, with_tuned = evaluate(), evaluate("--model", str(tuned))
    assert default["curve"] != with_tuned["curve"]  # another model's confidences
    assert with_tuned["top1"] >= default["top1"]
    with pytest.raises(CommandError, match="neither"):
        evaluate("--model", str(tmp_path / "no-such-model"))
