"""Reports over Dask arrays and Dask clusters: the accumulator run block by block, merged in a
tree on the cluster.

:func:`dask_report` takes dask arrays (or arrays it wraps as dask arrays): predictions (n, C)
with labels (n,) or (n, C), or token arrays (S, T, V) with labels (S, T). Each block of whole
rows (for token arrays: of whole sequences) is fed to its own :class:`ReportAccumulator`, whose
``first_row`` is the number of rows before the block, so that row numbers (the ``worst`` rows,
the rows of errors) are those of the whole array; token ``t`` of sequence ``s`` is row
``s * T + t`` and its sequence ``s`` is passed to ``update``. The accumulators are merged
``split_every`` at a time in a tree on the cluster; only the last one's :class:`Report` comes
back to the client. Quantile binning with bootstrap intervals takes two passes: the first
finds the equal-mass edges (``quantile_edges``), the second computes everything on them.

:func:`report_files` does the same over NPY files matched by two glob patterns, one pair of
files per shard, on a ``dask.distributed`` cluster. The client reads only the NPY headers
(shape and dtype); each worker memory-maps the rows it scores, so the files must be at the
same paths on every worker (a shared filesystem), and what travels over the network is the
accumulators (their size depends on the classes, the bins and the bootstrap replicates, never
on the number of rows).

A bad value found on a worker comes back as one :class:`BadValue` (a ``ValueError``) naming
the row among all rows (and, for files, the file and its own row), not as a remote traceback.

Dask is optional: ``pip install 'crossentropy[dask]'``; it is imported when these functions
are called, so this module imports without it.
"""

from __future__ import annotations

import bisect
import copy
import glob
import logging
import math
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from .accumulator import ReportAccumulator, ReportOptions, token_layout
from .checks import BadValue
from .result import Report

__all__ = ["DASK_EXTRA", "PIECE_ELEMENTS", "dask_report", "report_files"]

DASK_EXTRA = "pip install 'crossentropy[dask]'"
"""How to install what this module needs."""

PIECE_ELEMENTS = 1 << 21
"""A block is fed to its accumulator in pieces of at most this many prediction entries
(16 MiB as float64), so that a worker's memory beyond the block itself stays bounded."""

_Where = Callable[[int], str]
"""Names a row among all rows for an error message."""


# --------------------------------------------------------------------------------------------
# Imports of the optional packages
# --------------------------------------------------------------------------------------------


def _import_dask() -> tuple[Any, Any]:
    """``(dask, dask.array)``, or an ImportError naming the extra."""
    try:
        import dask
        import dask.array as da
    except ImportError as exc:
        raise ImportError(f"the Dask report needs dask[array]: {DASK_EXTRA}") from exc
    return dask, da


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(f"report_files needs dask.distributed: {DASK_EXTRA}") from exc
    return distributed


# --------------------------------------------------------------------------------------------
# What a task may raise: one picklable error, turned into a clear one on the client
# --------------------------------------------------------------------------------------------


class _TaskError(Exception):
    """An error found in a task, carried to the client as plain fields (``BadValue`` itself
    does not pickle: its constructor takes more than its message). ``kind`` is "value" (a bad
    entry at global ``row``; ``column`` and ``hint`` as in :class:`BadValue`), "report" (a
    ValueError of the report as a whole) or "file" (a file a worker cannot read)."""

    def __init__(
        self, kind: str, message: str, row: int = -1, column: int | None = None, hint: str = ""
    ) -> None:
        super().__init__(kind, message, row, column, hint)
        self.kind = kind
        self.message = message
        self.row = row
        self.column = column
        self.hint = hint

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.kind, self.message, self.row, self.column, self.hint))

    def __str__(self) -> str:
        return self.message

    def for_client(self, where: _Where) -> Exception:
        """The error to raise on the client: a BadValue at the named row, a ValueError, an
        OSError."""
        if self.kind == "value":
            place = where(self.row)
            if self.column is not None:
                place += f", column {self.column}"
            hint = f" ({self.hint})" if self.hint else ""
            return BadValue(f"{place}: {self.message}{hint}", self.row, self.column, self.hint)
        if self.kind == "file":
            return OSError(self.message)
        return ValueError(self.message)


# --------------------------------------------------------------------------------------------
# The tasks (module-level functions: the workers import them by name)
# --------------------------------------------------------------------------------------------


def _block_accumulator(
    x: npt.NDArray[Any],
    y: npt.NDArray[Any],
    first_row: int,
    tokens: int | None,
    options: ReportOptions,
) -> ReportAccumulator:
    """The accumulator of one block of whole rows, whose first row is ``first_row`` among all
    rows; with ``tokens`` = T, the block is (s, T, V) with labels (s, T): whole sequences, row
    ``r`` being token ``r % T`` of sequence ``r // T``. Fed in pieces of at most
    :data:`PIECE_ELEMENTS` entries."""
    if tokens is not None:
        x = x.reshape(-1, x.shape[-1])
        y = y.reshape(-1)
    num_classes = int(x.shape[1])
    acc = ReportAccumulator.from_options(num_classes, options, first_row=first_row)
    step = max(1, PIECE_ELEMENTS // num_classes)
    for start in range(0, x.shape[0], step):
        stop = min(x.shape[0], start + step)
        rows = first_row + np.arange(start, stop, dtype=np.int64)
        sequences = None if tokens is None else rows // tokens
        try:
            acc.update(x[start:stop], y[start:stop], sequences=sequences)
        except BadValue as exc:
            row = first_row + start + exc.row
            raise _TaskError("value", exc.message, row, exc.column, exc.hint) from None
        except ValueError as exc:
            raise _TaskError("report", str(exc)) from None
    return acc


def _merge(*accumulators: ReportAccumulator) -> ReportAccumulator:
    """The accumulator of all the rows of ``accumulators`` (given in row order). The first is
    copied, not merged into: a task's input may be kept by the scheduler, to be used again
    if a task is rerun."""
    merged = copy.deepcopy(accumulators[0])
    for other in accumulators[1:]:
        merged.merge(other)
    return merged


def _result(acc: ReportAccumulator) -> Report:
    try:
        return acc.result()
    except ValueError as exc:
        raise _TaskError("report", str(exc)) from None


def _quantile_edges(acc: ReportAccumulator) -> tuple[float, ...]:
    try:
        return tuple(float(e) for e in acc.quantile_edges())
    except ValueError as exc:
        raise _TaskError("report", str(exc)) from None


def _read_rows(
    path: str, start: int, stop: int, shape: tuple[int, ...], dtype: str
) -> npt.NDArray[Any]:
    """Rows [start, stop) of the NPY file ``path``, memory-mapped (read on demand)."""
    try:
        array = np.load(path, mmap_mode="r")
    except OSError as exc:
        raise _TaskError(
            "file",
            f"{path}: cannot be read on the worker {socket.gethostname()} ({exc}); the "
            f"workers must see the files at the same paths as the client (a shared filesystem)",
        ) from None
    if array.shape != shape or array.dtype != np.dtype(dtype):
        raise _TaskError(
            "file",
            f"{path}: has shape {array.shape} and dtype {array.dtype} on the worker "
            f"{socket.gethostname()}, but {shape} and {np.dtype(dtype)} when it was listed",
        )
    rows: npt.NDArray[Any] = array[start:stop]
    return rows


# --------------------------------------------------------------------------------------------
# The report of dask arrays
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """The checked inputs: whole-row blocks, the class count, T for token arrays."""

    predictions: Any
    labels: Any
    num_classes: int
    tokens: int | None

    def first_rows(self) -> list[int]:
        """The row number of the first row of each block (token arrays: s * T)."""
        per_row = self.tokens or 1
        starts = np.cumsum((0, *self.predictions.chunks[0][:-1]))
        return [int(s) * per_row for s in starts]


def _as_dask(da: Any, array: Any, name: str) -> Any:
    if isinstance(array, da.Array):
        return array
    if isinstance(array, (str, bytes, dict)) or array is None:
        raise TypeError(f"{name}: expected a dask array or an array; got {type(array).__name__}")
    return da.asarray(array)


def _check_dtype(dtype: np.dtype[Any], name: str, *, labels: bool) -> None:
    ok = np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)
    if labels:
        ok = ok or dtype == np.bool_
    if not ok:
        accepted = "integers, floats or booleans" if labels else "floats or integers"
        raise TypeError(f"{name}: expected {accepted}; got dtype {dtype}")


def _check_shapes(x: Any, y: Any, multilabel: bool) -> tuple[int, int | None]:
    """``(num_classes, T or None)`` of predictions ``x`` and labels ``y``, or a ValueError."""
    for array, name in ((x, "predictions"), (y, "labels")):
        if any(math.isnan(s) for s in array.shape):
            raise ValueError(
                f"{name}: unknown chunk sizes {array.shape}; call .compute_chunk_sizes() first"
            )
    tokens = token_layout(x.shape, y.shape, multilabel=multilabel)
    if tokens is not None:
        return int(x.shape[2]), tokens
    if x.ndim != 2:
        raise ValueError(
            f"predictions: expected (rows, classes) or (sequences, tokens, vocabulary); "
            f"got shape {x.shape}"
        )
    if y.ndim not in (1, 2) or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"labels: expected {x.shape[0]} rows of labels, (n,) or (n, C), for predictions of "
            f"shape {x.shape}; got shape {y.shape}"
        )
    if y.ndim == 2 and y.shape[1] not in (1, x.shape[1]):
        raise ValueError(
            f"labels: expected 1 or {x.shape[1]} columns (the classes); got shape {y.shape}"
        )
    return int(x.shape[1]), None


def _whole_rows(x: Any, y: Any) -> tuple[Any, Any]:
    """Rechunk so that each block holds whole rows, predictions and labels alike. The row
    chunks are kept where the columns are whole already, else chosen by dask ("auto")."""
    inner = {axis: -1 for axis in range(1, x.ndim)}
    if any(len(x.chunks[axis]) > 1 for axis in inner):
        x = x.rechunk({0: "auto", **inner})
    wanted = (x.chunks[0], *((size,) for size in y.shape[1:]))
    if y.chunks != wanted:
        y = y.rechunk(wanted)
    return x, y


def _layout(da: Any, predictions: Any, labels: Any, multilabel: bool) -> _Layout:
    x = _as_dask(da, predictions, "predictions")
    y = _as_dask(da, labels, "labels")
    _check_dtype(x.dtype, "predictions", labels=False)
    _check_dtype(y.dtype, "labels", labels=True)
    num_classes, tokens = _check_shapes(x, y, multilabel)
    if x.shape[0] == 0 or (tokens is not None and tokens == 0):
        raise ValueError(f"predictions: no rows (shape {x.shape})")
    x, y = _whole_rows(x, y)
    return _Layout(x, y, num_classes, tokens)


def _row_namer(tokens: int | None) -> _Where:
    def where(row: int) -> str:
        if tokens is None:
            return f"row {row}"
        return f"row {row} (sequence {row // tokens}, token {row % tokens})"

    return where


def _tree(dask: Any, leaves: Sequence[Any], split_every: int) -> Any:
    """Merge delayed accumulators ``split_every`` at a time until one is left."""
    level = list(leaves)
    while len(level) > 1:
        level = [
            dask.delayed(_merge, pure=True)(*level[i : i + split_every])
            for i in range(0, len(level), split_every)
        ]
    return level[0]


def _run(
    dask: Any,
    layout: _Layout,
    options: ReportOptions,
    split_every: int,
    finish: Callable[[ReportAccumulator], Any],
    where: _Where,
    client: Any,
) -> Any:
    """One pass: an accumulator per block, the tree of merges, ``finish`` of the last one."""
    blocks_x = layout.predictions.to_delayed().ravel()
    blocks_y = layout.labels.to_delayed().ravel()
    leaves = [
        dask.delayed(_block_accumulator, pure=True)(bx, by, first, layout.tokens, options)
        for bx, by, first in zip(blocks_x, blocks_y, layout.first_rows(), strict=True)
    ]
    task = dask.delayed(finish, pure=True)(_tree(dask, leaves, split_every))
    try:
        if client is not None:
            return client.compute(task).result()
        return task.compute()
    except _TaskError as exc:
        raise exc.for_client(where) from None


def _report(
    dask: Any,
    layout: _Layout,
    options: ReportOptions,
    split_every: int,
    where: _Where,
    client: Any = None,
) -> Report:
    two_passes = options.binning == "quantile" and options.bootstrap > 0
    first = replace(options, bootstrap=0, worst=0) if two_passes else options
    # the checks against the number of classes, on the client (the edges are not known yet)
    ReportAccumulator.from_options(layout.num_classes, first)
    if two_passes:
        edges = _run(dask, layout, first, split_every, _quantile_edges, where, client)
        options = replace(options, edges=edges)
    report: Report = _run(dask, layout, options, split_every, _result, where, client)
    return report


def _check_flag(value: object, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False; got {value!r}")
    return bool(value)


def _check_split_every(split_every: object) -> int:
    if isinstance(split_every, bool) or not isinstance(split_every, (int, np.integer)):
        raise TypeError(f"split_every: expected an integer >= 2; got {split_every!r}")
    if split_every < 2:
        raise ValueError(f"split_every: expected an integer >= 2; got {split_every}")
    return int(split_every)


def _options(logits: object, multilabel: object, normalize: object, **others: Any) -> ReportOptions:
    """The options of a report, the three flags checked as True or False (not truthy)."""
    return ReportOptions(
        logits=_check_flag(logits, "logits"),
        multilabel=_check_flag(multilabel, "multilabel"),
        normalize=_check_flag(normalize, "normalize"),
        **others,
    )


def dask_report(
    predictions: Any,
    labels: Any,
    *,
    logits: bool = False,
    multilabel: bool = False,
    normalize: bool = False,
    worst: int = 10,
    bins: int = 15,
    binning: str = "uniform",
    top_k: int | None = None,
    ignore_index: int | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    level: float = 0.95,
    split_every: int = 8,
) -> Report:
    """The report of dask arrays, computed block by block where the blocks are.

    The same numbers as :func:`compute_report` of the whole arrays (the options mean the
    same). Runs on dask's current scheduler: a ``dask.distributed`` client if one is the
    default, else dask's local threads.

    Args:
        predictions: a dask array (anything else is wrapped by ``dask.array.asarray``),
            (n, C) probabilities or logits, or (S, T, V) token logits / probabilities.
        labels: (n,) class ids or (n, C) one-hot / n-hot rows; for token arrays (S, T) ids.
        normalize: divide each row of probabilities by its sum first (as
            :func:`compute_report` does).
        split_every: how many accumulators one task merges (the fan-in of the tree).

    The arrays are rechunked so that each block holds whole rows (token arrays: whole
    sequences), the labels chunked as the predictions; the row chunks are kept where the
    columns are whole already. A block and its accumulator's work are what one worker
    holds at a time.

    Raises:
        BadValue: a ValueError naming the row (among all rows) of the first bad entry found
            (in the first block that fails: with bad values in several blocks, any of them).
        ValueError, TypeError: shapes, dtypes or options that do not fit, before anything
            is computed.
        ImportError: dask is not installed.

    Example:
        >>> import dask.array as da
        >>> x = da.from_array(np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 3.0]]), chunks=2)
        >>> r = dask_report(x, da.from_array(np.array([0, 0, 1])), logits=True)
        >>> print(f"{r.rows} {r.accuracy:.4f} {r.worst[0].row}")
        3 0.6667 1
    """
    dask, da = _import_dask()
    options = _options(
        logits,
        multilabel,
        normalize,
        worst=worst,
        bins=bins,
        binning=binning,
        top_k=top_k,
        ignore_index=ignore_index,
        bootstrap=bootstrap,
        seed=seed,
        level=level,
    )
    every = _check_split_every(split_every)
    layout = _layout(da, predictions, labels, options.multilabel)
    return _report(dask, layout, options, every, _row_namer(layout.tokens))


# --------------------------------------------------------------------------------------------
# The report of NPY files on a cluster
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Header:
    """An NPY file's path, shape and dtype, as its header says."""

    path: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]


def _match(pattern: object, name: str) -> list[str]:
    if not isinstance(pattern, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a glob pattern (a string); got {pattern!r}")
    text = os.path.expanduser(os.fspath(pattern))
    paths = sorted(p for p in glob.glob(text, recursive=True) if os.path.isfile(p))
    if not paths:
        raise ValueError(f"{name}: no file matches {text!r}")
    return paths


def _read_header(path: str, name: str, *, labels: bool) -> _Header:
    """The shape and dtype of an NPY file, from its header alone (numpy.lib.format)."""
    from numpy.lib import format as npy

    with open(path, "rb") as stream:
        try:
            version = npy.read_magic(stream)
            if version == (1, 0):
                shape, _, dtype = npy.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, _, dtype = npy.read_array_header_2_0(stream)
            else:
                raise ValueError(f"NPY format version {version} (expected 1.0 or 2.0)")
        except ValueError as exc:
            raise ValueError(f"{name}: {path} is not a readable NPY file: {exc}") from None
    _check_dtype(dtype, f"{name}: {path}", labels=labels)
    return _Header(path, tuple(int(s) for s in shape), dtype)


def _check_pairs(xs: list[_Header], ys: list[_Header]) -> None:
    """The same number of files; per pair, the same rows; per pattern, the same row shape."""
    if len(xs) != len(ys):
        raise ValueError(
            f"predictions_pattern matches {len(xs)} file(s) but labels_pattern {len(ys)}: "
            f"expected one labels file per predictions file"
        )
    for headers, name in ((xs, "predictions_pattern"), (ys, "labels_pattern")):
        first = headers[0]
        for h in headers:
            if len(h.shape) == 0 or h.shape[1:] != first.shape[1:]:
                raise ValueError(
                    f"{name}: {h.path} has shape {h.shape} but {first.path} has {first.shape}: "
                    f"the files must differ only in their number of rows"
                )
    for x, y in zip(xs, ys, strict=True):
        if y.shape[0] != x.shape[0] or (len(x.shape) == 3 and y.shape[:2] != x.shape[:2]):
            raise ValueError(
                f"labels_pattern: {y.path} has shape {y.shape} but its predictions {x.path} "
                f"have shape {x.shape}: the rows (and tokens) must match"
            )


def _bounds(rows: int, row_bytes: int, target: int) -> list[tuple[int, int]]:
    """Row ranges of at most ``target`` bytes each (at least one row) covering ``rows``."""
    step = max(1, target // max(1, row_bytes))
    return [(start, min(rows, start + step)) for start in range(0, rows, step)]


def _file_arrays(dask: Any, da: Any, xs: list[_Header], ys: list[_Header]) -> tuple[Any, Any]:
    """Dask arrays of the files concatenated along rows, one block per row range of at most
    dask's ``array.chunk-size`` bytes of predictions, read by the workers."""
    target = int(dask.utils.parse_bytes(dask.config.get("array.chunk-size")))
    parts_x: list[Any] = []
    parts_y: list[Any] = []
    for x, y in zip(xs, ys, strict=True):
        row_bytes = x.dtype.itemsize * int(np.prod(x.shape[1:], dtype=np.int64))
        for start, stop in _bounds(x.shape[0], row_bytes, target):
            for h, parts in ((x, parts_x), (y, parts_y)):
                block = dask.delayed(_read_rows, pure=True)(
                    h.path, start, stop, h.shape, h.dtype.str
                )
                parts.append(da.from_delayed(block, (stop - start, *h.shape[1:]), h.dtype))
    if not parts_x:
        raise ValueError(
            f"predictions_pattern: the files hold no rows ({', '.join(h.path for h in xs)})"
        )
    return da.concatenate(parts_x, axis=0), da.concatenate(parts_y, axis=0)


def _file_namer(xs: list[_Header], tokens: int | None) -> _Where:
    """Names a row among all rows, and the file and row (sequence) of that file it is."""
    starts = np.cumsum([0] + [h.shape[0] for h in xs]).tolist()
    among = _row_namer(tokens)

    def where(row: int) -> str:
        unit = row if tokens is None else row // tokens
        i = bisect.bisect_right(starts, unit) - 1
        local = unit - starts[i]
        what = "row" if tokens is None else "sequence"
        return f"{among(row)}, {what} {local} of {xs[i].path}"

    return where


def _connect(distributed: Any, scheduler: object, timeout: float) -> tuple[Any, Any]:
    """``(client, local cluster or None)`` for ``scheduler``: an address, or "local"."""
    if not isinstance(scheduler, str) or not scheduler.strip():
        raise TypeError(
            f"scheduler: expected an address such as 'tcp://10.0.0.5:8786', or 'local'; "
            f"got {scheduler!r}"
        )
    if scheduler == "local":
        cluster = distributed.LocalCluster(
            processes=True, threads_per_worker=1, dashboard_address=":0", silence_logs=logging.ERROR
        )
        try:
            return distributed.Client(cluster, set_as_default=False), cluster
        except BaseException:
            cluster.close()
            raise
    try:
        client = distributed.Client(scheduler, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConnectionError(
            f"scheduler: cannot connect to {scheduler!r} within {timeout:g} s ({exc}); start "
            f"one with `dask scheduler` and give the address it prints (tcp://HOST:8786)"
        ) from None
    return client, None


def report_files(
    scheduler: str,
    predictions_pattern: str,
    labels_pattern: str,
    *,
    logits: bool = False,
    multilabel: bool = False,
    normalize: bool = False,
    worst: int = 10,
    bins: int = 15,
    binning: str = "uniform",
    top_k: int | None = None,
    ignore_index: int | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    level: float = 0.95,
    split_every: int = 8,
    timeout: float = 30.0,
) -> Report:
    """The report of NPY shards on a ``dask.distributed`` cluster.

    The files matched by each pattern (``glob``, ``**`` included) are taken in sorted order
    (by name: zero-pad the shard numbers) and concatenated along rows; the i-th labels file
    holds the labels of the i-th predictions file. The client reads only the headers; the
    workers memory-map the files, so they must see them at the same paths (a shared
    filesystem). The options are those of :func:`dask_report`.

    Args:
        scheduler: the scheduler's address, e.g. ``"tcp://10.0.0.5:8786"``, or ``"local"`` for
            a cluster of worker processes on this machine (started and closed here; a script
            that uses it needs the ``if __name__ == "__main__":`` guard, as processes are
            spawned).
        predictions_pattern: glob of the predictions files (.npy), (n_i, C) or (S_i, T, V).
        labels_pattern: glob of the labels files (.npy), (n_i,), (n_i, C) or (S_i, T).
        timeout: seconds to wait for the scheduler.

    Raises:
        ValueError: no file matches, the counts differ, shapes differ within a pair or a
            pattern; a bad value (a :class:`BadValue` naming the row and its file).
        ConnectionError: the scheduler cannot be reached.
        OSError: a worker cannot read a file.
        ImportError: dask or distributed is not installed.
    """
    dask, da = _import_dask()
    distributed = _import_distributed()
    options = _options(
        logits,
        multilabel,
        normalize,
        worst=worst,
        bins=bins,
        binning=binning,
        top_k=top_k,
        ignore_index=ignore_index,
        bootstrap=bootstrap,
        seed=seed,
        level=level,
    )
    every = _check_split_every(split_every)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout: expected a positive number of seconds; got {timeout!r}")
    xs = [
        _read_header(p, "predictions_pattern", labels=False)
        for p in _match(predictions_pattern, "predictions_pattern")
    ]
    ys = [
        _read_header(p, "labels_pattern", labels=True)
        for p in _match(labels_pattern, "labels_pattern")
    ]
    _check_pairs(xs, ys)
    x, y = _file_arrays(dask, da, xs, ys)
    layout = _layout(da, x, y, options.multilabel)
    client, cluster = _connect(distributed, scheduler, float(timeout))
    try:
        return _report(dask, layout, options, every, _file_namer(xs, layout.tokens), client)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
