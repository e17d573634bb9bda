#!/usr/bin/env python
"""The scoring report on a language-model token file too large to hold: bounded memory, and
a speed near the bandwidth of reading the file.

It writes a token file (logits float32 (S, T, V), by default (80, 1024, 32000): 10.5 GB; and
labels int64 (S, T) whose last ~10% per sequence are -100, the padding), then runs, each in
a fresh subprocess whose peak resident memory is recorded (a worker's own VmHWM at its end;
the command's: ru_maxrss of that child alone, from ``os.wait4``):

- ``floor_read``   the logits file read sequentially into one reusable 64 MiB buffer
                   (``readinto``): the bandwidth floor of the disk or the page cache
- ``ours``         ``crossentropy compute LOGITS LABELS --logits --ignore-index -100
                   --format json``, the command a user runs (its JSON parsed for the
                   numbers); recorded as unavailable while the command lacks token files
- ``ours_library`` ``crossentropy.report.compute_report`` on the ``numpy.load(mmap_mode="r")``
                   arrays (the stand-in for ``ours`` while the command lacks token files)
- ``torch``        ``torch.nn.functional.cross_entropy(reduction="sum", ignore_index=-100)``
                   per chunk of whole sequences, float64 sums across chunks
- ``torchmetrics`` ``torchmetrics.text.Perplexity(ignore_index=-100).update`` per chunk,
                   then ``compute()``

The peers stream chunks of whole sequences (~128 MiB) from a memory map of the file and
release each chunk's pages afterwards (``madvise(MADV_DONTNEED)``), so that their resident
memory stays bounded as ours does. A peer stops at the first chunk boundary after
``--peer-seconds`` (default 240 s): it then covers a prefix of the file, its GB/s is measured
on that prefix, and its numbers are checked against ``compute_report`` on the same prefix.

Each run says whether the logits were in the page cache before it (the resident share, from
``mincore``). ``cold`` runs come after the file's pages were dropped from the page cache
(``fsync`` then ``posix_fadvise(POSIX_FADV_DONTNEED)``: this file only, no root needed);
``warm`` runs after a full read.

The check: every variant's mean cross entropy (nats; torchmetrics: log of its perplexity)
agrees with ours within a relative ``TOLERANCE`` = 1e-5 (float32 logits: the peers work in
float32, ours in float64 sums), and the scored token counts are equal; else exit 1.

Usage::

    .venv/bin/python benchmarks/bench_report.py            # 10.5 GB in a temp dir (~5 min)
    .venv/bin/python benchmarks/bench_report.py --quick    # tiny (4, 64, 1000): smoke test
    .venv/bin/python benchmarks/bench_report.py --sequences 8 --dir /data --keep

The table is printed and saved as JSON (default benchmarks/results/report.json).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import mmap
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from _harness import (
    RESULT_PREFIX,
    WORKER_FLAG,
    Column,
    command_line,
    cpu_snapshot,
    emit_result,
    other_cpu_fraction,
    proc_status_kib,
    table,
    utc,
    write_json,
)
from _harness import machine as machine_info

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = HERE / "results" / "report.json"

IGNORE = -100
PADDING = 0.10  # the share of each sequence's last tokens labelled IGNORE
TOLERANCE = 1e-5  # relative, mean cross entropy of every variant against ours
READ_BUFFER = 64 * 2**20  # floor_read's reusable buffer
PEER_CHUNK = 128 * 2**20  # the peers' chunk of whole sequences, about this many bytes
LIBRARY_CHUNK = 64 * 2**20  # compute_report's chunk_rows, about this many bytes of logits
DISK_MARGIN = 2**30  # free space needed beyond the files
GB = 1e9  # GB/s are decimal

TINY = ("startup_logits.npy", "startup_labels.npy")  # the command's fixed cost, measured on these
FULL = (80, 1024, 32000)
QUICK = (4, 64, 1000)

LABELS = {
    "floor_read": "read into a 64 MiB buffer",
    "ours": "crossentropy compute (CLI)",
    "ours_library": "compute_report on np.load mmap",
    "torch": "torch F.cross_entropy per chunk",
    "torchmetrics": "torchmetrics Perplexity.update",
}


# --------------------------------------------------------------------------- the token file


def file_bytes(shape: tuple[int, int, int]) -> int:
    """The bytes of the logits (float32) and the labels (int64), headers aside."""
    s, t, v = shape
    return s * t * v * 4 + s * t * 8


def check_disk(directory: Path, need: int) -> None:
    """Refuse (SystemExit, exit 2) when ``directory`` has less than ``need`` + 1 GiB free."""
    free = shutil.disk_usage(directory).free
    if free < need + DISK_MARGIN:
        raise SystemExit(
            f"error: {directory} has {free / 2**30:.1f} GiB free; the token file needs "
            f"{need / 2**30:.1f} GiB + {DISK_MARGIN / 2**30:.0f} GiB of margin. Free some "
            "space or pass --dir on a disk with room (or fewer --sequences)."
        )


def write_token_file(
    directory: Path, shape: tuple[int, int, int], seed: int = 0
) -> tuple[Path, Path]:
    """logits.npy float32 (S, T, V) and labels.npy int64 (S, T), sequence by sequence.

    The logits are cheap but real-ish: one block of N(0, 3^2) values (T, V) drawn once, each
    sequence that block rolled by a sequence-dependent number of tokens plus a per-sequence
    offset per class, and the label's logit raised by 6 (so that the model is right
    sometimes). The labels are uniform over the vocabulary; the last ~10% of each sequence
    are IGNORE. Both files are written through ``numpy.lib.format.open_memmap``, flushed and
    fsync'ed (so that their pages can be dropped from the page cache for cold runs)."""
    s, t, v = shape
    rng = np.random.default_rng(seed)
    block = rng.standard_normal((t, v), dtype=np.float32)
    block *= 3.0
    labels = rng.integers(0, v, size=(s, t), dtype=np.int64)
    labels[:, t - max(1, round(PADDING * t)) :] = IGNORE
    logits_path, labels_path = directory / "logits.npy", directory / "labels.npy"
    out = np.lib.format.open_memmap(logits_path, mode="w+", dtype=np.float32, shape=shape)
    tokens = np.arange(t)
    for i in range(s):
        sequence = np.roll(block, 37 * i + 1, axis=0)
        sequence += rng.standard_normal(v, dtype=np.float32)
        kept = labels[i] != IGNORE
        sequence[tokens[kept], labels[i][kept]] += 6.0
        out[i] = sequence
        if i % 8 == 7:
            out.flush()
    out.flush()
    del out
    np.save(labels_path, labels)
    for path in (logits_path, labels_path):
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    return logits_path, labels_path


def drop_from_page_cache(path: Path) -> None:
    """Drop the file's (clean) pages from the page cache: this file only, no root needed."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def resident_share(path: Path) -> float | None:
    """The share of the file's pages in the page cache (``mincore`` on a read-only shared
    mapping, which touches no page), or None where that cannot be asked."""
    size = path.stat().st_size
    if size == 0 or not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    page = mmap.PAGESIZE
    pages = (size + page - 1) // page
    fd = os.open(path, os.O_RDONLY)
    try:
        address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            return None
        try:
            vec = (ctypes.c_ubyte * pages)()
            if libc.mincore(ctypes.c_void_p(address), size, vec) != 0:
                return None
            resident = int(np.count_nonzero(np.ctypeslib.as_array(vec) & 1))
        finally:
            libc.munmap(ctypes.c_void_p(address), size)
    finally:
        os.close(fd)
    return resident / pages


# --------------------------------------------------------------------------- the workers


def _header(path: str) -> tuple[tuple[int, ...], int]:
    """The shape and the data offset of an NPY file."""
    mapped = np.load(path, mmap_mode="r")
    return tuple(mapped.shape), int(mapped.offset)


def _own_peak() -> dict[str, int]:
    """What a worker reports of its own memory at the end: VmHWM, RssAnon, RssFile (bytes)."""
    return {k: proc_status_kib(k) * 1024 for k in ("VmHWM", "RssAnon", "RssFile")}


def work_floor_read(spec: dict[str, Any]) -> dict[str, Any]:
    """Read the logits file sequentially into one reusable buffer: the bandwidth floor."""
    buffer = bytearray(READ_BUFFER)
    view = memoryview(buffer)
    total = 0
    start = time.perf_counter()
    with open(spec["logits"], "rb", buffering=0) as f:
        while n := f.readinto(view):
            total += n
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "bytes": total}


def work_library(spec: dict[str, Any]) -> dict[str, Any]:
    """compute_report on the memory-mapped arrays (the first ``sequences``, when given)."""
    from crossentropy.report import compute_report

    x = np.load(spec["logits"], mmap_mode="r")
    y = np.load(spec["labels"], mmap_mode="r")
    n = spec.get("sequences") or x.shape[0]
    x, y = x[:n], y[:n]
    # its first call imports what scoring needs (torch, the kernel): a warm-up on 2 tokens
    warm = time.perf_counter()
    compute_report(x[:1, :2], np.zeros((1, 2), np.int64), logits=True, ignore_index=IGNORE)
    warmup_seconds = time.perf_counter() - warm
    start = time.perf_counter()
    report = compute_report(
        x,
        y,
        logits=True,
        ignore_index=IGNORE,
        chunk_rows=max(1, LIBRARY_CHUNK // (4 * x.shape[2])),
    )
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "warmup_seconds": warmup_seconds,
        "bytes": x.nbytes,
        "sequences": n,
        "cross_entropy_nats": report.cross_entropy_nats,
        "perplexity": report.perplexity,
        "tokens": report.rows,
        "ignored": report.ignored,
    }


def _chunks(spec: dict[str, Any]) -> Iterator[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]]:
    """Chunks of whole sequences (logits (k, T, V) read-only over the mapping, labels
    (k, T)) until the file ends or ``spec["budget_s"]`` has passed; each chunk's pages are
    released (``madvise(MADV_DONTNEED)``) once the caller is done with it."""
    (s, t, v), offset = _header(spec["logits"])
    labels = np.load(spec["labels"])
    per_sequence = t * v * 4
    k = max(1, spec["chunk_bytes"] // per_sequence)
    deadline = time.perf_counter() + spec["budget_s"]
    with open(spec["logits"], "rb") as f:
        # left to the garbage collector: the caller may still hold a view of the last chunk
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    for first in range(0, s, k):
        count = min(k, s - first)
        start = offset + first * per_sequence
        x = np.frombuffer(mapped, np.float32, count * t * v, start).reshape(count, t, v)
        yield x, labels[first : first + count]
        page_start = start - start % mmap.PAGESIZE
        mapped.madvise(mmap.MADV_DONTNEED, page_start, start + count * per_sequence - page_start)
        if time.perf_counter() > deadline:
            return


def work_torch(spec: dict[str, Any]) -> dict[str, Any]:
    """torch.nn.functional.cross_entropy(reduction="sum") per chunk, float64 sums."""
    import warnings

    import torch

    torch.set_num_threads(spec["threads"])
    total, tokens, done, sequences = 0.0, 0, 0, 0
    start = time.perf_counter()
    with warnings.catch_warnings():  # read-only memory: torch warns, nothing writes to it
        warnings.simplefilter("ignore", UserWarning)
        for x, y in _chunks(spec):
            logits = torch.from_numpy(x).reshape(-1, x.shape[2])
            target = torch.from_numpy(y).reshape(-1)
            loss = torch.nn.functional.cross_entropy(
                logits, target, reduction="sum", ignore_index=IGNORE
            )
            total += float(loss)
            tokens += int((target != IGNORE).sum())
            done += x.nbytes
            sequences += x.shape[0]
            del logits
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "bytes": done,
        "sequences": sequences,
        "cross_entropy_nats": total / tokens,
        "perplexity": math.exp(total / tokens),
        "tokens": tokens,
    }


def work_torchmetrics(spec: dict[str, Any]) -> dict[str, Any]:
    """torchmetrics.text.Perplexity(ignore_index=IGNORE).update per chunk, then compute()."""
    import warnings

    import torch
    from torchmetrics.text import Perplexity

    torch.set_num_threads(spec["threads"])
    metric = Perplexity(ignore_index=IGNORE)
    done, sequences = 0, 0
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for x, y in _chunks(spec):
            metric.update(torch.from_numpy(x), torch.from_numpy(y))
            done += x.nbytes
            sequences += x.shape[0]
        perplexity = float(metric.compute())
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "bytes": done,
        "sequences": sequences,
        "cross_entropy_nats": math.log(perplexity),
        "perplexity": perplexity,
        "tokens": int(metric.count),
        "state_total_log_probs": float(metric.total_log_probs),
    }


def work_generate(spec: dict[str, Any]) -> dict[str, Any]:
    """Write the token file (see ``write_token_file``)."""
    start = time.perf_counter()
    shape = tuple(spec["shape"])
    write_token_file(Path(spec["dir"]), (shape[0], shape[1], shape[2]))
    return {"seconds": time.perf_counter() - start}


WORKERS = {
    "generate": work_generate,
    "floor_read": work_floor_read,
    "ours_library": work_library,
    "torch": work_torch,
    "torchmetrics": work_torchmetrics,
}


def worker_main(raw: str) -> None:
    spec = json.loads(raw)
    result = WORKERS[spec["variant"]](spec)
    result.update(_own_peak())
    emit_result(result)


# --------------------------------------------------------------------------- running them


def child_env() -> dict[str, str]:
    """The environment of the subprocesses: this repository's ``src`` first on PYTHONPATH."""
    env = dict(os.environ)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


def run_child(cmd: list[str], timeout: float) -> dict[str, Any]:
    """Run ``cmd``; its exit code, stdout, stderr, wall seconds, the share of the CPU other
    processes took meanwhile, and its peak RSS alone (``os.wait4``'s ru_maxrss, bytes)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        before = cpu_snapshot()
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=child_env(), cwd=ROOT)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        others = other_cpu_fraction(before, cpu_snapshot())
        out.seek(0)
        err.seek(0)
        return {
            "rc": proc.returncode,
            "stdout": out.read(),
            "stderr": err.read(),
            "process_seconds": wall,
            "peak_rss_bytes": usage.ru_maxrss * 1024,
            "others_cpu": others,
        }


def failure(child: dict[str, Any]) -> str:
    tail = (child["stderr"] or child["stdout"]).strip().splitlines()[-3:] or ["no output"]
    return f"exit {child['rc']}: " + " | ".join(tail)


def run_worker(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One worker subprocess: what it reported, with the process's wall time and peak RSS."""
    child = run_child(
        [sys.executable, str(Path(__file__).resolve()), WORKER_FLAG, json.dumps(spec)], timeout
    )
    lines = [ln for ln in child["stdout"].splitlines() if ln.startswith(RESULT_PREFIX)]
    row: dict[str, Any] = {k: child[k] for k in ("process_seconds", "peak_rss_bytes", "others_cpu")}
    if child["rc"] != 0 or not lines:
        row["error"] = failure(child)
        return row
    row.update(json.loads(lines[-1][len(RESULT_PREFIX) :]))
    # its own VmHWM (exact, from after the exec): ru_maxrss counts the parent's peak too
    row["ru_maxrss_bytes"] = row["peak_rss_bytes"]
    row["peak_rss_bytes"] = row.get("VmHWM", row["peak_rss_bytes"])
    return row


def cli_has_token_files() -> tuple[bool, str]:
    """Whether ``crossentropy compute`` takes ``--ignore-index`` (token files came with it)."""
    child = run_child([sys.executable, "-m", "crossentropy", "compute", "--help"], 120)
    if child["rc"] == 0 and "--ignore-index" in child["stdout"]:
        return True, ""
    return False, (
        "crossentropy compute has no --ignore-index / token-file support in this checkout: "
        "ours_library (compute_report on the memory-mapped arrays) stands in for it"
    )


def run_cli(logits: Path, labels: Path, timeout: float) -> dict[str, Any]:
    """``crossentropy compute ... --format json``: its numbers, wall time, peak RSS."""
    cmd = [
        sys.executable,
        "-m",
        "crossentropy",
        "compute",
        str(logits),
        str(labels),
        "--logits",
        "--ignore-index",
        str(IGNORE),
        "--format",
        "json",
    ]
    child = run_child(cmd, timeout)
    row: dict[str, Any] = {k: child[k] for k in ("process_seconds", "peak_rss_bytes", "others_cpu")}
    row["command"] = " ".join(["crossentropy", *cmd[3:]])
    if child["rc"] != 0:
        row["error"] = failure(child)
        return row
    try:
        data = json.loads(child["stdout"])
        nbytes = np.load(logits, mmap_mode="r").nbytes
    except json.JSONDecodeError:
        row["error"] = "the command's output is not JSON: " + child["stdout"][:200]
        return row
    row.update(
        seconds=child["process_seconds"],  # the whole command, interpreter start included
        bytes=nbytes,
        sequences=np.load(logits, mmap_mode="r").shape[0],
        cross_entropy_nats=data["cross_entropy_nats"],
        perplexity=data["perplexity"],
        tokens=data["rows"],
        ignored=data.get("ignored"),
    )
    return row


def cli_startup(directory: Path, vocab: int, timeout: float) -> float | None:
    """The command's fixed cost: the shorter of two runs on a token file of 2 tokens
    (interpreter start, imports, the kernel loaded), None if it failed."""
    tiny_logits, tiny_labels = directory / TINY[0], directory / TINY[1]
    np.save(tiny_logits, np.zeros((1, 2, vocab), np.float32))
    np.save(tiny_labels, np.zeros((1, 2), np.int64))
    runs = [run_cli(tiny_logits, tiny_labels, timeout) for _ in range(2)]
    if any("error" in r for r in runs):
        return None
    return float(min(r["process_seconds"] for r in runs))


# --------------------------------------------------------------------------- the benchmark


def measure(args: argparse.Namespace, logits: Path, labels: Path) -> list[dict[str, Any]]:
    """Every variant, cold where asked then warm; a list of rows."""
    shape = tuple(np.load(logits, mmap_mode="r").shape)
    timeout = args.timeout
    base = {"logits": str(logits), "labels": str(labels), "threads": args.threads}
    cli_ok, cli_reason = cli_has_token_files()
    rows: list[dict[str, Any]] = []

    def add(name: str, cache: str, run: Any, **extra: Any) -> dict[str, Any]:
        if cache == "cold":
            drop_from_page_cache(logits)
        resident = resident_share(logits)
        row = {"variant": name, "label": LABELS[name], "cache": cache, **extra}
        row["resident_before"] = resident
        print(f"  {name} ({cache}, {fmt_share(resident)} of the logits cached) ...", flush=True)
        row.update(run())
        rows.append(row)
        return row

    def worker(name: str, **spec: Any) -> Any:
        return lambda: run_worker({**base, "variant": name, **spec}, timeout)

    startup = cli_startup(logits.parent, shape[2], timeout) if cli_ok else None
    caches = ("cold", "warm") if args.cold else ("warm",)
    for cache in caches:
        if cache == "warm":
            # one full read first, so that the warm runs find the file cached
            run_worker({**base, "variant": "floor_read"}, timeout)
        add("floor_read", cache, worker("floor_read"))
        if cli_ok:
            cli = add("ours", cache, lambda: run_cli(logits, labels, timeout))
            if startup is not None and "seconds" in cli and cli["seconds"] > startup:
                cli["startup_seconds"] = startup
                cli["gb_per_s_after_startup"] = cli["bytes"] / GB / (cli["seconds"] - startup)
        add("ours_library", cache, worker("ours_library"), stand_in_for_cli=not cli_ok)
    if not cli_ok:
        rows.append({"variant": "ours", "label": LABELS["ours"], "error": cli_reason})
    for name in ("torch", "torchmetrics"):
        row = add(
            name,
            "warm",
            worker(name, budget_s=args.peer_seconds, chunk_bytes=args.peer_chunk_bytes),
        )
        if "sequences" in row:
            row["prefix"] = row["sequences"] < shape[0]
    # the reference numbers of the prefixes a peer covered
    for n in sorted({r["sequences"] for r in rows if r.get("prefix")}):
        ref = run_worker({**base, "variant": "ours_library", "sequences": n}, timeout)
        rows.append(
            {
                "variant": "ours_library",
                "label": LABELS["ours_library"],
                "cache": "warm",
                "prefix": True,
                "reference_only": True,
                **ref,
            }
        )
    return rows


def fmt_share(share: float | None) -> str:
    return "?" if share is None else f"{100 * share:.0f}%"


def derive(rows: list[dict[str, Any]], data_bytes: int) -> None:
    """GB/s, ratios to floor_read (same cache state) and peak RSS over the file size."""
    floor = {r["cache"]: r for r in rows if r["variant"] == "floor_read" and "error" not in r}
    for r in rows:
        if "seconds" not in r or "error" in r:
            continue
        r["gb_per_s"] = r["bytes"] / GB / r["seconds"]
        f = floor.get(r.get("cache", ""))
        r["gbps_over_floor"] = None if f is None else r["gb_per_s"] / f["gb_per_s"]
        r["peak_rss_mib"] = r["peak_rss_bytes"] / 2**20
        r["peak_rss_over_file"] = r["peak_rss_bytes"] / data_bytes


def agreement(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each variant's mean cross entropy and token count against ours on the same sequences
    (the command when it ran, else compute_report); ok: all within TOLERANCE."""
    scored = [r for r in rows if "cross_entropy_nats" in r]
    refs: dict[int, dict[str, Any]] = {}
    for r in scored:
        if r["variant"] in ("ours", "ours_library") and r.get("sequences") is not None:
            refs.setdefault(r["sequences"], r)
    whole = next((r for r in scored if r["variant"] == "ours"), None) or next(
        (r for r in scored if r["variant"] == "ours_library" and not r.get("prefix")), None
    )
    checks = []
    for r in scored:
        ref = refs.get(r["sequences"]) if r.get("prefix") else whole
        if ref is None or r is ref:
            continue
        rel = abs(r["cross_entropy_nats"] - ref["cross_entropy_nats"]) / abs(
            ref["cross_entropy_nats"]
        )
        same_tokens = r["tokens"] == ref["tokens"]
        checks.append(
            {
                "variant": r["variant"],
                "cache": r.get("cache"),
                "against": f"{ref['variant']} ({ref.get('cache')})",
                "sequences": r.get("sequences"),
                "relative_difference": rel,
                "same_tokens": same_tokens,
                "ok": rel <= TOLERANCE and same_tokens,
            }
        )
        r["rel_ce_diff_vs_ours"] = rel
    expected = {"floor_read", "ours_library", "torch", "torchmetrics"}
    ran = {r["variant"] for r in rows if "error" not in r}
    missing = sorted(expected - ran)
    errors = [
        f"{r['variant']}: {r['error']}" for r in rows if "error" in r and r["variant"] != "ours"
    ]
    ok = bool(checks) and all(c["ok"] for c in checks) and not missing and not errors
    return {
        "tolerance": TOLERANCE,
        "ok": ok,
        "checks": checks,
        "missing": missing,
        "errors": errors,
    }


def print_table(rows: list[dict[str, Any]], data_bytes: int) -> None:
    columns = (
        Column("variant", 13, left=True),
        Column("cache", 5, left=True),
        Column("GB/s", 6, "6.2f"),
        Column("seconds", 8, "8.2f"),
        Column("peak RSS MiB", 12, "12.0f"),
        Column("x floor GB/s", 12, "12.2f"),
        Column("RSS/file", 8, "8.3f"),
        Column("CE nats", 9, "9.5f"),
    )
    body = []
    for r in rows:
        if r.get("reference_only"):
            continue
        note = r.get("label", "")
        if r.get("error"):
            note = r["error"]
        elif r.get("prefix"):
            note += f" (prefix: {r['sequences']} sequences, {r['bytes'] / GB:.2f} GB)"
        if r.get("gb_per_s_after_startup") is not None:
            note += (
                f" (startup {r['startup_seconds']:.1f} s included; "
                f"{r['gb_per_s_after_startup']:.2f} GB/s after it)"
            )
        if r.get("stand_in_for_cli"):
            note += " [stand-in for the CLI]"
        if r.get("others_cpu") is not None and r["others_cpu"] > 0.05:
            note += f" [others took {100 * r['others_cpu']:.0f}% CPU]"
        cells = (
            r["variant"],
            r.get("cache", "-"),
            r.get("gb_per_s"),
            r.get("seconds"),
            r.get("peak_rss_mib"),
            r.get("gbps_over_floor"),
            r.get("peak_rss_over_file"),
            r.get("cross_entropy_nats"),
        )
        body.append((cells, note))
    print(f"\nfile: {data_bytes / GB:.2f} GB (logits float32 + labels int64)")
    print("\n".join(table(columns, body, pad_missing=True)))


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny file (4, 64, 1000): smoke test")
    p.add_argument("--sequences", type=int, help=f"S (default {FULL[0]}: 10.5 GB)")
    p.add_argument("--tokens", type=int, help=f"T (default {FULL[1]})")
    p.add_argument("--vocab", type=int, help=f"V (default {FULL[2]})")
    p.add_argument(
        "--dir", type=Path, help="where to write the token file (default: a temp dir in /tmp)"
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the token file (and reuse one of this shape there)",
    )
    p.add_argument("--no-cold", dest="cold", action="store_false", help="warm runs only")
    p.add_argument(
        "--peer-seconds",
        type=float,
        default=240.0,
        help="a peer stops after this (a prefix of the file) (default 240)",
    )
    p.add_argument(
        "--peer-chunk-bytes",
        type=int,
        default=PEER_CHUNK,
        help="the peers' chunks: whole sequences, about this many bytes (default 128 MiB)",
    )
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    p.add_argument("--timeout", type=float, default=900.0, help="per subprocess, seconds")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    default = QUICK if args.quick else FULL
    shape = (args.sequences or default[0], args.tokens or default[1], args.vocab or default[2])
    if min(shape) < 1 or shape[1] < 2:
        p.error(f"--sequences, --tokens, --vocab: need S >= 1, T >= 2, V >= 1; got {shape}")
    if min(args.peer_seconds, args.peer_chunk_bytes, args.threads, args.timeout) <= 0:
        p.error("--peer-seconds, --peer-chunk-bytes, --threads and --timeout must be positive")
    args.shape = shape
    return args


@contextlib.contextmanager
def token_dir(args: argparse.Namespace) -> Iterator[Path]:
    """The directory of the token file: --dir (made if missing) or a new temp dir; the token
    files (and a temp dir) are removed at the end unless --keep."""
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        directory, temporary = args.dir, False
    else:
        directory, temporary = Path(tempfile.mkdtemp(prefix="bench_report_", dir="/tmp")), True
    try:
        yield directory
    finally:
        if not args.keep:
            for name in ("logits.npy", "labels.npy", *TINY):
                (directory / name).unlink(missing_ok=True)
            if temporary:
                shutil.rmtree(directory, ignore_errors=True)


def existing(directory: Path, shape: tuple[int, int, int]) -> tuple[Path, Path] | None:
    """A kept token file of this shape in ``directory``, if there is one."""
    logits, labels = directory / "logits.npy", directory / "labels.npy"
    if logits.exists() and labels.exists():
        with contextlib.suppress(ValueError, OSError):
            if (
                np.load(logits, mmap_mode="r").shape == shape
                and np.load(labels, mmap_mode="r").shape == shape[:2]
            ):
                return logits, labels
    return None


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    loadavg = os.getloadavg()
    started = time.time()
    data_bytes = file_bytes(args.shape)
    # no torch here: a child's ru_maxrss counts this process's RSS at the fork, keep it small

    with token_dir(args) as directory:
        files = existing(directory, args.shape) if args.keep else None
        generate_seconds = None
        if files is None:
            check_disk(directory, data_bytes)
            print(
                f"writing the token file {args.shape} ({data_bytes / GB:.2f} GB) "
                f"in {directory} ...",
                flush=True,
            )
            # in a subprocess: the pages it writes would count in this process's RSS, and a
            # child's ru_maxrss starts from its parent's peak at the fork
            spec = {"variant": "generate", "dir": str(directory), "shape": list(args.shape)}
            made = run_worker(spec, args.timeout)
            if "error" in made:
                raise SystemExit(f"error: writing the token file failed: {made['error']}")
            files = directory / "logits.npy", directory / "labels.npy"
            generate_seconds = made["seconds"]
        rows = measure(args, *files)
    derive(rows, data_bytes)
    check = agreement(rows)
    print_table(rows, data_bytes)
    report = {
        "benchmark": "bench_report",
        "command": command_line(),
        "started": utc(started),
        "quick": args.quick,
        "shape": list(args.shape),
        "file_bytes": data_bytes,
        "logits_bytes": args.shape[0] * args.shape[1] * args.shape[2] * 4,
        "generate_seconds": generate_seconds,
        "peer_seconds": args.peer_seconds,
        "units": {"gb_per_s": "1e9 bytes of logits per second", "peak_rss": "bytes / MiB"},
        "methods": {
            "peak_rss": "the whole variant subprocess (interpreter, imports, the mapped file "
            "pages it touched): workers: their own VmHWM read at the end (also RssAnon and "
            "RssFile then); ours (the CLI): ru_maxrss of that child alone (os.wait4), which is "
            "at least the parent's peak RSS at the fork (parent_rss_bytes: kept small, no "
            "torch and no file pages in the parent)",
            "seconds": "workers: the work alone (after imports and opening; compute_report "
            "after a warm-up call on 2 tokens, warmup_seconds); ours (the CLI): the whole "
            "command, interpreter start and imports included",
            "cache": "cold: the logits' pages dropped first (fsync + posix_fadvise DONTNEED); "
            "warm: after a full read; resident_before: the share of the logits' pages in the "
            "page cache just before the run (mincore)",
            "peers": f"chunks of whole sequences (~{args.peer_chunk_bytes / 2**20:.0f} MiB) from a "
            "memory map, pages released after each chunk (madvise DONTNEED); a prefix of the file "
            "(prefix: true, GB/s on that prefix) when --peer-seconds ran out, checked against "
            "compute_report on the same prefix (reference_only rows)",
            "check": f"mean cross entropy within relative {TOLERANCE:g} of ours on the same "
            "sequences, and the same number of scored tokens",
        },
        "machine": machine_info(args.threads, loadavg),
        "parent_rss_bytes": proc_status_kib("VmHWM") * 1024,
        "rows": rows,
        "agreement": check,
    }
    write_json(args.out, report)
    if not check["ok"]:
        print(f"FAILED: {json.dumps({k: check[k] for k in ('checks', 'missing', 'errors')})}")
        return 1
    print(f"all variants agree with ours within a relative {TOLERANCE:g}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == WORKER_FLAG:
        worker_main(sys.argv[2])
    else:
        sys.exit(main(sys.argv[1:]))
