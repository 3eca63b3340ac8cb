"""The embedding model as ONNX files: the only module that imports ``onnxruntime`` (and
the one place that exports with ``torch.onnx``). ``knowledge.embeddings`` decides when to
use them and checks their vectors against sentence-transformers.

Files live in EMBEDDING_CACHE_DIR; each is written under a temporary name and renamed, so
another process never reads half a file. The float export is named after the model
folder, its files and torch's version, the int8 copy after the float file and the
quantization.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings

# Dynamic quantization: int8 weights, activations quantized per call. Signed weights
# (U8S8) run on the VNNI/AVX-512 integer kernels; per-channel scales keep the vectors
# close to the float model's. bench/bench_embed_quant.py compares the options.
QUANT_WEIGHT_TYPE = "QInt8"
QUANT_PER_CHANNEL = True


def float_file(name: str, folder: str) -> Path:
    """Where the float export of the model ``name`` (loaded from ``folder``) lives."""
    import torch

    # The folder's files (size and time) are part of the name: a folder replaced by another
    # model (a re-tuned one, say) never reuses the old export.
    files = sorted(
        f"{path.relative_to(folder)}:{path.stat().st_size}:{path.stat().st_mtime_ns}"
        for path in Path(folder).rglob("*")
        if path.is_file()
    )
    digest = hashlib.sha1("|".join([folder, torch.__version__, *files]).encode()).hexdigest()[:12]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).name)
    return Path(settings.EMBEDDING_CACHE_DIR) / f"{safe}-{digest}.onnx"


def export(model: Any, probe: dict[str, np.ndarray], target: Path) -> None:
    """Export a Hugging Face encoder (``last_hidden_state`` for input ids and attention
    mask, batch and length dynamic), traced on the tokenized ``probe``."""
    import torch

    class Hidden(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    axes = {0: "batch", 1: "tokens"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Hidden(model.eval()),
            (torch.from_numpy(probe["input_ids"]), torch.from_numpy(probe["attention_mask"])),
            str(partial),
            input_names=["input_ids", "attention_mask"],
            output_names=["hidden"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "hidden": axes},
            opset_version=17,
            dynamo=False,
        )
    partial.replace(target)


def quantized_file(
    source: Path, *, weight_type: str = QUANT_WEIGHT_TYPE, per_channel: bool = QUANT_PER_CHANNEL
) -> Path:
    """Where the int8 copy of the float file ``source`` lives: next to it, named after the
    quantization and onnxruntime's version."""
    import onnxruntime

    tag = f"{weight_type.lower()}{'-pc' if per_channel else ''}-ort{onnxruntime.__version__}"
    return source.with_name(f"{source.stem}.{tag}.onnx")


def quantize(
    source: Path, target: Path, *, weight_type: str = QUANT_WEIGHT_TYPE, per_channel: bool = QUANT_PER_CHANNEL
) -> None:
    """Dynamic int8 quantization of the float file ``source`` into ``target``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    partial = target.with_suffix(f".{os.getpid()}.tmp")
    try:
        quantize_dynamic(source, partial, weight_type=QuantType[weight_type], per_channel=per_channel)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def session(path: Path) -> Any:
    """An inference session on the CPU with EMBEDDING_THREADS threads."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = settings.EMBEDDING_THREADS
    # Idle ONNX threads must sleep, not spin: on a small machine spinning steals the
    # CPU from the event loop and the database driver.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
