"""Two and three hosts on this machine (network namespaces, tests/multihost.py), one torchrun
agent each, c10d rendezvous, gloo: the README's multi-host command, run as a user would.

- the vocabulary-parallel losses and their gradients equal the single-process ones
  (tests/multihost_losses.py on every rank, uneven slices), on 2 and on 3 hosts;
- examples/vocab_parallel_train.py trains on 2 hosts, its final check passes, and its
  held-out loss equals the same run with ``torchrun --nproc_per_node=2`` on one host;
- hosts that disagree (a different --hidden) both end, with the same error naming it.

Skipped where network namespaces cannot be made (not root, no iproute2). Deselect with
``-m "not multihost"``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from multihost import SRC, Host, Process, hosts, torchrun, torchrun_argv, wait_all

pytestmark = pytest.mark.multihost

PORT = 29500
RUN_S = 150.0  # a whole run's bound (the runs here take ~10-20 s; the machine is loaded)
JOIN_S = 60  # rendezvous join timeout: a host that never comes ends the others' wait
EXAMPLE = "examples/vocab_parallel_train.py"
SMALL = ["--vocabulary", "256", "--batch", "4", "--length", "16", "--steps", "10"]
HELD_OUT = re.compile(
    r"held-out loss (-?[\d.]+) \(single process on the gathered weight: (-?[\d.]+)\)"
)


def start(
    group: list[Host],
    rdzv_id: str,
    script: str,
    args: list[str],
    *,
    per_host: list[list[str]] | None = None,
) -> list[Process]:
    """The README's command on every host of ``group`` (the first is the head) with
    ``args``, or with ``per_host[i]`` on host i."""
    processes = []
    for host, host_args in zip(group, per_host or [args] * len(group), strict=True):
        argv, env = torchrun_argv(
            host, head=group[0], nnodes=len(group), rdzv_id=rdzv_id, port=PORT,
            script=script, args=host_args, join_timeout=JOIN_S,
        )  # fmt: skip
        processes.append(host.run(argv, env))
    return processes


def describe(results: list[tuple[int | None, str, str]]) -> str:
    return "\n".join(
        f"--- host {i}: returncode {code}\nstdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}"
        for i, (code, out, err) in enumerate(results)
    )


@pytest.mark.parametrize("n", [2, 3])
def test_losses_and_gradients_match_single_process(n: int) -> None:
    with hosts(n) as group:
        results = wait_all(start(group, f"losses{n}", "tests/multihost_losses.py", []), RUN_S)
    assert all(code == 0 for code, _, _ in results), describe(results)
    lines = [json.loads(line) for _, out, _ in results for line in out.splitlines()]
    checks = [line for line in lines if "check" in line]
    summaries = [line["summary"] for line in lines if "summary" in line]
    assert sorted(s["rank"] for s in summaries) == list(range(n)), describe(results)
    assert all(s["world"] == n and s["failures"] == 0 for s in summaries)
    names = {c["check"] for c in checks}
    assert len(checks) == n * len(names) and len(names) >= 8, names
    for function in (
        "vocab_parallel_cross_entropy",
        "vocab_parallel_linear_cross_entropy",
        "vocab_parallel_token_log_probs",
        "vocab_parallel_linear_token_log_probs",
        "vocab_parallel_distillation_loss",
        "vocab_parallel_linear_distillation_loss",
    ):
        assert any(name.split()[0] == function for name in names), function
    for check in checks:
        assert check["ok"] and check["worst"] <= 1e-10, check
        assert check["loss"] == pytest.approx(check["reference"], rel=1e-10, abs=1e-12)
    # the slices are uneven and tile the vocabulary, on every check
    for name in names:
        bounds = sorted(tuple(c["slice"]) for c in checks if c["check"] == name)
        assert bounds[0][0] == 0 and bounds[-1][1] == 37
        assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
        assert len({b - a for a, b in bounds}) > 1, bounds


def held_out(results: list[tuple[int | None, str, str]]) -> tuple[float, float]:
    """The example's final line, printed by rank 0 (on whichever host it runs)."""
    found = [m.groups() for _, out, _ in results for m in HELD_OUT.finditer(out)]
    assert len(found) == 1, describe(results)
    ours, single = found[0]
    return float(ours), float(single)


def test_example_trains_on_two_hosts_as_on_one() -> None:
    args = [*SMALL, "--hidden", "32"]
    with hosts(3) as (head, other, alone):
        two = start([head, other], "example2", EXAMPLE, args)
        # the same run on one host (a third namespace, concurrently): 2 processes there
        one = alone.run(
            [*torchrun(), "--nproc_per_node=2", EXAMPLE, *args],  # the README's one-host command
            {"PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"},
        )
        results = wait_all([*two, one], RUN_S)
    assert all(code == 0 for code, _, _ in results), describe(results)
    ours, single = held_out(results[:2])
    assert ours == pytest.approx(single, abs=2e-6)  # the example's own check, as printed
    assert "2 rank(s), backend gloo, vocabulary 256" in results[0][1] + results[1][1]
    one_host, one_single = held_out(results[2:])
    assert one_host == pytest.approx(ours, abs=1e-6), describe(results)
    assert one_single == pytest.approx(single, abs=1e-6)


def test_hosts_that_disagree_end_with_the_same_error() -> None:
    bound = 90.0
    with hosts(2) as group:
        began = time.monotonic()
        processes = start(
            group,
            "mismatch",
            EXAMPLE,
            [],
            per_host=[[*SMALL, "--hidden", "32"], [*SMALL, "--hidden", "48"]],
        )
        results = wait_all(processes, bound)
        elapsed = time.monotonic() - began
    assert all(code is not None for code, _, _ in results), describe(results)
    assert elapsed < bound
    assert all(code != 0 for code, _, _ in results), describe(results)
    for _, _, err in results:
        assert "the ranks disagree on input (its last dimension, the hidden size)" in err, err
        assert re.search(r"rank [01]: 32, rank [01]: 48", err), err[-3000:]


SERVER = """
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
while True:
    connection, _ = server.accept()
    connection.sendall(b"hello")
    connection.close()
"""
CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2) as connection:
    print(connection.recv(5).decode())
"""


def test_hosts_fixture_links_cut_and_cleanup() -> None:
    """The fixture itself: hosts reach each other only through the switch, a cut link
    drops the traffic until restored, and leaving kills every process (an orphan in a
    session of its own too) and deletes every namespace."""

    def reaches(client: Host, server: Host) -> bool:
        ((code, out, _),) = wait_all(
            [client.run([sys.executable, "-c", CLIENT, server.address, "7777"])], 20
        )
        return code == 0 and out.strip() == "hello"

    with hosts(2) as (a, b):
        assert a.address != b.address and a.address.rsplit(".", 1)[0] == b.address.rsplit(".", 1)[0]
        server = b.run([sys.executable, "-c", SERVER, b.address, "7777"])
        assert server.wait_for("listening", timeout=20)
        orphan = b.run(["sh", "-c", "setsid sleep 600 & echo $!"])
        assert orphan.wait(timeout=20) == 0
        escaped = int(orphan.output()[0])
        assert reaches(a, b)
        a.cut()
        assert not reaches(a, b)
        a.restore()
        deadline = time.monotonic() + 20
        while not reaches(a, b):
            assert time.monotonic() < deadline, "the restored link carries nothing"
        names = [a.name, b.name, a.switch]
        assert server.poll() is None
    assert server.poll() is not None
    stat = Path(f"/proc/{escaped}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=20)
    assert not set(names) & {line.split()[0] for line in listed.stdout.splitlines() if line}


def test_hosts_skip_where_namespaces_cannot_be_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with (
        pytest.raises(
            pytest.skip.Exception, match=r"cannot make network namespaces here: the `ip` command"
        ),
        hosts(2),
    ):
        pass
    monkeypatch.undo()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.skip.Exception, match=r"need root"), hosts(2):
        pass


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_torchrun_commands() -> list[list[str]]:
    """The torchrun commands of README.md's ```sh blocks, continuation lines joined, split
    into words."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = line.split("#", 1)[0].split()
            if "torchrun" in words:
                commands.append(words)
    return commands


def test_the_readme_commands_are_the_ones_the_tests_run(tmp_path: Path) -> None:
    """README.md's multi-machine commands (head, then another machine) are what
    ``torchrun_argv`` builds for the hosts of these tests, with the README's placeholders."""
    head, other = (
        Host(name=n, address=a, interface="$IFACE", switch="", port="", logs=tmp_path)
        for n, a in (("head", "$HEAD"), ("other", "$ADDR"))
    )
    documented = readme_torchrun_commands()
    assert len(documented) == 2, documented
    shown = ("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "GLOO_SOCKET_IFNAME")
    for host, words in zip((head, other), documented, strict=True):
        argv, env = torchrun_argv(
            host, head=head, nnodes=2, rdzv_id="run1", port=PORT, script=EXAMPLE,
            args=["--timeout", "30", "--checkpoint", "/shared/run1.pt"],
            join_timeout=600, max_restarts=3,
        )  # fmt: skip
        expected = [f"{k}={env[k]}" for k in shown] + ["torchrun", *argv[len(torchrun()) :]]
        assert words == expected
