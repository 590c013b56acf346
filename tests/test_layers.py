"""Dependencies point one way: config -> models -> gate -> training (STYLE.md items 15 and 16).

Every import statement of every module counts, at module level, inside functions and under
``TYPE_CHECKING``: an import moved into a function to dodge a circle is the circle still there.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "medcam"
LAYERS = ("config", "models", "gate", "training")  # each may import those before it, never those after


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "medcam" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in LAYERS else None


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(module, line, inside a function)`` of every ``medcam`` import in ``path``."""
    tree = ast.parse(path.read_text())
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, inner) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, child.lineno, inner))
                found.extend((f"{child.module}.{alias.name}", child.lineno, inner) for alias in child.names)
            visit(child, inner)

    visit(tree, False)
    return [(m, line, inner) for m, line, inner in found if m.split(".")[0] == "medcam"]


def _layer_files() -> dict[str, list[Path]]:
    return {layer: sorted((PACKAGE / layer).rglob("*.py")) if (PACKAGE / layer).is_dir() else [PACKAGE / f"{layer}.py"]
            for layer in LAYERS}


@pytest.mark.parametrize("layer", LAYERS)
def test_no_layer_imports_one_above_it(layer: str) -> None:
    above = set(LAYERS[LAYERS.index(layer) + 1:])
    wrong = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
             for path in _layer_files()[layer] for module, line, _ in _imports(path) if _layer(module) in above]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("layer", LAYERS)
def test_no_medcam_import_hides_in_a_function(layer: str) -> None:
    hidden = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {module} inside a function"
              for path in _layer_files()[layer] for module, line, inner in _imports(path) if inner]
    assert not hidden, "\n".join(hidden)


def test_the_layers_import_without_a_circle() -> None:
    edges = {(layer, _layer(module)) for layer, files in _layer_files().items() for path in files
             for module, _, _ in _imports(path) if _layer(module) not in (None, layer)}
    order = {layer: i for i, layer in enumerate(LAYERS)}
    assert all(order[a] > order[b] for a, b in edges), sorted(edges)
    assert ("models", "config") in edges and ("gate", "models") in edges  # the check sees real imports
