"""Dependencies between the apps point one way: ``chatbot``'s models <- ``knowledge`` <- the
reply pipeline <- ``agents``. The conversation domain never imports the agents app (it
reads what agents write through its own selectors, and tells them what visitors do with
plain channel-layer events); only the project's websocket routes wire the two sockets
together. The knowledge base never imports the reply path or the agents app."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROUTES = Path("chatbot/routing.py")  # the project's composition of both apps' sockets
REPLY_PATH = (
    "chatbot.replying",
    "chatbot.reply_store",
    "chatbot.reply_events",
    "chatbot.chat",
    "chatbot.consumers",
)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _offenders(package: str, forbidden: tuple[str, ...], allowed: frozenset[Path] = frozenset()) -> list[str]:
    return sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / package).rglob("*.py")
        if path.relative_to(ROOT) not in allowed
        and any(name == f or name.startswith(f + ".") for name in _imports(path) for f in forbidden)
    )


def test_nothing_in_chatbot_imports_the_agents_app() -> None:
    assert _offenders("chatbot", ("agents",), frozenset({ROUTES})) == []


def test_the_knowledge_base_imports_neither_the_reply_path_nor_the_agents_app() -> None:
    assert _offenders("knowledge", ("agents", *REPLY_PATH)) == []


def test_the_scan_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "late.py"
    module.write_text("def f():\n    from agents import live\n    import agents.frames\n")
    assert {"agents", "agents.live", "agents.frames"} <= _imports(module)
