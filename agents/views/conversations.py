"""Conversation list, transcript, notes, labels, review state and exports."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from agents.access import agent_required


@agent_required
def conversation_list(request: HttpRequest) -> HttpResponse:
    return HttpResponse("not built yet", status=501)


@agent_required
def conversation_list_export(request: HttpRequest, fmt: str) -> HttpResponse:
    return HttpResponse("not built yet", status=501)


@agent_required
def transcript(request: HttpRequest, pk: int) -> HttpResponse:
    return HttpResponse("not built yet", status=501)


@agent_required
def transcript_export(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    return HttpResponse("not built yet", status=501)


@agent_required
def note_add(request: HttpRequest, pk: int) -> HttpResponse:
    return HttpResponse("not built yet", status=501)


@agent_required
def labels_set(request: HttpRequest, pk: int) -> HttpResponse:
    return HttpResponse("not built yet", status=501)


@agent_required
def review_set(request: HttpRequest, pk: int) -> HttpResponse:
    return HttpResponse("not built yet", status=501)
