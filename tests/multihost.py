"""Several hosts on one machine for the tests: network namespaces joined by a bridge.

Not a test module (no ``test_`` prefix): the machinery of tests/test_multihost*.py.

API (stable)::

    from multihost import hosts, torchrun_argv, wait_all

    with hosts(2) as (head, other):          # pytest.skip(reason) where namespaces fail
        head.name, head.address, head.interface   # "cemh123x0h0", "10.77.X.1", "eth0"
        argv, env = torchrun_argv(head, head=head, nnodes=2, rdzv_id="t", port=29500,
                                  script="examples/vocab_parallel_train.py",
                                  args=["--steps", "10"])
        p = head.run(argv, env)               # -> Process (a subprocess.Popen[str])
        p.output()                            # (stdout, stderr) written so far
        p.wait_for("step   5", timeout=60)   # True once the text is in stdout or stderr
        other.cut(); other.restore()          # the host's link down / up (at the switch)
        results = wait_all([p, q], timeout=120)   # [(returncode, stdout, stderr), ...]
                                              # returncode None: still running at the
                                              # deadline (then killed with its group)

``hosts(n)`` makes n namespaces ``cemh{pid}x{k}h{i}`` (i = 0..n-1) and a switch namespace
``cemh{pid}x{k}s`` holding a bridge ``br0``; host i has a veth pair, ``eth0`` inside it
with address ``10.77.X.(i+1)/24`` and ``h{i}`` in the switch attached to the bridge; ``lo``
is up everywhere. X comes from the pid and k (a counter of this process), so concurrent
sessions use different subnets as well as separate namespaces. Nothing is added to the
root namespace; traffic stays inside the namespaces made here.

``Host.run(argv, env=None, *, cwd=REPO)`` starts ``ip netns exec NAME argv`` in a new
session (its own process group), with ``env`` added to a copy of ``os.environ``, stdout and
stderr to files (read with ``Process.output()``; no pipe can fill up). ``Host.cut()`` sets
``h{i}`` down in the switch namespace (the cable pulled: both ends see no carrier loss
inside the host, packets are dropped), ``Host.restore()`` sets it up again.

On leaving the ``with`` block (also on an exception, and at exit of the interpreter for
anything left), every process started by ``run`` is killed with its process group and its
descendants (SIGKILL; torchrun's workers run in sessions of their own), then whatever
still runs in the namespaces (``ip netns pids``), and every namespace is deleted.
``Process.kill_group()`` does the same for one process tree (a host's agent killed),
``Process.descendants()`` lists the pids below it (to kill one worker).
Namespaces left by a killed earlier session (``cemh{pid}...`` whose pid no longer runs)
are emptied (their processes killed) and deleted when ``hosts`` is next called.

``torchrun_argv(host, *, head, nnodes, rdzv_id, port, script, args, ...)`` returns
``(argv, env)``: the command the README shows for a multi-host run over c10d rendezvous
and gloo (``--local_addr`` = the host's address, ``--rdzv_conf=is_host=1`` on the head,
``GLOO_SOCKET_IFNAME`` = the host's interface), plus ``PYTHONPATH`` = this checkout's src
and ``OMP_NUM_THREADS=1``.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PREFIX = "cemh"
INTERFACE = "eth0"
COMMAND_TIMEOUT_S = 20.0  # each `ip` call

_counter = itertools.count()
_live: list[Network] = []


class NamespaceError(RuntimeError):
    """An `ip` command failed: the namespaces cannot be made here."""


def _ip(*args: str) -> None:
    try:
        done = subprocess.run(
            ["ip", *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise NamespaceError(f"ip {' '.join(args)}: {error}") from error
    if done.returncode != 0:
        raise NamespaceError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")


def _namespaces() -> list[str]:
    try:
        done = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def _sweep_stale() -> None:
    """Delete the namespaces of earlier sessions whose process no longer runs."""
    for name in _namespaces():
        match = re.fullmatch(rf"{PREFIX}(\d+)x\d+(?:h\d+|s)", name)
        if match is None or int(match.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            _kill_namespace(name)  # agents and workers left running by the dead session
            with contextlib.suppress(NamespaceError):
                _ip("netns", "delete", name)
        except PermissionError:
            pass


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), children before grandchildren."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid``'s descendants (and their groups), then ``pid``'s group."""
    for child in _descendants(pid):  # listed before any is killed: no reparenting yet
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(child, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _kill_namespace(name: str) -> None:
    """SIGKILL whatever still runs in a namespace made here."""
    try:
        done = subprocess.run(
            ["ip", "netns", "pids", name], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired):
        return
    for line in done.stdout.split():
        if line.isdigit():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(line), signal.SIGKILL)


class Process(subprocess.Popen[str]):
    """A process started in a host's namespace; its output goes to two files."""

    host: Host
    stdout_path: Path
    stderr_path: Path

    def output(self) -> tuple[str, str]:
        """(stdout, stderr) written so far."""
        return (
            self.stdout_path.read_text(errors="replace"),
            self.stderr_path.read_text(errors="replace"),
        )

    def wait_for(self, text: str, timeout: float) -> bool:
        """Wait until ``text`` appears in stdout or stderr (True), or the process ended
        or ``timeout`` seconds passed without it (False)."""
        deadline = time.monotonic() + timeout
        while True:
            if any(text in part for part in self.output()):
                return True
            if self.poll() is not None or time.monotonic() > deadline:
                return any(text in part for part in self.output())
            time.sleep(0.1)

    def kill_group(self) -> None:
        """SIGKILL the process, its process group and every descendant (torchrun starts
        its workers in sessions of their own: the group alone would miss them)."""
        _kill_tree(self.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.wait(timeout=10)

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the process group (the agent and what shares its group)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def descendants(self) -> list[int]:
        """The pids of the processes below this one (torchrun's workers, for example)."""
        return _descendants(self.pid)


@dataclass
class Host:
    """One namespace: a machine of the test with one interface on the switch."""

    name: str
    address: str
    interface: str
    switch: str  # the switch namespace
    port: str  # this host's veth end in the switch namespace
    logs: Path
    processes: list[Process] = field(default_factory=list)

    def run(
        self, argv: Sequence[str], env: dict[str, str] | None = None, *, cwd: Path = REPO
    ) -> Process:
        """Start ``argv`` in this namespace (own session and process group)."""
        index = len(self.processes)
        out = self.logs / f"{self.name}.{index}.out"
        err = self.logs / f"{self.name}.{index}.err"
        full = dict(os.environ)
        full.update(env or {})
        with out.open("w") as stdout, err.open("w") as stderr:
            process = Process(
                ["ip", "netns", "exec", self.name, *argv],
                env=full,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                text=True,
                start_new_session=True,
            )
        process.host = self
        process.stdout_path = out
        process.stderr_path = err
        self.processes.append(process)
        return process

    def cut(self) -> None:
        """The link cut: this host's port on the switch set down."""
        _ip("-n", self.switch, "link", "set", self.port, "down")

    def restore(self) -> None:
        """The link back: the port set up again."""
        _ip("-n", self.switch, "link", "set", self.port, "up")


@dataclass
class Network:
    hosts: list[Host]
    switch: str
    namespaces: list[str]
    logs: Path
    closed: bool = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for host in self.hosts:
            for process in host.processes:
                process.kill_group()
        for name in self.namespaces:
            _kill_namespace(name)  # anything that escaped its group (orphaned workers)
        for name in reversed(self.namespaces):
            with contextlib.suppress(NamespaceError):
                _ip("netns", "delete", name)
        shutil.rmtree(self.logs, ignore_errors=True)


def _close_all() -> None:
    while _live:
        _live.pop().close()


atexit.register(_close_all)


def _make(n: int) -> Network:
    if shutil.which("ip") is None:
        raise NamespaceError("the `ip` command (iproute2) is not installed")
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise NamespaceError("network namespaces need root (CAP_NET_ADMIN)")
    _sweep_stale()
    k = next(_counter)
    pid = os.getpid()
    subnet = f"10.77.{(pid * 7 + k) % 254 + 1}"
    base = f"{PREFIX}{pid}x{k}"
    switch = f"{base}s"
    network = Network(
        hosts=[], switch=switch, namespaces=[], logs=Path(tempfile.mkdtemp(prefix=base))
    )
    _live.append(network)
    try:
        _ip("netns", "add", switch)
        network.namespaces.append(switch)
        _ip("-n", switch, "link", "set", "lo", "up")
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        for i in range(n):
            name = f"{base}h{i}"
            _ip("netns", "add", name)
            network.namespaces.append(name)
            port = f"h{i}"
            _ip("-n", switch, "link", "add", port, "type", "veth", "peer", "name", INTERFACE,
                "netns", name)  # fmt: skip
            _ip("-n", switch, "link", "set", port, "master", "br0")
            _ip("-n", switch, "link", "set", port, "up")
            address = f"{subnet}.{i + 1}"
            _ip("-n", name, "link", "set", "lo", "up")
            _ip("-n", name, "addr", "add", f"{address}/24", "dev", INTERFACE)
            _ip("-n", name, "link", "set", INTERFACE, "up")
            network.hosts.append(Host(name, address, INTERFACE, switch, port, logs=network.logs))
    except BaseException:
        network.close()
        _live.remove(network)
        raise
    return network


@contextlib.contextmanager
def hosts(n: int) -> Iterator[list[Host]]:
    """n hosts on one switch; skips the test (pytest.skip) where namespaces cannot be made."""
    try:
        network = _make(n)
    except NamespaceError as error:
        pytest.skip(f"cannot make network namespaces here: {error}")
    try:
        yield list(network.hosts)
    finally:
        network.close()
        with contextlib.suppress(ValueError):
            _live.remove(network)


def torchrun() -> list[str]:
    """The torchrun of this interpreter (its venv), else ``python -m torch.distributed.run``."""
    beside = Path(sys.executable).parent / "torchrun"
    if beside.exists():
        return [str(beside)]
    return [sys.executable, "-m", "torch.distributed.run"]


def torchrun_argv(
    host: Host,
    *,
    head: Host,
    nnodes: int | str,
    rdzv_id: str,
    port: int,
    script: str | Path,
    args: Sequence[str] = (),
    nproc_per_node: int = 1,
    join_timeout: float | None = None,
    max_restarts: int | None = None,
    extra: Sequence[str] = (),
) -> tuple[list[str], dict[str, str]]:
    """The README's multi-host torchrun command for ``host`` and its environment.

    ``extra``: more torchrun options, placed before the script (e.g. ``--monitor-interval``).
    """
    conf = []
    if host is head:
        conf.append("is_host=1")
    if join_timeout is not None:
        conf.append(f"join_timeout={join_timeout:g}")
    argv = [
        *torchrun(),
        f"--nnodes={nnodes}",
        f"--nproc_per_node={nproc_per_node}",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint={head.address}:{port}",
        f"--rdzv_id={rdzv_id}",
        f"--local_addr={host.address}",
    ]
    if conf:
        argv.append(f"--rdzv_conf={','.join(conf)}")
    if max_restarts is not None:
        argv.append(f"--max-restarts={max_restarts}")
    argv += [*extra, str(script), *args]
    env = {
        # restarted workers get a fresh store (torch shares the first round's by default,
        # where they would read the dead workers' addresses): harmless without restarts
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
        "GLOO_SOCKET_IFNAME": host.interface,
        "PYTHONPATH": str(SRC),
        "OMP_NUM_THREADS": "1",
    }
    return argv, env


def wait_all(processes: Sequence[Process], timeout: float) -> list[tuple[int | None, str, str]]:
    """Wait for every process until one shared deadline; (returncode, stdout, stderr) each.

    A process still running at the deadline is killed with its group and reported with
    returncode None.
    """
    deadline = time.monotonic() + timeout
    results: list[tuple[int | None, str, str]] = []
    for process in processes:
        code: int | None
        try:
            code = process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            code = None
            process.kill_group()
        else:
            process.kill_group()  # the agent's workers, if any outlived it
        results.append((code, *process.output()))
    return results
