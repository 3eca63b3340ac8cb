"""Cache headers of the static files WhiteNoise serves (without nginx in front: `make run`,
a bare daphne), matching deploy/'s nginx configurations."""

from __future__ import annotations

from wsgiref.headers import Headers


def revalidate_stable_urls(headers: Headers, path: str, url: str) -> None:
    """Files under hashed names (STATIC_HASHED) keep WhiteNoise's year-long, immutable
    lifetime; every other one, /static/chatbot/widget.js first (companies embed that URL),
    is revalidated on each use (Last-Modified / ETag), so a new release reaches visitors at
    once instead of after WhiteNoise's 60 s or a proxy's hour."""
    if "immutable" not in (headers.get("Cache-Control") or ""):
        headers["Cache-Control"] = "no-cache"
