from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from chatbot.llm import is_configured

ROOT = Path(__file__).resolve().parents[3]


def load(**overrides: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_")}
    env.update(overrides)
    code = "import chatbot.settings as s; print(repr(s.LLM_PRICES))"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_the_price_table_is_read_from_the_environment() -> None:
    result = load(LLM_PRICES="gpt-4o-mini=0.15/0.60, Qwen/Qwen2.5-7B-Instruct=0/0,llama3:8b=1/2")
    assert result.returncode == 0, result.stderr
    expected = {
        "gpt-4o-mini": (Decimal("0.15"), Decimal("0.60")),
        "Qwen/Qwen2.5-7B-Instruct": (Decimal(0), Decimal(0)),
        "llama3:8b": (Decimal(1), Decimal(2)),
    }
    assert result.stdout.strip() == repr(expected)


@pytest.mark.parametrize("value", ["gpt=1", "gpt=a/b", "=1/2", "gpt=-1/2", "gpt=nan/1", "gpt=1/inf"])
def test_a_bad_price_table_stops_start_up_naming_the_variable(value: str) -> None:
    result = load(LLM_PRICES=value)
    assert result.returncode != 0
    assert "ImproperlyConfigured: LLM_PRICES items must look like model=0.15/0.60" in result.stderr


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("LLM_MAX_RETRIES", "-1", "LLM_MAX_RETRIES must be >= 0"),
        ("LLM_FALLBACK_PROVIDER", "gpt", "LLM_FALLBACK_PROVIDER must be one of"),
        ("LLM_STREAM_USAGE", "maybe", "LLM_STREAM_USAGE must be a boolean"),
        ("LLM_RETRY_MAX_WAIT", "inf", "LLM_RETRY_MAX_WAIT must be a finite number"),
    ],
)
def test_bad_llm_settings_stop_start_up_naming_the_variable(name: str, value: str, message: str) -> None:
    result = load(**{name: value})
    assert result.returncode != 0
    assert message in result.stderr


def bot(provider: str = "", model: str = "") -> Any:
    return SimpleNamespace(llm_provider=provider, llm_model=model)


def test_is_configured_needs_a_provider_a_model_and_a_key(settings: Any) -> None:
    settings.LLM_PROVIDER, settings.LLM_MODEL, settings.LLM_API_KEY, settings.LLM_BASE_URL = "", "", "", ""
    settings.LLM_FALLBACK_PROVIDER = ""
    assert not is_configured(bot())
    settings.LLM_PROVIDER = "dashscope"
    assert not is_configured(bot())  # no model
    assert not is_configured(bot(model="qwen-plus"))  # no key
    settings.LLM_API_KEY = "sk-x"
    assert is_configured(bot(model="qwen-plus"))
    settings.LLM_MODEL = "qwen-turbo"
    assert is_configured(bot())
    assert not is_configured(bot(provider="zhipu"))  # no profile for zhipu
    settings.LLM_PROVIDER, settings.LLM_API_KEY = "openai", ""
    assert is_configured(bot())  # OpenAI-compatible servers may need no key
    settings.LLM_BASE_URL = "ftp://nope"
    assert not is_configured(bot())
