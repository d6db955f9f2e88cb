"""No import cycles among the project's modules (issue 17).

The graph is read from the source with ``ast``: one node per module of converters/ and edge_runtime/,
one edge per import. At module level (the imports run when a module loads, including those in ``try``/``if``
blocks there, not ``if TYPE_CHECKING:``) a cycle means a module can be imported only in some orders,
half-initialised: none is allowed. With the imports inside functions too (run on use) a cycle is two
modules that each need the other, a layering fault a lazy import only hides: none is allowed either. An
edge goes to the module named (``from pkg import sub`` to ``pkg.sub`` when that is a module); modules
loaded by name (``importlib``) are not seen. The test names every cycle it finds.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("converters", "edge_runtime")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _all_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import, at any depth (inside functions too), except type-only ``if TYPE_CHECKING:`` blocks."""
    typing_only = {id(n) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for stmt in node.body for n in ast.walk(stmt)}
    return [node for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in typing_only]


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is loaded: the body and its if/try blocks, not functions/classes."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                stack += node.body + node.orelse
        elif isinstance(node, ast.Try):
            stack += node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]
        elif isinstance(node, (ast.With, ast.For, ast.While)):
            stack += node.body
    return found


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The project modules ``node`` (in ``module``) loads."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[:len(base) - (node.level - 1)]
            stem = ".".join(base + ([node.module] if node.module else []))
        else:
            stem = node.module or ""
        names = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in known else stem for alias in node.names]
    return {name for name in names if name in known}


def import_graph(lazy: bool = False) -> dict[str, set[str]]:
    """module -> the project modules it imports at module level (``lazy``: anywhere)."""
    imports = _all_imports if lazy else _module_level_imports
    files = {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}
    known = set(files)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[module] = set()
        for node in imports(tree):
            graph[module] |= _targets(node, module, path.name == "__init__.py", known) - {module}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a closed path of modules) per strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:  # Tarjan; the graphs here are a few hundred modules, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    cycles = []
    for component in components:  # a shortest path from the component's first module back to itself
        start = min(component)
        paths = {start: [start]}
        frontier = [start]
        cycle = None
        while frontier and cycle is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & component):
                    if w == start:
                        cycle = paths[v] + [start]
                        break
                    if w not in paths:
                        paths[w] = paths[v] + [w]
                        nxt.append(w)
                if cycle:
                    break
            frontier = nxt
        cycles.append(cycle or sorted(component))
    return cycles


def test_no_import_cycles_at_module_level():
    graph = import_graph()
    assert len(graph) > 80 and sum(map(len, graph.values())) > 100, "the walk really reads both packages"
    cycles = find_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_import_cycles_through_lazy_imports():
    """Also counting imports inside functions: e.g. converters.checkpoints -> compress.compressed_checkpoint
    -> (lazily) compress.lowrank -> (lazily) checkpoints was one, before the layer rewrites moved out."""
    graph = import_graph(lazy=True)
    assert sum(map(len, graph.values())) > sum(map(len, import_graph().values())), "lazy imports are seen"
    cycles = find_cycles(graph)
    assert not cycles, "import cycles (counting imports inside functions): " + "; ".join(" -> ".join(c)
                                                                                       for c in cycles)


def test_the_checker_finds_a_cycle_and_resolves_relative_imports():
    """The checker itself: relative imports resolve, a function-level import is an edge only when counting
    lazy imports, a cycle is named."""
    known = {"pkg", "pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c"}
    tree = ast.parse("from . import b\nfrom .sub.c import x\nfrom ..other import y\ntry:\n    import pkg.sub\n"
                     "except ImportError:\n    pass\ndef f():\n    from . import a\n")
    edges = set().union(*(_targets(n, "pkg.a", False, known) for n in _module_level_imports(tree)))
    assert edges == {"pkg.b", "pkg.sub.c", "pkg.sub"}
    lazy = set().union(*(_targets(n, "pkg.a", False, known) for n in _all_imports(tree)))
    assert lazy == {"pkg.a", "pkg.b", "pkg.sub.c", "pkg.sub"}
    assert _targets(ast.parse("from .c import z").body[0], "pkg.sub", True, known) == {"pkg.sub.c"}
    graph = {"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.sub.c"}, "pkg.sub.c": {"pkg.a"}, "pkg.sub": {"pkg.a"}}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]
    assert find_cycles({"x": {"y"}, "y": set()}) == []
