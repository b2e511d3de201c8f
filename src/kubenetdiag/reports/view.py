"""The report as every renderer sees it: cleaned, translated, ordered and cross-linked.

Building this once keeps HTML, Markdown and the terminal summary in agreement about what is a
root cause, which nodes come first and what could not be checked, and it means templates only
ever receive strings that have already been stripped of control characters.

The parts are built in their own modules: nodes and what was not checked (nodes_view), findings
(findings_view), the banner (verdict); the records they fill are in viewmodel.
"""

from __future__ import annotations

from datetime import datetime

from kubenetdiag.changes import ChangeIndex
from kubenetdiag.findings.schema import validate_report
from kubenetdiag.reports.changes_view import lines as changes_lines
from kubenetdiag.reports.connectivity import build_connectivity
from kubenetdiag.reports.findings_view import finding_views, group_findings
from kubenetdiag.reports.i18n import UI, normalize_lang
from kubenetdiag.reports.nodes_view import (
    format_seconds,
    layout_nodes,
    node_rows,
    not_checked,
    not_evaluated,
)
from kubenetdiag.reports.sanitize import clean_line
from kubenetdiag.reports.verdict import build_verdict
from kubenetdiag.reports.viewmodel import (
    Evidence,
    FindingView,
    Link,
    NodeView,
    NotCheckedGroup,
    NotCheckedView,
    NotEvaluatedGroup,
    ReportView,
    Step,
    Verdict,
)
from kubenetdiag.vocabulary import SEVERITIES

__all__ = [
    "Evidence",
    "FindingView",
    "Link",
    "NodeView",
    "NotCheckedGroup",
    "NotCheckedView",
    "NotEvaluatedGroup",
    "ReportView",
    "Step",
    "Verdict",
    "build_view",
]

HEALTHY_OPEN = 10  # the healthy-node list starts expanded up to this many nodes


def parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _meta(report: dict, ui: UI) -> list[tuple[str, str]]:
    """The run's details, label and value, for the report's footer."""
    run = report["run"]
    meta = [
        (ui("started"), clean_line(run["started_at"])),
        (ui("finished"), clean_line(run["finished_at"])),
    ]
    start, end = parse_time(run["started_at"]), parse_time(run["finished_at"])
    if start and end and (start.tzinfo is None) == (end.tzinfo is None):
        meta.append((ui("duration_total"), format_seconds((end - start).total_seconds(), ui)))
    meta += [
        (ui("transport"), clean_line(run["transport"])),
        (ui("inventory"), clean_line(run["inventory"]) if run["inventory"] else ui("none")),
        (ui("bundle"), clean_line(run["bundle"]) if run["bundle"] else ui("none")),
        (ui("tool"), clean_line(f"{report['tool']['name']} {report['tool']['version']}")),
        (
            ui("rule_base"),
            ui(
                "rule_base_value",
                count=report["rules"]["count"],
                digest=clean_line(report["rules"]["digest"]) or ui("none"),
            ),
        ),
        (ui("schema"), report["schema"]),
        (ui("exit_status"), str(report["summary"]["exit_code"])),
    ]
    return meta


def build_view(report: dict, lang: str = "en", *, validated: bool = False) -> ReportView:
    """Validate `report` (unless the caller already did: `validated`) and turn it into what the
    templates render."""
    lang = normalize_lang(lang)
    if not validated:
        validate_report(report)
    ui = UI(lang)

    layout = layout_nodes(report)
    findings = finding_views(report["findings"], lang, ui, layout.link,
                             ChangeIndex(report.get("changes")))
    groups = group_findings(findings)
    rows = node_rows(report, layout, ui)
    unchecked = not_checked(report, layout, ui.lang)
    verdict = build_verdict(
        report,
        ui,
        findings,
        groups,
        [v for v in rows.all_rows if not v.reachable],
        unchecked.probes_unrun,
    )

    run = report["run"]
    counts = {
        "nodes": len(report["nodes"]),
        "unreachable": len({n["name"] for n in report["nodes"] if not n["reachable"]}),
        "findings": len(findings),
        "root_causes": len(groups.roots),
        "consequences": len(groups.consequences),
        "not_checked": len(report["not_checked"]),
        "exit_code": report["summary"]["exit_code"],
        **{s: sum(1 for f in findings if f.severity == s) for s in SEVERITIES},
    }

    return ReportView(
        lang=lang,
        ui=ui,
        title=ui("doc_title"),
        verdict=verdict,
        findings=findings,
        root_causes=groups.roots,
        consequences=groups.consequences,
        nodes_first=rows.first,
        nodes_healthy=rows.healthy,
        healthy_count=layout.healthy_count,
        healthy_folded=layout.healthy_folded,
        healthy_names=rows.healthy_names,
        partial_folded=layout.partial_folded,
        partial_names=rows.partial_names,
        rows_where=(
            ui("rows_in", path=f"{clean_line(run['bundle'])}/report.json")
            if run["bundle"]
            else ui("rows_json")
        ),
        healthy_open=layout.healthy_count <= HEALTHY_OPEN,
        not_checked=unchecked.entries,
        not_checked_groups=unchecked.groups,
        needs_root=any(c["status"] == "permission_denied" and c["node"] != "cluster"
                       for c in report["not_checked"]),
        not_evaluated=not_evaluated(report, layout, ui, lang),
        meta=_meta(report, ui),
        connectivity=build_connectivity(
            report.get("connectivity"),
            ui,
            layout.anchors,
            {n for f in report["findings"] if f["root_cause"] for n in f["nodes"]},
        ),
        counts=counts,
        bundle=clean_line(run["bundle"]) if run["bundle"] else "",
        changes=changes_lines(report["changes"]) if report.get("changes") else None,
        baseline=clean_line(report["changes"]["old"]["bundle"] or "")
        if report.get("changes") else "",
    )
