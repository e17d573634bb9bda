"""A griffe extension: the reST pieces of the library's docstrings, as the site renders them.

The docstrings are Google style (Args, Returns, Example) with a few reStructuredText pieces
that read well in ``help()``: ``.. math::`` blocks, ``.. code-block:: text`` blocks, and the
roles ``:func:``, ``:mod:``, ``:class:``, ``:meth:``, ``:data:``, ``:attr:``, ``:math:``.
Before mkdocstrings parses a docstring this turns them into what the site's Markdown renders:

- ``.. math::`` blocks into ``$$ ... $$`` (pymdownx.arithmatex, typeset by MathJax), one per
  blank-line-separated equation, and ``:math:`x``` into ``$x$``;
- ``.. code-block:: LANG`` into a fenced block;
- a cross-reference role into a link where the object has a page, else into code;
- an "Example:" section into "Examples:", which griffe renders as a doctest session (its
  ``>>>`` lines indented under it where they were written flush with the header);
- any other doctest session (after "Example (on CUDA):" and the like) into a fenced block;
- "Args: As :func:`f`." (the arguments of another function) into a sentence, and
  "a, b, c: as in ..." into one entry per name, so that the parameter tables read right.

The source is never edited: only the text the site renders.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

_DIRECTIVE = re.compile(r"^(?P<indent>\s*)\.\. (?P<name>math|code-block)::\s*(?P<arg>\S*)\s*$")
_ROLE = re.compile(r":(?:func|mod|class|meth|data|attr|exc|obj):`~?(?P<target>[^`]+)`")
_MATH_ROLE = re.compile(r":math:`(?P<tex>[^`]+)`")
_EXAMPLE = re.compile(r"^(?P<indent>\s*)Examples?:\s*$")
_SECTION = re.compile(r"^(?P<indent>\s*)(?:Args|Arguments|Parameters):\s*$")
_AS_OTHER = re.compile(r"^(?P<indent>\s+)As (?P<rest>.*)$")
_MANY_NAMES = re.compile(r"^(?P<indent>\s+)(?P<names>[a-z_]\w*(?:, [a-z_]\w*)+):(?P<rest>.*)$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _directives(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _DIRECTIVE.match(lines[i])
        if match is None:
            out.append(lines[i])
            i += 1
            continue
        base = match["indent"]
        body: list[str] = []
        i += 1
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > len(base)):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():
            body.pop()
        depth = min((_indent(line) for line in body if line.strip()), default=0)
        text = [line[depth:] if line.strip() else "" for line in body]
        while text and not text[0]:
            text.pop(0)
        if match["name"] == "code-block":
            out += ["", f"{base}```{match['arg']}", *(f"{base}{t}" for t in text), f"{base}```", ""]
            continue
        equations: list[list[str]] = [[]]
        for t in text:
            if t:
                equations[-1].append(t)
            elif equations[-1]:
                equations.append([])
        for equation in equations:
            if equation:
                out += ["", f"{base}$$", *(f"{base}{t}" for t in equation), f"{base}$$", ""]
    return out


def _examples(lines: list[str]) -> list[str]:
    out: list[str] = []
    flush = None  # the indentation of an Examples header whose session is written flush
    for i, line in enumerate(lines):
        header = _EXAMPLE.match(line)
        if header is not None:
            base = header["indent"]
            out.append(f"{base}Examples:")
            following = next((t for t in lines[i + 1 :] if t.strip()), "")
            flush = base if following.startswith(f"{base}>>>") else None
            continue
        if not line.strip() and out and _EXAMPLE.match(out[-1]):
            continue  # griffe reads a section only when its body follows the header
        if flush is not None and line.strip() and _indent(line) < len(flush):
            flush = None
        indent = flush is not None and bool(line.strip())
        out.append(f"{flush}    {line[len(flush) :]}" if indent else line)
    return out


def _sessions(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        previous = next((t for t in reversed(out) if t.strip()), "")
        if (
            not line.lstrip().startswith(">>>")
            or _EXAMPLE.match(previous)
            or (previous.lstrip().startswith((">>>", "...")))
        ):
            out.append(line)
            i += 1
            continue
        base = " " * _indent(previous)
        depth = _indent(line)
        out += ["", f"{base}```pycon"]
        while i < len(lines) and lines[i].strip():
            out.append(f"{base}{lines[i][depth:]}")
            i += 1
        out += [f"{base}```", ""]
    return out


def _arguments(lines: list[str]) -> list[str]:
    out: list[str] = []
    in_args = False
    for line in lines:
        section = _SECTION.match(line)
        if section is not None:
            in_args = True
            out.append(line)
            continue
        if in_args and line.strip() and _indent(line) == 0:
            in_args = False
        as_other = _AS_OTHER.match(line) if in_args else None
        if as_other is not None and out and _SECTION.match(out[-1]):
            header = out.pop()
            out.append(f"{header[: _indent(header)]}Arguments: as {as_other['rest']}")
            in_args = False
            continue
        many = _MANY_NAMES.match(line) if in_args else None
        if many is not None:
            out += [f"{many['indent']}{name}:{many['rest']}" for name in many["names"].split(", ")]
            continue
        out.append(line)
    return out


def _link(match: re.Match[str]) -> str:
    target = match["target"]
    return f'<autoref identifier="{target}" optional><code>{target}</code></autoref>'


def rewrite(text: str) -> str:
    r"""The docstring ``text`` as the site's Markdown should read it.

    >>> print(rewrite(
    ...     "The loss, :math:`-\\log p_y`:\n\n.. math::\n\n    a = b\n\n    c = d\n\n"
    ...     "Args:\n    x, y: as in :func:`f`."))
    The loss, $-\log p_y$:
    <BLANKLINE>
    <BLANKLINE>
    $$
    a = b
    $$
    <BLANKLINE>
    <BLANKLINE>
    $$
    c = d
    $$
    <BLANKLINE>
    Args:
        x: as in <autoref identifier="f" optional><code>f</code></autoref>.
        y: as in <autoref identifier="f" optional><code>f</code></autoref>.
    >>> rewrite("Example:\n\n>>> 1 + 1\n2").splitlines()
    ['Examples:', '    >>> 1 + 1', '    2']
    """
    lines = _sessions(_examples(_arguments(_directives(text.splitlines()))))
    body = "\n".join(lines)
    body = _MATH_ROLE.sub(lambda m: f"${m['tex']}$", body)
    return _ROLE.sub(_link, body)


class RstDocstrings(Extension):
    """Rewrites every docstring once the tree is loaded (see the module's docstring)."""

    def on_object(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
