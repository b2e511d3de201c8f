"""The report as Prometheus text exposition, for node-exporter's textfile collector and a
CronJob that diagnoses every few minutes: a team can alert on a fault, on a node that could
not be reached, or on checks that stopped answering.

    kubenetdiag_finding{fault,rule,severity,node,root_cause}  1 per finding and node
    kubenetdiag_findings{severity}                            findings of the run
    kubenetdiag_nodes{state}                                  reached / not reached
    kubenetdiag_not_checked{node,probe}                       1 per probe without an answer
    kubenetdiag_rules_not_evaluated{node}                     rules that could not be evaluated
    kubenetdiag_changed_facts{node,kind,change}               with --baseline: what changed
    kubenetdiag_run_duration_seconds, kubenetdiag_run_timestamp_seconds, kubenetdiag_exit_code

The text is written by prometheus_client, which quotes label values (node names come from the
inventory and the nodes themselves).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from kubenetdiag.findings.schema import validate_report
from kubenetdiag.reports.view import parse_time

SEVERITIES = ("critical", "error", "warning", "info")
CLUSTER = "cluster"  # the node label of a finding that names no node


def _seconds(stamp: str | None) -> float | None:
    when = parse_time(str(stamp)) if stamp else None
    return when.timestamp() if when else None


class _Report:
    """A collector over one finished report (prometheus_client asks it once)."""

    def __init__(self, report: dict) -> None:
        self.report = report

    def collect(self) -> Iterator[Metric]:
        r = self.report
        finding = GaugeMetricFamily(
            "kubenetdiag_finding", "A finding of the last run, 1 per node it names",
            labels=["fault", "rule", "severity", "node", "root_cause"])
        for f in r["findings"]:
            for node in f["nodes"] or [CLUSTER]:
                finding.add_metric([f["fault"], f["rule"], f["severity"], node,
                                    str(bool(f.get("root_cause"))).lower()], 1)
        yield finding
        by_severity = GaugeMetricFamily("kubenetdiag_findings", "Findings of the last run",
                                        labels=["severity"])
        for sev in SEVERITIES:
            by_severity.add_metric([sev], r["summary"]["by_severity"].get(sev, 0))
        yield by_severity
        nodes = GaugeMetricFamily("kubenetdiag_nodes", "Nodes of the inventory, by whether "
                                  "they were reached", labels=["state"])
        reached = sum(1 for n in r["nodes"] if n["reachable"])
        nodes.add_metric(["reached"], reached)
        nodes.add_metric(["not_reached"], len(r["nodes"]) - reached)
        yield nodes
        missing = GaugeMetricFamily("kubenetdiag_not_checked", "A probe that gave no answer "
                                    "on a node (its checks are unknown, not healthy)",
                                    labels=["node", "probe"])
        for entry in r.get("not_checked") or []:
            missing.add_metric([entry.get("node") or CLUSTER, entry.get("probe") or "?"], 1)
        yield missing
        unevaluated = GaugeMetricFamily("kubenetdiag_rules_not_evaluated", "Rules that could "
                                        "not be evaluated on a node", labels=["node"])
        per_node = Counter(node for e in r.get("not_evaluated") or [] for node in e["nodes"])
        for node, count in sorted(per_node.items()):
            unevaluated.add_metric([node], count)
        yield unevaluated
        if r.get("changes") is not None:
            changed = GaugeMetricFamily("kubenetdiag_changed_facts", "Facts that appeared, went "
                                        "away or changed since the baseline (--baseline)",
                                        labels=["node", "kind", "change"])
            per = Counter((c["node"], c["kind"], c["change"]) for c in r["changes"]["facts"])
            for labels, count in sorted(per.items()):
                changed.add_metric(list(labels), count)
            yield changed
        run = r.get("run") or {}
        started, finished = _seconds(run.get("started_at")), _seconds(run.get("finished_at"))
        if started is not None and finished is not None:
            yield GaugeMetricFamily("kubenetdiag_run_duration_seconds",
                                    "Collection time of the last run", value=finished - started)
        if finished is not None:
            yield GaugeMetricFamily("kubenetdiag_run_timestamp_seconds",
                                    "When the last run finished collecting", value=finished)
        yield GaugeMetricFamily("kubenetdiag_exit_code", "The last run's exit code (0 nothing "
                                "of warning or above, 1 findings, 3 no node reached)",
                                value=r["summary"]["exit_code"])


def render_prometheus(report: dict, *, validated: bool = False) -> str:
    if not validated:
        validate_report(report)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Report(report))
    return generate_latest(registry).decode()
