"""The layout shows the architecture: small modules, no import cycles, parts named in the docs."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from repo import REPO_ROOT, tracked

MAX_LINES = 400
# Import name -> folder, as pyproject.toml maps them.
PACKAGE_DIRS = {
    "prodcat": "stream_app",
    "prodcat.plugins": "plugins",
    "prodcat.training": "training",
    "prodcat.schemas": "schemas",
}


def prodcat_modules() -> dict[str, Path]:
    """Every module of the installed namespace by its import name."""
    modules = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in (REPO_ROOT / folder).rglob("*.py"):
            parts = path.relative_to(REPO_ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts))
            modules[name.removesuffix(".__init__")] = path
    return modules


def module_level_imports(path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """prodcat modules imported at import time (not inside functions or TYPE_CHECKING)."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        yield from (name for name in names if name in modules)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules around it, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_module_is_over_the_size_limit() -> None:
    sizes = {
        path.relative_to(REPO_ROOT).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in tracked("*.py")
    }
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_no_import_cycles() -> None:
    modules = prodcat_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set(module_level_imports(path, modules))
        # Importing a module also runs its packages' __init__ (a parent is not a cycle).
        graph[name] = {t for t in targets if not name.startswith(t + ".")} - {name}
    assert find_cycle(graph) is None


def test_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_runtime_part_is_described_in_the_architecture_page() -> None:
    page = (REPO_ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    parts = sorted(
        path.parent.name
        for path in (REPO_ROOT / "stream_app").glob("*/__init__.py")
        if path.parent.name != "__pycache__"
    )
    assert parts, "stream_app/ has no parts"
    missing = [part for part in parts if f"`stream_app/{part}/`" not in page]
    assert missing == []


def prodcat_imports(folder: Path) -> set[str]:
    """Every prodcat module imported anywhere under ``folder`` (functions included)."""
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
    return {name for name in found if name == "prodcat" or name.startswith("prodcat.")}


def test_plugins_use_only_the_public_api() -> None:
    """The example plugin, and the built-ins apart from their own helpers, import only
    ``prodcat``: what a third-party plugin can rely on."""
    assert prodcat_imports(REPO_ROOT / "examples" / "encoder-plugin") == {"prodcat"}
    builtins = prodcat_imports(REPO_ROOT / "plugins")
    assert {name for name in builtins if not name.startswith("prodcat.plugins.")} == {"prodcat"}
