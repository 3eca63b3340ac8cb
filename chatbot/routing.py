"""Websocket URL routes. The project's one place that wires the agents app's socket in
beside the chat socket (nothing else under ``chatbot/`` imports ``agents``)."""

from __future__ import annotations

from channels.auth import AuthMiddlewareStack
from django.urls import URLPattern, path

from agents.consumers import AgentConsumer
from chatbot.consumers import ChatConsumer
from chatbot.replying import Matcher
from knowledge import matching


def websocket_routes(*, matcher: Matcher = matching) -> list[URLPattern]:
    """``matcher``: the knowledge base both sockets ask (tests pass a stand-in)."""
    return [
        path("ws/chat/<str:key>/", ChatConsumer.as_asgi(matcher=matcher)),
        # The only route that reads the Django session (the agent workspace's sign-in); a
        # visitor's socket never does.
        path("ws/agent/", AuthMiddlewareStack(AgentConsumer.as_asgi(matcher=matcher))),
    ]


websocket_urlpatterns: list[URLPattern] = websocket_routes()
