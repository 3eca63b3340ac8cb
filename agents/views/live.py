"""The live console: a server-rendered shell; everything live goes over the agent websocket
(``ws/agent/``), driven by static/agents/console.js."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_safe

from agents.access import agent_required

AGENT_SOCKET_PATH = "/ws/agent/"
PING_MS = 20_000  # each ping also refreshes the agent's presence (AGENT_ONLINE_SECONDS)


@agent_required
@require_safe
def console(request: HttpRequest) -> HttpResponse:
    user = request.user
    config = {
        "ws": AGENT_SOCKET_PATH,
        "agent": {"id": user.pk, "name": user.get_full_name() or user.get_username()},
        "ping_ms": PING_MS,
        # The transcript page of conversation N: this URL with 0 replaced by N.
        "transcript": reverse("agents:transcript", args=[0]),
    }
    return render(request, "agents/live.html", {"config": config})
