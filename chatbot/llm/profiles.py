"""Which provider, endpoint, key and model a request goes to, and the resilience policy:
everything this package reads from Django settings is read here, per call, so tests and
``override_settings`` take effect at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import urlsplit

from django.conf import settings

from chatbot.llm.errors import ConfigurationError
from chatbot.llm.providers import PROVIDERS
from chatbot.llm.providers.embeddings import EMBEDDING_PROVIDERS
from chatbot.llm.retry import RetryPolicy
from chatbot.llm.types import EmbeddingProfile, Profile


class BotLike(Protocol):
    llm_provider: str
    llm_model: str


@dataclass(frozen=True)
class Policy:
    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    total_timeout: float = 120.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker_failures: int = 5
    breaker_cooldown: float = 30.0
    max_concurrent: int = 100
    rpm: int = 0
    stream_usage: bool = True
    prices: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)


def current_policy() -> Policy:
    s: Any = settings
    return Policy(
        connect_timeout=s.LLM_CONNECT_TIMEOUT,
        read_timeout=s.LLM_READ_TIMEOUT,
        total_timeout=s.LLM_TOTAL_TIMEOUT,
        retry=RetryPolicy(max_retries=s.LLM_MAX_RETRIES, max_wait=s.LLM_RETRY_MAX_WAIT),
        breaker_failures=s.LLM_BREAKER_FAILURES,
        breaker_cooldown=s.LLM_BREAKER_COOLDOWN,
        max_concurrent=s.LLM_MAX_CONCURRENT,
        rpm=s.LLM_RPM,
        stream_usage=s.LLM_STREAM_USAGE,
        prices=s.LLM_PRICES,
    )


def _profile(prefix: str) -> Profile | None:
    provider = getattr(settings, f"{prefix}PROVIDER", "")
    if not provider:
        return None
    base_url = getattr(settings, f"{prefix}BASE_URL", "") or PROVIDERS[provider].default_base_url
    return Profile(
        provider=provider,
        base_url=base_url.rstrip("/"),
        model=getattr(settings, f"{prefix}MODEL", ""),
        api_key=getattr(settings, f"{prefix}API_KEY", ""),
    )


def configured_profiles() -> list[Profile]:
    """The primary (LLM_*) and the fallback (LLM_FALLBACK_*) profile, when set."""
    return [p for p in (_profile("LLM_"), _profile("LLM_FALLBACK_")) if p is not None]


def resolve(provider: str = "", model: str = "", *, fallback: bool = True) -> list[Profile]:
    """Profiles to try in order: the one for ``provider`` (empty: LLM_PROVIDER) with ``model``
    filled in, then the other configured profile as the fallback."""
    profiles = configured_profiles()
    provider = provider or (profiles[0].provider if profiles else "")
    if not provider:
        raise ConfigurationError("no LLM is configured (LLM_PROVIDER is empty)")
    if provider not in PROVIDERS:
        raise ConfigurationError(f"unknown LLM provider {provider!r}")
    primary = next((p for p in profiles if p.provider == provider), None)
    if primary is None:
        raise ConfigurationError(
            f"{provider} is not configured: set LLM_PROVIDER or LLM_FALLBACK_PROVIDER to it",
            provider=provider,
        )
    check_profile(primary)
    chosen = [_with_model(primary, model)]
    if fallback:
        # The fallback keeps its own model: model names are per provider.
        chosen += [p for p in profiles if p is not primary][:1]
    return chosen


def _with_model(profile: Profile, model: str) -> Profile:
    if not model or model == profile.model:
        return profile
    return Profile(profile.provider, profile.base_url, model, profile.api_key)


def check_profile(profile: Profile) -> None:
    parts = urlsplit(profile.base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(
            f"the base URL must be http(s)://host/..., got {profile.base_url!r}", provider=profile.provider
        )
    if PROVIDERS[profile.provider].needs_key and not profile.api_key:
        raise ConfigurationError("no API key: set LLM_API_KEY", provider=profile.provider)


def is_configured(bot: BotLike | None = None) -> bool:
    """Cheap: could a request for this bot be sent at all (provider, model and key set)?"""
    try:
        profiles = resolve(bot.llm_provider if bot else "", bot.llm_model if bot else "", fallback=False)
    except ConfigurationError:
        return False
    return bool(profiles[0].model)


@dataclass(frozen=True)
class EmbeddingPolicy:
    connect_timeout: float = 5.0
    timeout: float = 10.0  # one request, from sending to the parsed response
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker_failures: int = 5
    breaker_cooldown: float = 30.0
    cache_size: int = 2000

    def total_timeout(self) -> float:
        """The longest one batch may take with its retries (their waits included)."""
        retries = self.retry.max_retries
        return (retries + 1) * self.timeout + retries * max(self.retry.max_wait, self.retry.max_delay)


def current_embedding_policy() -> EmbeddingPolicy:
    s: Any = settings
    return EmbeddingPolicy(
        connect_timeout=s.LLM_CONNECT_TIMEOUT,
        timeout=s.EMBEDDING_API_TIMEOUT,
        retry=RetryPolicy(max_retries=s.LLM_MAX_RETRIES, max_wait=s.LLM_RETRY_MAX_WAIT),
        breaker_failures=s.LLM_BREAKER_FAILURES,
        breaker_cooldown=s.LLM_BREAKER_COOLDOWN,
        cache_size=s.EMBEDDING_API_CACHE,
    )


def embedding_profile() -> EmbeddingProfile:
    """The EMBEDDING_API_* settings; an empty key or base URL comes from the LLM_* (else
    LLM_FALLBACK_*) profile of the same provider. Not checked: see ``check_embedding_profile``."""
    s: Any = settings
    provider = s.EMBEDDING_PROVIDER
    impl = EMBEDDING_PROVIDERS.get(provider)
    if impl is None:
        raise ConfigurationError(f"EMBEDDING_PROVIDER={provider!r} is not an embeddings API")
    chat = next((p for p in configured_profiles() if p.provider == provider), None)
    base_url = s.EMBEDDING_API_BASE_URL or (impl.base_url_from_chat(chat.base_url) if chat else "")
    return EmbeddingProfile(
        provider=provider,
        base_url=(base_url or impl.default_base_url).rstrip("/"),
        model=s.EMBEDDING_API_MODEL,
        api_key=s.EMBEDDING_API_KEY or (chat.api_key if chat else ""),
        dimensions=s.EMBEDDING_API_DIMENSIONS or None,
        batch_size=s.EMBEDDING_API_BATCH or impl.max_batch,
    )


def check_embedding_profile(profile: EmbeddingProfile) -> None:
    parts = urlsplit(profile.base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(
            f"the embeddings base URL must be http(s)://host/..., got {profile.base_url!r}",
            provider=profile.provider,
        )
    if not profile.model:
        raise ConfigurationError("no embedding model: set EMBEDDING_API_MODEL", provider=profile.provider)
    if embedding_key_missing(profile):
        raise ConfigurationError("no API key: set EMBEDDING_API_KEY", provider=profile.provider)


def embedding_key_missing(profile: EmbeddingProfile) -> bool:
    """No key where one is needed: DashScope and Zhipu always, OpenAI itself too (a local
    OpenAI-compatible server at another URL may need none)."""
    impl = EMBEDDING_PROVIDERS[profile.provider]
    needed = impl.needs_key or profile.base_url == impl.default_base_url
    return needed and not profile.api_key
