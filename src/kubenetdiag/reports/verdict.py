"""The banner at the top of the report: one level, one headline, and what else to know.

"No problems" is said only when everything was checked: a node that could not be reached, or a
probe that could not run, makes the answer "partial", never "ok".
"""

from __future__ import annotations

from kubenetdiag.reports.findings_view import FindingGroups
from kubenetdiag.reports.i18n import UI
from kubenetdiag.reports.viewmodel import FindingView, Link, NodeView, Verdict
from kubenetdiag.vocabulary import SEVERITIES, SEVERITY_RANK

UNREACHABLE_NAMED = 10  # unreachable nodes the banner names before "+N more"


def _level_and_headline(
    ui: UI,
    findings: list[FindingView],
    groups: FindingGroups,
    nodes: int,
    unreachable: int,
    unchecked: bool,
) -> tuple[str, str]:
    worst = min((SEVERITY_RANK[f.severity] for f in findings), default=None)
    if nodes and unreachable == nodes:
        return "unknown", ui("nothing_checked")
    if groups.roots:
        return SEVERITIES[worst], ui.plural("root_causes_found", len(groups.roots))
    if groups.others:
        return SEVERITIES[worst], ui.plural("problems_no_root", len(groups.others))
    if unchecked:
        return "partial", ui("no_problems_partial")
    return "ok", ui("no_problems")


def _notes(ui: UI, groups: FindingGroups, probes_unrun: int) -> list[str]:
    notes = []
    if groups.roots and groups.others:
        notes.append(ui.plural("other_findings", len(groups.others)))
    if groups.consequences:
        notes.append(ui.plural("consequences_folded", len(groups.consequences)))
    if groups.info_only:
        notes.append(ui.plural("info_findings", len(groups.info_only)))
    if probes_unrun:
        notes.append(ui.plural("unchecked_probes", probes_unrun))
    return notes


def build_verdict(
    report: dict,
    ui: UI,
    findings: list[FindingView],
    groups: FindingGroups,
    unreachable: list[NodeView],
    probes_unrun: int,
) -> Verdict:
    unchecked = bool(unreachable) or probes_unrun > 0
    level, headline = _level_and_headline(
        ui, findings, groups, len(report["nodes"]), len(unreachable), unchecked
    )
    return Verdict(
        level=level,
        headline=headline,
        items=groups.roots + groups.others,
        notes=_notes(ui, groups, probes_unrun),
        unreachable=[Link(n.name, n.anchor) for n in unreachable[:UNREACHABLE_NAMED]],
        unreachable_more=max(0, len(unreachable) - UNREACHABLE_NAMED),
        unchecked_warning=unchecked,
    )
