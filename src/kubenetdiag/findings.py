"""Assemble the report: findings from the engine plus what was and was not checked.

This is the findings contract (docs/contracts.md) that `--format json` prints and every
renderer reads. It decides the exit code, so it lives in one place.
"""

from __future__ import annotations

from kubenetdiag import __version__
from kubenetdiag.facts.model import Fact

REPORT_SCHEMA = "kubenetdiag/report/v1"
SEVERITIES = ("critical", "error", "warning", "info")
ALARMING = {"critical", "error", "warning"}

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_ALL_FAILED = 0, 1, 2, 3


def exit_code(nodes: list[dict], findings: list[dict]) -> int:
    if nodes and not any(n["reachable"] for n in nodes):
        return EXIT_ALL_FAILED
    if any(f["severity"] in ALARMING for f in findings):
        return EXIT_FINDINGS
    return EXIT_OK


def build_report(
    meta: dict,
    records: list[dict],
    facts: list[Fact],
    findings: list[dict],
    *,
    rules_count: int,
    rules_digest: str,
    bundle: str | None,
) -> dict:
    kernels = {f.node: f.attrs.get("release") for f in facts if f.kind == "kernel"}
    nodes = [
        {
            "name": r["name"],
            "address": r.get("address", ""),
            "reachable": bool(r["reachable"]),
            "errors": [r["error"]] if r.get("error") else [],
            "duration_s": r.get("duration_s", 0.0),
            "kernel": kernels.get(r["name"]),
        }
        for r in records
    ]
    not_checked = [
        {
            "node": r["name"],
            "probe": "all",
            "status": "unreachable",
            "reason": r.get("error") or "not reached",
            "blocks": "every check on this node",
        }
        for r in records
        if not r["reachable"]
    ]
    not_checked += [
        {"node": f.node, **{k: f.attrs[k] for k in ("probe", "status", "reason", "blocks")}}
        for f in facts
        if f.kind == "probe_status"
    ]
    by_sev = {s: sum(1 for f in findings if f["severity"] == s) for s in SEVERITIES}
    return {
        "schema": REPORT_SCHEMA,
        "tool": {"name": "kubenetdiag", "version": __version__},
        "rules": {"count": rules_count, "digest": rules_digest},
        "run": {
            "started_at": meta.get("started_at"),
            "finished_at": meta.get("finished_at"),
            "transport": meta.get("transport"),
            "inventory": meta.get("inventory"),
            "bundle": bundle,
        },
        "nodes": nodes,
        "findings": findings,
        "not_checked": not_checked,
        "summary": {
            "nodes": len(nodes),
            "unreachable": sum(1 for n in nodes if not n["reachable"]),
            "findings": len(findings),
            "root_causes": sum(1 for f in findings if f["root_cause"]),
            "by_severity": by_sev,
            "exit_code": exit_code(nodes, findings),
        },
    }
