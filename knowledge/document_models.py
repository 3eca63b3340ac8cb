"""The company's documents: a ``Source`` (a file, a page, a sitemap or a crawl), the
``Passage``s its text is split into, and their vectors per embedding model."""

from __future__ import annotations

import hashlib

from django.db import models
from django.utils import timezone

from chatbot.models import Bot


class Source(models.Model):
    class Kind(models.TextChoices):
        FILE = "file", "File"
        URL = "url", "Web page"
        SITEMAP = "sitemap", "Sitemap"  # its pages are sources of kind page
        CRAWL = "crawl", "Site crawl"  # from a start URL; its pages are sources of kind page
        PAGE = "page", "Page of a sitemap or crawl"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Being fetched and indexed"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="sources")
    parent = models.ForeignKey(
        "self",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="pages",
        help_text="The sitemap or crawl this page was found by.",
    )
    kind = models.CharField(max_length=10, choices=Kind.choices)
    title = models.CharField(max_length=500, blank=True)
    url = models.URLField(max_length=2000, blank=True)
    filename = models.CharField(max_length=255, blank=True)
    # An uploaded file's bytes, kept so it can be indexed again (pages are fetched again).
    content = models.BinaryField(null=True, blank=True, editable=False)
    content_type = models.CharField(max_length=100, blank=True)
    # Crawl and sitemap limits: {"max_pages": N, "max_depth": N}.
    options = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    last_error = models.TextField(blank=True)
    content_hash = models.CharField(max_length=64, blank=True, help_text="sha256 of the extracted text")
    size = models.PositiveBigIntegerField(default=0, help_text="bytes fetched or uploaded")
    etag = models.CharField(max_length=500, blank=True)
    last_modified = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    fetched_at = models.DateTimeField(null=True, blank=True)
    indexed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["bot", "kind"], name="source_bot_kind"),
            models.Index(fields=["status"], name="source_status"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["bot", "url"], condition=~models.Q(url=""), name="source_unique_url_per_bot"
            )
        ]

    def __str__(self) -> str:
        return self.title or self.url or self.filename or f"source {self.pk}"

    @property
    def label(self) -> str:
        return self.title or self.filename or self.url


class Passage(models.Model):
    """A few hundred tokens of a source's text, under its page title and heading path."""

    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="passages")
    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="passages")
    position = models.PositiveIntegerField(help_text="Order within its source, from 0.")
    title = models.CharField(max_length=500, blank=True)
    headings = models.JSONField(default=list, blank=True, help_text="Heading path, outermost first.")
    text = models.TextField()
    tokens = models.PositiveIntegerField(default=0)
    text_hash = models.CharField(max_length=40)

    class Meta:
        ordering = ["source_id", "position"]
        indexes = [models.Index(fields=["bot", "id"], name="passage_bot_id")]
        constraints = [models.UniqueConstraint(fields=["source", "position"], name="passage_unique_position")]

    def __str__(self) -> str:
        return f"{self.title} › {' › '.join(self.headings)} [{self.position}]"

    @staticmethod
    def hash_text(text: str) -> str:
        return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()


class PassageEmbedding(models.Model):
    """A passage's vector as made by one embedding model (like ``Embedding`` for phrasings)."""

    passage = models.ForeignKey(Passage, on_delete=models.CASCADE, related_name="embeddings")
    model_name = models.CharField(max_length=200)
    dim = models.PositiveIntegerField()
    vector = models.BinaryField(help_text="float32 little-endian, L2-normalised")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["passage", "model_name"], name="passage_embedding_unique_model")
        ]

    def __str__(self) -> str:
        return f"{self.model_name} [{self.dim}] passage {self.passage_id}"
