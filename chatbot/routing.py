"""Websocket URL routes."""

from __future__ import annotations

from channels.auth import AuthMiddlewareStack
from django.urls import URLPattern, path

from agents.consumers import AgentConsumer
from chatbot.consumers import ChatConsumer

websocket_urlpatterns: list[URLPattern] = [
    path("ws/chat/<str:key>/", ChatConsumer.as_asgi()),
    # The only route that reads the Django session (the agent workspace's sign-in); a
    # visitor's socket never does.
    path("ws/agent/", AuthMiddlewareStack(AgentConsumer.as_asgi())),
]
