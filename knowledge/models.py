from __future__ import annotations

import hashlib

from django.db import models
from django.db.models import Q
from django.utils import timezone

from chatbot.models import Bot


class Tag(models.Model):
    name = models.SlugField(max_length=50, unique=True, allow_unicode=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Entry(models.Model):
    """A question the company has answered, with the phrasings visitors use for it."""

    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="entries")
    external_id = models.CharField(
        max_length=100, blank=True, help_text="Optional id from an imported file; imports upsert by it."
    )
    question = models.TextField()
    answer = models.TextField()
    tags = models.ManyToManyField(Tag, blank=True, related_name="entries")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "entries"
        ordering = ["bot", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["bot", "external_id"],
                condition=~Q(external_id=""),
                name="entry_unique_external_id_per_bot",
            ),
            models.CheckConstraint(condition=~Q(question=""), name="entry_question_not_empty"),
            models.CheckConstraint(condition=~Q(answer=""), name="entry_answer_not_empty"),
        ]
        indexes = [models.Index(fields=["bot", "is_active"], name="entry_bot_active")]

    def __str__(self) -> str:
        return self.question if len(self.question) <= 80 else self.question[:77] + "..."

    def phrasings(self) -> list[str]:
        """The question first, then every alternative phrasing, without duplicates."""
        seen: dict[str, None] = {self.question.strip(): None}
        for alt in self.alternatives.all():
            seen.setdefault(alt.text.strip(), None)
        return [text for text in seen if text]


class Alternative(models.Model):
    """Another way visitors ask the entry's question."""

    entry = models.ForeignKey(Entry, on_delete=models.CASCADE, related_name="alternatives")
    text = models.TextField()

    class Meta:
        ordering = ["id"]
        constraints = [models.CheckConstraint(condition=~Q(text=""), name="alternative_not_empty")]

    def __str__(self) -> str:
        return self.text


class Embedding(models.Model):
    """The vector of one phrasing, as made by one embedding model.

    Keyed by the phrasing's text and the model name, so an edited phrasing or a new
    model is simply a missing row that the indexer fills in.
    """

    entry = models.ForeignKey(Entry, on_delete=models.CASCADE, related_name="embeddings")
    text = models.TextField()
    text_hash = models.CharField(max_length=40, help_text="sha1 of the text, for uniqueness")
    model_name = models.CharField(max_length=200)
    dim = models.PositiveIntegerField()
    vector = models.BinaryField(help_text="float32 little-endian, L2-normalised")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["entry", "model_name", "text_hash"], name="embedding_unique_per_phrasing_and_model"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model_name} [{self.dim}] {self.text[:40]}"

    @staticmethod
    def hash_text(text: str) -> str:
        return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()


class AnswerEmbedding(models.Model):
    """The vector of an entry's answer as made by one model (its passage side), read by the
    confidence's answer features (``knowledge.confidence.ENTRY_FEATURES``).

    One per entry and model; ``text_hash`` tells whether it was made from the current answer.
    """

    entry = models.ForeignKey(Entry, on_delete=models.CASCADE, related_name="answer_embeddings")
    model_name = models.CharField(max_length=200)
    text_hash = models.CharField(
        max_length=40, help_text="sha1 of the answer's text as encoded (knowledge.answer_text.plain)"
    )
    dim = models.PositiveIntegerField()
    vector = models.BinaryField(help_text="float32 little-endian, L2-normalised")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["entry", "model_name"], name="answer_embedding_unique_per_model")
        ]

    def __str__(self) -> str:
        return f"{self.model_name} [{self.dim}] answer of entry {self.entry_id}"


class Calibration(models.Model):
    """A bot's automatic calibration for one embedding model (knowledge.calibration).

    Replaced whenever it is re-run; the row of the current model serves until then.
    """

    class Status(models.TextChoices):
        OK = "ok", "Calibrated"
        IMPOSSIBLE = "impossible", "Too little to calibrate from"
        FAILED = "failed", "Failed"

    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="calibrations")
    model_name = models.CharField(max_length=200)
    kb_revision = models.PositiveBigIntegerField(help_text="The knowledge base it was fitted on.")
    status = models.CharField(max_length=12, choices=Status.choices)
    message = models.TextField(blank=True)
    target_precision = models.FloatField()
    calibrator = models.JSONField(default=dict, blank=True)
    answer_threshold = models.FloatField(
        null=True, blank=True, help_text="None: no threshold reaches the target."
    )
    reference_threshold = models.FloatField(null=True, blank=True)
    curve = models.JSONField(default=list, blank=True)
    confused = models.JSONField(default=list, blank=True)
    counts = models.JSONField(default=dict, blank=True)
    estimated = models.JSONField(default=dict, blank=True)
    seconds = models.FloatField(default=0.0)
    ran_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["bot", "model_name"], name="calibration_unique_per_bot_and_model")
        ]

    def __str__(self) -> str:
        return f"{self.bot} / {self.model_name} @ {self.kb_revision}: {self.status}"


# The documents' models live in their own module; imported here so Django finds them.
from knowledge.document_models import Passage, PassageEmbedding, Source  # noqa: E402

__all__ = [
    "Alternative",
    "AnswerEmbedding",
    "Calibration",
    "Embedding",
    "Entry",
    "Passage",
    "PassageEmbedding",
    "Source",
    "Tag",
]
