"""Benchmark 3: what the probe script costs the node it runs on.

Runs the real probe script (every passive probe, exactly as `collect` sends it, started by the
command line SSH runs it with) inside a lab node's network namespace, repeatedly, and reports
the node's CPU time (user + sys, the script and every command it starts), wall time and peak
memory, plus each probe's own duration as the script measured it.
Two rows: `collect` (passive only: the counters' two samples 2 s apart inside the script) and
`diagnose` (the active phase follows: the script takes the first sample only, the second is
taken after the node's checks, in the active session).

Then one run of each under `strace -ff` counts the processes (one trace file per process) and
the programs they run, and each program's command line is started alone 30 times in the node
(stdin empty) for its own CPU: where the time goes.

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
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ALONE_RUNS = 30
# Runs its arguments (stdin, stdout and stderr passed through) and prints on stderr the CPU and
# peak memory of everything they started, at the kernel's resolution: GNU time rounds each of
# user and sys to 10 ms, as much as the whole script costs now.
TIMED = r"""
import resource, subprocess, sys, time
t = time.monotonic()
subprocess.run(sys.argv[1:])
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print("KNDTIME", time.monotonic() - t, r.ru_utime + r.ru_stime, r.ru_maxrss, file=sys.stderr)
"""


def main() -> int:
    from kubenetdiag_lab import exit_on_sigterm

    exit_on_sigterm()  # its labs torn down on a timeout too
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root: it builds a network-namespace lab", file=sys.stderr)
        return 2

    from kubenetdiag.collect.script import build_script, deferring, new_marker, split_output
    from kubenetdiag.collect.transport import node_command
    from kubenetdiag.probes import PROBES
    from kubenetdiag_lab import Lab

    modes = {"collect": list(PROBES), "diagnose": deferring(PROBES)}
    start = ["sh", "-c", node_command(60)]
    out: dict = {"benchmark": "node_cost", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                 "command": shlex.join(start), "probes": [p.name for p in PROBES]}
    with tempfile.TemporaryDirectory(prefix="knd-bench-") as tmp:
        lab = Lab(Path(tmp) / "lab", nodes=2, prefix="kndcost")
        lab.down()
        lab.up()
        try:
            node = lab.nodes[0].name
            argvs: dict[str, list[str]] = {}
            for mode, probes in modes.items():
                runs, per_probe = [], collections.defaultdict(list)
                for _ in range(args.repeat):
                    marker = new_marker()
                    proc = lab.node_exec(node, [sys.executable, "-c", TIMED, *start],
                                         check=False, input=build_script(probes, marker))
                    wall, cpu, rss = _timed(proc.stderr)
                    runs.append({"wall_s": round(wall, 3), "cpu_s": round(cpu, 4),
                                 "maxrss_kib": int(rss)})
                    for s in split_output(proc.stdout, proc.stderr, marker, probes):
                        per_probe[s.probe].append(s.duration_s)
                med = {k: statistics.median(r[k] for r in runs)
                       for k in ("wall_s", "cpu_s", "maxrss_kib")}
                processes, programs, seen = _count_processes(
                    lab, node, start, build_script(probes, new_marker()), Path(tmp) / mode)
                argvs.update(seen)
                med["processes"] = processes
                out[mode] = {"median": med, "programs": programs,
                             "probe_duration_s": {k: round(statistics.median(v), 3)
                                                  for k, v in per_probe.items()},
                             "runs": runs}
                print(f"{mode}: median of {len(runs)}: wall {med['wall_s']:.3f} s, "
                      f"CPU {med['cpu_s'] * 1000:.1f} ms, peak RSS "
                      f"{med['maxrss_kib'] / 1024:.1f} MiB, {processes} processes")
                print("  programs: " + ", ".join(f"{k} {v}" for k, v in programs.items()))
            out["cpu_alone_ms"] = _alone(lab, node, argvs)
            print(f"each program started alone in the node ({ALONE_RUNS} runs, stdin empty):")
            for cmd, ms in sorted(out["cpu_alone_ms"].items(), key=lambda kv: -kv[1]):
                print(f"  {ms:5.2f} ms  {cmd}")
        finally:
            lab.down()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "node_cost.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"written {RESULTS / 'node_cost.json'}")
    return 0


def _count_processes(lab, node: str, start: list[str], script: str, traces: Path
                     ) -> tuple[int | None, dict[str, int], dict[str, list[str]]]:
    """Processes one run starts (distinct PIDs strace saw, the starting shell included), the
    programs they exec, and each distinct command line; (None, {}, {}) without strace."""
    if shutil.which("strace") is None:
        return None, {}, {}
    traces.mkdir(exist_ok=True)
    # -ff: one file per process, so no call is split across lines by another process's
    lab.node_exec(node, ["strace", "-ff", "-qq", "-s", "4096", "-e", "trace=execve",
                         "-o", str(traces / "t"), *start], check=False, input=script)
    files = list(traces.glob("t.*"))
    programs: collections.Counter[str] = collections.Counter()
    argvs: dict[str, list[str]] = {}
    for f in files:
        for line in f.read_text().splitlines():
            m = re.match(r'execve\("([^"]+)", \[(.*)\], .*= 0$', line.strip())
            if not m:
                continue
            programs[m.group(1).rsplit("/", 1)[-1]] += 1
            try:
                argv = json.loads("[" + m.group(2) + "]")  # strace quotes as C does
            except ValueError:
                continue
            # one row per command whatever PID it names (ionice -p $$)
            argvs.setdefault(re.sub(r"\b\d{3,}\b", "PID", shlex.join(argv)),
                             [m.group(1), *argv[1:]])
    return len(files), dict(programs.most_common()), argvs


def _alone(lab, node: str, argvs: dict[str, list[str]]) -> dict[str, float]:
    """CPU (user + sys, ms) of each command line started alone, stdin empty; the shells that
    start the script and the sleeps of the watchdog and the counters are left out."""
    cpu = {}
    loop = 'i=0; while [ $i -lt {n} ]; do i=$((i+1)); "$@" >/dev/null 2>&1 </dev/null; done'
    for shown, argv in argvs.items():
        name = argv[0].rsplit("/", 1)[-1]
        if name in ("sh", "dash", "bash", "timeout", "nice", "sleep"):
            continue
        proc = lab.node_exec(node, [sys.executable, "-c", TIMED, "sh", "-c",
                                    loop.format(n=ALONE_RUNS), "sh", *argv], check=False)
        cpu[shown[:120]] = round(_timed(proc.stderr)[1] * 1000 / ALONE_RUNS, 2)
    return cpu


def _timed(stderr: str) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS KiB) from TIMED's line."""
    line = next(x for x in stderr.splitlines() if x.startswith("KNDTIME"))
    wall, cpu, rss = line.split()[1:]
    return float(wall), float(cpu), float(rss)


if __name__ == "__main__":
    sys.exit(main())
