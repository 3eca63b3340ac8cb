"""Typed readers for environment variables.

Every setting in ``settings.py`` goes through one of these helpers so that a bad
value fails at start-up with ``ImproperlyConfigured`` naming the variable, instead
of surfacing later as a confusing error deep inside a request.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _raw(name: str, env: Mapping[str, str] | None) -> str | None:
    value = (os.environ if env is None else env).get(name)
    return None if value is None else value.strip()


def env_str(name: str, default: str = "", *, env: Mapping[str, str] | None = None) -> str:
    value = _raw(name, env)
    return default if value is None or value == "" else value


def env_bool(name: str, default: bool, *, env: Mapping[str, str] | None = None) -> bool:
    value = _raw(name, env)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false, yes/no), got {value!r}")


def env_int(
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    value = _raw(name, env)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from None
    _check_range(name, number, minimum, maximum)
    return number


def env_float(
    name: str,
    default: float,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    env: Mapping[str, str] | None = None,
) -> float:
    value = _raw(name, env)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ImproperlyConfigured(f"{name} must be a finite number, got {value!r}")
    _check_range(name, number, minimum, maximum)
    return number


def _check_range(name: str, number: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name} must be <= {maximum}, got {number}")


def env_list(name: str, default: list[str], *, env: Mapping[str, str] | None = None) -> list[str]:
    value = _raw(name, env)
    if value is None or value == "":
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_choice(
    name: str, default: str, choices: tuple[str, ...], *, env: Mapping[str, str] | None = None
) -> str:
    value = env_str(name, default, env=env).lower()
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ImproperlyConfigured(f"{name} must be one of {allowed}, got {value!r}")
    return value


def secret_key(*, debug: bool, key_file: Path, env: Mapping[str, str] | None = None) -> str:
    """SECRET_KEY from the environment; in development, generated once into ``key_file``."""
    value = env_str("SECRET_KEY", env=env)
    if value:
        if len(value) < 32:
            raise ImproperlyConfigured("SECRET_KEY must be at least 32 characters long")
        return value
    if not debug:
        raise ImproperlyConfigured("SECRET_KEY is required when DEBUG=0")
    if key_file.exists():
        return key_file.read_text().strip()
    value = secrets.token_urlsafe(50)
    key_file.write_text(value + "\n")
    key_file.chmod(0o600)
    return value


def database_config(url: str, *, base_dir: Path, conn_max_age: int) -> dict[str, Any]:
    """Turn ``DATABASE_URL`` into a Django ``DATABASES['default']`` dict.

    Supported: ``sqlite:///relative/or/absolute/path`` (``sqlite:////abs`` also works,
    ``sqlite://:memory:`` for an in-memory database) and ``postgres://`` /
    ``postgresql://`` (psycopg 3). Query parameters become connection OPTIONS.
    """
    if not url:
        return _sqlite(base_dir / "db.sqlite3", conn_max_age)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        path = unquote(parts.path)
        if parts.netloc == ":memory:" or path in ("/:memory:", ":memory:"):
            return _sqlite(":memory:", conn_max_age)
        if not path or path == "/":
            raise ImproperlyConfigured("DATABASE_URL sqlite:/// needs a file path")
        file = Path(path[1:])  # sqlite:///rel -> "rel", sqlite:////abs -> "/abs"
        return _sqlite(file if file.is_absolute() else base_dir / file, conn_max_age)
    if scheme in ("postgres", "postgresql", "pgsql"):
        name = unquote(parts.path.lstrip("/"))
        if not name:
            raise ImproperlyConfigured("DATABASE_URL must name a database, e.g. postgres://host/dbname")
        try:
            port = parts.port
        except ValueError:
            raise ImproperlyConfigured("DATABASE_URL has an invalid port") from None
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": unquote(parts.hostname or ""),
            "PORT": str(port or ""),
            "CONN_MAX_AGE": conn_max_age,
            "CONN_HEALTH_CHECKS": conn_max_age > 0,
            "OPTIONS": dict(parse_qsl(parts.query)),
        }
    raise ImproperlyConfigured(
        f"DATABASE_URL scheme {scheme!r} is not supported (use sqlite:/// or postgres://)"
    )


def _sqlite(path: Path | str, conn_max_age: int) -> dict[str, Any]:
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "CONN_MAX_AGE": conn_max_age,
        "CONN_HEALTH_CHECKS": conn_max_age > 0,
        "OPTIONS": {
            # WAL lets readers run beside a writer; IMMEDIATE avoids "database is locked"
            # upgrades when two requests write at once.
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }


def redis_url(*, env: Mapping[str, str] | None = None) -> str:
    value = env_str("REDIS_URL", env=env)
    if value and urlsplit(value).scheme not in ("redis", "rediss", "unix"):
        raise ImproperlyConfigured(f"REDIS_URL must start with redis://, rediss:// or unix://, got {value!r}")
    return value
