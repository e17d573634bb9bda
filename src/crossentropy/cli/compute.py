"""``crossentropy compute``: a loss report for a file of predictions, read as a stream.

Each input is opened once and read as a stream in chunks of about :data:`CHUNK_BYTES`, so the
memory used does not grow with the file; ``-`` is the standard input, and a pipe or a FIFO
works as a file does (an NPZ archive excepted: zip needs a regular file). The first bytes tell
the format:

- NPY (the NPY magic bytes, or ``.npy``): memory-mapped (``numpy.load(mmap_mode="r")``) and
  read in blocks of rows; from a pipe, read as a stream.
- NPZ (the ZIP magic bytes, or ``.npz``): the archive's only array, or the one named after a
  colon (``data.npz:logits``), or, when there are several and none is named, the one called
  ``predictions``/``probabilities``/``probs``/``logits`` (predictions) or
  ``labels``/``targets``/``y`` (labels). The member is streamed from the archive (compressed
  or not) in blocks of rows; a Fortran-ordered member is refused.
- CSV (anything else): numbers separated by commas (tabs for ``.tsv``), one row per line,
  each number bare or in double quotes; a UTF-8 byte-order mark, CRLF line breaks and blank
  lines are accepted, and a first line with no number in it (``"p0","p1"``) is a header. A
  line longer than :data:`MAX_LINE_BYTES`, a NUL byte (binary data) or bytes that are not
  UTF-8 end the run with one line naming the line, so a file without line breaks is refused
  after reading at most that much. Lines are parsed in batches with ``numpy.loadtxt``; a
  batch that does not parse is located again field by field, so the error names the line
  and the column.

An array or a CSV has at most :data:`MAX_COLUMNS` columns. Predictions are rows of C
probabilities (``--logits``: logits); a 1-D array or a single column is one probability
(logit) per row, for ``--multilabel`` binary labels. Labels are integer class ids (a column,
or a 1-D array) or one-hot rows; with ``--multilabel``, n-hot rows. The numbers are defined
in :mod:`crossentropy.report`; row numbers in the report count data rows from 0 (a CSV's
header and blank lines excluded).
"""

from __future__ import annotations

import codecs
import dataclasses
import io
import json
import math
import os
import stat
import sys
import zipfile
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import IO, Annotated, Any

import numpy as np
import numpy.typing as npt
import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from crossentropy.cli.errors import CliError
from crossentropy.report import (
    BadValue,
    Report,
    ReportAccumulator,
    check_labels,
    check_predictions,
)

__all__ = [
    "CHUNK_BYTES",
    "MAX_CHUNK_ROWS",
    "MAX_COLUMNS",
    "MAX_LINE_BYTES",
    "MAX_WORST",
    "PROGRESS_BYTES",
    "ArraySource",
    "Block",
    "CsvSource",
    "OutputFormat",
    "Source",
    "StreamArraySource",
    "compute",
    "open_source",
    "render_text",
    "report_json",
    "run_report",
]

CHUNK_BYTES = 2 << 20
"""The target size of one chunk of input, in bytes of text (CSV) or of array data."""

MAX_LINE_BYTES = 32 << 20
"""The longest CSV line read (its line break included): a million numbers of 31 characters."""

MAX_COLUMNS = 1 << 20
"""The most columns (classes) an input may have: the report keeps a few sums per class."""

MAX_CHUNK_ROWS = 1 << 20
"""The most rows of one chunk (``--chunk-size``); a chunk also stops at :data:`CHUNK_BYTES`."""

MAX_WORST = 10_000
"""The most worst-scored rows ``--worst`` lists."""

_STDIN = "-"
_STDIN_NAME = "<stdin>"

PROGRESS_BYTES = 16 << 20
"""Inputs at least this large show a progress bar (when stderr is a terminal)."""

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_PREDICTION_KEYS = ("predictions", "probabilities", "probs", "logits")
_LABEL_KEYS = ("labels", "targets", "y")


class OutputFormat(str, Enum):
    text = "text"
    json = "json"


Block = tuple[npt.NDArray[Any], Callable[[int, int | None], str]]
"""Rows of numbers and a function naming the place of (row, column) in the file."""


def _column(col: int | None) -> str:
    return "" if col is None else f", column {col + 1}"


# --------------------------------------------------------------------------------------------
# Sources: read(n) returns at most the next n rows (fewer at the end, or when a chunk of
# CHUNK_BYTES is full), or None at the end
# --------------------------------------------------------------------------------------------


class _Rejoined(io.RawIOBase):
    """The bytes already read from the head of a stream, then the rest of the stream.

    A pipe or a terminal cannot be read twice: its first bytes, read to tell NPY and NPZ from
    CSV, are handed out again before the rest, so that every input is opened once.
    """

    def __init__(self, head: bytes, rest: IO[bytes], *, owns: bool) -> None:
        super().__init__()
        self.head = head
        self.rest = rest
        self.owns = owns

    def close(self) -> None:
        if self.owns and not self.closed:
            self.rest.close()
        super().close()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self.head:
            n = min(len(view), len(self.head))
            view[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        read1 = getattr(self.rest, "read1", self.rest.read)
        data = read1(len(view))
        view[: len(data)] = data
        return len(data)


class CsvSource:
    """Rows of a delimited text file, read line by line with a bounded line length."""

    def __init__(self, file: IO[bytes], name: str, size: int, delimiter: str) -> None:
        self.name = name
        self.delimiter = delimiter
        self.file = file
        self.size = size
        self.consumed = 0
        self.line = 0
        self.columns: int | None = None
        self.first = True

    def close(self) -> None:
        self.file.close()

    @property
    def position(self) -> int:
        return self.consumed

    def _next_line(self) -> bytes | None:
        """The next line, at most MAX_LINE_BYTES long (its line break included); b"" at the end."""
        raw = self.file.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return None
        self.line += 1
        self.consumed += len(raw)
        if len(raw) > MAX_LINE_BYTES:
            raise CliError(
                f"{self.name}: line {self.line} is longer than {MAX_LINE_BYTES >> 20} MiB "
                "(no line break: not a CSV file of rows?)"
            )
        if b"\0" in raw:
            raise CliError(
                f"{self.name}: line {self.line} holds a NUL byte: binary data, not CSV text "
                "(or NPY / NPZ)"
            )
        if self.line == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        return raw

    def _fields(self, text: str) -> Iterator[str]:
        """The fields of a line, one at a time (a long line is not split into a list)."""
        start = 0
        while True:
            end = text.find(self.delimiter, start)
            yield text[start:].strip() if end < 0 else text[start:end].strip()
            if end < 0:
                return
            start = end + 1

    def read(self, n: int) -> Block | None:
        lines: list[str] = []
        numbers: list[int] = []
        size = 0
        while len(lines) < n and size < CHUNK_BYTES:
            raw = self._next_line()
            if raw is None:
                break
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise CliError(f"{self.name}: line {self.line}: not UTF-8 text") from None
            if not text:
                continue
            columns = text.count(self.delimiter) + 1
            if self.first:
                self.first = False
                # a header: no field is a number, quoted or not; a row with a number is data
                if not any(_is_number(f) for f in self._fields(text)):
                    self._set_columns(columns, self.line)
                    continue
            self._set_columns(columns, self.line)
            if columns != self.columns:
                raise CliError(
                    f"{self.name}: line {self.line}: {columns} column(s), expected {self.columns}"
                )
            lines.append(text)
            numbers.append(self.line)
            size += len(raw)
        if not lines:
            return None
        values = self._parse(lines, numbers)

        def where(row: int, col: int | None) -> str:
            return f"line {numbers[row]}{_column(col)}"

        return values, where

    def _set_columns(self, columns: int, line: int) -> None:
        if self.columns is not None:
            return
        if columns > MAX_COLUMNS:
            raise CliError(
                f"{self.name}: line {line}: {columns} columns; at most {MAX_COLUMNS} are read"
            )
        self.columns = columns

    def _parse(self, lines: list[str], numbers: list[int]) -> npt.NDArray[np.float64]:
        try:
            with np.errstate(all="ignore"):
                values = np.loadtxt(
                    lines,
                    delimiter=self.delimiter,
                    dtype=np.float64,
                    ndmin=2,
                    comments=None,
                    quotechar='"',
                    encoding=None,
                )
        except Exception as exc:  # located again below, field by field
            self._locate(lines, numbers)
            message = " ".join(str(exc).split())
            raise CliError(
                f"{self.name}: lines {numbers[0]}-{numbers[-1]}: cannot parse ({message})"
            ) from None
        return values

    def _locate(self, lines: list[str], numbers: list[int]) -> None:
        """Raise a :class:`CliError` at the first malformed field of a batch."""
        for text, line in zip(lines, numbers, strict=True):
            for col, field in enumerate(self._fields(text)):
                if not field:
                    raise CliError(f"{self.name}: line {line}, column {col + 1}: empty field")
                if not _is_number(field):
                    shown = field if len(field) <= 20 else field[:17] + "..."
                    raise CliError(
                        f"{self.name}: line {line}, column {col + 1}: {shown!r} is not a number"
                    )


def _is_number(field: str) -> bool:
    """Whether a CSV field is a number, in double quotes or not (``0.5``, ``"0.5"``)."""
    if len(field) >= 2 and field[0] == field[-1] == '"':
        field = field[1:-1].strip()
    if "_" in field:  # float() reads 1_000; numpy does not
        return False
    try:
        float(field)
    except ValueError:
        return False
    return True


class ArraySource:
    """Rows of a 1-D or 2-D array (a memory map or an array in memory)."""

    def __init__(self, array: npt.NDArray[Any], name: str, size: int) -> None:
        self.name = name
        self.array = _checked_array(array, name)
        self.size = size
        self.offset = 0
        self.columns = 1 if self.array.ndim == 1 else self.array.shape[1]
        self.rows_per_chunk = max(1, CHUNK_BYTES // max(self.columns * array.dtype.itemsize, 1))

    def close(self) -> None:
        pass

    @property
    def position(self) -> int:
        total = max(self.array.shape[0], 1)
        return int(self.size * self.offset / total)

    def read(self, n: int) -> Block | None:
        start = self.offset
        if start >= self.array.shape[0]:
            return None
        block = np.array(self.array[start : start + min(n, self.rows_per_chunk)])
        self.offset = start + block.shape[0]
        if block.ndim == 1:
            block = block[:, None]

        def where(row: int, col: int | None) -> str:
            return f"row {start + row}{_column(col)}"

        return block, where


class StreamArraySource:
    """Rows of an NPY array in C order read from a stream: an NPZ member or a pipe."""

    def __init__(self, file: IO[bytes], name: str, size: int, closing: Any = None) -> None:
        self.name = name
        self.file = file
        self.closing = closing
        self.size = size
        version = np.lib.format.read_magic(file)  # type: ignore[no-untyped-call]
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(file)  # type: ignore[no-untyped-call]
        else:
            header = np.lib.format.read_array_header_2_0(file)  # type: ignore[no-untyped-call]
        shape, fortran, dtype = header
        self.shape: tuple[int, ...] = tuple(shape)
        self.dtype = np.dtype(dtype)
        _checked_array(np.empty((0,) * len(self.shape), dtype=self.dtype), name, self.shape)
        if fortran:
            raise CliError(f"{name}: a Fortran-ordered array; save it in C order")
        self.columns = 1 if len(self.shape) == 1 else self.shape[1]
        self.row_bytes = self.columns * self.dtype.itemsize
        self.rows_per_chunk = max(1, CHUNK_BYTES // max(self.row_bytes, 1))
        self.offset = 0

    def close(self) -> None:
        self.file.close()
        if self.closing is not None:
            self.closing.close()

    @property
    def position(self) -> int:
        return int(self.size * self.offset / max(self.shape[0], 1))

    def read(self, n: int) -> Block | None:
        start = self.offset
        rows = min(n, self.rows_per_chunk, self.shape[0] - start)
        if rows <= 0:
            return None
        data = self.file.read(rows * self.row_bytes)
        if len(data) != rows * self.row_bytes:
            row = start + len(data) // max(self.row_bytes, 1)
            raise CliError(f"{self.name}: truncated array data (row {row})")
        block = np.frombuffer(data, dtype=self.dtype).reshape(rows, self.columns)
        self.offset = start + rows

        def where(row: int, col: int | None) -> str:
            return f"row {start + row}{_column(col)}"

        return block, where


Source = CsvSource | ArraySource | StreamArraySource


def _checked_array(
    array: npt.NDArray[Any], name: str, shape: tuple[int, ...] | None = None
) -> npt.NDArray[Any]:
    shape = array.shape if shape is None else shape
    if array.dtype.kind not in "biuf":
        raise CliError(f"{name}: array of dtype {array.dtype}; expected numbers")
    if len(shape) not in (1, 2):
        raise CliError(f"{name}: array of shape {shape}; expected 1-D or 2-D (rows, columns)")
    if len(shape) == 2 and not 1 <= shape[1] <= MAX_COLUMNS:
        raise CliError(f"{name}: array of shape {shape}; expected 1 to {MAX_COLUMNS} columns")
    return array


def _read_head(file: IO[bytes], n: int) -> bytes:
    """Up to ``n`` bytes from the start of ``file`` (fewer only at its end)."""
    head = b""
    while len(head) < n:
        chunk = file.read(n - len(head))
        if not chunk:
            break
        head += chunk
    return head


def open_source(spec: str, *, role: str) -> Source:
    """Open a CSV, NPY or NPZ input once (``role``: ``"predictions"`` or ``"labels"``).

    ``-`` is the standard input. A regular file's format is told by its first bytes, read
    and then sought back; a pipe, a FIFO or a device is read once, its first bytes handed out
    again before the rest. An NPZ archive needs a regular file (zip reads its end first).
    """
    if spec == _STDIN:
        return _open_stream(sys.stdin.buffer, _STDIN_NAME, None, role, close=False)
    path = Path(spec)
    member: str | None = None
    if not path.exists() and ":" in spec:
        head, _, tail = spec.rpartition(":")
        if Path(head).is_file():
            path, member = Path(head), tail
    if not spec or not path.exists():
        raise CliError(f"{spec!r}: no such file")
    if path.is_dir():
        raise CliError(f"{spec}: is a directory, not a file")
    try:
        file = open(path, "rb")  # noqa: SIM115 - the source closes it
    except OSError as exc:
        raise CliError(f"{spec}: cannot read ({exc.strerror})") from None
    return _open_stream(file, str(path), member, role, close=True, path=path)


def _open_stream(
    file: IO[bytes],
    name: str,
    member: str | None,
    role: str,
    *,
    close: bool,
    path: Path | None = None,
) -> Source:
    try:
        info = os.fstat(file.fileno())
        regular = stat.S_ISREG(info.st_mode)
    except (OSError, ValueError, io.UnsupportedOperation):  # a stream without a descriptor
        regular = False
    size = info.st_size if regular else 0
    suffix = path.suffix.lower() if path is not None else ""
    try:
        head = _read_head(file, len(_NPY_MAGIC))
        if regular and close:
            file.seek(-len(head), os.SEEK_CUR)
            stream: IO[bytes] = file
        else:
            stream = io.BufferedReader(_Rejoined(head, file, owns=close), buffer_size=1 << 16)
        if head.startswith(_ZIP_MAGIC) or suffix == ".npz":
            if path is None or not regular:
                raise CliError(f"{name}: an NPZ archive must be a regular file, not a stream")
            file.close()
            return _open_npz(path, member, name, size, role)
        if member is not None:
            raise CliError(f"{name}:{member}: a member name needs an .npz file")
        if head == _NPY_MAGIC or suffix == ".npy":
            if path is not None and regular:
                file.close()
                array = np.load(path, mmap_mode="r", allow_pickle=False)
                return ArraySource(array, name, size)
            return StreamArraySource(stream, name, size)
        if b"\0" in head:
            raise CliError(f"{name}: binary data (a NUL byte at the start), not CSV, NPY or NPZ")
        delimiter = "\t" if suffix == ".tsv" else ","
        return CsvSource(stream, name, size, delimiter)
    except CliError:
        if close:
            file.close()
        raise
    except OSError as exc:
        if close:
            file.close()
        raise CliError(f"{name}: cannot read ({exc.strerror or exc})") from None
    except Exception as exc:  # a corrupt file: whatever numpy or zipfile says
        if close:
            file.close()
        message = " ".join(str(exc).split()) or type(exc).__name__
        kind = "NPZ" if suffix == ".npz" else "NPY"
        raise CliError(f"{name}: not a valid {kind} file ({message})") from None


def _open_npz(path: Path, member: str | None, name: str, size: int, role: str) -> Source:
    archive = zipfile.ZipFile(path)
    members = [m[:-4] for m in archive.namelist() if m.endswith(".npy")]
    if member is None:
        if len(members) == 1:
            member = members[0]
        else:
            keys = _PREDICTION_KEYS if role == "predictions" else _LABEL_KEYS
            found = [k for k in keys if k in members]
            if not found:
                archive.close()
                raise CliError(
                    f"{name}: {len(members)} arrays ({', '.join(members) or 'none'}); "
                    f"name one as {name}:NAME"
                )
            member = found[0]
    if member not in members:
        archive.close()
        raise CliError(f"{name}: no array {member!r} (has {', '.join(members) or 'none'})")
    try:
        return StreamArraySource(
            archive.open(member + ".npy"), f"{name}:{member}", size, closing=archive
        )
    except BaseException:
        archive.close()
        raise


# --------------------------------------------------------------------------------------------
# The stream
# --------------------------------------------------------------------------------------------


def _fail(source: Source, where: Callable[[int, int | None], str], exc: BadValue) -> CliError:
    hint = f" ({exc.hint})" if exc.hint else ""
    return CliError(f"{source.name}: {where(exc.row, exc.column)}: {exc.message}{hint}")


def run_report(
    predictions: Source,
    labels: Source,
    *,
    logits: bool,
    multilabel: bool,
    normalize: bool,
    worst: int = 10,
    chunk_rows: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Report:
    """Feed both sources, chunk by chunk in lockstep, to a :class:`ReportAccumulator`.

    Either source may return fewer rows than asked for (a chunk is bounded in bytes too): a
    chunk of predictions is matched with as many reads of labels as it takes.
    """
    rows = min(chunk_rows or MAX_CHUNK_ROWS, MAX_CHUNK_ROWS)
    acc: ReportAccumulator | None = None
    seen = 0
    while True:
        block = predictions.read(rows)
        if block is None:
            if seen == 0:
                raise CliError(f"{predictions.name}: no rows of predictions")
            if labels.read(1) is not None:
                raise CliError(f"{labels.name} has more rows than {predictions.name} ({seen} rows)")
            break
        x_all, where_x = block
        n, c = x_all.shape
        if acc is None:
            if c == 1 and not multilabel:
                raise CliError(
                    f"{predictions.name}: one column of predictions; pass --multilabel for "
                    f"binary labels (one probability or logit per label), or give one column "
                    f"per class"
                )
            acc = ReportAccumulator(c, logits=logits, multilabel=multilabel, worst=worst)
        done = 0
        while done < n:
            got = labels.read(n - done)
            if got is None:
                raise CliError(
                    f"{labels.name} has fewer rows ({seen + done}) than {predictions.name} "
                    f"(at least {seen + n})"
                )
            y, where_y = got
            m = y.shape[0]
            try:
                x = check_predictions(
                    x_all[done : done + m],
                    logits=logits,
                    multilabel=multilabel,
                    normalize=normalize,
                )
            except BadValue as exc:
                exc.row += done
                raise _fail(predictions, where_x, exc) from None
            try:
                check_labels(y, c, multilabel=multilabel)
            except BadValue as exc:
                raise _fail(labels, where_y, exc) from None
            except ValueError as exc:
                raise CliError(f"{labels.name}: {exc}") from None
            acc.update(x, y)
            done += m
        seen += n
        if on_progress is not None:
            on_progress(predictions.position)
    assert acc is not None
    return acc.result()


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def _number(value: float | None, digits: int = 6) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}g}" if abs(value) >= 1e-4 or value == 0 else f"{value:.3e}"


def render_text(report: Report, console: Console, *, title: str) -> None:
    """The report as rich tables."""
    summary = Table(title=title, box=box.SIMPLE_HEAVY, show_header=True)
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    summary.add_column("meaning", style="dim")
    kind = "multi-label (sigmoid)" if report.multilabel else "single-label (softmax)"
    source = "logits" if report.logits else "probabilities"
    summary.add_row("rows", str(report.rows), f"{kind}, from {source}")
    summary.add_row("classes", str(report.num_classes), "")
    per = "per label" if report.multilabel else "per row"
    summary.add_row("cross entropy", _number(report.cross_entropy_nats), f"nats, mean {per}")
    summary.add_row("cross entropy", _number(report.cross_entropy_bits), f"bits, mean {per}")
    summary.add_row("perplexity", _number(report.perplexity), "exp(cross entropy in nats)")
    if report.multilabel:
        summary.add_row("accuracy", _number(report.accuracy), "rows with every label right")
        summary.add_row(
            "label accuracy", _number(report.element_accuracy), "labels right (p > 0.5)"
        )
        summary.add_row("Brier score", _number(report.brier), "mean (p - y)^2 per label")
    else:
        summary.add_row("accuracy", _number(report.accuracy), "argmax = label")
        summary.add_row("Brier score", _number(report.brier), "sum over classes of (p - y)^2")
    summary.add_row("ECE", _number(report.ece), "expected calibration error, 15 bins")
    console.print(summary)

    classes = Table(title="Per class", box=box.SIMPLE)
    classes.add_column("class", justify="right")
    classes.add_column("positives" if report.multilabel else "count", justify="right")
    classes.add_column("cross entropy (nats)", justify="right")
    classes.add_column("accuracy", justify="right")
    shown = report.classes
    if len(shown) > 30:
        shown = sorted(
            (c for c in shown if c.cross_entropy is not None),
            key=lambda c: -(c.cross_entropy or 0.0),
        )[:20]
        classes.caption = f"the 20 classes of highest cross entropy of {report.num_classes}"
    for c in shown:
        classes.add_row(str(c.index), str(c.count), _number(c.cross_entropy), _number(c.accuracy))
    console.print(classes)

    calibration = Table(title="Calibration (confidence bins)", box=box.SIMPLE)
    for name in ("bin", "count", "confidence", "accuracy", "gap"):
        calibration.add_column(name, justify="right")
    for b in report.calibration:
        if b.count and b.confidence is not None and b.accuracy is not None:
            calibration.add_row(
                f"({b.lower:.3f}, {b.upper:.3f}]",
                str(b.count),
                _number(b.confidence, 4),
                _number(b.accuracy, 4),
                _number(abs(b.accuracy - b.confidence), 4),
            )
    console.print(calibration)

    if report.worst:
        worst = Table(title=f"Worst {len(report.worst)} rows", box=box.SIMPLE)
        worst.add_column("row", justify="right")
        worst.add_column("loss (nats)", justify="right")
        for w in report.worst:
            worst.add_row(str(w.row), _number(w.loss))
        console.print(worst)


def report_json(report: Report, *, predictions: str, labels: str) -> str:
    """The report as JSON: every number (infinities as null)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    data = {"predictions": predictions, "labels": labels, **dataclasses.asdict(report)}
    data["brier_definition"] = (
        "mean over labels of (p - y)^2"
        if report.multilabel
        else "mean over rows of the sum over classes of (p - y)^2"
    )
    return json.dumps(clean(data), indent=2)


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def compute(
    predictions: Annotated[
        str,
        typer.Argument(
            metavar="PREDICTIONS",
            help="Predictions: CSV, NPY or NPZ (FILE.npz:NAME picks an array), a row per "
            "example; - reads standard input.",
            show_default=False,
        ),
    ],
    labels: Annotated[
        str,
        typer.Argument(
            metavar="LABELS",
            help="Labels, a file as for PREDICTIONS: integer class ids (a column) or one-hot / "
            "n-hot rows.",
            show_default=False,
        ),
    ],
    logits: Annotated[
        bool, typer.Option("--logits", help="The predictions are logits, not probabilities.")
    ] = False,
    multilabel: Annotated[
        bool,
        typer.Option(
            "--multilabel",
            help="n-hot labels: one sigmoid / binary cross entropy per class.",
        ),
    ] = False,
    normalize: Annotated[
        bool,
        typer.Option("--normalize", help="Rescale each row of probabilities to sum to 1."),
    ] = False,
    output_format: Annotated[
        OutputFormat,
        typer.Option("--format", metavar="FORMAT", help="Output format: text or json."),
    ] = OutputFormat.text,
    worst: Annotated[
        int,
        typer.Option(
            "--worst", min=0, max=MAX_WORST, metavar="N", help="How many worst-scored rows to list."
        ),
    ] = 10,
    chunk_size: Annotated[
        int | None,
        typer.Option(
            "--chunk-size",
            min=1,
            max=MAX_CHUNK_ROWS,
            metavar="N",
            hidden=True,
            help="Rows per chunk.",
        ),
    ] = None,
) -> None:
    """A loss report for a file of predictions: cross entropy, accuracy, Brier, calibration."""
    if normalize and (logits or multilabel):
        raise CliError(
            "--normalize applies to single-label probabilities, not to --logits or --multilabel"
        )
    if predictions == _STDIN and labels == _STDIN:
        raise CliError("PREDICTIONS and LABELS cannot both be - (standard input)")
    sources: list[Source] = []
    try:
        sources.append(open_source(predictions, role="predictions"))
        sources.append(open_source(labels, role="labels"))
        pred_source, label_source = sources
        show = sys.stderr.isatty() and pred_source.size >= PROGRESS_BYTES
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
            disable=not show,
        ) as progress:
            task = progress.add_task("reading", total=pred_source.size)
            report = run_report(
                pred_source,
                label_source,
                logits=logits,
                multilabel=multilabel,
                normalize=normalize,
                worst=worst,
                chunk_rows=chunk_size,
                on_progress=lambda done: progress.update(task, completed=done),
            )
    except MemoryError:
        raise CliError("out of memory (a row too wide for one chunk?)") from None
    finally:
        for s in sources:
            s.close()
    if output_format is OutputFormat.json:
        sys.stdout.write(report_json(report, predictions=predictions, labels=labels) + "\n")
    else:
        render_text(report, Console(), title=f"Loss report: {predictions} vs {labels}")
