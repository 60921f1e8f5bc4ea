"""Imports flow one way: errors/atomic/families -> data, models, noise -> hardware -> train ->
unlearn, hessian, testing -> experiments -> compare, leaderboard -> plotting -> report -> cli, api.
A module importing from a layer above it fails here (function-level imports included: a lazy
import is still a dependency)."""

import ast
from pathlib import Path

import qunlearn

LAYERS = [
    {"errors", "atomic", "families"},
    {"data", "models", "noise"},
    {"hardware"},
    {"train"},
    {"unlearn", "surgery", "hessian", "audit", "testing"},
    {"experiments"},
    {"compare", "leaderboard"},
    {"plotting"},
    {"report"},
    {"cli", "api", "__main__", "__init__"},
]
ROOT = Path(qunlearn.__file__).parent


def layer(top: str) -> int:
    (index,) = [i for i, names in enumerate(LAYERS) if top in names]
    return index


def top_of(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return rel.parts[0]


def imported_tops(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "qunlearn" and len(parts) > 1:
                yield node.lineno, parts[1]
            elif parts[0] == "qunlearn" and isinstance(node, ast.ImportFrom):
                for alias in node.names:  # from qunlearn import atomic
                    yield node.lineno, alias.name


def test_every_module_has_a_layer():
    tops = {top_of(p) for p in ROOT.rglob("*.py")}
    assert tops <= set().union(*LAYERS), tops - set().union(*LAYERS)


def test_no_module_imports_from_a_layer_above_it():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        me = top_of(path)
        for lineno, other in imported_tops(path):
            if other in set().union(*LAYERS) and layer(other) > layer(me):
                upward.append(f"{path.relative_to(ROOT)}:{lineno} imports qunlearn.{other}")
    assert not upward, upward


def test_the_check_sees_an_upward_import(tmp_path):
    """The check is not vacuous: a planted lazy upward import is found, with its line."""
    planted = tmp_path / "x.py"
    planted.write_text("def f():\n    from qunlearn.plotting import style\n")
    assert list(imported_tops(planted)) == [(2, "plotting")]
    assert layer("plotting") > layer("data")
