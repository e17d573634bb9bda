"""Machinery shared by the benchmarks in this folder (not a benchmark itself).

- timing: medians of ``time.perf_counter`` over repetitions after warm-up, with the share of
  the machine's CPU that OTHER processes took meanwhile read from /proc/stat (the ratios a
  benchmark reports assume ~0; rows above ``NOISY`` are flagged and may be re-timed);
- peak memory: a variant's peak resident memory over its inputs, measured in a fresh
  subprocess (VmRSS before, VmHWM after resetting it through /proc/self/clear_refs), with
  glibc told to serve every block over 64 KiB with mmap so that freed memory goes back to
  the system and cannot hide a measured run's allocations;
- the table printing, the machine description and the JSON report.

The benchmark scripts import it as ``_harness`` (Python puts a script's own folder first
on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

# A row is flagged when other processes took more than this share of the CPU while it ran.
NOISY = 0.05
# How long to wait for a quiet second before re-timing a noisy row.
QUIET_WAIT_S = 20.0

# The environment of the memory probes: freed blocks over 64 KiB return to the system.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}
WORKER_FLAG = "--_worker"
RESULT_PREFIX = "RESULT "


# --------------------------------------------------------------------------- /proc readers


def proc_status_kib(field: str) -> int:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM, ...)."""
    with open("/proc/self/status") as f:
        match = re.search(rf"^{field}:\s+(\d+)\s+kB", f.read(), re.MULTILINE)
    if match is None:
        raise OSError(f"{field} not in /proc/self/status")
    return int(match.group(1))


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS; True if that worked here."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return proc_status_kib("VmHWM") <= proc_status_kib("VmRSS") + 1024
    except OSError:
        return False


def mem_available() -> int:
    """MemAvailable from /proc/meminfo, in bytes (0 if unknown)."""
    with open("/proc/meminfo") as f:
        match = re.search(r"^MemAvailable:\s+(\d+)\s+kB", f.read(), re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def fits_in_memory(extra_bytes: float) -> tuple[bool, str]:
    """Whether ``extra_bytes`` more (+10% and 256 MiB of slack) fit in the memory available."""
    need = 1.1 * extra_bytes + 256 * 2**20
    avail = mem_available()
    if need > avail:
        return False, (
            f"does not fit in memory: needs ~{need / 2**30:.1f} GiB, "
            f"{avail / 2**30:.1f} GiB available"
        )
    return True, ""


# --------------------------------------------------------------------------- a variant


def _noop() -> None:
    return None


@dataclasses.dataclass
class Prepared:
    """A variant ready to run: ``prep()`` untimed before each repetition, ``step()`` timed."""

    step: Callable[[], Any]
    prep: Callable[[], None] = _noop
    grad: Callable[[], Any] = _noop
    compile_seconds: float | None = None
    entry: str | None = None


def loss_value(result: Any) -> float | None:
    """The loss a step returned (the first element of a tuple) as a float, or None."""
    if isinstance(result, tuple):
        result = result[0]
    try:
        return float(result)
    except (TypeError, ValueError, RuntimeError):
        return None


# --------------------------------------------------------------------------- timing

Snapshot = tuple[int, int, float]


def cpu_snapshot() -> Snapshot:
    """(busy jiffies of the whole machine, all jiffies, this process's CPU seconds)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    t = os.times()
    return sum(fields) - idle, sum(fields), t.user + t.system + t.children_user + t.children_system


def other_cpu_fraction(before: Snapshot, after: Snapshot) -> float | None:
    """Share of the machine's CPU time used by OTHER processes between two snapshots."""
    return NoiseMeter().add(before, after).fraction()


class NoiseMeter:
    """Sums the CPU counters of several timed intervals: the share other processes took."""

    def __init__(self) -> None:
        self.busy = 0
        self.total = 0
        self.own = 0.0

    def add(self, before: Snapshot, after: Snapshot) -> NoiseMeter:
        self.busy += after[0] - before[0]
        self.total += after[1] - before[1]
        self.own += after[2] - before[2]
        return self

    def fraction(self) -> float | None:
        if self.total <= 0:
            return None
        hz = os.sysconf("SC_CLK_TCK")
        return max(0.0, (self.busy - self.own * hz) / self.total)


def wait_for_quiet(limit: float) -> bool:
    """Wait (up to ``limit`` seconds) for one second in which other processes stay quiet."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = cpu_snapshot()
        time.sleep(1.0)
        others = other_cpu_fraction(before, cpu_snapshot())
        if others is not None and others < NOISY:
            return True
    return False


def time_reps(p: Prepared, warmup: int, reps: int) -> tuple[list[float], Any, float | None]:
    """Times of ``reps`` runs of ``p.step`` after ``warmup`` ones, the last result, and the
    share of the CPU that other processes took meanwhile (noise: the ratios assume ~0)."""
    for _ in range(warmup):
        p.prep()
        p.step()
    times = []
    result = None
    gc.collect()
    gc.disable()
    before = cpu_snapshot()
    try:
        for _ in range(reps):
            p.prep()
            result = None
            start = time.perf_counter()
            result = p.step()
            times.append(time.perf_counter() - start)
    finally:
        gc.enable()
    return times, result, other_cpu_fraction(before, cpu_snapshot())


def time_with_retries(
    p: Prepared, warmup: int, reps: int, retries: int
) -> tuple[list[float], Any, float | None, int]:
    """``time_reps``, and while other processes took CPU meanwhile (more than ``NOISY``), up
    to ``retries`` times: wait for a quiet moment and time again (one warm-up), keeping the
    least disturbed attempt. Returns (times, last result, others' share, attempts)."""
    times, result, others = time_reps(p, warmup, reps)
    attempts = 1
    while others is not None and others > NOISY and attempts <= retries:
        wait_for_quiet(QUIET_WAIT_S)
        again = time_reps(p, 1, reps)
        attempts += 1
        if again[2] is not None and again[2] < others:
            times, result, others = again
    return times, result, others, attempts


@dataclasses.dataclass
class Interleaved:
    """What ``time_interleaved`` measured for one variant."""

    times: list[float]
    result: Any
    others: float | None
    grad: Any = None  # what ``after_last`` returned after the variant's last repetition
    error: str | None = None


def time_interleaved(
    prepared: dict[str, Prepared],
    warmup: int,
    reps: int,
    after_last: Callable[[str, Prepared, Any], Any] | None = None,
) -> dict[str, Interleaved]:
    """Time several variants round-robin: ``warmup`` rounds, then ``reps`` timed rounds in
    which every variant runs once (``prep()`` untimed, ``step()`` timed), so that a slow
    drift of the machine (other processes, frequency) affects every variant alike. The
    share of the CPU other processes took is summed over each variant's own timed steps.
    ``after_last(name, p, result)``, called right after a variant's last timed step (before
    the next variant's ``prep``), may capture its gradients. A variant that raises is
    dropped from the later rounds, with the error recorded."""
    out = {name: Interleaved([], None, None) for name in prepared}
    meters = {name: NoiseMeter() for name in prepared}
    live = dict(prepared)
    for round_ in range(warmup + reps):
        timed = round_ >= warmup
        for name, p in list(live.items()):
            try:
                p.prep()
                gc.collect()
                gc.disable()
                try:
                    before = cpu_snapshot()
                    start = time.perf_counter()
                    result = p.step()
                    elapsed = time.perf_counter() - start
                    after = cpu_snapshot()
                finally:
                    gc.enable()
                if timed:
                    out[name].times.append(elapsed)
                    meters[name].add(before, after)
                    out[name].result = result
                    if round_ == warmup + reps - 1 and after_last is not None:
                        out[name].grad = after_last(name, p, result)
                del result
            except Exception as exc:
                out[name].error = f"failed: {type(exc).__name__}: {exc}"
                del live[name]
    for name, m in meters.items():
        out[name].others = m.fraction()
    return out


# --------------------------------------------------------------------------- memory probes


def probe_peak(
    p: Prepared,
    *,
    can_reset: bool,
    warmup: bool = True,
    before_run: Callable[[], None] = _noop,
) -> tuple[int, Any]:
    """Peak resident memory (bytes) one run of ``p.step`` adds to what the process holds.

    One warm-up run first (when the peak can be reset, unless ``warmup`` is False because
    the caller warmed up otherwise: one-time allocations such as thread pools and caches
    are not the operation's), then ``p.prep()``, ``before_run()`` (release
    caches kept between steps), a garbage collection, VmRSS read, the peak reset, the
    measured run, VmHWM read. Returns (peak extra bytes, the measured run's result)."""
    if can_reset and warmup:
        p.prep()
        p.step()
    p.prep()
    before_run()
    gc.collect()
    before = proc_status_kib("VmRSS")
    if can_reset:
        reset_peak_rss()
    result = p.step()
    peak = proc_status_kib("VmHWM")
    return max(0, peak - before) * 1024, result


def run_workers(
    script: Path,
    specs: Iterable[tuple[Sequence[str], dict[str, Any]]],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 900,
) -> dict[str, Any]:
    """Run ``script --_worker SPEC`` in a fresh subprocess per spec and merge what each one
    reported with ``emit_result``. ``specs`` pairs the variants a subprocess measures with
    the JSON spec it gets; a subprocess that fails, times out or is killed (out of memory)
    gives each of its variants ``{"error": why}`` (and ``"killed": True`` when killed).

    The subprocesses run with ``MALLOC_ENV``, the repository's ``src`` first on PYTHONPATH,
    and ``env`` on top."""
    full_env = dict(os.environ)
    full_env.update(MALLOC_ENV)
    if env:
        full_env.update(env)
    src = Path(__file__).resolve().parent.parent / "src"
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), full_env.get("PYTHONPATH")) if p)
    results: dict[str, Any] = {}
    for group, spec in specs:
        cmd = [sys.executable, str(Path(script).resolve()), WORKER_FLAG, json.dumps(spec)]
        try:
            proc = subprocess.run(
                cmd, env=full_env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            results.update({v: {"error": "memory probe timed out"} for v in group})
            continue
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
        if proc.returncode == 0 and lines:
            results.update(json.loads(lines[-1][len(RESULT_PREFIX) :]))
            continue
        if proc.returncode in (-9, 137):
            why = "the memory probe was killed (out of memory)"
        else:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            why = f"the memory probe failed (exit {proc.returncode}): {tail[0]}"
        results.update({v: {"error": why, "killed": proc.returncode in (-9, 137)} for v in group})
    return results


def emit_result(result: dict[str, Any]) -> None:
    """A worker's report to ``run_workers``: one line on stdout."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# --------------------------------------------------------------------------- report


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    """``value`` formatted with ``spec`` (and ``suffix``), or "-" when None."""
    return "-" if value is None else f"{value:{spec}}{suffix}"


@dataclasses.dataclass(frozen=True)
class Column:
    """A table column: its header right-aligned in ``width`` (left-aligned when ``left``),
    and its cells formatted with ``spec`` (+ ``suffix``), "-" when None."""

    header: str
    width: int
    spec: str = ""
    suffix: str = ""
    left: bool = False

    def head(self) -> str:
        return f"{self.header:{'<' if self.left else '>'}{self.width}}"

    def cell(self, value: Any, pad_missing: bool) -> str:
        if isinstance(value, str):
            return f"{value:{'<' if self.left else '>'}{self.width}}"
        text = fmt(value, self.spec, self.suffix)
        if value is None and pad_missing:
            text = f"{text:{'<' if self.left else '>'}{self.width}}"
        return text


def table(
    columns: Sequence[Column],
    rows: Iterable[tuple[Sequence[Any], str]],
    *,
    note_header: str = "note",
    pad_missing: bool = False,
) -> list[str]:
    """The lines of a table: header, a rule of dashes, then one line per row.

    Each row is (its cells, one per column, a str taken as is or a number formatted by the
    column), and a free-text note after two spaces. ``pad_missing`` pads the "-" of a
    missing number to the column's width (without it, as in the first benchmark's tables,
    the "-" stands alone)."""
    head = " ".join(c.head() for c in columns) + f"  {note_header}"
    lines = [head, "-" * len(head)]
    for cells, note in rows:
        body = " ".join(c.cell(v, pad_missing) for c, v in zip(columns, cells, strict=True))
        lines.append(f"{body}  {note}")
    return lines


def verdict(met: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "n/a "}[met]


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        match = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.MULTILINE)
        return match.group(1) if match else ""
    return ""


def machine(torch_threads: int, loadavg_before: tuple[float, float, float]) -> dict[str, Any]:
    """The machine section of a report (the load average read now is the 'after')."""
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch_threads,
        "platform": platform.platform(),
        "loadavg_before": loadavg_before,
        "loadavg_after": os.getloadavg(),
    }


def command_line() -> str:
    return " ".join([Path(sys.executable).name, *sys.argv])


def utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def write_json(path: Path, report: dict[str, Any]) -> None:
    """Write the report (indented, newline-terminated) and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {path}")
