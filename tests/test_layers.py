"""The package's layers import only downward, and no module imports another's private names.

Bottom to top (docs/architecture.md): core < data < metrics < models < tasks, methods <
engine (with config) < explain < report < pipelines < cli. Imports inside functions count too:
a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "multimix"
LAYERS = {
    "core": 0,
    "data": 1,
    "metrics": 2,
    "models": 3,
    "tasks": 4,
    "methods": 4,
    "config": 5,
    "engine": 5,
    "explain": 6,
    "report": 7,
    "pipelines": 8,
    "api": 8,
    "serve": 8,
    "cli": 9,
    "__init__": 9,
    "__main__": 10,
}


def _layer(module: str) -> int:
    head = module.split(".")[1] if module.startswith("multimix.") else module
    return LAYERS[head]


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("multimix"):
            out.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("multimix")]
    return out


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        yield path, ".".join(rel.parts)


def test_every_package_has_a_layer():
    heads = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in PACKAGE.rglob("*.py")}
    assert heads <= set(LAYERS), heads - set(LAYERS)


def test_imports_only_go_down():
    wrong = []
    for path, module in _modules():
        mine = _layer(module)
        for target, _, line in _imports(path):
            if target == "multimix":
                continue
            if _layer(target) > mine:
                wrong.append(f"{module}:{line} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_no_private_names_cross_modules():
    wrong = []
    for path, module in _modules():
        for target, names, line in _imports(path):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and target != module:
                wrong.append(f"{module}:{line} imports {', '.join(private)} from {target}")
    assert not wrong, "\n".join(wrong)
