"""Forms of the conversation pages: list filters, notes, labels and review state."""

from __future__ import annotations

from typing import Any

from django import forms
from django.db.models import QuerySet

from agents.models import Label
from agents.selectors.conversations import FACET_LABELS, FACET_OPTIONS, ConversationFilters
from agents.services import LABELS_MAX, REVIEW_ACTIONS, label_names_parse
from chatbot.models import Bot


def _any(name: str) -> list[tuple[str, str]]:
    return [("", "Any"), *((value, str(label)) for value, label in FACET_OPTIONS[name])]


class ConversationFilterForm(forms.Form):
    """The GET parameters of the conversation list and its export. An invalid value is
    reported and ignored; the valid ones still apply."""

    q = forms.CharField(label="Search messages", required=False, max_length=200, strip=True)
    bot = forms.ModelChoiceField(
        queryset=Bot.objects.none(),
        required=False,
        empty_label="Any",
        error_messages={"invalid_choice": "Unknown bot, or one you are not assigned to."},
    )
    status = forms.ChoiceField(label=FACET_LABELS["status"], choices=_any("status"), required=False)
    answered = forms.ChoiceField(label=FACET_LABELS["answered"], choices=_any("answered"), required=False)
    rating = forms.ChoiceField(label=FACET_LABELS["rating"], choices=_any("rating"), required=False)
    followup = forms.ChoiceField(label=FACET_LABELS["followup"], choices=_any("followup"), required=False)
    review = forms.ChoiceField(label=FACET_LABELS["review"], choices=_any("review"), required=False)
    date_from = forms.DateField(
        label="Active from", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        label="Active to", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    label = forms.ModelChoiceField(
        queryset=Label.objects.order_by("name"),
        to_field_name="name",
        required=False,
        empty_label="Any",
        error_messages={"invalid_choice": "There is no label with that name."},
    )

    def __init__(self, *args: Any, bots: QuerySet[Bot], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["bot"].queryset = bots.only("pk", "name")  # type: ignore[attr-defined]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        start, end = cleaned.get("date_from"), cleaned.get("date_to")
        if start and end and start > end:
            self.add_error("date_to", "The end date is before the start date.")
        return cleaned

    def filters(self) -> ConversationFilters:
        """The valid filters (call after ``is_valid()``)."""
        values = {name: value for name, value in self.cleaned_data.items() if value not in (None, "")}
        return ConversationFilters(**values)


class NoteForm(forms.Form):
    text = forms.CharField(
        label="Note", max_length=5000, strip=True, widget=forms.Textarea(attrs={"rows": 3})
    )


class LabelsForm(forms.Form):
    labels = forms.CharField(
        label="Labels",
        required=False,
        max_length=LABELS_MAX * 52,
        help_text="Comma-separated, e.g. refund, bug. Empty removes every label.",
    )

    def clean_labels(self) -> list[str]:
        return label_names_parse(raw=self.cleaned_data["labels"])


class ReviewForm(forms.Form):
    action = forms.ChoiceField(choices=[(action, action) for action in REVIEW_ACTIONS])
