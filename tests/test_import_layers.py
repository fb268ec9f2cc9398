"""The layers of d2geo point one way (BRIEF, issue 21): no import circle between modules and no
import of a higher layer, lazy imports inside functions included. Read from the source (ast), so
this test imports nothing and runs in well under a second."""
from __future__ import annotations

import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "d2geo")

#: the d2geo packages (top-level modules) each package may import; "" is ``d2geo`` itself
ALLOWED = {
    "": set(),
    "encoders": set(),
    "precision": set(),
    "logs": set(),
    "modeling": {"encoders", "precision"},
    "data": {"encoders", "precision"},
    "model_zoo": {"encoders", "precision", "modeling", "data"},
    "engine": {"encoders", "precision", "logs", "modeling", "data", "model_zoo"},
    "inference": {"", "encoders", "precision", "modeling", "data", "model_zoo", "engine"},
    "tools_support": {"", "encoders", "precision", "modeling", "data", "model_zoo", "engine", "inference", "logs"},
    "cli": {"", "encoders", "precision", "modeling", "data", "model_zoo", "engine", "inference", "tools_support"},
}
#: known upward imports, each waiting for a change elsewhere (remove the entry with it)
KNOWN_UPWARD: set[tuple[str, str]] = set()


def _modules() -> dict[str, str]:
    mods = {}
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                name = os.path.relpath(path[:-3], os.path.dirname(ROOT)).replace(os.sep, ".")
                mods[name[: -len(".__init__")] if name.endswith(".__init__") else name] = path
    return mods


def _imports(mods: dict[str, str]) -> dict[str, set[str]]:
    """module -> the d2geo modules it imports (``from pkg import submodule`` counts as the submodule)."""
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(open(path).read(), path)):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                subs = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods}
                targets |= subs | ({base} if len(subs) < len(node.names) else set())
        edges[name] = {t for t in targets if t in mods and t != name}
    return edges


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_module_imports_a_higher_layer():
    mods = _modules()
    upward = sorted((m, t) for m, ts in _imports(mods).items() for t in ts
                    if _layer(m) != _layer(t) and _layer(t) not in ALLOWED[_layer(m)])
    assert {_layer(m) for m in mods} <= set(ALLOWED), "a new d2geo package: give it its place in ALLOWED"
    assert [e for e in upward if e not in KNOWN_UPWARD] == [], "imports that run back up the layers"
    assert [e for e in KNOWN_UPWARD if e not in upward] == [], "gone: remove it from KNOWN_UPWARD"


def test_no_import_circle():
    edges = _imports(_modules())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert circles == []
