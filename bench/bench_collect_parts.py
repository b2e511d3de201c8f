"""Benchmark: where the collector's CPU per node goes, one node's collection taken apart.

On a light lab of `--nodes` nodes (each node's routing table then holds a route per peer, as
on a real cluster of that size), for `--sample` of its nodes one after another, the
controller's CPU (this process, every thread) for three ways of visiting a node, each a step
further than the one before:

- `login`: TCP connection, key exchange, public-key login, close;
- `session`: the same plus one session that runs `true`;
- `script`: the same plus the probe script exactly as `collect` sends it, and its output read
  by `collect`'s own session code (`collect.ssh._exec`), without writing a bundle.

The differences are the cost of each step. Rounds alternate; the median is kept.

    sudo python bench/bench_collect_parts.py [--nodes 500] [--sample 40] [--rounds 2]

Prints the figures and writes bench/results/collect_parts.json. Every packet goes to lab
namespaces.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from kubenetdiag.collect.script import OUTPUT_LIMIT, build_script, new_marker
from kubenetdiag.collect.ssh import _exec, _transport
from kubenetdiag.collect.transport import node_command
from kubenetdiag.probes import PROBES

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
WAYS = ("login", "session", "script")


def visit(address: str, user: str, key, way: str) -> int:  # noqa: ANN001
    """One visit; returns the bytes of output read."""
    t = _transport(socket.create_connection((address, 22), timeout=30))
    try:
        # Lab hosts only, whose keys are fresh each run: no host key is checked here.
        t.start_client(timeout=30)
        t.auth_publickey(user, key)
        if way == "login":
            return 0
        # collect's own session code, on this transport
        client = SimpleNamespace(get_transport=lambda: t)
        if way == "session":
            return len(_exec(client, "true", "", 30, OUTPUT_LIMIT).stdout)
        script = build_script(PROBES, new_marker())
        return len(_exec(client, node_command(60), script, 60, OUTPUT_LIMIT).stdout)
    finally:
        t.close()


def inner(inventory: str, sample: int, rounds: int) -> dict:
    """Runs in the lab's client namespace."""
    import paramiko

    from kubenetdiag.inventory import load_inventory

    hosts = load_inventory(inventory)[:sample]
    key = paramiko.PKey.from_path(hosts[0].key_file)
    cpu: dict[str, list[float]] = {w: [] for w in WAYS}
    size = 0.0
    for _ in range(rounds):
        for way in WAYS:
            t = time.process_time()
            seen = [visit(h.address, h.user, key, way) for h in hosts]
            cpu[way].append((time.process_time() - t) * 1000 / len(hosts))
            size = statistics.mean(seen) / 1024
    med = {w: round(statistics.median(v), 2) for w, v in cpu.items()}
    return {
        "cpu_ms_per_node": med,
        "steps_ms": {"login": med["login"], "session": round(med["session"] - med["login"], 2),
                     "script_and_output": round(med["script"] - med["session"], 2)},
        "output_kib_per_node": round(size, 1),
        "rounds": {w: [round(x, 2) for x in v] for w, v in cpu.items()},
    }


def main() -> int:
    from kubenetdiag_lab import exit_on_sigterm

    exit_on_sigterm()  # its labs torn down on a timeout too
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=500)
    ap.add_argument("--sample", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--inner", metavar="INVENTORY", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        print(json.dumps(inner(args.inner, args.sample, args.rounds)))
        return 0
    if os.geteuid() != 0:
        print("needs root: it builds a network-namespace lab", file=sys.stderr)
        return 2
    from kubenetdiag_lab import Lab

    with tempfile.TemporaryDirectory(prefix="knd-parts-") as tmp:
        lab = Lab(Path(tmp) / "lab", nodes=args.nodes, prefix="kndparts",
                  cni_mode="flannel-host-gw", light=True)
        lab.down()
        lab.up()
        try:
            out = subprocess.run(
                ["ip", "netns", "exec", lab.client_netns, sys.executable, __file__,
                 "--inner", str(lab.inventory_path), "--sample", str(args.sample),
                 "--rounds", str(args.rounds)],
                capture_output=True, text=True, check=True)
        finally:
            lab.down()
    res = json.loads(out.stdout)
    steps = res["steps_ms"]
    print(f"{args.nodes}-node lab, {args.sample} nodes one after another, median of "
          f"{args.rounds} rounds, controller CPU per node: login {steps['login']} ms, "
          f"+ a session {steps['session']} ms, + the script and its "
          f"{res['output_kib_per_node']} KiB "
          f"{steps['script_and_output']} ms")
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "collect_parts", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                       "python": platform.python_version()},
           "nodes": args.nodes, "sample": args.sample, **res}
    (RESULTS / "collect_parts.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"written {RESULTS / 'collect_parts.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
