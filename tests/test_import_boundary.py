"""The device side imports nothing from the host side (docs/architecture.md, issue 17).

Every ``import`` and ``from ... import`` in edge_runtime/, at any depth (inside functions too), is
read from the source: none may name ``converters``, except the CLI's (edge_runtime/cli/) lazy imports
inside its host commands; and no module imports a host-only library (torch, onnx, TensorFlow, onnx2tf,
NNCF) at module level, so ``import edge_runtime.<anything>`` works on a device install.
"""

from __future__ import annotations

import ast
from pathlib import Path

EDGE_RUNTIME = Path(__file__).resolve().parents[1] / "edge_runtime"
HOST_PACKAGE = "converters"
HOST_LIBRARIES = {"torch", "onnx", "tensorflow", "onnx2tf", "nncf", "onnxslim", "tf_keras"}


def _imports(tree: ast.AST) -> list[tuple[ast.AST, str, bool]]:
    """(node, top-level module name, at module level?) for every absolute import in ``tree``."""
    found = []
    top_level = set(map(id, getattr(tree, "body", [])))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node, name.split(".")[0], id(node) in top_level) for name in names]
    return found


def test_edge_runtime_never_imports_the_host_package():
    files = sorted(EDGE_RUNTIME.rglob("*.py"))
    assert len(files) > 20, files  # the walk really reads the package
    bad = []
    for path in files:
        for node, module, module_level in _imports(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(EDGE_RUNTIME.parent)}:{node.lineno}"
            in_cli = path.relative_to(EDGE_RUNTIME).parts[0] == "cli"
            if module == HOST_PACKAGE and (not in_cli or module_level):
                bad.append(f"{where} imports {module}")
            if module in HOST_LIBRARIES and module_level:
                bad.append(f"{where} imports {module} at module level")
    assert not bad, "device side reaches into host code: " + "; ".join(bad)


def test_the_walk_sees_nested_and_module_level_imports():
    """The checker itself: an import inside a function and one at module level are both seen."""
    tree = ast.parse("import os\nfrom converters.x import y\ndef f():\n    import torch\n")
    seen = {(module, module_level) for _, module, module_level in _imports(tree)}
    assert seen == {("os", True), ("converters", True), ("torch", False)}
