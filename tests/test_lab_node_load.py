"""The probe script on a node whose CPU is saturated: it runs below the node's own work
(nice 10 over SSH), still finishes well within its deadline and leaves no probe out.

The node's sshd (and so every probe it starts) is pinned to one CPU together with two busy
loops at nice 0, for the length of one `collect`; the other CPUs stay free for the tests that
run beside this one, and everything is unpinned and stopped even when the test fails."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from kubenetdiag.probes import PROBES

pytestmark = pytest.mark.lab


def test_a_node_at_full_cpu_is_still_collected_in_full(lab, tmp_path):
    node = lab.nodes[0]
    sshd = str(lab.sshd_pids[node.name])
    mask = subprocess.run(["taskset", "-p", sshd], capture_output=True, text=True,
                          check=True).stdout.split()[-1]
    subprocess.run(["taskset", "-p", "-c", "0", sshd], capture_output=True, check=True)
    loaders = [subprocess.Popen(lab.runners.node(node).argv(
        ["taskset", "-c", "0", "sh", "-c", "while :; do :; done"])) for _ in range(2)]
    try:
        time.sleep(0.5)  # the loops are running before the collection starts
        started = time.monotonic()
        proc = lab.client_exec(
            [sys.executable, "-m", "kubenetdiag", "collect", "--inventory",
             str(lab.inventory_path), "-o", str(tmp_path / "b"), "--quiet",
             "--command-timeout", "30"], timeout=120)
        took = time.monotonic() - started
    finally:
        for p in loaders:
            p.kill()
        for p in loaders:
            p.wait()
        subprocess.run(["taskset", "-p", mask, sshd], capture_output=True)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "b" / "nodes" / f"{node.name}.json").read_text())
    assert record["reachable"] and record["error"] is None
    sections = {s["probe"]: s for s in record["sections"]}
    # every probe ran and ended (none cut by a deadline), in far less than the 30 s allowed
    assert set(sections) == {p.name for p in PROBES}
    assert all(s["exit_code"] is not None and s["exit_code"] != 124 for s in sections.values())
    assert took < 20, took
