"""The database side of automatic calibration: run it, store it, read what is in force.

A calibration is fitted on a bot's in-memory ranker (``knowledge.calibration``) and
stored per (bot, embedding model). ``matching`` asks for one whenever it builds an index
at a revision that has none: the request goes to the runtime's ``Runner`` (``runner()``),
one background thread, so no visitor waits for it, and the previous calibration serves
meanwhile.
Storing a new one bumps ``Bot.calibration_stamp``, which every process reads with the
knowledge base's revision, so each picks it up on its next search.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import close_old_connections, connection
from django.db.models import F
from django.utils import timezone

from chatbot.models import Bot
from chatbot.runtime import RuntimeClosed, runtime
from knowledge import calibration, embeddings
from knowledge.confidence import Calibrator
from knowledge.models import Calibration
from knowledge.ranking import Ranker

log = logging.getLogger(__name__)
NEVER = 1.01  # an answer threshold no confidence reaches
CLOSE_WAIT = 10.0  # seconds a closing runtime waits for the calibration under way


@dataclass(frozen=True)
class Calibrated:
    """What ``matching`` needs of a stored calibration."""

    calibrator: Calibrator
    answer_threshold: float | None
    reference_threshold: float
    kb_revision: int


@dataclass(frozen=True)
class Thresholds:
    answer: float
    reference: float
    source: str  # "auto" | "labelled" | "pinned" | "uncalibrated" (auto, before the first calibration)


def calibrated_read(bot_id: int, model: str) -> Calibrated | None:
    row = (
        Calibration.objects.filter(bot_id=bot_id, model_name=model, status=Calibration.Status.OK)
        .values("calibrator", "answer_threshold", "reference_threshold", "kb_revision")
        .first()
    )
    if row is None:
        return None
    calibrator = Calibrator.from_dict(row["calibrator"])
    if calibrator is None:
        return None
    return Calibrated(
        calibrator, row["answer_threshold"], row["reference_threshold"] or 0.0, row["kb_revision"]
    )


def calibration_needed(bot_id: int, model: str, revision: int) -> bool:
    """True unless a calibration (of any outcome) was already made at ``revision``."""
    return not Calibration.objects.filter(bot_id=bot_id, model_name=model, kb_revision=revision).exists()


def thresholds_for(bot: Bot, calibrated: Calibrated | None) -> Thresholds:
    if bot.threshold_source != Bot.ThresholdSource.AUTO:
        return Thresholds(bot.answer_threshold, bot.reference_threshold, bot.threshold_source)
    if calibrated is None:
        return Thresholds(bot.answer_threshold, bot.reference_threshold, "uncalibrated")
    answer = NEVER if calibrated.answer_threshold is None else calibrated.answer_threshold
    return Thresholds(answer, min(calibrated.reference_threshold, answer), "auto")


class References:
    """The reference vectors the runtime has loaded, by model (a runtime part)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_model: dict[str, calibration.Reference] = {}

    def get(self, model: str) -> calibration.Reference:
        with self._lock:
            if model not in self._by_model:
                self._by_model[model] = _reference_load(model)
            return self._by_model[model]


def reference_for(model: str) -> calibration.Reference:
    """The shipped reference texts encoded by ``model``: once per process, and kept on disk
    (EMBEDDING_CACHE_DIR) so a restart doesn't encode them again (seconds on two cores)."""
    return runtime().part(References).get(model)


def _reference_load(model: str) -> calibration.Reference:
    negatives, pairs = calibration.out_of_scope_questions(), calibration.paraphrase_pairs()
    texts = [*negatives, *(q for q, _ in pairs), *(p for _, p in pairs)]
    digest = hashlib.sha1("\n".join([embeddings.model_fingerprint(model), *texts]).encode()).hexdigest()[:16]
    path = Path(settings.EMBEDDING_CACHE_DIR) / f"reference-{digest}.npy"
    vectors = None
    if path.exists():
        try:
            vectors = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            vectors = None  # a damaged file: encode again
    if vectors is None or vectors.shape[0] != len(texts):
        vectors = embeddings.encode_documents(texts, model)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(partial, vectors)
            partial.replace(path)
        except OSError:
            log.warning("could not cache the reference vectors in %s", path.parent, exc_info=True)
    return calibration.Reference.from_vectors(vectors, negatives, pairs)


def bot_calibrate(*, bot_id: int, revision: int, model: str, ranker: Ranker) -> Calibration:
    """Fit and store the bot's calibration for ``ranker`` (its index at ``revision``)."""
    bot = Bot.objects.get(pk=bot_id)
    encoder = embeddings.get_encoder(model)
    fields: dict[str, Any] = {"kb_revision": revision, "target_precision": bot.target_precision}
    try:
        result = calibration.calibrate(
            ranker,
            unknown=encoder.unknown_fraction,
            reference=reference_for(model),
            encode=lambda texts: embeddings.encode_documents(texts, model),
            target=bot.target_precision,
        )
    except calibration.CalibrationImpossible as err:
        fields.update(status=Calibration.Status.IMPOSSIBLE, message=str(err), calibrator={}, curve=[])
    else:
        fields.update(
            status=Calibration.Status.OK,
            message="",
            calibrator=result.calibrator.as_dict(),
            answer_threshold=result.answer_threshold,
            reference_threshold=result.reference_threshold,
            curve=result.curve,
            confused=result.confused,
            counts=result.counts,
            estimated=result.estimated,
            seconds=round(result.seconds, 3),
        )
    fields["ran_at"] = timezone.now()
    row, _ = Calibration.objects.update_or_create(bot_id=bot_id, model_name=model, defaults=fields)
    if row.status == Calibration.Status.OK:
        Bot.objects.filter(pk=bot_id).update(calibration_stamp=F("calibration_stamp") + 1)
    log.info("calibrated bot %s at revision %s: %s %s", bot_id, revision, row.status, row.message)
    return row


class Runner:
    """Runs calibration jobs one at a time on a background thread (a runtime part). A bot
    asked for again while its job waits gets only the newest job (one calibration, with the
    newest index). When the runtime closes, jobs still waiting are dropped and the running
    one is given ``CLOSE_WAIT`` seconds to end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, Callable[[], None]] = {}
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.failures = 0

    def schedule(self, bot_id: int, job: Callable[[], None]) -> None:
        with self._lock:
            if self._closed:
                return  # shutting down: the next process calibrates
            self._pending[bot_id] = job
            self._idle.clear()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="kb-calibration", daemon=True)
                self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Until nothing is pending or running (tests, commands). False on timeout."""
        return self._idle.wait(timeout)

    def close(self) -> None:
        """Drop the jobs waiting and wait for the one under way (blocking: at shutdown)."""
        with self._lock:
            self._closed = True
            self._pending.clear()
        self._idle.wait(CLOSE_WAIT)

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    if not self._pending:
                        self._thread = None
                        self._idle.set()
                        return
                    bot_id, job = self._pending.popitem()
                self._one(bot_id, job)
        finally:
            connection.close()

    def _one(self, bot_id: int, job: Callable[[], None]) -> None:
        close_old_connections()
        try:
            job()
        except Bot.DoesNotExist:
            pass  # deleted meanwhile
        except RuntimeClosed:
            log.info("calibration of bot %s left for the next process: shutting down", bot_id)
        except Exception:  # never kill the thread: the previous calibration still serves
            self.failures += 1
            log.exception("calibration of bot %s failed", bot_id)


def calibration_job(bot_id: int, revision: int, model: str, ranker: Ranker) -> Callable[[], None]:
    def job() -> None:
        if not calibration_needed(bot_id, model, revision):
            return  # made meanwhile (the admin's button, a command)
        try:
            bot_calibrate(bot_id=bot_id, revision=revision, model=model, ranker=ranker)
        except (Bot.DoesNotExist, RuntimeClosed):
            raise
        except Exception as err:
            _failure_store(bot_id, revision, model, f"{type(err).__name__}: {err}"[:500])
            raise

    return job


def _failure_store(bot_id: int, revision: int, model: str, message: str) -> None:
    """Record a failure for the admin, unless a working calibration would be replaced."""
    ok = Calibration.objects.filter(bot_id=bot_id, model_name=model, status=Calibration.Status.OK)
    if ok.exists():
        ok.update(message=f"the last re-run failed: {message}")
        return
    Calibration.objects.update_or_create(
        bot_id=bot_id,
        model_name=model,
        defaults={
            "kb_revision": revision,
            "status": Calibration.Status.FAILED,
            "message": message,
            "target_precision": 0.0,
            "ran_at": timezone.now(),
        },
    )


def runner() -> Runner:
    """The process's calibration runner."""
    return runtime().part(Runner)
