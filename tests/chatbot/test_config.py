from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from chatbot import config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("true", True), ("YES", True), ("on", True), ("0", False), ("false", False), ("", False)],
)
def test_it_parses_booleans(raw: str, expected: bool) -> None:
    assert config.env_bool("FLAG", not expected, env={"FLAG": raw}) is expected


def test_it_uses_the_default_when_a_variable_is_absent() -> None:
    assert config.env_bool("FLAG", True, env={}) is True
    assert config.env_int("N", 7, env={}) == 7
    assert config.env_list("L", ["a"], env={}) == ["a"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: config.env_bool("DEBUG", True, env={"DEBUG": "maybe"}), "DEBUG must be a boolean"),
        (lambda: config.env_int("N", 1, env={"N": "1.5"}), "N must be an integer"),
        (lambda: config.env_int("N", 1, minimum=0, env={"N": "-3"}), "N must be >= 0"),
        (lambda: config.env_float("T", 1.0, env={"T": "nan"}), "T must be a finite number"),
        (lambda: config.env_float("T", 1.0, maximum=2, env={"T": "3"}), "T must be <= 2"),
        (lambda: config.env_choice("P", "", ("", "openai"), env={"P": "gpt"}), "P must be one of"),
        (lambda: config.redis_url(env={"REDIS_URL": "http://x"}), "REDIS_URL must start with"),
    ],
)
def test_it_names_the_variable_in_a_bad_value_error(call, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        call()


def test_it_splits_lists_and_drops_blanks() -> None:
    assert config.env_list("H", [], env={"H": " a.example, ,b.example "}) == ["a.example", "b.example"]


def test_it_parses_a_postgres_url() -> None:
    db = config.database_config(
        "postgres://user:p%40ss@db.internal:5433/shop?sslmode=require", base_dir=ROOT, conn_max_age=60
    )
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "shop",
        "user",
        "p@ss",
        "db.internal",
        "5433",
    )
    assert db["OPTIONS"] == {"sslmode": "require"}
    assert db["CONN_MAX_AGE"] == 60


def test_it_resolves_sqlite_paths(tmp_path: Path) -> None:
    assert config.database_config("", base_dir=tmp_path, conn_max_age=0)["NAME"] == str(
        tmp_path / "db.sqlite3"
    )
    relative = config.database_config("sqlite:///data/x.db", base_dir=tmp_path, conn_max_age=0)
    assert relative["NAME"] == str(tmp_path / "data/x.db")
    absolute = config.database_config("sqlite:////var/x.db", base_dir=tmp_path, conn_max_age=0)
    assert absolute["NAME"] == "/var/x.db"
    kept = config.database_config("", base_dir=tmp_path, conn_max_age=30)
    assert (kept["CONN_MAX_AGE"], kept["CONN_HEALTH_CHECKS"]) == (30, True)
    assert config.database_config("", base_dir=tmp_path, conn_max_age=0)["CONN_HEALTH_CHECKS"] is False


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://localhost/db", "scheme 'mysql' is not supported"),
        ("postgres://localhost/", "must name a database"),
        ("postgres://localhost:notaport/db", "invalid port"),
    ],
)
def test_it_rejects_bad_database_urls(url: str, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        config.database_config(url, base_dir=ROOT, conn_max_age=0)


def test_it_generates_and_keeps_a_development_secret_key(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    first = config.secret_key(debug=True, key_file=key_file, env={})
    assert len(first) >= 50
    assert config.secret_key(debug=True, key_file=key_file, env={}) == first
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"


def test_it_requires_a_secret_key_in_production(tmp_path: Path) -> None:
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY is required when DEBUG=0"):
        config.secret_key(debug=False, key_file=tmp_path / "key", env={})
    assert not (tmp_path / "key").exists()
    with pytest.raises(ImproperlyConfigured, match="at least 32"):
        config.secret_key(debug=False, key_file=tmp_path / "key", env={"SECRET_KEY": "short"})


def _load_settings(**overrides: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(overrides)
    code = (
        "import chatbot.settings as s; "
        "print(s.DEBUG, s.DATABASES['default']['ENGINE'], s.CACHES['default']['BACKEND'])"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_settings_refuse_to_start_in_production_without_a_secret_key() -> None:
    result = _load_settings(DEBUG="0", SECRET_KEY="")
    assert result.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY is required when DEBUG=0" in result.stderr


def test_settings_name_a_bad_variable_at_start_up() -> None:
    result = _load_settings(LLM_CONNECT_TIMEOUT="soon")
    assert result.returncode != 0
    assert "LLM_CONNECT_TIMEOUT must be a number" in result.stderr


def test_settings_refuse_a_process_taken_for_dead_between_two_heartbeats() -> None:
    result = _load_settings(PROCESS_HEARTBEAT_SECONDS="5", PROCESS_DEAD_SECONDS="8")
    assert result.returncode != 0
    assert "PROCESS_DEAD_SECONDS must be at least twice PROCESS_HEARTBEAT_SECONDS" in result.stderr


def test_settings_switch_to_postgres_and_redis_from_the_environment() -> None:
    result = _load_settings(
        DEBUG="0", SECRET_KEY="x" * 40, DATABASE_URL="postgres://h/db", REDIS_URL="redis://127.0.0.1:6379/0"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "False",
        "django.db.backends.postgresql",
        "django.core.cache.backends.redis.RedisCache",
    ]


def test_every_environment_variable_is_documented_in_the_readme() -> None:
    import re

    sources = (ROOT / "chatbot" / "settings.py").read_text() + (ROOT / "chatbot" / "config.py").read_text()
    names = set(re.findall(r'env_(?:str|bool|int|float|list|choice)\(\s*"([A-Z_]+)"', sources))
    names |= {"SECRET_KEY", "REDIS_URL", "DATABASE_URL"}
    readme = (ROOT / "README.md").read_text()
    table_rows = {m for m in re.findall(r"^\| `([A-Z_]+)` \|", readme, flags=re.M)}
    assert names, "found no settings to check"
    assert names - table_rows == set()
