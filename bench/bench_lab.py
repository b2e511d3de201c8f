"""Benchmark 5: what the lab's real components cost: `up` and `down` time and resident memory.

Builds a lab of each size and CNI mode with every real component (etcd, kube-apiserver, the
controller-manager where the lab runs it, and per node kube-proxy and flanneld or bird), waits
10 s for start-up work to settle, reads every lab process's resident memory (VmRSS), and
tears the lab down. Memory is grouped by process name: the control plane once per lab, the
rest per node (the mean over nodes).

    sudo python bench/bench_lab.py [--sizes 3,50] [--modes flannel-vxlan,calico-bgp]

Prints the figures and writes bench/results/lab.json (runs of other modes and sizes already
there are kept).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SETTLE_S = 10.0
MIB = 1024 * 1024


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def memory(lab) -> dict:
    """{"control_plane": {name: MiB}, "per_node": {name: mean MiB per node}, totals}."""
    from kubenetdiag_lab.controlplane import rss_bytes
    from kubenetdiag_lab.netns import pids_in_netns

    by_netns = pids_in_netns(lab.namespaces)
    node_netns = {node.netns for node in lab.nodes}
    control: dict[str, float] = defaultdict(float)
    per_node: dict[str, list[float]] = defaultdict(list)
    pods: dict[str, float] = defaultdict(float)
    for netns, pids in by_netns.items():
        sums: dict[str, float] = defaultdict(float)
        for pid in pids:
            sums[comm(pid)] += (rss_bytes(pid) or 0) / MIB
        if netns in node_netns:
            for name, mib in sums.items():
                per_node[name].append(mib)
        elif netns == lab.topology.cp_netns:
            control.update(sums)
        else:  # pods, client, outside: the lab's apps (CoreDNS, web, ...)
            for name, mib in sums.items():
                pods[name] += mib
    nodes = len(lab.nodes)
    node_means = {name: round(sum(v) / nodes, 1) for name, v in sorted(per_node.items())}
    return {
        "control_plane_mib": {k: round(v, 1) for k, v in sorted(control.items())},
        "per_node_mib": node_means,
        "per_node_total_mib": round(sum(node_means.values()), 1),
        "apps_mib": {k: round(v, 1) for k, v in sorted(pods.items())},
        "lab_total_mib": round(sum(control.values()) + sum(sum(v) for v in per_node.values())
                               + sum(pods.values()), 1),
    }


def one(size: int, mode: str, tmp: Path) -> dict:
    from kubenetdiag_lab import Lab

    lab = Lab(tmp / f"lab-{mode}-{size}", nodes=size, prefix="kndbl", cni_mode=mode)
    lab.down()
    started = time.monotonic()
    lab.up()
    up_s = time.monotonic() - started
    try:
        time.sleep(SETTLE_S)
        mem = memory(lab)
    finally:
        started = time.monotonic()
        lab.down()
        down_s = time.monotonic() - started
    return {"nodes": size, "cni": mode, "up_s": round(up_s, 2), "down_s": round(down_s, 2),
            **mem}


def main() -> int:
    from kubenetdiag_lab import exit_on_sigterm

    exit_on_sigterm()  # its labs torn down on a timeout too
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="3,50")
    ap.add_argument("--modes", default="flannel-vxlan,calico-bgp")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root: it builds a network-namespace lab", file=sys.stderr)
        return 2
    runs = []
    with tempfile.TemporaryDirectory(prefix="knd-bench-lab-") as tmp:
        for mode in args.modes.split(","):
            for size in (int(s) for s in args.sizes.split(",")):
                run = one(size, mode, Path(tmp))
                runs.append(run)
                print(f"{mode:15} {size:3} nodes: up {run['up_s']:6.2f} s, down "
                      f"{run['down_s']:5.2f} s; control plane "
                      f"{sum(run['control_plane_mib'].values()):6.1f} MiB, per node "
                      f"{run['per_node_total_mib']:5.1f} MiB {run['per_node_mib']}", flush=True)
    # runs of other (mode, size) pairs from earlier invocations are kept: a 50-node lab
    # takes minutes, so modes and sizes are often measured one command at a time
    path = RESULTS / "lab.json"
    measured = {(r["cni"], r["nodes"]) for r in runs}
    with contextlib.suppress(OSError, ValueError, KeyError):
        runs = [r for r in json.loads(path.read_text())["runs"]
                if (r["cni"], r["nodes"]) not in measured] + runs
    runs.sort(key=lambda r: (r["cni"], r["nodes"]))
    result = {
        "benchmark": "lab",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "kernel": platform.release(),
                    "load_avg_1m": round(os.getloadavg()[0], 2)},
        "settle_s": SETTLE_S,
        "runs": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
