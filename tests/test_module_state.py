"""No module keeps mutable process state at module level: it belongs to the runtime
(chatbot.runtime), as a part class next to the code that uses it.

An ast scan of chatbot/, knowledge/ and agents/ flags, at module level (also inside a
module-level ``if``/``try``): an assignment of a lock, event, queue, weak or other
container made by a call; of a dict, list or set display or comprehension; of an instance
(a call to a CamelCase class) - each unless the name is an UPPER_CASE constant (or one of
Django's conventions) - and any name a function rebinds with ``global``."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("chatbot", "knowledge", "agents")

# Made by a call, these hold state whatever the name says.
STATEFUL_CALLS = {
    "dict",
    "list",
    "set",
    "defaultdict",
    "OrderedDict",
    "deque",
    "Counter",
    "WeakKeyDictionary",
    "WeakValueDictionary",
    "WeakSet",
    "Lock",
    "RLock",
    "Event",
    "Condition",
    "Semaphore",
    "BoundedSemaphore",
    "local",
    "Queue",
    "SimpleQueue",
    "LifoQueue",
    "PriorityQueue",
}
# Type-level names, not state.
TYPING_CALLS = {"TypeVar", "ParamSpec", "TypeVarTuple", "NewType"}
# Module-level lists Django itself asks for by name.
CONVENTIONS = {"__all__", "urlpatterns", "websocket_urlpatterns"}

ALLOWED = {
    # The accessor itself: the one place the process's state hangs from.
    ("chatbot/runtime.py", "_current"),
    ("chatbot/runtime.py", "_current_lock"),
    # The ASGI application the server imports by name; its state lives in the runtime.
    ("chatbot/asgi.py", "application"),
}


def is_constant(name: str) -> bool:
    return name.upper() == name or name in CONVENTIONS


def called_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Subscript):  # GroupCommit[A, B](...)
        func = func.value
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def stateful(name: str, value: ast.expr | None) -> bool:
    if isinstance(value, ast.Call):
        callee = called_name(value)
        if callee in STATEFUL_CALLS:
            return True
        if callee in TYPING_CALLS:
            return False
        return callee[:1].isupper() and not is_constant(name)  # an instance of a class
    containers = (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)
    return isinstance(value, containers) and not is_constant(name)


def module_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    for node in body:
        yield node
        if isinstance(node, ast.If | ast.Try):
            for block in (node.body, node.orelse, *(h.body for h in getattr(node, "handlers", []))):
                yield from module_statements(block)


def findings(path: Path) -> Iterator[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in module_statements(tree.body):
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and stateful(target.id, node.value):
                    yield target.id, node.lineno
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            for name in node.names:
                yield name, node.lineno


def scanned() -> Iterator[tuple[str, str, int]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if "/migrations/" in relative:
                continue
            for name, line in findings(path):
                if (relative, name) not in ALLOWED:
                    yield relative, name, line


def test_no_module_keeps_mutable_state_at_module_level() -> None:
    found = sorted(set(scanned()))
    assert found == [], "module-level state (make it a runtime part): " + ", ".join(
        f"{path}:{line} {name}" for path, name, line in found
    )


def test_the_scan_catches_each_kind_of_module_state(tmp_path: Path) -> None:
    source = tmp_path / "state.py"
    source.write_text(
        "import threading, weakref\n"
        "from knowledge.calibration_services import Runner\n"
        "_sessions = {}\n"
        "_lock = threading.Lock()\n"
        "_LOCK = threading.RLock()\n"
        "_refs: weakref.WeakValueDictionary = weakref.WeakValueDictionary()\n"
        "runner = Runner()\n"
        "_keeper = None\n"
        "def keeper():\n"
        "    global _keeper\n"
        "CHOICES = {'a': 1}\n"  # constants, aliases and loggers are fine
        "Pair = tuple[int, int]\n"
        "Item = __import__('typing').TypeVar('Item')\n"
        "log = __import__('logging').getLogger(__name__)\n"
    )
    assert sorted(name for name, _ in findings(source)) == [
        "_LOCK",
        "_keeper",
        "_lock",
        "_refs",
        "_sessions",
        "runner",
    ]
