"""One error type for the whole command line, printed in one place.

Every command refuses a bad input by raising :class:`crossentropy.cli.errors.CliError`, and
``crossentropy.cli.app`` alone prints it: one line on stderr, ``crossentropy <command>:
error: ...``, exit status 2, nothing on stdout, no traceback. The parser's own usage errors
(an unknown option, a value that is not an integer) come out of the same place in the same
shape. An ``ast`` check keeps a second way of reporting from coming back: no other exception
class, no ``typer.BadParameter``, no ``error:`` written to stderr, no exit status 2 outside
``app.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

import crossentropy.cli
from crossentropy.cli.app import app
from crossentropy.cli.errors import CliError

ENV = {"COLUMNS": "120", "NO_COLOR": "1"}
CLI = Path(crossentropy.cli.__file__).parent


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "p.csv").write_text("0.2,0.3,0.5\n0.1,0.1,0.8\n")
    (tmp_path / "y.csv").write_text("2\n2\n")
    (tmp_path / "file").write_text("not a directory\n")
    (tmp_path / "dir").mkdir()
    return {p.name: str(p) for p in tmp_path.iterdir()}


def _argv(args: list[str], files: dict[str, str]) -> list[str]:
    out = []
    for arg in args:
        for name, path in files.items():
            arg = arg.replace("{" + name + "}", path)
        out.append(arg)
    return out


# (arguments, the start of the error line after "crossentropy <command>: error: ")
REFUSED = [
    # explain: a value (inputs), a topic's own check, the table's options, the callbacks
    (["explain", "entropy", "--p", "nan,1"], "Invalid value for '--p': NaN is not allowed"),
    (["explain", "kl", "--p", "0.5,0.5"], "Invalid value for '--p': p and q must have the same"),
    (["explain", "gradients", "--label", "5"], "Invalid value for '--label': label 5 is out of"),
    (["explain", "multilabel", "--logits", "1,2"], "Invalid value for '--logits': multilabel"),
    (["explain", "entropy", "--q", "0.5,0.5"], "Invalid value for '--q': topic 'entropy' does"),
    (["explain", "nope"], "Invalid value for '[TOPIC]': unknown topic 'nope'"),
    (["explain", "--base", "1"], "Invalid value for '--base' / '-b': '1' is not a valid base"),
    (["explain", "-f", "xml"], "Invalid value for '--format' / '-f': unknown format 'xml'"),
    # explore
    (["explore", "--port", "8000"], "Invalid value for '--port': only applies with --serve"),
    (["explore", "--logits", "nan,0"], "Invalid value for '--logits': NaN is not allowed"),
    (["explore", "--label", "9"], "Invalid value for '--label': expected a class index"),
    (["explore", "-o", "{file}/x.html"], "Invalid value for '--out': cannot write"),
    # plot
    (["plot", "-o", "{dir}", "nope"], "Invalid value for 'FIGURE': unknown figure 'nope'"),
    (["plot", "-o", "{file}", "information"], "--out '"),
    (["plot", "-o", "", "information"], "--out: expected a directory; got ''"),
    # compute
    (["compute", "{dir}/nope.csv", "{y.csv}"], "'"),
    (["compute", "{dir}", "{y.csv}"], ""),
    (["compute", "-", "-"], "PREDICTIONS and LABELS cannot both be -"),
    (["compute", "{p.csv}", "{y.csv}", "--normalize", "--logits"], "--normalize applies"),
    # demo (each refused before any training)
    (["demo", "--out", ""], "--out: expected a directory; got ''"),
    (["demo", "--lr", "-1", "--out", "{dir}/run"], "--lr: expected a number in (0, 1e+06]"),
    (["demo", "--logger", "nope", "--out", "{dir}/run"], "--logger: expected one of"),
    (["demo", "--out", "{file}"], "--out: "),
]

# The parser's own errors: not a CliError, printed by the same place in the same shape.
PARSER = [
    (["explain", "--nope"], "No such option: --nope"),
    (["explain", "--label", "x"], "Invalid value for '--label'"),
    (["compute"], "Missing argument"),
    (["plot"], "Missing option '--out'"),
    (["explore", "--view", "3d"], "Invalid value for '--view'"),
    (["demo", "--epochs", "1.5"], "Invalid value for '--epochs'"),
]


def _one_line(args: list[str]) -> str:
    result = CliRunner().invoke(app, args, env=ENV)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stdout == ""
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(("args", "start"), REFUSED, ids=[" ".join(a[:3]) for a, _ in REFUSED])
def test_a_refused_input_is_a_cli_error_told_in_one_line(
    args: list[str],
    start: str,
    files: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = _argv(args, files)
    command = f"crossentropy {args[0]}"
    line = _one_line(argv)
    assert line.startswith(f"{command}: error: {start}"), line
    # the same input, without the application's printing: the one error type, naming the command
    with pytest.raises(CliError) as info:
        typer.main.get_command(app).main(argv, prog_name="crossentropy", standalone_mode=False)
    assert info.value.command == command
    assert info.value.message in line


@pytest.mark.parametrize(("args", "start"), PARSER, ids=[" ".join(a) for a, _ in PARSER])
def test_a_usage_error_is_told_in_the_same_shape(args: list[str], start: str) -> None:
    line = _one_line(args)
    assert line.startswith(f"crossentropy {args[0]}: error: {start}"), line
    assert line.endswith(f"(see 'crossentropy {args[0]} --help')"), line


# ------------------------------------------------------------------------------------------
# No second way of reporting an error in the modules of the command line
# ------------------------------------------------------------------------------------------

_CLICK_ERRORS = {"BadParameter", "UsageError", "ClickException"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def second_ways(source: str) -> list[str]:
    """What in ``source`` tells a user about an error other than by raising a CliError."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            bases = [_dotted(b).rsplit(".", 1)[-1] for b in node.bases]
            if any(b.endswith(("Error", "Exception")) for b in bases):
                found.append(f"line {node.lineno}: an exception class {node.name}")
        elif isinstance(node, ast.Name | ast.Attribute) and (
            _dotted(node).rsplit(".", 1)[-1] in _CLICK_ERRORS
        ):
            found.append(f"line {node.lineno}: {_dotted(node)}")
        elif isinstance(node, ast.alias) and node.name.rsplit(".", 1)[-1] in _CLICK_ERRORS:
            found.append(f"line {node.lineno}: imports {node.name}")
        elif isinstance(node, ast.Call):
            callee = _dotted(node.func)
            texts = [
                c.value
                for arg in node.args
                for c in ast.walk(arg)
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            ]
            if callee.endswith("stderr.write") and any("error" in t for t in texts):
                found.append(f"line {node.lineno}: writes an error to stderr")
            statuses = [a.value for a in node.args if isinstance(a, ast.Constant)]
            if callee.rsplit(".", 1)[-1] in {"Exit", "exit", "SystemExit"} and 2 in statuses:
                found.append(f"line {node.lineno}: {callee}(2)")
    return found


_MODULES = sorted(
    p for p in CLI.rglob("*.py") if p.relative_to(CLI).as_posix() not in {"app.py", "errors.py"}
)


@pytest.mark.parametrize("path", _MODULES, ids=[p.relative_to(CLI).as_posix() for p in _MODULES])
def test_no_second_way_to_report_an_error(path: Path) -> None:
    assert second_ways(path.read_text(encoding="utf-8")) == []


def test_errors_defines_the_one_error_class() -> None:
    tree = ast.parse((CLI / "errors.py").read_text(encoding="utf-8"))
    classes = [n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    assert classes == ["CliError"]


@pytest.mark.parametrize(
    "source",
    [
        "class PlotError(ClickException):\n    exit_code = 2\n",
        "class InputError(ValueError):\n    pass\n",
        "import typer\nraise typer.BadParameter('bad', param_hint='--x')\n",
        "from click.exceptions import UsageError\n",
        "import sys\nsys.stderr.write(f'crossentropy demo: error: {message}\\n')\n",
        "import typer\nraise typer.Exit(2)\n",
        "import sys\nsys.exit(2)\n",
    ],
)
def test_the_check_finds_a_second_way(source: str) -> None:
    assert second_ways(source), source
