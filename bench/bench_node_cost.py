"""Benchmark 3: what the probe script costs the node it runs on.

Runs the real probe script (every passive probe, exactly as `collect` sends it) inside a lab
node's network namespace under GNU time, repeatedly, and reports the node's CPU time (user +
sys, the script and every command it starts), wall time and peak memory, plus each probe's
own duration as the script measured it.

    sudo python bench/bench_node_cost.py [--repeat 20]

Prints the figures and writes bench/results/node_cost.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root: it builds a network-namespace lab", file=sys.stderr)
        return 2

    from kubenetdiag.collect.script import build_script, new_marker, split_output
    from kubenetdiag.probes import PROBES
    from kubenetdiag_lab import Lab

    runs, per_probe = [], {p.name: [] for p in PROBES}
    with tempfile.TemporaryDirectory(prefix="knd-bench-") as tmp:
        lab = Lab(Path(tmp) / "lab", nodes=2, prefix="kndcost")
        lab.down()
        lab.up()
        try:
            node = lab.nodes[0]
            for _ in range(args.repeat):
                marker = new_marker()
                script = build_script(PROBES, marker)
                proc = lab.node_exec(
                    node.name,
                    ["/usr/bin/time", "-f", "KNDTIME %e %U %S %M", "sh", "-s"],
                    check=False, input=script,
                )
                line = next(x for x in proc.stderr.splitlines() if x.startswith("KNDTIME"))
                wall, user, sys_, rss = line.split()[1:]
                runs.append({"wall_s": float(wall), "cpu_s": float(user) + float(sys_),
                             "maxrss_kib": int(rss)})
                for s in split_output(proc.stdout, proc.stderr, marker, PROBES):
                    per_probe[s.probe].append(s.duration_s)
            processes, programs = _count_processes(lab, node.name, PROBES, build_script,
                                                   new_marker, Path(tmp))
        finally:
            lab.down()
    med = {k: statistics.median(r[k] for r in runs) for k in ("wall_s", "cpu_s", "maxrss_kib")}
    med["processes"] = processes
    probes = {k: round(statistics.median(v), 3) for k, v in per_probe.items() if v}
    print(f"probe script on a lab node, median of {len(runs)}: wall {med['wall_s']:.3f} s, "
          f"CPU {med['cpu_s'] * 1000:.0f} ms, peak RSS {med['maxrss_kib'] / 1024:.1f} MiB, "
          f"{processes} processes")
    print("  programs: " + ", ".join(f"{k} {v}" for k, v in programs.items()))
    for name, d in sorted(probes.items(), key=lambda kv: -kv[1]):
        print(f"  {name:24s} {d * 1000:7.0f} ms")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"benchmark": "node_cost", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
           "probes": [p.name for p in PROBES], "median": med, "programs": programs,
           "probe_duration_s": probes,
           "runs": runs}
    (RESULTS / "node_cost.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"written {RESULTS / 'node_cost.json'}")
    return 0


def _count_processes(lab, node, probes, build_script, new_marker, tmp: Path
                     ) -> tuple[int | None, dict[str, int]]:
    """Processes one run starts (distinct PIDs strace saw, the script's shell included) and the
    programs they exec; (None, {}) without strace."""
    if shutil.which("strace") is None:
        return None, {}
    traces = tmp / "trace"
    traces.mkdir(exist_ok=True)
    # -ff: one file per process, so no call is split across lines by another process's
    lab.node_exec(node, ["strace", "-ff", "-qq", "-e", "trace=execve", "-o", str(traces / "t"),
                         "sh", "-s"], check=False, input=build_script(probes, new_marker()))
    files = list(traces.glob("t.*"))
    programs: collections.Counter[str] = collections.Counter()
    for f in files:
        for line in f.read_text().splitlines():
            m = re.match(r'execve\("([^"]+)".*= 0$', line.strip())
            if m:
                programs[m.group(1).rsplit("/", 1)[-1]] += 1
    return len(files), dict(programs.most_common())


if __name__ == "__main__":
    sys.exit(main())
