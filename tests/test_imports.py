"""yolojax's internal import graph runs one way (see the package layout in the README / design notes).

The graph is read with ``ast`` from every ``yolojax/**/*.py``: module-level *and* function-level imports, since a
deferred import is still a dependency. An edge to the root package ``yolojax`` is not counted: importing any
submodule runs the root ``__init__`` anyway (its lazy ``YOLO`` re-export is the public facade, above everything).
"""
from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = "yolojax"

# Edges allowed to break the rules (each with its reason). The test fails on any edge not listed here, and on a
# listed edge that no longer exists (so the list only shrinks).
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()


def module_files() -> dict[str, tuple[pathlib.Path, bool]]:
    """Dotted module name -> (file, is_package) for every module of the package."""
    out = {}
    for f in sorted((ROOT / PKG).rglob("*.py")):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


def _resolve(name: str, modules) -> str | None:
    """The innermost yolojax module that ``name`` (a module or a name inside one) lives in, or None."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Module -> the yolojax modules it imports anywhere in its body (edges to the root package left out)."""
    modules = module_files()
    graph = {}
    for mod, (path, is_pkg) in modules.items():
        package = mod if is_pkg else mod.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                # ``from pkg import sub`` depends on pkg.sub; ``from mod import name`` on mod
                names = [f"{src}.{a.name}" if f"{src}.{a.name}" in modules else src for a in node.names]
            else:
                continue
            for name in names:
                target = _resolve(name, modules)
                if target and target not in (mod, PKG):
                    targets.add(target)
        graph[mod] = targets
    return graph


def _edges(graph):
    return {(a, b) for a, targets in graph.items() for b in targets}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle (as a list of modules, first repeated last), or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(v):
        state[v] = 1
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state and (found := visit(w)):
                return found
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def _in(mod: str, area: str) -> bool:
    return mod == f"{PKG}.{area}" or mod.startswith(f"{PKG}.{area}.")


def test_graph_reader_sees_both_import_levels():
    graph = import_graph()
    assert "yolojax.ops.boxes" in graph["yolojax.ops.nms"]  # module level: from yolojax.ops.boxes import ...
    assert "yolojax.engine.metal" in graph["yolojax.engine.devices"]  # module level
    assert "yolojax.data.tfds_builder" in graph["yolojax.data.dataset_yaml"]  # module level
    assert "yolojax.engine.devices" in graph["yolojax.errors"]  # function level: inside user_error_types
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_known_exceptions_still_exist():
    stale = KNOWN_EXCEPTIONS - _edges(import_graph())
    assert not stale, f"these allowed edges are gone: remove them from KNOWN_EXCEPTIONS: {sorted(stale)}"


def test_no_import_cycle():
    graph = {a: {b for b in targets if (a, b) not in KNOWN_EXCEPTIONS} for a, targets in import_graph().items()}
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_layers_import_downwards_only():
    forbidden = {  # importer area -> areas it must not import
        "nn": ("data", "engine"),
        "ops": ("data", "engine"),
        "augment": ("data", "engine", "nn"),
        "data": ("nn", "engine"),
        "metrics": ("engine",),
        "report": ("engine",),
        "engine": ("tasks",),  # the entry points pick the task and hand it to the engine
    }
    bad = sorted((a, b) for a, b in _edges(import_graph()) - KNOWN_EXCEPTIONS
                 for area, banned in forbidden.items() if _in(a, area) and any(_in(b, x) for x in banned))
    assert not bad, f"imports against the layering: {bad}"
