"""System checks for deployment prerequisites (``manage.py check``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning, register

from chatbot.llm.profiles import embedding_key_missing, embedding_profile
from chatbot.llm.providers.embeddings import EMBEDDING_PROVIDERS


@register()
def check_llm_settings(app_configs: Any = None, **kwargs: Any) -> list[Warning | Error]:
    problems: list[Warning | Error] = []
    if settings.LLM_PROVIDER and not settings.LLM_MODEL:
        problems.append(
            Error(
                "LLM_PROVIDER is set but LLM_MODEL is empty.",
                hint="Set LLM_MODEL to the provider's model name, e.g. qwen-plus or glm-4-flash.",
                id="chatbot.E001",
            )
        )
    if settings.LLM_PROVIDER and not settings.LLM_API_KEY and settings.LLM_PROVIDER != "openai":
        problems.append(
            Error(
                f"LLM_PROVIDER={settings.LLM_PROVIDER} needs LLM_API_KEY.",
                id="chatbot.E002",
            )
        )
    if not settings.LLM_PROVIDER:
        problems.append(
            Warning(
                "No LLM is configured: questions the knowledge base can't answer get the fallback reply.",
                hint="Set LLM_PROVIDER, LLM_MODEL and LLM_API_KEY (see README).",
                id="chatbot.W001",
            )
        )
    return problems


@register()
def check_embedding_settings(app_configs: Any = None, **kwargs: Any) -> list[Warning | Error]:
    """A remote EMBEDDING_PROVIDER needs a model and (mostly) a key, or nothing matches."""
    if settings.EMBEDDING_PROVIDER == "local":
        return []
    profile = embedding_profile()
    problems: list[Warning | Error] = []
    if not profile.model:
        problems.append(
            Error(
                f"EMBEDDING_PROVIDER={profile.provider} but EMBEDDING_API_MODEL is empty.",
                hint="Set EMBEDDING_API_MODEL: text-embedding-3-small, text-embedding-v4, embedding-3 ...",
                id="chatbot.E003",
            )
        )
    if embedding_key_missing(profile):
        problems.append(
            Error(
                f"EMBEDDING_PROVIDER={profile.provider} needs an API key.",
                hint=f"Set EMBEDDING_API_KEY (or LLM_API_KEY with LLM_PROVIDER={profile.provider}).",
                id="chatbot.E004",
            )
        )
    limit = EMBEDDING_PROVIDERS[profile.provider].max_batch
    if profile.provider != "openai" and profile.batch_size > limit:
        problems.append(
            Warning(
                f"EMBEDDING_API_BATCH={profile.batch_size} is over {profile.provider}'s documented"
                f" limit of {limit} texts a request (newer models); the provider may refuse it.",
                id="chatbot.W002",
            )
        )
    return problems
