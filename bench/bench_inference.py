"""Benchmark 2: parsing, inference and rendering for synthetic clusters of 100 to 5,000 nodes.

Each size runs in a fresh process so its peak memory is its own. Every node carries a whole
passive record recorded from a lab node (examples/bundles/lab-three-faults), with a few faults
planted, and goes through the real parsers, rule base, report builder and renderers.

    python bench/bench_inference.py [--sizes 100,1000,5000]

Prints a table and writes bench/results/inference.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "bundles" / "lab-three-faults"
RESULTS = ROOT / "bench" / "results"


def node_records(n: int) -> list[dict]:
    """n node records, each a whole passive record recorded from a lab node (all 18 probes, as
    a real node gives: ~220 facts each); node 3 has ip_forward=0, node 7 a REJECT on top of
    FORWARD, node 11 is unreachable (when the cluster is that big)."""
    recorded = {
        name: json.loads((EXAMPLE / "nodes" / f"{name}.json").read_text())
        for name in ("node1", "node2")
    }

    def section(node: str, probe: str) -> dict:
        return next(s for s in recorded[node]["sections"] if s["probe"] == probe)

    # In the example bundle node1 has the REJECT and node2 ip_forward=0: a healthy node is
    # node2's record with node1's sysctls.
    healthy = [section("node1", "sysctl") if s["probe"] == "sysctl" else s
               for s in recorded["node2"]["sections"]]
    forward_off = [section("node2", "sysctl") if s["probe"] == "sysctl" else s for s in healthy]
    reject = [section("node1", "iptables") if s["probe"] == "iptables" else s for s in healthy]
    records = []
    for i in range(1, n + 1):
        name = f"node{i:05d}"
        address = f"10.{i >> 8}.{i & 255}.1"
        if i == 11:
            records.append({"name": name, "address": address, "reachable": False,
                            "error": "connection refused", "duration_s": 0.0, "sections": []})
            continue
        sections = forward_off if i == 3 else reject if i == 7 else healthy
        # a JSON round trip gives every node its own strings, as reading a bundle does
        records.append(json.loads(json.dumps(
            {"name": name, "address": address, "reachable": True, "error": None,
             "duration_s": 2.1, "sections": sections})))
    return records


def measure(n: int) -> dict:
    from kubenetdiag import reports
    from kubenetdiag.engine import infer, load_ruleset
    from kubenetdiag.facts.parse import facts_from_records
    from kubenetdiag.findings import build_report

    records = node_records(n)
    cpu = time.process_time
    t0 = time.perf_counter()
    cpu0 = cpu()
    ruleset = load_ruleset()
    t1 = time.perf_counter()
    facts = facts_from_records(records)
    t2, c2 = time.perf_counter(), cpu()
    findings = infer(ruleset, facts)
    t3, c3 = time.perf_counter(), cpu()
    meta = {"started_at": "t", "finished_at": "t", "transport": "ssh", "inventory": None}
    # build_report checks the report against its schema, once per run, as `analyze` does; the
    # renderers are then told so. That check is timed here, with the HTML.
    report = build_report(
        meta,
        records,
        facts,
        findings,
        rules_count=len(ruleset.rules),
        rules_digest=ruleset.digest,
        bundle=None,
    )
    html = reports.render_html(report, validated=True)
    t4, c4 = time.perf_counter(), cpu()
    js = reports.render_json(report, validated=True)
    t5, c5 = time.perf_counter(), cpu()
    planted = {("ip_forward_disabled", "node00003"), ("forward_chain_reject", "node00007")}
    if n >= 11:
        planted.add(("node_unreachable", "node00011"))
    found = {(f["fault"], node) for f in findings for node in f["nodes"]}
    return {
        "nodes": n,
        "facts": len(facts),
        "load_rules_s": round(t1 - t0, 4),
        "parse_s": round(t2 - t1, 4),
        "parse_ms_per_node": round((t2 - t1) * 1000 / n, 3),
        "infer_s": round(t3 - t2, 4),
        "report_html_s": round(t4 - t3, 4),
        "json_s": round(t5 - t4, 4),
        "infer_plus_html_s": round(t4 - t2, 4),
        "total_s": round(t5 - t0, 4),
        "cpu_s": round(c5 - cpu0, 4),
        # CPU seconds per phase: on a shared machine these hold still when wall time does not
        "infer_cpu_s": round(c3 - c2, 4),
        "report_html_cpu_s": round(c4 - c3, 4),
        "json_cpu_s": round(c5 - c4, 4),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "html_kib": round(len(html.encode()) / 1024, 1),
        "json_kib": round(len(js.encode()) / 1024, 1),
        "planted_found": planted <= found,
        "extra_findings": sorted(f"{f}@{n}" for f, n in found - planted),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000,5000")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child process mode
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return 0
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(n)], capture_output=True, text=True, check=True
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    cols = [
        "nodes",
        "facts",
        "parse_ms_per_node",
        "infer_s",
        "report_html_s",
        "json_s",
        "infer_plus_html_s",
        "infer_cpu_s",
        "report_html_cpu_s",
        "peak_rss_mib",
        "html_kib",
        "planted_found",
    ]
    widths = [max(9, len(c)) for c in cols]
    print(" ".join(f"{c:>{w}}" for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print(" ".join(f"{r[c]!s:>{w}}" for c, w in zip(cols, widths, strict=True)))
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "inference",
        "machine": {
            "python": platform.python_version(),
            "cpus": __import__("os").cpu_count(),
            "platform": platform.platform(),
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rows": rows,
    }
    (RESULTS / "inference.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"written {RESULTS / 'inference.json'}")
    return 0 if all(r["planted_found"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
