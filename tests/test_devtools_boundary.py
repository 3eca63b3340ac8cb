"""Development tooling stays out of production code: only the ``fake_llm`` command
(a development command) reaches into ``devtools``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = ("chatbot", "knowledge", "agents")
ALLOWED = {Path("chatbot/management/commands/fake_llm.py")}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_production_packages_never_import_devtools() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for package in PRODUCTION
        for path in (ROOT / package).rglob("*.py")
        if path.relative_to(ROOT) not in ALLOWED
        and any(name == "devtools" or name.startswith("devtools.") for name in _imports(path))
    ]
    assert offenders == []


def test_the_fake_provider_has_no_import_cycle() -> None:
    """``script`` is the leaf: ``wire`` and ``embeddings`` import it, ``server`` imports all."""
    folder = ROOT / "devtools" / "fake_llm"
    assert not any(name.startswith("devtools") for name in _imports(folder / "script.py"))
    for leaf in ("wire.py", "embeddings.py"):
        assert "devtools.fake_llm.server" not in _imports(folder / leaf)
