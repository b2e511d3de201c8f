"""A host that accepts TCP and never speaks SSH: one line for the node, no paramiko traceback
(docs/hardening.md). Loopback only."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading


def test_a_silent_ssh_port_gives_one_line_not_tracebacks(tmp_path):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:  # accept and say nothing, as a hung sshd or a tarpit does
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    inv = tmp_path / "hosts.yaml"
    inv.write_text("all:\n  hosts:\n"
                   + "".join(f"    silent{i}:\n      ansible_host: 127.0.0.1\n"
                             f"      ansible_port: {port}\n" for i in range(2)))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "kubenetdiag", "collect", "--inventory", str(inv),
             "-o", str(tmp_path / "b"), "--connect-timeout", "1", "--accept-new-host-keys",
             "--known-hosts", str(tmp_path / "known_hosts")],
            capture_output=True, text=True, timeout=120, env=os.environ.copy())
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        srv.close()
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr and "paramiko" not in proc.stderr.lower()
    assert len(proc.stderr.splitlines()) < 10, proc.stderr
