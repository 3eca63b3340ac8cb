"""Zhipu GLM (``POST {base}/chat/completions``, API v4, OpenAI-like).

Keys of the form ``id.secret`` are turned into a short-lived HS256 JWT (header
``sign_type: SIGN``; payload ``api_key``, ``exp`` and ``timestamp`` in milliseconds),
cached until shortly before it expires. Other keys are sent as they are.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any, ClassVar

from chatbot.llm.params import Limits, Range
from chatbot.llm.providers.base import HttpCall, messages_payload, sampling
from chatbot.llm.providers.openai_compatible import OpenAICompatible
from chatbot.llm.types import ChatRequest, Profile
from chatbot.runtime import runtime

TOKEN_TTL = 600.0  # seconds the JWT is valid
TOKEN_REFRESH_MARGIN = 60.0  # make a new one this long before it expires


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_jwt(api_key: str, *, now: float, ttl: float = TOKEN_TTL) -> str:
    key_id, _, secret = api_key.partition(".")
    header = {"alg": "HS256", "sign_type": "SIGN"}
    payload = {"api_key": key_id, "exp": int((now + ttl) * 1000), "timestamp": int(now * 1000)}
    signing_input = ".".join(
        _b64(json.dumps(part, separators=(",", ":")).encode()) for part in (header, payload)
    )
    signature = hmac.new(secret.encode(), signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def is_id_secret(api_key: str) -> bool:
    key_id, dot, secret = api_key.partition(".")
    return bool(dot and key_id and secret and "." not in secret)


class Tokens:
    """The runtime's signed tokens, kept until shortly before they expire (a runtime part)."""

    def __init__(self) -> None:
        self.by_key: dict[str, tuple[str, float]] = {}  # api key -> (token, expires at, epoch seconds)


def bearer_token(api_key: str, *, clock: Callable[[], float] = time.time) -> str:
    if not is_id_secret(api_key):
        return api_key
    now = clock()
    tokens = runtime().part(Tokens).by_key
    cached = tokens.get(api_key)
    if cached is not None and cached[1] - TOKEN_REFRESH_MARGIN > now:
        return cached[0]
    token = make_jwt(api_key, now=now)
    tokens[api_key] = (token, now + TOKEN_TTL)
    return token


class Zhipu(OpenAICompatible):
    name = "zhipu"
    default_base_url = "https://open.bigmodel.cn/api/paas/v4"
    limits: ClassVar[Limits] = Limits(temperature=Range(0.0, 1.0), top_p=Range(0.0, 1.0), max_stop=1)
    refusal_finish_reasons = frozenset({"sensitive", "content_filter"})
    needs_key = True

    def build_call(
        self, request: ChatRequest, profile: Profile, *, model: str, stream_usage: bool
    ) -> HttpCall:
        # Usage arrives in the last chunk without asking; stream_options is not part of the API.
        body: dict[str, Any] = {"model": model, "messages": messages_payload(request), "stream": True}
        body.update(sampling(request))
        token = bearer_token(profile.api_key)
        return HttpCall(
            url=f"{profile.base_url}/chat/completions",
            headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
            body=body,
            secrets=(profile.api_key, *profile.api_key.split("."), token),
        )
