"""Forms of the correction page (new entry, or alternative phrasing) and the gap report."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_unicode_slug
from django.db.models import QuerySet

from chatbot.models import Bot
from knowledge.models import Entry, Tag

if TYPE_CHECKING:
    from knowledge.matching import Candidate

ENTRY_CHOICES_MAX = 1000  # entries listed in the select besides the best matches
TAG_MAX_LENGTH = Tag._meta.get_field("name").max_length


class CorrectionEntryForm(forms.Form):
    """Turn the reply into a new knowledge-base entry."""

    question = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=4000)
    answer = forms.CharField(widget=forms.Textarea(attrs={"rows": 6}), max_length=20000)
    alternatives = forms.CharField(
        label="Other phrasings",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Optional, one per line.",
    )
    tags = forms.CharField(required=False, max_length=500, help_text="Optional, comma separated.")

    def clean_alternatives(self) -> list[str]:
        lines = (line.strip() for line in self.cleaned_data["alternatives"].splitlines())
        return list(dict.fromkeys(line for line in lines if line))

    def clean_tags(self) -> list[str]:
        names = [name.strip().lower() for name in self.cleaned_data["tags"].split(",")]
        names = list(dict.fromkeys(name for name in names if name))
        for name in names:
            try:
                validate_unicode_slug(name)
            except ValidationError:
                raise ValidationError(
                    f"“{name}” is not a valid tag: use letters, numbers, hyphens or underscores."
                ) from None
            if len(name) > TAG_MAX_LENGTH:
                raise ValidationError(f"Tags are at most {TAG_MAX_LENGTH} characters long.")
        return names


class CorrectionAlternativeForm(forms.Form):
    """Add the question as another phrasing of an existing entry of the same bot."""

    question = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=4000)
    entry = forms.ModelChoiceField(
        queryset=Entry.objects.none(),
        empty_label="Choose an entry…",
        error_messages={"invalid_choice": "Choose an active entry of this bot."},
    )

    def __init__(self, *args: Any, bot: Bot, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bot = bot
        # Validation accepts any active entry of the bot; what the select lists is set by offer().
        self.fields["entry"].queryset = Entry.objects.filter(bot=bot, is_active=True)  # type: ignore[attr-defined]
        self.fields["entry"].widget.choices = []

    def offer(self, suggestions: list[Candidate]) -> None:
        """List the best matches first (with their scores, the best preselected), then the
        bot's entries by question (for rendering only)."""
        best = [(c.entry_id, f"{c.question} — score {c.score:.2f}") for c in suggestions]
        listed = {entry_id for entry_id, _ in best}
        entries = Entry.objects.filter(bot=self.bot, is_active=True).order_by("question", "pk")
        others = [
            (pk, question)
            for pk, question in entries.values_list("pk", "question")[:ENTRY_CHOICES_MAX]
            if pk not in listed
        ]
        choices: list[Any] = [("", "Choose an entry…")]
        if best:
            choices.append(("Best matches", best))
        if others:
            choices.append(("All entries", others))
        self.fields["entry"].widget.choices = choices
        if suggestions and not self.is_bound:
            self.initial["entry"] = suggestions[0].entry_id


class GapFilterForm(forms.Form):
    """GET parameters of the gap report. An invalid value is reported and the default used."""

    days = forms.IntegerField(
        label="Last days", min_value=1, max_value=365, required=False, widget=forms.NumberInput()
    )
    bot = forms.ModelChoiceField(
        queryset=Bot.objects.none(),
        required=False,
        empty_label="Any",
        error_messages={"invalid_choice": "Unknown bot, or one you are not assigned to."},
    )

    def __init__(self, *args: Any, bots: QuerySet[Bot], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["bot"].queryset = bots  # type: ignore[attr-defined]

    def days_value(self) -> int:
        """Valid ``days`` or the AGENT_GAP_DAYS default (call after ``is_valid()``)."""
        return self.cleaned_data.get("days") or settings.AGENT_GAP_DAYS

    def bot_value(self) -> Bot | None:
        return self.cleaned_data.get("bot")
