"""Faults across two hosts (network namespaces, tests/multihost.py), each ending in bounded
time, and an elastic restart that resumes from the example's checkpoint.

One torchrun agent per host, nproc_per_node=1, c10d rendezvous, gloo, the README's command
(``torchrun_argv``) running examples/vocab_parallel_train.py on a tiny model. Every fault
test asserts that the run ENDED within a bound and what each rank said; the bounds are
generous (the machine is shared and loaded), the point is that nothing hangs silently.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from multihost import Host, Process, hosts, torchrun_argv, wait_all

pytestmark = pytest.mark.multihost

SCRIPT = "examples/vocab_parallel_train.py"
TINY = ["--vocabulary", "256", "--hidden", "16", "--batch", "4", "--length", "16"]
PORT = 29500
START_S = 90.0  # agents up, rendezvous, torch imported, the first steps done


def start(
    group: Sequence[Host],
    rdzv_id: str,
    args: Sequence[str],
    *,
    max_restarts: int | None = None,
    join_timeout: float | None = None,
) -> list[Process]:
    """One agent per host of ``group`` (the first is the head), the example on each."""
    processes = []
    for host in group:
        argv, env = torchrun_argv(
            host,
            head=group[0],
            nnodes=len(group),
            rdzv_id=rdzv_id,
            port=PORT,
            script=SCRIPT,
            args=[*TINY, *args],
            max_restarts=max_restarts,
            join_timeout=join_timeout,
        )
        processes.append(host.run(argv, env))
    return processes


def wait_any(processes: Sequence[Process], text: str, timeout: float) -> bool:
    """True once ``text`` is in the output of any of ``processes``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in part for p in processes for part in p.output()):
            return True
        if all(p.poll() is not None for p in processes):
            break
        time.sleep(0.1)
    return any(text in part for p in processes for part in p.output())


def worker_pid(process: Process, timeout: float = 30.0) -> int:
    """The pid of the example's rank on this agent (its "rank R: pid P" line)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.findall(r"rank \d+: pid (\d+)", process.output()[0])
        if found:
            return int(found[-1])
        time.sleep(0.1)
    raise AssertionError(f"no pid line from the worker:\n{process.output()}")


def held_out(text: str) -> float:
    """The final held-out loss the example prints (rank 0)."""
    found = re.findall(r"held-out loss (\d+\.\d+) \(single process on the gathered weight", text)
    assert found, f"no held-out loss in:\n{text[-3000:]}"
    return float(found[-1])


def ended_within(processes: Sequence[Process], bound: float) -> list[float | None]:
    """Seconds until each process ended, watched together for ``bound`` seconds (None: it
    was still running)."""
    began = time.monotonic()
    ends: list[float | None] = [None] * len(processes)
    while time.monotonic() - began < bound and None in ends:
        for i, process in enumerate(processes):
            if ends[i] is None and process.poll() is not None:
                ends[i] = time.monotonic() - began
        time.sleep(0.1)
    for i, process in enumerate(processes):
        if ends[i] is None and process.poll() is not None:
            ends[i] = time.monotonic() - began
    return ends


def test_a_killed_peer_ends_the_other_host() -> None:
    with hosts(2) as group:
        _, other = group
        processes = start(group, "kill", ["--steps", "400", "--step-delay", "0.1"])
        assert wait_any(processes, "step   10", START_S), [p.output() for p in processes]
        other_processes = processes[1]
        other_processes.kill_group()  # the agent and its worker: the host is gone
        (end,) = ended_within(processes[:1], 60)
        (code, out, err), _ = wait_all(processes, 10)
    assert end is not None, f"the head still ran 60 s after its peer was killed:\n{err[-3000:]}"
    assert code not in (0, None)
    assert "held-out loss" not in out
    # gloo names the lost peer by its address
    assert "Connection closed by peer" in err or "Connection reset by peer" in err, err[-3000:]
    assert other.address in err, err[-3000:]


def retransmit_briefly(host: Host) -> None:
    """``net.ipv4.tcp_retries2=5`` in the host's namespace (its own copy of the setting):
    unacknowledged data to a silent peer fails after about 6-13 s instead of Linux's
    default 15 retries (about 15 minutes). torch's rendezvous keep-alive writes to the head's
    store without a timeout of its own, holding a lock the agent needs: across a cut link the
    agent of the other host ends only when the kernel gives up on that write."""
    subprocess.run(
        ["ip", "netns", "exec", host.name, "sysctl", "-q", "-w", "net.ipv4.tcp_retries2=5"],
        check=True,
        timeout=20,
    )


def test_a_cut_link_makes_every_rank_raise_within_the_timeout() -> None:
    timeout = 10
    bound = timeout + 50  # the collective's timeout, TCP giving up, a loaded machine
    with hosts(2) as group:
        _, other = group
        for host in group:
            retransmit_briefly(host)
        processes = start(
            group, "cut", ["--steps", "400", "--step-delay", "0.1", "--timeout", str(timeout)]
        )
        try:
            assert wait_any(processes, "step   10", START_S), [p.output() for p in processes]
            other.cut()
            ends = ended_within(processes, bound)
        finally:
            other.restore()
        results = wait_all(processes, 5)
    for end, (code, out, err) in zip(ends, results, strict=True):
        assert end is not None, f"still running {bound} s after the cut:\n{err[-3000:]}"
        assert code not in (0, None), err[-3000:]
        assert "held-out loss" not in out
        # every rank raised gloo's timeout
        assert f"Timed out waiting {timeout * 1000}ms" in err, err[-3000:]
    # the head's worker ended after its error (no hang at its exit), its agent reported it
    assert "failed (exitcode: 1)" in results[0][2], results[0][2][-3000:]
    # the other host's agent lost the head's rendezvous store
    assert "RendezvousConnectionError" in results[1][2], results[1][2][-3000:]


def test_sigterm_ends_both_hosts_while_a_collective_waits_on_a_cut_link() -> None:
    # --timeout 120: the ranks are still blocked in gloo when the agents get SIGTERM
    with hosts(2) as group:
        _, other = group
        for host in group:
            retransmit_briefly(host)
        processes = start(
            group, "term", ["--steps", "400", "--step-delay", "0.1", "--timeout", "120"]
        )
        try:
            assert wait_any(processes, "step   10", START_S), [p.output() for p in processes]
            other.cut()
            time.sleep(2)
            for process in processes:
                os.kill(process.pid, signal.SIGTERM)  # the agent (ip netns exec execs it)
            ends = ended_within(processes, 40)
        finally:
            other.restore()
        results = wait_all(processes, 5)
    for end, (code, out, err) in zip(ends, results, strict=True):
        assert end is not None, f"still running 40 s after SIGTERM:\n{err[-3000:]}"
        assert code not in (0, None)
        assert "held-out loss" not in out
        assert "Received 15 death signal, shutting down workers" in err, err[-3000:]
        assert "Timed out waiting" not in err  # ended by the signal, not the timeout


def test_a_host_that_never_joins_ends_in_the_rendezvous_timeout() -> None:
    with hosts(2) as group:
        head, _ = group
        argv, env = torchrun_argv(
            head,
            head=head,
            nnodes=2,
            rdzv_id="alone",
            port=PORT,
            script=SCRIPT,
            args=[*TINY, "--steps", "2"],
            join_timeout=15,
        )
        began = time.monotonic()
        process = head.run(argv, env)
        ((code, out, err),) = wait_all([process], 90)
        took = time.monotonic() - began
    assert code not in (0, None), f"still waiting after {took:.0f} s:\n{err[-3000:]}"
    assert took < 90
    assert "RendezvousTimeoutError" in err, err[-3000:]
    assert "rank 0: pid" not in out  # no worker ever started


def test_a_killed_worker_restarts_and_ends_with_the_uninterrupted_loss(tmp_path: Path) -> None:
    steps = ["--steps", "20"]
    with hosts(2) as group:
        head, _ = group
        # the reference: the same arguments, uninterrupted, both ranks on one host
        argv, env = torchrun_argv(
            head,
            head=head,
            nnodes=1,
            nproc_per_node=2,
            rdzv_id="reference",
            port=PORT,
            script=SCRIPT,
            args=[*TINY, *steps],
        )
        ((code, out, err),) = wait_all([head.run(argv, env)], 120)
        assert code == 0, err[-3000:]
        reference = held_out(out)

        checkpoint = tmp_path / "run.pt"
        processes = start(
            group,
            "elastic",
            [
                *steps,
                "--step-delay",
                "0.2",
                "--checkpoint",
                str(checkpoint),
                "--checkpoint-every",
                "5",
            ],
            max_restarts=1,
        )
        assert wait_any(processes, "checkpoint: step 4 written", START_S), [
            p.output() for p in processes
        ]
        os.kill(worker_pid(processes[1]), signal.SIGKILL)  # one worker, not its agent
        results = wait_all(processes, 150)
    for code, _, err in results:
        assert code == 0, err[-3000:]
    assert "failed (exitcode: -9)" in results[1][2]  # its agent saw the killed worker
    both = "".join(out for _, out, _ in results)
    resumed = re.findall(r"resumed from .* at step (\d+)", both)
    assert resumed and 0 < int(resumed[-1]) < 20, both[-3000:]
    assert abs(held_out(both) - reference) <= 2e-6, (held_out(both), reference)
