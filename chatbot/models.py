from __future__ import annotations

import secrets
import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone


def new_public_key() -> str:
    # Never starting with "-" or "_": a key is passed on command lines (--bot KEY).
    while True:
        key = secrets.token_urlsafe(18)
        if key[0].isalnum():
            return key


def new_bot_secret() -> str:
    return secrets.token_urlsafe(32)


def validate_origins(value: object) -> None:
    if not isinstance(value, list) or not all(isinstance(o, str) for o in value):
        raise ValidationError("Allowed origins must be a list of strings.")
    for origin in value:
        if not origin.startswith(("http://", "https://")) or origin.rstrip("/") != origin:
            raise ValidationError(
                f"{origin!r} is not an origin: use scheme://host[:port] with no path or trailing slash."
            )


class Bot(models.Model):
    """One chatbot per website."""

    name = models.CharField(max_length=100)
    public_key = models.CharField(max_length=64, unique=True, default=new_public_key, editable=False)
    # Signs visitor tokens; never sent to browsers.
    secret = models.CharField(max_length=128, default=new_bot_secret, editable=False)
    allowed_origins = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_origins],
        help_text='Origins allowed to embed the widget, e.g. ["https://shop.example"].',
    )
    greeting = models.TextField(blank=True, default="Hi! How can I help you today?")
    system_prompt = models.TextField(
        blank=True,
        default="You are a friendly, concise customer-service assistant for this website.",
    )

    embedding_model = models.CharField(
        max_length=200,
        blank=True,
        help_text="Sentence-embedding model for this bot's knowledge base: a model name "
        "(all-MiniLM-L6-v2, multilingual-e5-small, universal-sentence-encoder-multilingual) or a local "
        "model folder. Empty: EMBEDDING_MODEL, or EMBEDDING_MODEL_CJK when 10% or more of the questions "
        "are in Chinese, Japanese or Korean.",
    )

    class ThresholdSource(models.TextChoices):
        AUTO = "auto", "Automatic (calibrated from the knowledge base)"
        LABELLED = "labelled", "From labelled questions (kb_calibrate)"
        PINNED = "pinned", "Pinned by an admin"

    threshold_source = models.CharField(
        max_length=10,
        choices=ThresholdSource.choices,
        default=ThresholdSource.AUTO,
        help_text="Automatic: the thresholds below are ignored and chosen from the knowledge base itself "
        "for the target precision. Pinned or labelled: the thresholds below are used as they are.",
    )
    answer_only_from_knowledge = models.BooleanField(
        default=True,
        help_text="When neither a knowledge-base entry nor a passage of the company's documents is "
        "relevant, say so and offer a person instead of asking the LLM for a general answer.",
    )
    target_precision = models.FloatField(
        default=0.95,
        validators=[MinValueValidator(0.5), MaxValueValidator(0.999)],
        help_text="Share of knowledge-base answers that should be right; the automatic answer threshold "
        "is chosen for it.",
    )
    answer_threshold = models.FloatField(
        default=0.80,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Knowledge-base confidence at or above which the stored answer is sent as is.",
    )
    reference_threshold = models.FloatField(
        # Low on purpose: a paraphrase the matcher is unsure of (confidence 0.3-0.7) still
        # reaches the LLM as a reference; unrelated questions score near 0.
        default=0.25,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Confidence at or above which the best entries are given to the LLM as references.",
    )
    llm_provider = models.CharField(
        max_length=20,
        blank=True,
        choices=[("openai", "OpenAI-compatible"), ("dashscope", "Qwen (DashScope)"), ("zhipu", "Zhipu GLM")],
        help_text="Empty: use the LLM_PROVIDER setting.",
    )
    llm_model = models.CharField(max_length=100, blank=True, help_text="Empty: use the LLM_MODEL setting.")
    temperature = models.FloatField(default=0.3, validators=[MinValueValidator(0.0), MaxValueValidator(2.0)])
    top_p = models.FloatField(default=1.0, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)])
    max_tokens = models.PositiveIntegerField(
        default=512, validators=[MinValueValidator(1), MaxValueValidator(32768)]
    )
    fallback_reply = models.TextField(
        blank=True,
        default="Sorry, I can't answer that right now. Would you like to talk to a person?",
    )
    is_active = models.BooleanField(default=True)
    # Bumped on every knowledge-base change; each server process compares it with the
    # revision of its in-memory index before a search (one indexed read, no reload).
    kb_revision = models.PositiveBigIntegerField(default=0, editable=False)
    # Bumped whenever the bot's documents' passages or their vectors change (knowledge.docs):
    # the passage index in memory is rebuilt when it moved.
    docs_revision = models.PositiveBigIntegerField(default=0, editable=False)
    # Bumped when a new automatic calibration is stored: read with kb_revision, so every
    # process picks it up without another query.
    calibration_stamp = models.PositiveBigIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(answer_threshold__gte=0, answer_threshold__lte=1),
                name="bot_answer_threshold_range",
            ),
            models.CheckConstraint(
                condition=Q(
                    reference_threshold__gte=0, reference_threshold__lte=models.F("answer_threshold")
                ),
                name="bot_reference_below_answer",
            ),
            models.CheckConstraint(
                condition=Q(target_precision__gte=0.5, target_precision__lte=0.999),
                name="bot_target_precision_range",
            ),
            models.CheckConstraint(
                condition=Q(temperature__gte=0, temperature__lte=2), name="bot_temperature_range"
            ),
            models.CheckConstraint(condition=Q(top_p__gte=0, top_p__lte=1), name="bot_top_p_range"),
            models.CheckConstraint(condition=Q(max_tokens__gte=1), name="bot_max_tokens_positive"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.reference_threshold > self.answer_threshold:
            raise ValidationError(
                {"reference_threshold": "The reference threshold must not exceed the answer threshold."}
            )


class Visitor(models.Model):
    """A website visitor, identified by an opaque id the widget keeps (in a signed token)."""

    bot = models.ForeignKey(Bot, on_delete=models.PROTECT, related_name="visitors")
    uid = models.UUIDField(default=uuid.uuid4, editable=False)
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    language = models.CharField(max_length=16, blank=True)
    page_url = models.URLField(max_length=2000, blank=True)
    user_agent = models.CharField(max_length=500, blank=True)
    name = models.CharField(max_length=200, blank=True)
    email = models.EmailField(blank=True)
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["bot", "uid"], name="visitor_unique_uid_per_bot")]
        indexes = [models.Index(fields=["bot", "-last_seen"], name="visitor_bot_last_seen")]

    def __str__(self) -> str:
        return self.name or self.email or f"visitor {str(self.uid)[:8]}"


class Conversation(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        WAITING_FOR_AGENT = "waiting_for_agent", "Waiting for agent"
        WITH_AGENT = "with_agent", "With agent"
        CLOSED = "closed", "Closed"

    # Transcripts are records: a bot with conversations is deactivated, not deleted.
    bot = models.ForeignKey(Bot, on_delete=models.PROTECT, related_name="conversations")
    # Erasing a visitor (privacy request) erases their conversations.
    visitor = models.ForeignKey(Visitor, on_delete=models.CASCADE, related_name="conversations")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.OPEN)
    assigned_agent = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="assigned_conversations",
    )
    needs_followup = models.BooleanField(default=False)
    # When the visitor first asked for a person; bot replies before it were not deflections.
    handoff_requested_at = models.DateTimeField(null=True, blank=True)
    # Set when a support agent marks the conversation reviewed and done.
    resolved_at = models.DateTimeField(null=True, blank=True)
    summary = models.TextField(blank=True, help_text="Running summary of older turns, for the LLM context.")
    # Which messages the summary already covers, so a refresh folds in only newer ones.
    summary_until = models.PositiveBigIntegerField(
        null=True, blank=True, editable=False, help_text="Id of the newest message the summary covers."
    )
    started_at = models.DateTimeField(default=timezone.now)
    last_activity_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-last_activity_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["open", "waiting_for_agent", "with_agent", "closed"]),
                name="conversation_status_valid",
            ),
            models.CheckConstraint(
                condition=~Q(status="with_agent") | Q(assigned_agent__isnull=False),
                name="conversation_with_agent_has_agent",
            ),
        ]
        indexes = [
            models.Index(fields=["bot", "status", "-last_activity_at"], name="conv_bot_status_activity"),
            models.Index(fields=["visitor", "-last_activity_at"], name="conv_visitor_activity"),
            models.Index(fields=["-last_activity_at"], name="conv_activity"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.bot} ({self.get_status_display()})"


class MessageQuerySet(models.QuerySet["Message"]):
    def visible(self) -> MessageQuerySet:
        """What a conversation shows anyone (visitor, agents, exports, statistics): every
        message but a reply still being written (``pending``) and an empty row."""
        return self.exclude(status=Message.Status.PENDING).exclude(text="")


class Message(models.Model):
    class Role(models.TextChoices):
        VISITOR = "visitor", "Visitor"
        BOT = "bot", "Bot"
        AGENT = "agent", "Agent"
        SYSTEM = "system", "System"

    class Source(models.TextChoices):
        KNOWLEDGE = "knowledge", "Knowledge base"
        LLM = "llm", "LLM"
        AGENT = "agent", "Agent"
        FALLBACK = "fallback", "Fallback"

    class Status(models.TextChoices):
        COMPLETE = "complete", "Complete"
        PARTIAL = "partial", "Partial"
        FAILED = "failed", "Failed"
        # A reply being written: its text so far is saved while it streams.
        PENDING = "pending", "Being written"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=10, choices=Role.choices)
    text = models.TextField(blank=True)
    source = models.CharField(max_length=10, choices=Source.choices, blank=True)
    # Deleting a knowledge-base entry must not delete what the bot said with it.
    matched_entry = models.ForeignKey(
        "knowledge.Entry", on_delete=models.SET_NULL, null=True, blank=True, related_name="messages"
    )
    score = models.FloatField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.COMPLETE)
    # The person from the team who wrote an agent message (role agent, source agent).
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="authored_messages",
    )
    # The documents' passages the reply drew on: [{"title", "url", "passage_id"}], most relevant first.
    sources = models.JSONField(default=list, blank=True)
    llm_model = models.CharField(max_length=100, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    tokens_estimated = models.BooleanField(default=False)
    cost = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True, help_text="Time to first token, ms.")
    total_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # The widget's id for a visitor's message: a message sent again (after a reconnect,
    # from another tab) is recognised and acknowledged, never stored twice.
    client_id = models.CharField(max_length=100, null=True, blank=True, editable=False)
    # The server process writing a pending reply (ProcessHeartbeat.owner).
    owner = models.CharField(max_length=32, blank=True, editable=False)

    # visible(): what display code reads.
    objects = MessageQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(role__in=["visitor", "bot", "agent", "system"]), name="message_role_valid"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["complete", "partial", "failed", "pending"]),
                name="message_status_valid",
            ),
            models.UniqueConstraint(
                fields=["conversation", "client_id"],
                condition=Q(client_id__isnull=False) & ~Q(client_id=""),
                name="message_client_id_unique",
            ),
            # Only replies have a source; a visitor's words never do.
            models.CheckConstraint(
                condition=Q(role="visitor", source="")
                | (Q(role__in=["bot", "agent"]) & ~Q(source=""))
                | Q(role="system"),
                name="message_source_matches_role",
            ),
        ]
        indexes = [
            models.Index(fields=["conversation", "id"], name="message_conversation_id"),
            models.Index(fields=["source", "created_at"], name="message_source_created"),
            # The reaper's lookup: only replies being written are in it.
            models.Index(fields=["owner"], condition=Q(status="pending"), name="message_pending_owner"),
        ]

    def __str__(self) -> str:
        text = self.text if len(self.text) <= 60 else self.text[:57] + "..."
        return f"{self.role}: {text}"


class ProcessHeartbeat(models.Model):
    """A server process that is alive: it renews ``beat_at`` every few seconds while it runs
    (``chatbot.inflight``). Replies pending under an owner whose beat is stale were left by
    a process that died."""

    owner = models.CharField(max_length=32, primary_key=True)
    beat_at = models.DateTimeField()
    started_at = models.DateTimeField(default=timezone.now)
    host = models.CharField(max_length=255, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.host}:{self.pid} ({self.owner})"


class Feedback(models.Model):
    class Rating(models.TextChoices):
        UP = "up", "Thumbs up"
        DOWN = "down", "Thumbs down"

    # One rating per reply; the visitor may change their mind (update, not add).
    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="feedback")
    rating = models.CharField(max_length=4, choices=Rating.choices)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(rating__in=["up", "down"]), name="feedback_rating_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.get_rating_display()} on message {self.message_id}"
