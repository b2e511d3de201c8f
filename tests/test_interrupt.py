"""Ctrl-C during `collect`: it stops within seconds even with a long connect timeout, keeps
every node already collected in a valid bundle marked interrupted, and `analyze` reads that
bundle (docs/hardening.md). Loopback only: a port that accepts and never speaks SSH."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hostile_inputs import silent_nodes
from kubenetdiag.bundle import read_bundle

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "bundles" / "lab-three-faults"


def _as_in_a_terminal() -> None:
    """Ctrl-C's default, as a command typed at a terminal has it: a test run started in the
    background (`pytest &`) hands its children SIGINT ignored, and Python keeps it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _collect_interrupted(tmp_path, signals: int, workers: int = 1
                         ) -> tuple[subprocess.Popen, str, float, dict[int, bytes]]:
    """Run `collect` against three nodes that accept TCP and never speak SSH, and press
    Ctrl-C `signals` times once all three are connecting."""
    with silent_nodes(tmp_path, 3) as (inv, held):
        proc = subprocess.Popen(
            [sys.executable, "-m", "kubenetdiag", "collect", "--inventory", str(inv), "-o",
             str(tmp_path / "b"), "--connect-timeout", "60", "--accept-new-host-keys",
             "--known-hosts", str(tmp_path / "known_hosts"), "--workers", str(workers)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
            preexec_fn=_as_in_a_terminal)
        try:
            deadline = time.monotonic() + 60
            while len(held) < 3 and time.monotonic() < deadline:  # every node is connecting
                time.sleep(0.1)
            children = {c: _cmdline(c) for c in _children_of(proc.pid)}
            pressed = time.monotonic()
            for _ in range(signals):
                proc.send_signal(signal.SIGINT)
                time.sleep(0.05)
            # far less than the 60 s connect timeout the nodes are waiting on
            _, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    return proc, err, time.monotonic() - pressed, children


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_in_collect_keeps_a_valid_bundle_and_exits_130(tmp_path, workers):
    """With two worker processes the terminal's Ctrl-C reaches only the main one, which
    passes it on and merges what each worker kept."""
    out = tmp_path / "b"
    proc, err, took, _ = _collect_interrupted(tmp_path, signals=1, workers=workers)
    assert proc.returncode == 130, err
    assert took < 10  # far below the 60 s connect timeout
    assert "Traceback" not in err and "interrupted" in err
    meta, records = read_bundle(out)
    assert meta["interrupted"] is True
    assert [(r["name"], r["reachable"], r["error"]) for r in records] == [
        (f"silent{i}", False, "not collected: interrupted") for i in range(3)]
    report = subprocess.run([sys.executable, "-m", "kubenetdiag", "analyze", str(out),
                             "--format", "json"], capture_output=True, text=True, timeout=120)
    assert report.returncode in (1, 3), report.stderr
    assert {n["name"] for n in json.loads(report.stdout)["nodes"]} == {
        "silent0", "silent1", "silent2"}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_second_ctrl_c_exits_at_once(tmp_path, workers):
    """Pressed again while the bundle is written: exit 130 at once, no traceback; whatever
    is on disk is either a whole bundle or no bundle (meta.json is written last). No worker
    process outlives the run."""
    proc, err, took, children = _collect_interrupted(tmp_path, signals=2, workers=workers)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and took < 10
    spawned = [c for c, cmdline in children.items() if b"spawn_main" in cmdline]
    assert len(spawned) == (workers if workers > 1 else 0)
    time.sleep(0.5)
    assert not [c for c in children if _alive(c)]
    if (tmp_path / "b" / "meta.json").exists():
        read_bundle(tmp_path / "b")


def _children_of(pid: int) -> list[int]:
    try:
        return [int(c) for t in Path(f"/proc/{pid}/task").iterdir()
                for c in (t / "children").read_text().split()]
    except OSError:
        return []


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


SLOW_RULE = """\
rules:
  - id: site-cross-product
    fault: site_cross_product
    severity: info
    title: {en: "every sysctl with every other", zh-CN: "every sysctl with every other"}
    when:
      - sysctl: {node: $node, key: $k1}
      - sysctl: {node: $n2, key: $k2}
      - sysctl: {node: $n3, key: $k3}
      - sysctl: {node: $n4, key: $k4}
    tests:
      - name: fires
        facts:
          - sysctl: {node: n1, key: k, value: "0", number: 0, present: true}
        expect:
          - {nodes: [n1]}
      - name: quiet
        facts: []
        expect: []
"""


def test_ctrl_c_during_inference_stops_the_run(tmp_path):
    """A site rule with no shared variable keeps CLIPS busy for a minute on the example
    bundle; Ctrl-C must end the run within seconds, not be swallowed by the engine."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "slow.yaml").write_text(SLOW_RULE)
    bundle = tmp_path / "b"
    shutil.copytree(EXAMPLE, bundle)
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubenetdiag", "analyze", str(bundle), "--rules-dir", str(rules),
         "--format", "json"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=_as_in_a_terminal)
    try:
        time.sleep(4)  # past loading and parsing: inside inference
        assert proc.poll() is None, "the slow rule finished before Ctrl-C: make it slower"
        pressed = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert time.monotonic() - pressed < 15


LOST_IN_A_DESTRUCTOR = """
import sys, time
from kubenetdiag import cli
cli._interrupts_are_never_lost()

class Engine:
    def __del__(self):
        raise KeyboardInterrupt  # as Ctrl-C lands while CLIPS frees an environment

class Other:
    def __del__(self):
        raise ValueError("not an interrupt")

Other()  # reported as ignored, as Python always does
Engine()  # lost: Python reports it as ignored and goes on...
try:
    time.sleep(60)  # ...unless it is delivered again
except KeyboardInterrupt:
    print("interrupted again")
"""


def test_an_interrupt_lost_in_a_destructor_is_delivered_again():
    proc = subprocess.run([sys.executable, "-c", LOST_IN_A_DESTRUCTOR], capture_output=True,
                          text=True, timeout=30, preexec_fn=_as_in_a_terminal)
    assert proc.stdout == "interrupted again\n"
    assert "ValueError: not an interrupt" in proc.stderr  # other errors reported as before
    assert "KeyboardInterrupt" not in proc.stderr


INTERRUPTED_WHILE_LOADING = """
import sys
from kubenetdiag import entry

class CtrlC:  # Ctrl-C pressed while the CLI's modules load (seconds on a loaded machine)
    def find_spec(self, name, path=None, target=None):
        if name == "kubenetdiag.cli":
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, CtrlC())
sys.exit(entry.main())
"""


def test_ctrl_c_while_the_cli_loads_is_a_clean_interrupt():
    proc = subprocess.run([sys.executable, "-c", INTERRUPTED_WHILE_LOADING, "analyze", "x"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 130
    assert proc.stderr == "kubenetdiag: interrupted\n"

