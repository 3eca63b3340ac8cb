"""What support staff add to conversations: assignments, labels, notes, corrections."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from chatbot.models import Bot, Conversation, Message
from knowledge.models import Entry


class Assignment(models.Model):
    """Restricts an agent to some bots. An agent with no assignment sees every bot."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="bot_assignments"
    )
    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="agent_assignments")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "bot"], name="assignment_unique_user_bot")]

    def __str__(self) -> str:
        return f"{self.user} → {self.bot}"


class Label(models.Model):
    """A tag agents put on conversations ("refund", "bug", ...)."""

    name = models.SlugField(max_length=50, unique=True, allow_unicode=True)
    conversations = models.ManyToManyField(Conversation, blank=True, related_name="labels")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Note(models.Model):
    """An agent's private note on a conversation (never shown to the visitor)."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="notes")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="conversation_notes"
    )
    text = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.text[:60]


class Correction(models.Model):
    """A reviewed bot reply and the knowledge-base entry it was turned into."""

    class Kind(models.TextChoices):
        NEW_ENTRY = "entry", "New entry"
        ALTERNATIVE = "alternative", "Alternative phrasing"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="corrections")
    entry = models.ForeignKey(Entry, on_delete=models.CASCADE, related_name="corrections")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    question = models.TextField(help_text="The visitor question that was added to the entry.")
    agent = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="corrections"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"message {self.message_id} → entry {self.entry_id}"


class QuestionVector(models.Model):
    """The embedding of a visitor question, kept so the gap report embeds each question once."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="question_vectors")
    model_name = models.CharField(max_length=200)
    vector = models.BinaryField(help_text="float32 little-endian, L2-normalised")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "model_name"], name="question_vector_unique")
        ]

    def __str__(self) -> str:
        return f"vector of message {self.message_id}"


class Presence(models.Model):
    """When an agent's live console last showed a sign of life (its socket connected or
    pinged). Agents seen within AGENT_ONLINE_SECONDS are online for the visitors."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="presence"
    )
    last_seen = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return f"{self.user} seen {self.last_seen:%Y-%m-%d %H:%M:%S}"
