"""The package's layout rules, checked on the source.

1. Every public module (no part of its dotted name starts with ``_``, so neither private
   modules nor ``__main__``; a package's ``__init__`` counts as the package) lists its
   public names in ``__all__``, and every name listed there exists.
2. No module reads a private name (``_x``, not a dunder) of another crossentropy module:
   not by ``from m import _x``, not by ``m._x`` on an imported module. A private *module*
   is private to its package: its package and the packages inside that one may import it
   (``crossentropy._validate`` serves the whole library; ``crossentropy.torch._fused``
   serves ``crossentropy.torch``), no other package.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import types
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "crossentropy"

# Where no module may read another module's private name: files and packages under
# src/crossentropy (a package is checked with every module inside it).
NO_PRIVATE_NAMES = [
    "__init__.py",
    "_array.py",
    "_validate.py",
    "cli",
    "gradients.py",
    "information.py",
    "losses.py",
    "report",
    "compat",
    "demo",
    "explore",
    "integrations",
    "torch",
    "triton",
    "viz",
]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str, src: Path) -> bool:
    path = src.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _public_modules() -> list[str]:
    names = [_module_name(p, SRC) for p in sorted(PACKAGE.rglob("*.py"))]
    # no part starting with "_": private modules, and __main__ (a script, not imported)
    return [n for n in names if not any(part.startswith("_") for part in n.split("."))]


# ---------------------------------------------------------------------------------------
# 1. __all__


def _defined(module: types.ModuleType) -> set[str]:
    """The names the module's own source binds at top level (def, class, assignment),
    not what it imports."""
    source = inspect.getsource(module)
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        for target in targets:
            for leaf in ast.walk(target):
                if isinstance(leaf, ast.Name):
                    names.add(leaf.id)
    return names


def _all_problems(module: types.ModuleType) -> list[str]:
    """What is wrong with ``module``'s ``__all__``: missing, naming what is not there, or
    leaving out a public name the module defines (a helper is named ``_x``)."""
    listed = getattr(module, "__all__", None)
    if listed is None:
        return [f"{module.__name__} has no __all__"]
    problems = [
        f"{module.__name__}.__all__ lists {name!r}, which it does not define"
        for name in listed
        if not hasattr(module, name)
    ]
    if getattr(module, "__file__", None):
        unlisted = sorted(n for n in _defined(module) if not n.startswith("_") and n not in listed)
        problems += [
            f"{module.__name__} defines {name!r}, public but not in __all__" for name in unlisted
        ]
    return problems


@pytest.mark.parametrize("name", _public_modules())
def test_public_module_defines_all(name: str) -> None:
    try:
        module = importlib.import_module(name)
    except ImportError as error:  # an optional dependency (the extras) is not installed
        pytest.skip(f"{name} cannot be imported here: {error}")
    assert _all_problems(module) == []


def test_the_all_check_finds_a_missing_or_wrong_all() -> None:
    module = types.ModuleType("crossentropy.fake")
    assert _all_problems(module) == ["crossentropy.fake has no __all__"]
    module.__all__ = ["here", "gone"]  # type: ignore[attr-defined]
    module.here = 1  # type: ignore[attr-defined]
    assert _all_problems(module) == [
        "crossentropy.fake.__all__ lists 'gone', which it does not define"
    ]


def test_the_all_check_finds_a_public_name_left_out(tmp_path: Path) -> None:
    path = tmp_path / "fake_layout_module.py"
    path.write_text('__all__ = ["listed"]\nlisted = 1\nLOW, HIGH = 0, 1\n_helper = 2\n')
    spec = importlib.util.spec_from_file_location("fake_layout_module", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert _all_problems(module) == [
        "fake_layout_module defines 'HIGH', public but not in __all__",
        "fake_layout_module defines 'LOW', public but not in __all__",
    ]


# ---------------------------------------------------------------------------------------
# 2. private names


def _ancestor_or_same(package: str, of: str) -> bool:
    return of == package or of.startswith(package + ".")


def _private_uses(path: Path, src: Path) -> list[str]:
    """Each read of another crossentropy module's private name in the file at ``path``,
    as ``"file:line: what"``."""
    module = _module_name(path, src)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    where = path.relative_to(src)
    found: list[str] = []

    def check_module(name: str, line: int) -> None:
        """A private module may be used inside the package that holds it."""
        parent, _, last = name.rpartition(".")
        if _private(last) and not _ancestor_or_same(parent, package):
            found.append(f"{where}:{line}: module {name} is private to {parent}")

    def check_name(owner: str, name: str, line: int) -> str | None:
        """``owner.name``: the module it is, if it is one; else a private name is a use."""
        full = f"{owner}.{name}"
        if _is_module(full, src):
            check_module(full, line)
            return full
        if _private(name) and owner != module:
            found.append(f"{where}:{line}: {full}")
        return None

    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    modules: dict[str, str] = {}  # local name -> the crossentropy module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                owner = ".".join(base + ([node.module] if node.module else []))
            else:
                owner = node.module or ""
            if owner.split(".")[0] != "crossentropy":
                continue
            for part in range(2, len(owner.split(".")) + 1):
                check_module(".".join(owner.split(".")[:part]), node.lineno)
            for alias in node.names:
                bound = check_name(owner, alias.name, node.lineno)
                if bound is not None:
                    modules[alias.asname or alias.name] = bound
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] != "crossentropy":
                    continue
                for part in range(2, len(parts) + 1):
                    check_module(".".join(parts[:part]), node.lineno)
                if alias.asname:
                    modules[alias.asname] = alias.name
                else:
                    modules[parts[0]] = parts[0]
    # a.b.c is walked once, from its outermost attribute (the one no attribute holds)
    attributes = [node for node in ast.walk(tree) if isinstance(node, ast.Attribute)]
    inner = {id(node.value) for node in attributes}
    for node in attributes:
        if id(node) in inner:
            continue
        chain: list[ast.Attribute] = []
        base: ast.expr = node
        while isinstance(base, ast.Attribute):
            chain.append(base)
            base = base.value
        if not isinstance(base, ast.Name) or base.id not in modules:
            continue
        owner: str | None = modules[base.id]
        for attribute in reversed(chain):
            if owner is None:
                break
            owner = check_name(owner, attribute.attr, attribute.lineno)
    return sorted(set(found))


def _files(entry: str) -> list[Path]:
    path = PACKAGE / entry
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


@pytest.mark.parametrize("entry", NO_PRIVATE_NAMES)
def test_no_private_name_of_another_module(entry: str) -> None:
    assert _files(entry), f"{entry}: no such module or package under {PACKAGE}"
    found = [use for path in _files(entry) for use in _private_uses(path, SRC)]
    assert found == []


def test_the_private_name_check_finds_each_kind_of_use(tmp_path: Path) -> None:
    files = {
        "crossentropy/__init__.py": "",
        "crossentropy/_shared.py": "def helper(): ...\n",
        "crossentropy/a.py": "def _hidden(): ...\ndef shown(): ...\n_hidden()\n",
        "crossentropy/sub/__init__.py": "",
        "crossentropy/sub/_kernel.py": "def launch(): ...\ndef _cache(): ...\n",
        "crossentropy/sub/user.py": (
            "from .. import _shared\n"  # a private module of an enclosing package: fine
            "from . import _kernel\n"  # a private module of its own package: fine
            "from crossentropy.a import shown\n"
            "_kernel.launch()\n"
            "_kernel._cache()\n"  # 5: a private name of another module
        ),
        "crossentropy/other.py": (
            "import crossentropy\n"
            "from crossentropy.a import _hidden\n"  # 2
            "from crossentropy.sub import _kernel\n"  # 3: private to crossentropy.sub
            "from . import a as alias\n"
            "alias._hidden()\n"  # 5
            "crossentropy.a._hidden()\n"  # 6
            "crossentropy.a.shown()\n"
        ),
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    package = tmp_path / "crossentropy"
    assert _private_uses(package / "a.py", tmp_path) == []
    assert _private_uses(package / "sub" / "user.py", tmp_path) == [
        "crossentropy/sub/user.py:5: crossentropy.sub._kernel._cache"
    ]
    assert _private_uses(package / "other.py", tmp_path) == [
        "crossentropy/other.py:2: crossentropy.a._hidden",
        "crossentropy/other.py:3: module crossentropy.sub._kernel is private to crossentropy.sub",
        "crossentropy/other.py:5: crossentropy.a._hidden",
        "crossentropy/other.py:6: crossentropy.a._hidden",
    ]
