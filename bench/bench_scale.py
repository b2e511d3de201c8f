"""Benchmark: `collect` and `diagnose` from one controller over hundreds of lab nodes, with one
and with two collector processes.

    sudo python bench/bench_scale.py [--sizes 50,500] [--workers 1,2] [--repeat 1]

Each size is a light lab (`lab up --light --cni flannel-host-gw`): every node runs sshd, its
init and agents and its pods, with the routes flannel's host-gw backend writes, and none of the
per-node components (flanneld and kube-proxy take about 90 MiB a node: 45 GB at 500). The
control plane is the real one. What its diagnosis should say: CoreDNS is down (it needs
flannel's masquerade to reach the API) and pods cannot leave the cluster (no masquerade); the
root causes each run reported are kept beside the figures.

For every size and worker count, alternating: `kubenetdiag collect` (passive) and the full
`diagnose` (passive, API, active checks, HTML and JSON). Measured: wall time, the controller's
CPU (the process and every worker it started), the controller's peak memory (its processes'
resident memory summed, sampled every 0.2 s), SSH connections per node (a SYN counter on every
node), and from the diagnose bundle how many checks each node ran and by how many peers each
node was probed; and the CPU to parse each `collect` bundle into facts, so that collection
plus parsing per extra node comes from one run. Prints a table and writes
bench/results/scale.json. Every packet goes to lab
namespaces.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT / "bench"))

from bench_fanout import SYN_RULE, children_cpu, syn_count  # noqa: E402

EXPECTED = {"coredns_unreachable", "pod_egress_broken"}  # what a light lab is (see above)


def _tree_rss_kib(root: int) -> int:
    """Resident memory of `root` and all its descendants, in KiB."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            text = Path(f"/proc/{d}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        parents[int(d)] = int(fields.get("PPid", "0").strip() or 0)
        rss[int(d)] = int(fields.get("VmRSS", "0 kB").split()[0]) if "VmRSS" in fields else 0
    tree, todo = set(), [root]
    while todo:
        p = todo.pop()
        tree.add(p)
        todo += [c for c, pp in parents.items() if pp == p and c not in tree]
    return sum(rss.get(p, 0) for p in tree)


def run_measured(argv: list[str], env: dict) -> dict:
    """Wall, CPU of the process tree (children rusage), and its peak summed RSS."""
    cpu0 = children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.2):
            peak = max(peak, _tree_rss_kib(proc.pid))

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    done.set()
    t.join()
    return {"rc": proc.returncode, "wall_s": round(wall, 2),
            "cpu_s": round(children_cpu() - cpu0, 2), "peak_rss_mib": round(peak / 1024, 1),
            "stdout": out.decode(errors="replace"), "stderr": err.decode(errors="replace")}


def active_shape(bundle: Path) -> dict:
    """Checks each node ran and peers each node was probed by, from the bundle's plans."""
    from kubenetdiag.bundle import read_bundle

    _, records = read_bundle(bundle)
    checks, probed_by = [], {r["name"]: 0 for r in records}
    for r in records:
        active = r.get("active") or {}
        checks.append(len(active.get("sections") or []))
        for peer in (active.get("plan") or {}).get("peers") or []:
            probed_by[peer["name"]] = probed_by.get(peer["name"], 0) + 1
    return {"checks_per_node_max": max(checks), "checks_per_node_min": min(checks),
            "probed_by_min": min(probed_by.values()), "probed_by_max": max(probed_by.values())}


_PARSE = """
import json, sys, time
from pathlib import Path
from kubenetdiag.bundle import Bundle
from kubenetdiag.facts.parse import facts_from_records
b = Bundle.read(Path(sys.argv[1]))
t = time.process_time()
facts = facts_from_records(b.records, b.cluster, probes=b.meta.get("probes"))
print(json.dumps({"cpu_s": round(time.process_time() - t, 3), "facts": len(facts)}))
"""


def parse_cpu(bundle: Path) -> dict:
    """The controller's CPU to turn a collected bundle into facts (what `analyze` does first;
    reading the files is left out: `diagnose` parses the records it holds)."""
    out = subprocess.run([sys.executable, "-c", _PARSE, str(bundle)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def measure(n: int, workers: list[int], repeat: int, workdir: Path) -> list[dict]:
    from kubenetdiag_lab import Lab

    lab = Lab(workdir / f"lab{n}", nodes=n, prefix="kndscale", cni_mode="flannel-host-gw",
              light=True)
    lab.down()
    t0 = time.perf_counter()
    lab.up()
    up_s = round(time.perf_counter() - t0, 1)
    rows = []
    try:
        for node in lab.nodes:
            lab.node_exec(node.name, ["iptables", "-I", *SYN_RULE])
        in_client = ["ip", "netns", "exec", lab.client_netns]
        py = [sys.executable, "-m", "kubenetdiag"]
        env = dict(os.environ)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        runs: dict[tuple[str, int], list[dict]] = {}
        # round 0 warms the page cache, byte code and sshd for every variant; not kept
        for r in range(repeat + 1):
            for w in workers:
                for kind in ("collect", "diagnose"):
                    out = workdir / f"{kind}-{n}-{w}-{r}"
                    common = ["-i", str(lab.inventory_path), "--quiet", "--workers", str(w),
                              "--connect-timeout", "60", "--command-timeout", "120"]
                    if kind == "collect":
                        argv = [*py, "collect", *common, "-o", str(out)]
                    else:
                        argv = [*py, "diagnose", *common, "--bundle", str(out),
                                "--kubeconfig", str(lab.kubeconfig_path), "--format", "json",
                                "--report", str(workdir / f"r-{n}-{w}-{r}.html")]
                    syn0 = syn_count(lab)
                    res = run_measured([*in_client, *argv], env)
                    res["ssh_per_node"] = round((syn_count(lab) - syn0) / n, 2)
                    if res["rc"] not in (0, 1):
                        raise RuntimeError(f"{kind} N={n} workers={w}: {res['stderr'][-2000:]}")
                    if kind == "diagnose":
                        report = json.loads(res["stdout"])
                        unreached = [x["name"] for x in report["nodes"] if not x["reachable"]]
                        if unreached:
                            raise RuntimeError(f"diagnose N={n} workers={w}: unreached "
                                               f"{unreached[:5]}")
                        # Kept, not fatal: with hundreds of nodes' checks on two cores, some
                        # time out, and the diagnosis says so (docs/performance.md)
                        res["root_causes"] = {
                            f["fault"]: len(f["nodes"]) for f in report["findings"]
                            if f["root_cause"] and f["severity"] != "info"}
                        res["unexpected_root_causes"] = sorted(set(res["root_causes"])
                                                               - EXPECTED)
                        res.update(active_shape(out))
                    else:
                        from kubenetdiag.bundle import read_bundle

                        _, records = read_bundle(out)
                        bad = [x["name"] for x in records if not x["reachable"]]
                        if bad:
                            raise RuntimeError(f"collect N={n} workers={w}: {bad[:5]} failed")
                        res["parse"] = parse_cpu(out)
                    del res["stdout"], res["stderr"]
                    if r > 0:
                        runs.setdefault((kind, w), []).append(res)
        for w in workers:
            c = min(runs[("collect", w)], key=lambda x: x["wall_s"])
            d = min(runs[("diagnose", w)], key=lambda x: x["wall_s"])
            rows.append({"nodes": n, "workers": w, "lab_up_s": up_s,
                         "collect": c, "diagnose": d})
            print(f"N={n:4d} workers={w}  collect {c['wall_s']:6.1f}s cpu {c['cpu_s']:6.2f}s "
                  f"({c['cpu_s'] * 1000 / n:5.1f} ms/node) parse {c['parse']['cpu_s']:5.2f}s "
                  f"rss {c['peak_rss_mib']:6.0f} MiB "
                  f"ssh/node {c['ssh_per_node']}  |  diagnose {d['wall_s']:6.1f}s "
                  f"cpu {d['cpu_s']:6.2f}s rss {d['peak_rss_mib']:6.0f} MiB "
                  f"ssh/node {d['ssh_per_node']} checks/node <= {d['checks_per_node_max']} "
                  f"probed by >= {d['probed_by_min']} peers", flush=True)
    finally:
        lab.down()
    return rows


def main() -> int:
    from kubenetdiag_lab import exit_on_sigterm

    exit_on_sigterm()  # its labs torn down on a timeout too
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="50,500")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root: it builds a network-namespace lab", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="knd-scale-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            rows += measure(n, [int(w) for w in args.workers.split(",")], args.repeat,
                            Path(tmp))
    # the controller's CPU per node between the sizes, same worker count (the slope)
    slopes = {}
    for w in {r["workers"] for r in rows}:
        pts = sorted((r["nodes"], r["collect"]["cpu_s"]) for r in rows if r["workers"] == w)
        if len(pts) > 1:
            (x0, y0), (x1, y1) = pts[0], pts[-1]
            slopes[str(w)] = round((y1 - y0) * 1000 / (x1 - x0), 2)
    print(f"collect CPU per extra node (ms), by workers: {slopes}")
    both = {}  # collection and parsing of the same run's bundle, per extra node
    for w in {r["workers"] for r in rows}:
        pts = sorted((r["nodes"], r["collect"]["cpu_s"] + r["collect"]["parse"]["cpu_s"])
                     for r in rows if r["workers"] == w)
        if len(pts) > 1:
            (x0, y0), (x1, y1) = pts[0], pts[-1]
            both[str(w)] = round((y1 - y0) * 1000 / (x1 - x0), 2)
    print(f"collect + parse CPU per extra node (ms), by workers: {both}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"benchmark": "scale", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                       "python": platform.python_version()},
           "collect_cpu_ms_per_extra_node": slopes,
           "collect_and_parse_cpu_ms_per_extra_node": both, "rows": rows}
    (RESULTS / "scale.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"written {RESULTS / 'scale.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
