"""The code's shape: dependencies point inward, no module imports itself back in a circle, and
service/ is grouped in rooms by role (checked on the source, so a new import cannot slip in)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("service", "experiments", "bandits", "reports")
CORE = ("experiments", "bandits", "reports")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")
           if "build" not in p.parts}


def _known(name: str) -> str | None:
    """The project module an import names (the nearest enclosing one for a name inside a module)."""
    while name and name not in MODULES:
        name = name.rsplit(".", 1)[0] if "." in name else ""
    return name or None


def imports_of(module: str) -> set[str]:
    """Every project module `module` imports, at the top or inside a function alike."""
    path = MODULES[module]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(filter(None, (_known(alias.name) for alias in node.names)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
                for _ in range(node.level - 1):
                    package = package.rsplit(".", 1)[0]
                base = f"{package}.{base}" if base else package
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in MODULES else _known(base))
    found.discard(None)  # type: ignore[arg-type]
    found.discard(module)
    return found  # type: ignore[return-value]


GRAPH = {module: imports_of(module) for module in MODULES}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_back() -> None:
    assert circles(GRAPH) == []


def test_the_circle_check_finds_a_circle() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("core", CORE)
def test_the_core_never_imports_the_service(core: str) -> None:
    offenders = {m: sorted(i for i in GRAPH[m] if i.split(".")[0] == "service")
                 for m in MODULES if m.split(".")[0] == core}
    assert {m: i for m, i in offenders.items() if i} == {}


def test_the_statistics_never_import_the_experiment_model() -> None:
    offenders = {m: sorted(i for i in GRAPH[m] if i.split(".")[0] == "experiments")
                 for m in MODULES if m.split(".")[0] == "reports"}
    assert {m: i for m, i in offenders.items() if i} == {}


def test_service_is_grouped_by_role() -> None:
    loose = sorted(p.stem for p in (ROOT / "service").glob("*.py") if p.stem != "__init__")
    assert loose == ["app", "cli", "clock", "config", "wsgi"]
    rooms = sorted(p.name for p in (ROOT / "service").iterdir() if (p / "__init__.py").exists())
    assert rooms == ["client", "http", "jobs", "run", "store", "usecases"]
    for room in rooms:
        docstring = ast.get_docstring(ast.parse((ROOT / "service" / room / "__init__.py").read_text()))
        assert docstring, f"service/{room}/__init__.py needs a docstring that says what lives there"
