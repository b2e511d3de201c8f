"""A benchmark that builds labs and is killed with SIGTERM (a CI timeout, `kill`) must still
run the `finally` that tears its lab down: Python's default is to die on the spot."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

PROGRAM = """
import sys, time
from pathlib import Path
from kubenetdiag_lab import exit_on_sigterm
exit_on_sigterm()
marker = Path(sys.argv[1])
try:
    print("ready", flush=True)
    time.sleep(30)
finally:
    marker.write_text("torn down")
"""


def test_sigterm_runs_the_finally_that_tears_the_lab_down(tmp_path: Path):
    marker = tmp_path / "down"
    proc = subprocess.Popen([sys.executable, "-c", PROGRAM, str(marker)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        # the exit code says which way it ended (dying on the spot gives -SIGTERM); the
        # timeout only guards a hang, and a busy CI machine once took more than 10 s
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
    assert marker.read_text() == "torn down"


def test_every_benchmark_that_builds_a_lab_asks_for_it():
    bench = Path(__file__).resolve().parent.parent / "bench"
    builders = [p for p in sorted(bench.glob("bench_*.py"))
                if "from kubenetdiag_lab import Lab" in p.read_text()
                or "from kubenetdiag_lab.lab import Lab" in p.read_text()]
    assert builders
    assert [p.name for p in builders if "exit_on_sigterm()" not in p.read_text()] == []
