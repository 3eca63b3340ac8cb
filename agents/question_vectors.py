"""Embeddings of visitor questions, cached in QuestionVector so each is encoded once per model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from django.db import transaction

from agents.models import QuestionVector

LOOKUP_CHUNK = 500  # ids per IN (...) lookup, well under every database's parameter limit
ENCODE_BATCH = 256


def question_vectors_get(*, questions: Sequence[tuple[int, str]]) -> np.ndarray:
    """One L2-normalised float32 row per ``(message id, text)``, in the given order.

    Cached vectors of the current model are read; the missing ones are encoded and
    stored in bulk (a cache fill: a concurrent fill of the same rows is ignored)."""
    from knowledge import embeddings  # loads the model lazily, only when something is missing

    model = embeddings.model_name()
    ids = [pk for pk, _ in questions]
    cached: dict[int, np.ndarray] = {}
    for start in range(0, len(ids), LOOKUP_CHUNK):
        rows = QuestionVector.objects.filter(
            message_id__in=ids[start : start + LOOKUP_CHUNK], model_name=model
        ).values_list("message_id", "vector")
        cached.update((pk, np.frombuffer(bytes(blob), dtype="<f4")) for pk, blob in rows)
    missing = [(pk, text) for pk, text in questions if pk not in cached]
    for start in range(0, len(missing), ENCODE_BATCH):
        chunk = missing[start : start + ENCODE_BATCH]
        vectors = embeddings.encode_documents([text for _, text in chunk])
        with transaction.atomic():
            QuestionVector.objects.bulk_create(
                [
                    QuestionVector(message_id=pk, model_name=model, vector=vector.astype("<f4").tobytes())
                    for (pk, _), vector in zip(chunk, vectors, strict=True)
                ],
                ignore_conflicts=True,
            )
        cached.update((pk, vector) for (pk, _), vector in zip(chunk, vectors, strict=True))
    if not questions:
        return np.zeros((0, 0), dtype=np.float32)
    return np.vstack([cached[pk] for pk in ids]).astype(np.float32, copy=False)
