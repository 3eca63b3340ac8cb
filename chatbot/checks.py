"""System checks for deployment prerequisites (``manage.py check``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning, register


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
