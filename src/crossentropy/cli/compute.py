"""``crossentropy compute``: a loss report for a file of predictions, read as a stream.

Each input is opened once and read as a stream in chunks of about :data:`CHUNK_BYTES`, so the
memory used does not grow with the file; ``-`` is the standard input, and a pipe or a FIFO
works as a file does (an NPZ archive excepted: zip needs a regular file). The first bytes tell
the format:

- NPY (the NPY magic bytes, or ``.npy``): a regular file is mapped into memory with
  :mod:`mmap` and read in chunks of rows, the pages already read given back to the system
  (``madvise``), so that the resident memory stays about one chunk however large the file (a
  Fortran-ordered array is read through numpy's memory map instead); from a pipe, read as a
  stream.
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

Language-model token files: predictions of shape (S, T, V) (S sequences of T tokens over a
vocabulary of V; NPY or NPZ, not CSV) with labels of shape (S, T) (an NPY or NPZ array) are
S * T rows, row r of sequence r // T; a label equal to the ignore index (``-100`` unless
``--ignore-index`` says another) is padding and is not scored (the report counts it as
``ignored``). The report then adds the quantiles over sequences of each sequence's
perplexity. The arrays are handed to the accumulator in their own dtype (float32 and float16
are not widened here).

Options of the report: ``--bins N`` (1 to ``MAX_BINS``, default 15) confidence bins of the
calibration, ``--binning uniform|quantile`` (equal width, or equal mass), ``--top-k K``
(the top-K accuracy, K less than the number of classes), ``--bootstrap B --seed S --ci LEVEL``
(percentile intervals of B Poisson-bootstrap replicates, reproducible for a seed),
``--ignore-index I`` (skip rows labelled I; class ids only, not one-hot or ``--multilabel``
rows), ``--figure PATH`` (the reliability diagram, ``.png`` or ``.svg``; needs matplotlib, the
``plot`` extra), ``--format text|json|html`` (on standard output; html is one self-contained
page, see :mod:`crossentropy.cli.report_html`) and ``--dask SCHEDULER`` (PREDICTIONS and
LABELS are then glob patterns of files, scored on that Dask cluster by
``crossentropy.report.on_dask.report_files``). Quantile bins with a bootstrap read the inputs
twice (the edges first, then the resamples over them): that needs files, not standard input
or a pipe.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import functools
import glob
import importlib
import io
import json
import math
import mmap
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
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from crossentropy.cli.errors import CliError
from crossentropy.cli.report_html import (
    calibration_rows,
    class_rows,
    format_number,
    render_html,
    sequence_rows,
    summary_rows,
)
from crossentropy.report import (
    ECE_BINS,
    BadValue,
    Report,
    ReportAccumulator,
    ReportOptions,
)
from crossentropy.report.bootstrap import MAX_REPLICATES
from crossentropy.report.calibration import MAX_BINS

__all__ = [
    "CHUNK_BYTES",
    "IGNORE_INDEX",
    "MAPPED_CHUNK_BYTES",
    "MAX_CHUNK_ROWS",
    "MAX_COLUMNS",
    "MAX_LINE_BYTES",
    "MAX_WORST",
    "PROGRESS_BYTES",
    "ArraySource",
    "Binning",
    "Block",
    "CsvSource",
    "MappedArraySource",
    "OutputFormat",
    "Source",
    "StreamArraySource",
    "accumulate",
    "compute",
    "open_source",
    "render_text",
    "report_json",
    "report_page",
    "run_report",
]

CHUNK_BYTES = 2 << 20
"""The target size of one chunk of input, in bytes of text (CSV) or of array data."""

MAPPED_CHUNK_BYTES = 32 << 20
"""The size of one chunk of a memory-mapped NPY file: a view of the map, not a copy, so a
larger chunk costs no memory of its own and keeps the per-chunk work small beside the rows'
(a chunk of 16 rows of a 32000-entry vocabulary ran at 2.5 GB/s here, of 256 rows at 3.4)."""

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
    """What ``--format`` writes on standard output."""

    text = "text"
    json = "json"
    html = "html"


class Binning(str, Enum):
    """The confidence bins of ``--binning``: equal width or equal mass."""

    uniform = "uniform"
    quantile = "quantile"


IGNORE_INDEX = -100
"""The label of a token that is not scored (padding), unless ``--ignore-index`` says another."""


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
        self.shape: tuple[int, ...] | None = None  # unknown until read: a CSV is rows
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


def _as_rows(shape: tuple[int, ...]) -> tuple[int, int]:
    """(rows, columns) of an array read as rows: a 1-D array is one column, a 3-D array of
    tokens (S, T, V) is S * T rows of V columns."""
    if len(shape) == 1:
        return shape[0], 1
    return math.prod(shape[:-1]), shape[-1]


class ArraySource:
    """Rows of a 1-D, 2-D or 3-D (tokens) array in memory or memory-mapped by numpy."""

    def __init__(self, array: npt.NDArray[Any], name: str, size: int) -> None:
        self.name = name
        self.array = _checked_array(array, name)
        self.shape: tuple[int, ...] | None = tuple(array.shape)
        self.size = size
        self.offset = 0
        self.rows, self.columns = _as_rows(self.array.shape)
        self.rows_per_chunk = max(1, CHUNK_BYTES // max(self.columns * array.dtype.itemsize, 1))

    def close(self) -> None:
        pass

    def as_tokens(self) -> None:
        """Read a 2-D array of token labels (S, T) as S * T rows of one column."""
        self.rows, self.columns = self.array.size, 1

    @property
    def position(self) -> int:
        return int(self.size * self.offset / max(self.rows, 1))

    def read(self, n: int) -> Block | None:
        start = self.offset
        if start >= self.rows:
            return None
        stop = start + min(n, self.rows_per_chunk, self.rows - start)
        block = np.array(self.array.reshape(self.rows, self.columns)[start:stop])
        self.offset = stop

        def where(row: int, col: int | None) -> str:
            return f"row {start + row}{_column(col)}"

        return block, where


def _read_header(file: IO[bytes], name: str) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """(shape, Fortran order, dtype) from an NPY header; the file is left at the data."""
    version = np.lib.format.read_magic(file)  # type: ignore[no-untyped-call]
    if version == (1, 0):
        header = np.lib.format.read_array_header_1_0(file)  # type: ignore[no-untyped-call]
    else:
        header = np.lib.format.read_array_header_2_0(file)  # type: ignore[no-untyped-call]
    shape, fortran, dtype = header
    shape = tuple(int(d) for d in shape)
    dtype = np.dtype(dtype)
    _checked_array(np.empty((0,) * len(shape), dtype=dtype), name, shape)
    return shape, bool(fortran), dtype


class MappedArraySource:
    """Rows of an NPY file mapped into memory with :mod:`mmap`, its resident pages given back.

    A plain memory map keeps every page it has read resident (in the process's RSS) until the
    map is closed, so a 10 GB file would end up all in memory. Here the file is mapped with
    ``MADV_SEQUENTIAL`` (the kernel reads ahead and may drop pages behind), each chunk is a
    read-only view of the map (scored where it lies, no copy), and when the next chunk is read
    the pages wholly before it are released with ``madvise(MADV_DONTNEED)``: the resident
    part of the map stays at about one chunk. (On a
    platform without ``madvise`` the map works as a plain one.) ``release = False`` keeps the
    pages, for measuring what the release saves.
    """

    release = True
    """Whether consumed pages are released (``madvise(MADV_DONTNEED)``) after each chunk."""

    def __init__(self, path: Path, name: str, size: int) -> None:
        self.name = name
        self.size = size
        with open(path, "rb") as file:
            self.shape, fortran, self.dtype = _read_header(file, name)
            self.data_offset = file.tell()
            if fortran:  # pragma: no cover - the caller reads such a file with numpy instead
                raise CliError(f"{name}: a Fortran-ordered array; save it in C order")
            self.rows, self.columns = _as_rows(self.shape)
            self.row_bytes = self.columns * self.dtype.itemsize
            needed = self.data_offset + self.rows * self.row_bytes
            if size < needed:
                raise CliError(
                    f"{name}: truncated array data ({size} bytes; the header says {needed})"
                )
            self.map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        self._advise(getattr(mmap, "MADV_SEQUENTIAL", None), 0, len(self.map))
        self.released = 0  # the map's bytes before this offset have been given back
        self.rows_per_chunk = max(1, MAPPED_CHUNK_BYTES // max(self.row_bytes, 1))
        self.offset = 0

    def _advise(self, option: int | None, start: int, length: int) -> None:
        if option is not None and length > 0 and hasattr(self.map, "madvise"):
            self.map.madvise(option, start, length)

    def close(self) -> None:
        # a chunk still referenced (by an error's traceback) keeps the map: unmapped later
        with contextlib.suppress(BufferError):
            self.map.close()

    def as_tokens(self) -> None:
        """Read a 2-D array of token labels (S, T) as S * T rows of one column."""
        self.rows = math.prod(self.shape)
        self.columns = 1
        self.row_bytes = self.dtype.itemsize
        self.rows_per_chunk = max(1, MAPPED_CHUNK_BYTES // self.row_bytes)

    @property
    def position(self) -> int:
        return int(self.size * self.offset / max(self.rows, 1))

    def read(self, n: int) -> Block | None:
        start = self.offset
        count = min(n, self.rows_per_chunk, self.rows - start)
        if count <= 0:
            return None
        begin = self.data_offset + start * self.row_bytes
        if self.release:  # the rows before this chunk have been scored: give their pages back
            end = begin // mmap.PAGESIZE * mmap.PAGESIZE
            self._advise(getattr(mmap, "MADV_DONTNEED", None), self.released, end - self.released)
            self.released = max(self.released, end)
        # a view, not a copy: the row kernel reads the mapped pages once
        block = np.frombuffer(
            self.map, dtype=self.dtype, count=count * self.columns, offset=begin
        ).reshape(count, self.columns)
        self.offset = start + count

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
        shape, fortran, self.dtype = _read_header(file, name)
        self.shape: tuple[int, ...] | None = shape
        if fortran:
            raise CliError(f"{name}: a Fortran-ordered array; save it in C order")
        self.rows, self.columns = _as_rows(shape)
        self.row_bytes = self.columns * self.dtype.itemsize
        self.rows_per_chunk = max(1, CHUNK_BYTES // max(self.row_bytes, 1))
        self.offset = 0

    def close(self) -> None:
        self.file.close()
        if self.closing is not None:
            self.closing.close()

    def as_tokens(self) -> None:
        """Read a 2-D array of token labels (S, T) as S * T rows of one column."""
        self.rows = self.rows * self.columns
        self.columns = 1
        self.row_bytes = self.dtype.itemsize
        self.rows_per_chunk = max(1, CHUNK_BYTES // self.row_bytes)

    @property
    def position(self) -> int:
        return int(self.size * self.offset / max(self.rows, 1))

    def read(self, n: int) -> Block | None:
        start = self.offset
        rows = min(n, self.rows_per_chunk, self.rows - start)
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


Source = CsvSource | ArraySource | MappedArraySource | StreamArraySource


def _checked_array(
    array: npt.NDArray[Any], name: str, shape: tuple[int, ...] | None = None
) -> npt.NDArray[Any]:
    shape = array.shape if shape is None else shape
    if array.dtype.kind not in "biuf":
        raise CliError(f"{name}: array of dtype {array.dtype}; expected numbers")
    if len(shape) not in (1, 2, 3):
        raise CliError(
            f"{name}: array of shape {shape}; expected 1-D, 2-D (rows, columns) or 3-D "
            "(sequences, tokens, vocabulary)"
        )
    if len(shape) >= 2 and not 1 <= shape[-1] <= MAX_COLUMNS:
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
                fortran = _read_header(stream, name)[1]
                file.close()
                if fortran:  # rows are strided: numpy's memory map reads them
                    array = np.load(path, mmap_mode="r", allow_pickle=False)
                    return ArraySource(array, name, size)
                return MappedArraySource(path, name, size)
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


def _token_length(predictions: Source, labels: Source, *, multilabel: bool) -> int | None:
    """T, the tokens per sequence, when the predictions are tokens (S, T, V); None for rows.

    The labels of tokens must be an array of shape (S, T): they are then read as S * T rows
    of one class id each.
    """
    shape = predictions.shape
    if shape is None or len(shape) != 3:
        if labels.shape is not None and len(labels.shape) == 3:
            raise CliError(
                f"{labels.name}: labels of shape {labels.shape} for predictions "
                f"{predictions.name} of shape {shape or '(rows, columns)'}: 3-D labels are "
                "not read (token labels are (S, T) with predictions (S, T, V))"
            )
        return None
    if multilabel:
        raise CliError(
            f"{predictions.name}: token predictions of shape {shape} take class ids of shape "
            "(S, T), not --multilabel"
        )
    if isinstance(labels, CsvSource):
        raise CliError(
            f"{labels.name}: the labels of token predictions {predictions.name} of shape "
            f"{shape} must be an NPY or NPZ array of shape (S, T) = {shape[:2]}, not CSV"
        )
    if labels.shape != shape[:2]:
        raise CliError(
            f"{labels.name}: labels of shape {labels.shape} for token predictions "
            f"{predictions.name} of shape {shape}: expected (S, T) = {shape[:2]}"
        )
    labels.as_tokens()
    return shape[1]


def accumulate(
    predictions: Source,
    labels: Source,
    options: ReportOptions,
    *,
    chunk_rows: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ReportAccumulator:
    """Feed both sources, chunk by chunk in lockstep, to a :class:`ReportAccumulator` made
    with ``options``.

    Either source may return fewer rows than asked for (a chunk is bounded in bytes too): a
    chunk of predictions is matched with as many reads of labels as it takes. Token
    predictions (S, T, V) are S * T rows, row r of sequence r // T; their labels equal to
    ``options.ignore_index`` (:data:`IGNORE_INDEX` unless given) are skipped.
    ``on_progress`` is told the position in the predictions after each chunk.
    """
    tokens = _token_length(predictions, labels, multilabel=options.multilabel)
    if tokens is not None and options.ignore_index is None:
        options = dataclasses.replace(options, ignore_index=IGNORE_INDEX)
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
            acc = _accumulator(predictions.name, c, options)
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
            _check_ignorable(y, options.ignore_index, labels.name)
            first = seen + done
            sequences = None if tokens is None else np.arange(first, first + m) // tokens
            try:
                acc.update(x_all[done : done + m], y, sequences=sequences)
            except BadValue as exc:
                if exc.argument == "labels":
                    raise _fail(labels, where_y, exc) from None
                exc.row += done
                raise _fail(predictions, where_x, exc) from None
            except ValueError as exc:
                raise CliError(f"{labels.name}: {' '.join(str(exc).split())}") from None
            done += m
        seen += n
        if on_progress is not None:
            on_progress(predictions.position)
    assert acc is not None
    return acc


def _finished(acc: ReportAccumulator, name: str) -> Report:
    """The accumulator's report (every row ignored: a one-line error)."""
    try:
        return acc.result()
    except ValueError as exc:
        raise CliError(f"{name}: {' '.join(str(exc).split())}") from None


def _accumulator(name: str, c: int, options: ReportOptions) -> ReportAccumulator:
    """The accumulator for predictions of ``c`` columns, the options checked against C."""
    if c == 1 and not options.multilabel:
        raise CliError(
            f"{name}: one column of predictions; pass --multilabel for binary labels (one "
            f"probability or logit per label), or give one column per class"
        )
    top_k = options.top_k
    if top_k is not None and not top_k < c:
        raise CliError(
            f"top-{top_k} accuracy needs more classes than {top_k}; {name} has {c}", "--top-k"
        )
    try:
        return ReportAccumulator.from_options(c, options)
    except ValueError as exc:
        raise CliError(" ".join(str(exc).split())) from None


def _options(**options: Any) -> ReportOptions:
    """:class:`ReportOptions` of the command's options, an error as one line."""
    try:
        return ReportOptions(**options)
    except ValueError as exc:
        raise CliError(" ".join(str(exc).split())) from None


def _check_ignorable(y: npt.NDArray[Any], ignore_index: int | None, name: str) -> None:
    """``--ignore-index`` applies to labels given as class ids (a column)."""
    if ignore_index is not None and y.shape[1] != 1:
        raise CliError(
            f"applies to labels given as class ids; {name} has one-hot rows of "
            f"{y.shape[1]} columns",
            "--ignore-index",
        )


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
    **options: Any,
) -> Report:
    """The report of both sources (:func:`accumulate` with the :class:`ReportOptions` of the
    keyword options, then the result)."""
    report_options = _options(
        logits=logits, multilabel=multilabel, normalize=normalize, worst=worst, **options
    )
    acc = accumulate(
        predictions, labels, report_options, chunk_rows=chunk_rows, on_progress=on_progress
    )
    return _finished(acc, predictions.name)


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def render_text(report: Report, console: Console, *, title: str) -> None:
    """The report as rich tables: the summary (intervals beside the metrics when
    bootstrapped), per sequence (token files), per class, the calibration bins, the worst
    rows."""
    summary = Table(title=title, box=box.SIMPLE_HEAVY, show_header=True)
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    summary.add_column("meaning", style="dim")
    for row in summary_rows(report):
        summary.add_row(*row)
    console.print(summary)

    sequences = sequence_rows(report)
    if sequences:
        table = Table(title="Per sequence", box=box.SIMPLE, caption="perplexity of its tokens")
        table.add_column("")
        table.add_column("value", justify="right")
        for name, value in sequences:
            table.add_row(name, value)
        console.print(table)

    header, rows, caption = class_rows(report)
    classes = Table(title="Per class", box=box.SIMPLE, caption=caption)
    for name in header:
        classes.add_column(name, justify="right")
    for cells in rows:
        classes.add_row(*cells)
    console.print(classes)

    header, rows = calibration_rows(report)
    calibration = Table(
        title=f"Calibration ({report.bins} {report.binning} confidence bins)", box=box.SIMPLE
    )
    for name in header:
        calibration.add_column(name, justify="right")
    for cells in rows:
        calibration.add_row(*cells)
    console.print(calibration)

    if report.worst:
        worst = Table(title=f"Worst {len(report.worst)} rows", box=box.SIMPLE)
        worst.add_column("row", justify="right")
        worst.add_column("loss (nats)", justify="right")
        for w in report.worst:
            worst.add_row(str(w.row), format_number(w.loss))
        console.print(worst)


def report_json(report: Report, *, predictions: str, labels: str) -> str:
    """The report as JSON: every field of :class:`Report` (infinities and NaN as null)."""

    def plain(value: Any) -> Any:  # dataclasses.asdict without its deep copies (V classes)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {k: plain(v) for k, v in vars(value).items()}
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    data = {"predictions": predictions, "labels": labels, **plain(report)}
    data["brier_definition"] = (
        "mean over labels of (p - y)^2"
        if report.multilabel
        else "mean over rows of the sum over classes of (p - y)^2"
    )
    return json.dumps(data, indent=2)


def report_page(report: Report, *, title: str) -> str:
    """The report as one HTML page, the reliability diagram inline when matplotlib is there."""
    try:
        reliability = importlib.import_module("crossentropy.viz.reliability")
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] != "matplotlib":
            raise
        svg = None
    else:
        svg = reliability.reliability_svg(report)
    return render_html(report, title=title, figure_svg=svg)


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def _figure_format(path: str | None) -> str | None:
    """The format of ``--figure PATH`` (png or svg), matplotlib checked before any reading."""
    if path is None:
        return None
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in ("png", "svg"):
        raise CliError(f"{path!r}: the file name must end in .png or .svg", "--figure")
    if Path(path).is_dir():
        raise CliError(f"{path!r} is a directory", "--figure")
    if not Path(path).parent.is_dir():
        raise CliError(f"{path!r}: no such directory {str(Path(path).parent)!r}", "--figure")
    try:
        importlib.import_module("crossentropy.viz.reliability")
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] != "matplotlib":
            raise
        raise CliError(
            "the figure needs matplotlib, which is not installed: pip install crossentropy[plot]",
            "--figure",
        ) from None
    return suffix


def _write_figure(report: Report, path: str, fmt: str) -> None:
    reliability = importlib.import_module("crossentropy.viz.reliability")
    figures = importlib.import_module("crossentropy.viz.figures")
    try:
        figures.save_figure(reliability.reliability_figure(report), path, format=fmt)
    except OSError as exc:
        raise CliError(f"cannot write {path!r}: {exc.strerror or exc}", "--figure") from None


def _advance(progress: Progress, task: TaskID, done: int) -> None:
    progress.update(task, completed=done)


def _rereadable(spec: str) -> bool:
    """Whether an input can be read twice: a regular file (a pipe or standard input cannot)."""
    if spec == _STDIN:
        return False
    path = Path(spec)
    if not path.exists() and ":" in spec:
        path = Path(spec.rpartition(":")[0])
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return True  # open_source says what is wrong with it


def _tokens_pattern(pattern: str) -> bool:
    """Whether the first file a glob pattern matches holds tokens (S, T, V): its NPY header
    says so. (Anything else, a file that cannot be read included, is the Dask report's to
    tell.)"""
    matches = sorted(glob.glob(pattern, recursive=True))
    if not matches:
        return False
    try:
        with open(matches[0], "rb") as file:
            return len(_read_header(file, matches[0])[0]) == 3
    except (OSError, ValueError):
        return False


def _dask_report(scheduler: str, predictions: str, labels: str, options: ReportOptions) -> Report:
    """The report of the files matching two glob patterns, computed on a Dask cluster (token
    files, as locally, skip the label :data:`IGNORE_INDEX` unless ``ignore_index`` is given)."""
    if _STDIN in (predictions, labels):
        raise CliError(
            "reads glob patterns of files (the workers open them), not standard input", "--dask"
        )
    if options.ignore_index is None and _tokens_pattern(predictions):
        options = dataclasses.replace(options, ignore_index=IGNORE_INDEX)
    keywords = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    del keywords["edges"]  # (a first pass's: report_files makes its own passes)
    try:
        on_dask = importlib.import_module("crossentropy.report.on_dask")
        report: Report = on_dask.report_files(scheduler, predictions, labels, **keywords)
    except ImportError as exc:
        raise CliError(
            f"needs dask[distributed] ({' '.join(str(exc).split())})", "--dask"
        ) from None
    except ValueError as exc:
        raise CliError(" ".join(str(exc).split())) from None
    except OSError as exc:  # the scheduler cannot be reached (a timeout is an OSError)
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise CliError(f"cannot use the scheduler {scheduler!r}: {reason}", "--dask") from None
    return report


def _local_report(
    predictions: str,
    labels: str,
    options: ReportOptions,
    *,
    two_passes: bool,
    chunk_rows: int | None,
) -> Report:
    """The report of two local inputs, read once, or twice (quantile edges, then the
    bootstrap) with ``two_passes``."""
    passes = 2 if two_passes else 1
    for number in range(1, passes + 1):
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
                what = "reading" if passes == 1 else f"reading (pass {number} of {passes})"
                task = progress.add_task(what, total=pred_source.size)
                first = number < passes  # the first of two: the quantile edges only
                acc = accumulate(
                    pred_source,
                    label_source,
                    dataclasses.replace(options, bootstrap=0) if first else options,
                    chunk_rows=chunk_rows,
                    on_progress=functools.partial(_advance, progress, task),
                )
                if first:
                    edges = acc.quantile_edges()
                    options = dataclasses.replace(options, edges=tuple(edges.tolist()))
                else:
                    report = _finished(acc, pred_source.name)
        except MemoryError:
            raise CliError("out of memory (a row too wide for one chunk?)") from None
        finally:
            for s in sources:
                s.close()
    return report


def compute(
    predictions: Annotated[
        str,
        typer.Argument(
            metavar="PREDICTIONS",
            help="Predictions: CSV, NPY or NPZ (FILE.npz:NAME picks an array), a row per "
            "example, or tokens (S, T, V); - reads standard input. With --dask: a glob "
            "pattern of NPY files.",
            show_default=False,
        ),
    ],
    labels: Annotated[
        str,
        typer.Argument(
            metavar="LABELS",
            help="Labels, a file as for PREDICTIONS: integer class ids (a column; (S, T) for "
            "tokens) or one-hot / n-hot rows. With --dask: a glob pattern.",
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
        typer.Option(
            "--format",
            metavar="FORMAT",
            help="Output format on standard output: text, json or html (one self-contained page).",
        ),
    ] = OutputFormat.text,
    worst: Annotated[
        int,
        typer.Option(
            "--worst", min=0, max=MAX_WORST, metavar="N", help="How many worst-scored rows to list."
        ),
    ] = 10,
    bins: Annotated[
        int,
        typer.Option(
            "--bins", min=1, max=MAX_BINS, metavar="N", help="Confidence bins of the calibration."
        ),
    ] = ECE_BINS,
    binning: Annotated[
        Binning,
        typer.Option(
            "--binning",
            metavar="KIND",
            help="uniform (equal width) or quantile (equal mass; tied confidences never split).",
        ),
    ] = Binning.uniform,
    top_k: Annotated[
        int | None,
        typer.Option(
            "--top-k",
            min=1,
            metavar="K",
            help="Also the top-K accuracy (K less than the number of classes).",
        ),
    ] = None,
    bootstrap: Annotated[
        int,
        typer.Option(
            "--bootstrap",
            min=0,
            max=MAX_REPLICATES,
            metavar="B",
            help="Bootstrap replicates for intervals (0: none).",
        ),
    ] = 0,
    seed: Annotated[
        int,
        typer.Option(
            "--seed", min=0, max=(1 << 63) - 1, metavar="S", help="The seed of the bootstrap."
        ),
    ] = 0,
    ci: Annotated[
        float,
        typer.Option("--ci", metavar="LEVEL", help="The level of the intervals, in (0, 1)."),
    ] = 0.95,
    ignore_index: Annotated[
        int | None,
        typer.Option(
            "--ignore-index",
            metavar="I",
            help=f"Skip rows whose class id is I (token files: {IGNORE_INDEX} unless given).",
        ),
    ] = None,
    figure: Annotated[
        str | None,
        typer.Option(
            "--figure",
            metavar="PATH",
            help="Write the reliability diagram to PATH (.png or .svg; needs matplotlib).",
        ),
    ] = None,
    dask: Annotated[
        str | None,
        typer.Option(
            "--dask",
            metavar="SCHEDULER",
            help="Run on the Dask cluster at SCHEDULER; PREDICTIONS and LABELS are then glob "
            "patterns of NPY files.",
        ),
    ] = None,
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
    if not 0.0 < ci < 1.0:  # NaN too
        raise CliError(f"{ci} is not a level in (0, 1), such as 0.95", "--ci")
    if top_k is not None and multilabel:
        raise CliError("top-k accuracy applies to single-label rows, not --multilabel", "--top-k")
    if ignore_index is not None and multilabel:
        raise CliError(
            "applies to labels given as class ids, not to --multilabel n-hot rows",
            "--ignore-index",
        )
    if predictions == _STDIN and labels == _STDIN:
        raise CliError("PREDICTIONS and LABELS cannot both be - (standard input)")
    figure_format = _figure_format(figure)
    options = _options(
        logits=logits,
        multilabel=multilabel,
        normalize=normalize,
        worst=worst,
        bins=bins,
        binning=binning.value,
        top_k=top_k,
        ignore_index=ignore_index,
        bootstrap=bootstrap,
        seed=seed,
        level=ci,
    )
    if dask is not None:
        report = _dask_report(dask, predictions, labels, options)
    else:
        two_passes = binning is Binning.quantile and bootstrap > 0
        if two_passes:
            for spec in (predictions, labels):
                if not _rereadable(spec):
                    what = "standard input" if spec == _STDIN else f"{spec} (not a regular file)"
                    raise CliError(
                        "--binning quantile with --bootstrap reads the input twice: give a "
                        f"file, not {what}"
                    )
        report = _local_report(
            predictions, labels, options, two_passes=two_passes, chunk_rows=chunk_size
        )
    if figure is not None and figure_format is not None:
        _write_figure(report, figure, figure_format)
    title = f"Loss report: {predictions} vs {labels}"
    if output_format is OutputFormat.json:
        sys.stdout.write(report_json(report, predictions=predictions, labels=labels) + "\n")
    elif output_format is OutputFormat.html:
        sys.stdout.write(report_page(report, title=title))
    else:
        render_text(report, Console(), title=title)
