"""Conversation list, transcript, notes, labels, review state and exports."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe

from agents import exports
from agents.access import agent_required, conversation_or_404, visible_bots
from agents.forms import ConversationFilterForm, LabelsForm, NoteForm, ReviewForm
from agents.selectors.conversations import (
    conversation_label_names,
    conversation_list_page,
    conversation_row_batches,
    conversation_rows,
    transcript_messages,
    transcript_notes,
)
from agents.services import conversation_labels_set, conversation_review_set, note_create
from chatbot.models import Conversation

CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json; charset=utf-8"}
REVIEW_DONE = {
    "resolve": "Marked resolved.",
    "reopen": "Reopened.",
    "followup": "Marked as needing follow-up.",
    "clear_followup": "Follow-up cleared.",
}


def _filter_form(request: HttpRequest) -> ConversationFilterForm:
    form = ConversationFilterForm(request.GET, bots=visible_bots(request.user))
    form.is_valid()
    return form


def _attachment(response: HttpResponse, filename: str) -> HttpResponse:
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@agent_required
@require_safe
def conversation_list(request: HttpRequest) -> HttpResponse:
    form = _filter_form(request)
    listing = conversation_list_page(
        user=request.user,
        filters=form.filters(),
        page_number=request.GET.get("page"),
        per_page=settings.AGENT_PAGE_SIZE,
    )
    return render(request, "agents/conversation_list.html", {"form": form, "listing": listing})


@agent_required
@require_safe
def conversation_list_export(request: HttpRequest, fmt: str) -> HttpResponse:
    if fmt not in CONTENT_TYPES:
        raise Http404("Exports are csv or json.")
    form = _filter_form(request)
    if form.errors:
        # An export must contain what was asked for, never a silently wider set.
        problems = "; ".join(f"{name}: {' '.join(errors)}" for name, errors in form.errors.items())
        return HttpResponseBadRequest(
            f"Invalid filters: {problems}", content_type="text/plain; charset=utf-8"
        )
    batches = conversation_row_batches(user=request.user, filters=form.filters())
    chunks = exports.conversation_list_chunks(batches=batches, fmt=fmt)
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
    response = StreamingHttpResponse(exports.streamable(request, chunks), content_type=CONTENT_TYPES[fmt])
    return _attachment(response, f"conversations-{stamp}.{fmt}")


def _transcript_page(
    request: HttpRequest,
    conversation: Conversation,
    *,
    note_form: NoteForm | None = None,
    labels_form: LabelsForm | None = None,
    review_error: str = "",
) -> HttpResponse:
    """The transcript; with a rejected form (and status 400) when one is given."""
    labels = conversation_label_names(conversation=conversation)
    context = {
        "conversation": conversation,
        "chat": transcript_messages(conversation=conversation),
        "notes": transcript_notes(conversation=conversation),
        "labels": labels,
        "note_form": note_form or NoteForm(),
        "labels_form": labels_form or LabelsForm(initial={"labels": ", ".join(labels)}),
        "review_error": review_error,
    }
    rejected = note_form is not None or labels_form is not None or bool(review_error)
    return render(request, "agents/transcript.html", context, status=400 if rejected else 200)


@agent_required
@require_safe
def transcript(request: HttpRequest, pk: int) -> HttpResponse:
    return _transcript_page(request, conversation_or_404(request.user, pk))


@agent_required
@require_safe
def transcript_export(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    conversation = conversation_or_404(request.user, pk)
    if fmt not in CONTENT_TYPES:
        raise Http404("Exports are csv or json.")
    chat = transcript_messages(conversation=conversation)
    if fmt == "csv":
        body = exports.transcript_csv(messages=chat)
    else:
        [row] = conversation_rows(conversations=[conversation])
        notes = transcript_notes(conversation=conversation)
        body = exports.transcript_json(row=row, notes=notes, messages=chat)
    return _attachment(HttpResponse(body, content_type=CONTENT_TYPES[fmt]), f"conversation-{pk}.{fmt}")


def _back(pk: int) -> HttpResponse:
    return redirect("agents:transcript", pk=pk)


@agent_required
@require_POST
def note_add(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = conversation_or_404(request.user, pk)
    form = NoteForm(request.POST)
    if not form.is_valid():
        return _transcript_page(request, conversation, note_form=form)
    note_create(conversation=conversation, author=request.user, text=form.cleaned_data["text"])
    messages.success(request, "Note added.")
    return _back(pk)


@agent_required
@require_POST
def labels_set(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = conversation_or_404(request.user, pk)
    form = LabelsForm(request.POST)
    if not form.is_valid():
        return _transcript_page(request, conversation, labels_form=form)
    labels = conversation_labels_set(conversation=conversation, names=form.cleaned_data["labels"])
    messages.success(request, f"Labels saved ({len(labels)})." if labels else "Labels removed.")
    return _back(pk)


@agent_required
@require_POST
def review_set(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = conversation_or_404(request.user, pk)
    form = ReviewForm(request.POST)
    if not form.is_valid():
        error = "Unknown review action: choose resolve, reopen, followup or clear_followup."
        return _transcript_page(request, conversation, review_error=error)
    action = form.cleaned_data["action"]
    conversation_review_set(conversation=conversation, action=action)
    messages.success(request, REVIEW_DONE[action])
    return _back(pk)
