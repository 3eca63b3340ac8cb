"""Websocket URL routes."""

from __future__ import annotations

from django.urls import URLPattern, path

from chatbot.consumers import ChatConsumer

websocket_urlpatterns: list[URLPattern] = [
    path("ws/chat/<str:key>/", ChatConsumer.as_asgi()),
]
