"""Ctrl-C during `collect`: it stops within seconds even with a long connect timeout, keeps
every node already collected in a valid bundle marked interrupted, and `analyze` reads that
bundle (docs/hardening.md). Loopback only: a port that accepts and never speaks SSH."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from kubenetdiag.bundle import read_bundle


def test_ctrl_c_in_collect_keeps_a_valid_bundle_and_exits_130(tmp_path):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port = srv.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    inv = tmp_path / "hosts.yaml"
    inv.write_text("all:\n  hosts:\n" + "".join(
        f"    silent{i}:\n      ansible_host: 127.0.0.1\n      ansible_port: {port}\n"
        for i in range(3)))
    out = tmp_path / "b"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubenetdiag", "collect", "--inventory", str(inv), "-o", str(out),
         "--connect-timeout", "60", "--accept-new-host-keys",
         "--known-hosts", str(tmp_path / "known_hosts")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 60
        while len(held) < 3 and time.monotonic() < deadline:  # every node is connecting
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        # far less than the 60 s connect timeout the nodes are waiting on
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        stop.set()
        t.join()
        for c in held:
            c.close()
        srv.close()
    assert proc.returncode == 130, err
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
