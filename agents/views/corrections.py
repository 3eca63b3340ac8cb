"""Turn a bot reply into a knowledge-base entry or an alternative phrasing."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from agents.access import agent_required
from agents.corrections import correction_alternative_add, correction_entry_create
from agents.forms_corrections import CorrectionAlternativeForm, CorrectionEntryForm
from agents.selectors.corrections import correctable_reply_or_404, entry_suggestions, reply_question
from chatbot.models import Message

NEW_ENTRY, ALTERNATIVE = "entry", "alternative"


def _initial(request: HttpRequest, reply: Message) -> dict[str, str]:
    """The reply's question and text; ``?question=`` and ``?answer=`` override them (the gap
    report links here with its typical question and an empty answer)."""
    question = request.GET.get("question", "").strip() or reply_question(reply=reply)
    answer = request.GET.get("answer", reply.text)
    return {"question": question, "answer": answer}


def _saved(request: HttpRequest, reply: Message, text: str) -> HttpResponse:
    messages.success(request, text)
    url = reverse("agents:transcript", args=[reply.conversation_id])
    return redirect(f"{url}#message-{reply.pk}")


@agent_required
@require_http_methods(["GET", "POST"])
def correct(request: HttpRequest, pk: int) -> HttpResponse:
    reply = correctable_reply_or_404(user=request.user, pk=pk)
    mode = ""  # GET: nothing submitted
    if request.method == "POST":
        mode = ALTERNATIVE if request.POST.get("mode") == ALTERNATIVE else NEW_ENTRY
    initial = _initial(request, reply)
    question = request.POST.get("question", "") if mode else initial["question"]
    entry_form = CorrectionEntryForm(request.POST if mode == NEW_ENTRY else None, initial=initial)
    alternative_form = CorrectionAlternativeForm(
        request.POST if mode == ALTERNATIVE else None,
        bot=reply.conversation.bot,
        initial={"question": question},
        auto_id="id_alternative_%s",  # two forms on one page: distinct element ids
    )
    if mode == ALTERNATIVE and alternative_form.is_valid():
        data = alternative_form.cleaned_data
        correction = correction_alternative_add(
            reply=reply, entry=data["entry"], question=data["question"], agent=request.user
        )
        return _saved(request, reply, f"Added as a phrasing of “{correction.entry.question}”.")
    if mode == NEW_ENTRY and entry_form.is_valid():
        correction = correction_entry_create(reply=reply, agent=request.user, **entry_form.cleaned_data)
        return _saved(request, reply, f"Saved to the knowledge base: “{correction.entry.question}”.")
    suggestions = entry_suggestions(reply=reply, question=question)
    alternative_form.offer(suggestions)
    context: dict[str, Any] = {
        "reply": reply,
        "conversation": reply.conversation,
        "asked": reply_question(reply=reply),
        "mode": mode or NEW_ENTRY,
        "entry_form": entry_form,
        "alternative_form": alternative_form,
        "suggestions": suggestions,
    }
    return render(request, "agents/correction_form.html", context)
