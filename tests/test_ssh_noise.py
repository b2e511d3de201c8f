"""A host that accepts TCP and never speaks SSH: one line for the node, no paramiko traceback
(docs/hardening.md). Loopback only."""

from __future__ import annotations

import os
import subprocess
import sys

from hostile_inputs import silent_nodes


def test_a_silent_ssh_port_gives_one_line_not_tracebacks(tmp_path):
    with silent_nodes(tmp_path, 2) as (inv, _):
        proc = subprocess.run(
            [sys.executable, "-m", "kubenetdiag", "collect", "--inventory", str(inv),
             "-o", str(tmp_path / "b"), "--connect-timeout", "1", "--accept-new-host-keys",
             "--known-hosts", str(tmp_path / "known_hosts")],
            capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr and "paramiko" not in proc.stderr.lower()
    assert len(proc.stderr.splitlines()) < 10, proc.stderr
