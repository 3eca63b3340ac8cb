"""The two requirement files: production's and the development one on top of it."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEV_ONLY = {"pytest", "pytest-asyncio", "pytest-django", "pytest-timeout", "playwright", "ruff", "httpx"}


def _requirements(name: str) -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in (ROOT / name).read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-r "):
            continue
        assert "==" in line, f"{name}: {line!r} is not pinned with =="
        package, version = line.split("==", 1)
        pins[package.strip().lower()] = version.strip()
    return pins


def test_every_requirement_is_pinned_once_across_both_files() -> None:
    production, dev = _requirements("requirements.txt"), _requirements("requirements-dev.txt")
    assert not set(production) & set(dev)


def test_production_holds_no_test_lint_or_browser_package() -> None:
    assert not DEV_ONLY & set(_requirements("requirements.txt"))
    assert set(_requirements("requirements-dev.txt")) >= DEV_ONLY


def test_the_development_file_includes_production() -> None:
    assert "-r requirements.txt" in (ROOT / "requirements-dev.txt").read_text().splitlines()
