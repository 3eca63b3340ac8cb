"""Writes of the agent workspace on conversations: notes, labels and review state."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from agents.models import Label, Note
from chatbot.models import Conversation

NOTE_MAX = 5000
LABEL_NAME_MAX = 50
LABELS_MAX = 20
# Letters (any script), digits, "-" and "_": what Label.name (a unicode SlugField) stores.
LABEL_NAME = re.compile(r"^[-\w]+\Z")
# Chinese keyboards type "，" and "、" between words; they separate labels like ",".
LABEL_SEPARATORS = re.compile(r"[,，、]")
REVIEW_ACTIONS = ("resolve", "reopen", "followup", "clear_followup")


def label_name_errors(name: str) -> list[str]:
    if len(name) > LABEL_NAME_MAX:
        return [f"“{name[:20]}…” is longer than {LABEL_NAME_MAX} characters."]
    if not LABEL_NAME.match(name):
        return [f"“{name}” may contain only letters, digits, “-” and “_” (no spaces)."]
    return []


def label_names_parse(*, raw: str) -> list[str]:
    """Comma-separated label names -> distinct, lower-cased, validated names, in order.
    Raises ValidationError listing every bad name."""
    parts = (unicodedata.normalize("NFKC", part).strip().lower() for part in LABEL_SEPARATORS.split(raw))
    names = list(dict.fromkeys(part for part in parts if part))
    errors = [error for name in names for error in label_name_errors(name)]
    if len(names) > LABELS_MAX:
        errors.append(f"At most {LABELS_MAX} labels per conversation.")
    if errors:
        raise ValidationError(errors)
    return names


@transaction.atomic
def note_create(*, conversation: Conversation, author: Any, text: str) -> Note:
    text = text.strip()
    if not text:
        raise ValidationError("A note needs some text.")
    if len(text) > NOTE_MAX:
        raise ValidationError(f"A note is at most {NOTE_MAX} characters.")
    return Note.objects.create(conversation=conversation, author=author, text=text)


@transaction.atomic
def conversation_labels_set(*, conversation: Conversation, names: list[str]) -> list[Label]:
    """Replace the conversation's labels with ``names``, creating labels that don't exist."""
    errors = [error for name in names for error in label_name_errors(name)]
    if errors:
        raise ValidationError(errors)
    names = list(dict.fromkeys(names))
    existing = set(Label.objects.filter(name__in=names).values_list("name", flat=True))
    # ignore_conflicts: another agent may create the same label at the same moment.
    Label.objects.bulk_create([Label(name=n) for n in names if n not in existing], ignore_conflicts=True)
    labels = list(Label.objects.filter(name__in=names))
    conversation.labels.set(labels)
    return labels


def _review_changes(action: str) -> dict[str, Any]:
    if action == "resolve":
        return {"resolved_at": timezone.now(), "needs_followup": False}
    if action == "reopen":
        return {"resolved_at": None}
    if action == "followup":
        return {"needs_followup": True, "resolved_at": None}
    if action == "clear_followup":
        return {"needs_followup": False}
    raise ValidationError(f"Unknown review action {action!r}.")


@transaction.atomic
def conversation_review_set(*, conversation: Conversation, action: str) -> Conversation:
    """Mark the conversation resolved / reopened / needing follow-up. Only the review
    fields are written, so a status change made meanwhile by the live chat is kept."""
    changes = _review_changes(action)
    Conversation.objects.filter(pk=conversation.pk).update(**changes)
    for name, value in changes.items():
        setattr(conversation, name, value)
    return conversation
