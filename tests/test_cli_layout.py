"""The modules of ``crossentropy.cli`` say what they export, and keep their helpers to themselves.

Checked with ``ast`` on the source: every module (``__main__`` aside) has an explicit
``__all__`` of names it defines or imports, every name it defines without a leading
underscore is in it (a helper used only in its module is ``_private``), and no module imports
another's private name (``from m import _x``, or ``m._x`` through an imported module).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import crossentropy.cli

CLI = Path(crossentropy.cli.__file__).parent
MODULES = sorted(p for p in CLI.rglob("*.py") if p.name != "__main__.py")
IDS = [p.relative_to(CLI).as_posix() for p in MODULES]


def _all(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            value = ast.literal_eval(node.value)
            assert isinstance(value, list | tuple), "__all__ is not a literal list"
            return [str(v) for v in value]
    return None


def _bound(tree: ast.Module) -> tuple[set[str], set[str]]:
    """(names the module defines at top level, names it imports at top level)."""
    defined: set[str] = set()
    imported: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.Assign):
            defined |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            defined.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            imported |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return defined, imported


def export_problems(source: str) -> list[str]:
    """What is wrong with a module's ``__all__``: missing, naming nothing, or incomplete."""
    tree = ast.parse(source)
    exported = _all(tree)
    if exported is None:
        return ["no __all__"]
    defined, imported = _bound(tree)
    problems = [f"__all__ names {n!r}, which is not bound" for n in exported]
    problems = [p for p, n in zip(problems, exported, strict=True) if n not in defined | imported]
    public = {n for n in defined if not n.startswith("_")}
    problems += [f"{n!r} is public but not in __all__" for n in sorted(public - set(exported))]
    return problems


def private_imports(source: str) -> list[str]:
    """Private names of crossentropy modules that ``source`` reaches into."""
    found = []
    modules: set[str] = set()  # names bound to crossentropy modules
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("crossentropy"):
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append(f"line {node.lineno}: from {node.module} import {alias.name}")
                modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("crossentropy"):
                    modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
        ):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize("path", MODULES, ids=IDS)
def test_explicit_all(path: Path) -> None:
    assert export_problems(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", MODULES, ids=IDS)
def test_no_private_name_across_modules(path: Path) -> None:
    assert private_imports(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "source",
    [
        "def helper():\n    pass\n",  # no __all__
        "__all__ = ['gone']\n",
        "__all__ = ['run']\n\ndef run():\n    pass\n\ndef helper():\n    pass\n",
    ],
)
def test_the_export_check_finds_a_problem(source: str) -> None:
    assert export_problems(source), source


@pytest.mark.parametrize(
    "source",
    [
        "from crossentropy.cli.explain.inputs import _check\n",
        "from crossentropy.cli import compute\ncompute._column(1)\n",
        "import crossentropy as ce\nce._array\n",
    ],
)
def test_the_private_check_finds_a_reach(source: str) -> None:
    assert private_imports(source), source
