"""The report as every renderer sees it: cleaned, translated, ordered and cross-linked.

Building this once keeps HTML, Markdown and the terminal summary in agreement about what is a
root cause, which nodes come first and what could not be checked, and it means templates only
ever receive strings that have already been stripped of control characters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubenetdiag.findings.schema import validate_report
from kubenetdiag.reports.connectivity import ConnectivityView, build_connectivity
from kubenetdiag.reports.i18n import UI, normalize_lang
from kubenetdiag.reports.sanitize import clean_block, clean_line

SEVERITIES = ("critical", "error", "warning", "info")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
PROBLEM_SEVERITIES = frozenset({"critical", "error", "warning"})  # what makes exit code 1

# Display order of findings: causes are what the on-call engineer acts on, unexplained problems
# still need a human, explained consequences go last because fixing their cause fixes them.
ROLE_RANK = {"root": 0, "other": 1, "consequence": 2}

NODE_STATES = ("unreachable", "affected", "partial", "healthy")
BANNER_NODES = 5  # node names shown per root cause in the verdict before "+N more"
FINDING_NODES = 20  # node names shown per finding before the rest is folded
EVIDENCE_SHOWN = 10  # evidence rows shown per finding before the rest is folded
HEALTHY_OPEN = 10  # the healthy-node list starts expanded up to this many nodes
# Healthy nodes keep their own rows up to this many (the heatmap folds at the same size). Above
# it the HTML gives their count and names, and their rows stay in the JSON report: 5,000 rows
# saying "healthy" bury the few that need someone.
HEALTHY_ROWS_MAX = 60
NOT_CHECKED_FLAT = 50  # not-checked entries the Markdown lists one by one


@dataclass
class Link:
    label: str
    anchor: str | None = None  # a fragment id inside the same document, never a URL
    detail: str = ""


@dataclass
class Step:
    text: str
    command: str
    changes_state: bool


@dataclass
class Evidence:
    kind: str
    node: Link
    attrs: list[tuple[str, str]]
    probe: str
    command: str
    exit_code: str
    excerpt: str


class _FoldedNodes:
    """The first nodes shown, the rest folded: for anything with a `nodes` list of links."""

    nodes: list[Link]

    @property
    def nodes_head(self) -> list[Link]:
        return self.nodes[:FINDING_NODES]

    @property
    def nodes_tail(self) -> list[Link]:
        return self.nodes[FINDING_NODES:]


@dataclass
class FindingView(_FoldedNodes):
    anchor: str
    rule: str
    fault: str
    severity: str
    severity_label: str
    confidence: str
    title: str
    explain: str
    role: str
    role_label: str
    nodes: list[Link]
    explained_by: list[Link]
    explains: list[Link]
    evidence: list[Evidence]
    remediation: list[Step]

    @property
    def evidence_head(self) -> list[Evidence]:
        return self.evidence[:EVIDENCE_SHOWN]

    @property
    def evidence_tail(self) -> list[Evidence]:
        return self.evidence[EVIDENCE_SHOWN:]

    @property
    def first_command(self) -> Step | None:
        return next((s for s in self.remediation if s.command), None)


@dataclass
class NodeView:
    name: str
    anchor: str
    address: str
    reachable: bool
    kernel: str
    duration: str
    errors: list[str]
    state: str
    state_label: str


@dataclass
class NotCheckedView:
    node: Link
    probe: str
    status: str
    reason: str
    blocks: str


@dataclass
class NotCheckedGroup(_FoldedNodes):
    """One probe that could not run for one reason, with every node it could not run on: the
    same missing tool on 5,000 nodes is one row, not 5,000."""

    probe: str
    status: str
    reason: str
    blocks: str
    nodes: list[Link]  # empty when every_reachable says it more briefly
    count: int
    every_reachable: bool  # the group is exactly the set of reachable nodes


@dataclass
class Verdict:
    level: str  # critical, error, warning, info, ok, partial, unknown: the banner's colour
    headline: str
    items: list[FindingView]  # root causes, then unexplained problems
    notes: list[str]
    unreachable: list[Link]
    unreachable_more: int
    unchecked_warning: bool


@dataclass
class ReportView:
    lang: str
    ui: UI
    title: str
    verdict: Verdict
    findings: list[FindingView]
    root_causes: list[FindingView]
    consequences: list[FindingView]
    nodes_first: list[NodeView]  # every node that needs a look, each with its row
    nodes_healthy: list[NodeView]  # healthy rows, none when healthy_folded
    healthy_count: int
    healthy_folded: bool  # too many healthy nodes for rows: count and names only
    healthy_names: list[str]  # when folded
    partial_folded: bool  # partly checked only where every node is: count and names only
    partial_names: list[str]  # when folded
    rows_where: str  # where the folded rows are
    healthy_open: bool
    not_checked: list[NotCheckedView]  # the first NOT_CHECKED_FLAT entries, one by one
    not_checked_groups: list[NotCheckedGroup]  # every entry, grouped
    meta: list[tuple[str, str]]
    connectivity: ConnectivityView
    counts: dict[str, int] = field(default_factory=dict)
    bundle: str = ""


def _fmt_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return clean_line(value)


def _fmt_seconds(value: float | None, ui: UI) -> str:
    if value is None:
        return ui("none")
    if value < 10:
        return f"{value:.2f} s"
    if value < 600:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


def _fmt_confidence(value: float | str, ui: UI) -> str:
    if isinstance(value, str):
        return ui(f"confidence_{value}")
    return f"{round(value * 100)}%"


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _role(finding: dict) -> str:
    if finding["root_cause"]:
        return "root"
    return "consequence" if finding["explained_by"] else "other"


def _texts(finding: dict, lang: str) -> tuple[str, str, list[str]]:
    """Title, explanation and step texts in `lang`, each falling back to English on its own."""
    title, explain = finding["title"], finding["explain"]
    steps = [s["text"] for s in finding["remediation"]]
    local = (finding.get("i18n") or {}).get(lang) if lang != "en" else None
    if local:
        title = local.get("title") or title
        explain = local.get("explain") or explain
        translated = local.get("remediation") or []
        # A translation list of another length would pair texts with the wrong commands.
        if len(translated) == len(steps):
            steps = [t or s for t, s in zip(translated, steps, strict=True)]
    return title, explain, steps


def build_view(report: dict, lang: str = "en", *, validated: bool = False) -> ReportView:
    """Validate `report` (unless the caller already did: `validated`) and turn it into what the
    templates render."""
    lang = normalize_lang(lang)
    if not validated:
        validate_report(report)
    ui = UI(lang)

    # Node states come first: whether a node keeps its row decides whether links to it exist.
    affected = {n for f in report["findings"] for n in f["nodes"]}
    partial = {c["node"] for c in report["not_checked"]}
    states: dict[str, str] = {}
    for n in report["nodes"]:
        if not n["reachable"]:
            state = "unreachable"
        elif n["name"] in affected:
            state = "affected"
        elif n["errors"] or n["name"] in partial:
            state = "partial"
        else:
            state = "healthy"
        states[n["name"]] = state
    healthy_count = sum(1 for s in states.values() if s == "healthy")
    healthy_folded = healthy_count > HEALTHY_ROWS_MAX
    # A probe that ran on no reachable node (a tool missing everywhere) makes every node
    # "partly checked", and healthy rows would never fold. A node whose only gaps are such
    # cluster-wide ones differs in nothing that Not checked does not already say for all of
    # them: above the same size these are counted and named too, as partly checked.
    like_all = _partial_like_all(report, states)
    like_all_folded = len(like_all) > HEALTHY_ROWS_MAX
    folded = (like_all if like_all_folded else set()) | (
        {name for name, s in states.items() if s == "healthy"} if healthy_folded else set()
    )

    # Anchors number nodes in inventory order whether or not they have a row, so a node's
    # anchor does not depend on how many others were folded.
    node_anchor = {
        n["name"]: f"n-{i}"
        for i, n in enumerate(report["nodes"], 1)
        if n["name"] not in folded
    }
    links: dict[str, Link] = {}

    def node_link(name: str) -> Link:
        # Memoised: the same few thousand names come back in evidence and not-checked entries.
        got = links.get(name)
        if got is None:
            got = links[name] = Link(clean_line(name), node_anchor.get(name))
        return got

    ordered = sorted(
        report["findings"],
        key=lambda f: (ROLE_RANK[_role(f)], SEVERITY_RANK[f["severity"]]),
    )
    anchors = [f"f-{i}" for i in range(1, len(ordered) + 1)]
    by_rule: dict[str, int] = {}
    by_fault: dict[str, int] = {}
    for i, f in enumerate(ordered):
        by_rule.setdefault(f["rule"], i)
        by_fault.setdefault(f["fault"], i)
    # A rule without a title must not leave a blank heading: the fault code is the next best name.
    titles = [clean_line(_texts(f, lang)[0]) or clean_line(f["fault"]) for f in ordered]

    def link(name: str, j: int | None) -> Link:
        """A link to the finding that `name` refers to, or plain text when none fired."""
        return (
            Link(titles[j], anchors[j], clean_line(name))
            if j is not None
            else Link(clean_line(name))
        )

    findings: list[FindingView] = []
    for i, f in enumerate(ordered):
        title, explain, step_texts = _texts(f, lang)
        role = _role(f)
        explained_by = [link(rule, by_rule.get(rule)) for rule in f["explained_by"]]
        explains = [link(fault, by_fault.get(fault)) for fault in f["explains"]]
        evidence = []
        for fact in f["evidence"]:
            src = fact.get("source") or {}
            exit_code = src.get("exit_code")
            evidence.append(
                Evidence(
                    kind=clean_line(fact["kind"]),
                    node=node_link(fact["node"]),
                    # unknown (null) attributes say nothing about this fault: leave them out
                    attrs=[
                        (clean_line(k), _fmt_scalar(v))
                        for k, v in fact["attrs"].items()
                        if v is not None
                    ],
                    probe=clean_line(src.get("probe", "")),
                    command=clean_block(src.get("command", "")),
                    exit_code=(
                        ui("not_finished")
                        if src and exit_code is None
                        else ("" if not src else str(exit_code))
                    ),
                    excerpt=clean_block(src.get("excerpt", "")),
                )
            )
        findings.append(
            FindingView(
                anchor=anchors[i],
                rule=clean_line(f["rule"]),
                fault=clean_line(f["fault"]),
                severity=f["severity"],
                severity_label=ui.severity(f["severity"]),
                confidence=_fmt_confidence(f["confidence"], ui),
                title=titles[i],
                explain=clean_block(explain).strip(),
                role=role,
                role_label=ui(f"role_{role}"),
                nodes=[node_link(n) for n in f["nodes"]],
                explained_by=explained_by,
                explains=explains,
                evidence=evidence,
                remediation=[
                    Step(
                        clean_block(text).strip(),
                        clean_block(s["command"] or "").strip(),
                        bool(s["changes_state"]),
                    )
                    for text, s in zip(step_texts, f["remediation"], strict=True)
                ],
            )
        )

    roots = [f for f in findings if f.role == "root"]
    others = [f for f in findings if f.role == "other" and f.severity in PROBLEM_SEVERITIES]
    consequences = [f for f in findings if f.role == "consequence"]
    info_only = [f for f in findings if f.role != "root" and f.severity == "info"]

    # Nodes: the ones that need attention first, in inventory order within each group.
    node_views = []
    healthy_names, like_all_names = [], []
    for n in report["nodes"]:
        state = states[n["name"]]
        if n["name"] in folded:
            (healthy_names if state == "healthy" else like_all_names).append(clean_line(n["name"]))
            continue
        node_views.append(
            NodeView(
                name=clean_line(n["name"]),
                anchor=node_anchor[n["name"]],
                address=clean_line(n["address"]) if n["address"] is not None else ui("none"),
                reachable=n["reachable"],
                kernel=clean_line(n["kernel"]) if n["kernel"] else ui("none"),
                duration=_fmt_seconds(n["duration_s"], ui),
                errors=[clean_line(e) for e in n["errors"]],
                state=state,
                state_label=ui(f"node_{state}"),
            )
        )
    node_views.sort(key=lambda v: NODE_STATES.index(v.state))
    healthy = [v for v in node_views if v.state == "healthy"]
    first = [v for v in node_views if v.state != "healthy"]

    unreachable_names = {n["name"] for n in report["nodes"] if not n["reachable"]}
    # Unreachable nodes first, like the nodes table, so the two read the same way.
    not_checked_sorted = sorted(
        report["not_checked"], key=lambda c: (c["node"] not in unreachable_names,)
    )
    not_checked = [
        NotCheckedView(
            node=node_link(c["node"]),
            probe=clean_line(c["probe"]),
            status=clean_line(c["status"]),
            reason=clean_block(c["reason"]).strip(),
            blocks=clean_block(c["blocks"]).strip(),
        )
        for c in not_checked_sorted[:NOT_CHECKED_FLAT]
    ]
    reachable_names = {n["name"] for n in report["nodes"] if n["reachable"]}
    not_checked_groups = _group_not_checked(not_checked_sorted, reachable_names, node_link)
    probes_unrun = sum(1 for c in report["not_checked"] if c["node"] not in unreachable_names)

    verdict = _verdict(
        report,
        ui,
        findings,
        roots,
        others,
        consequences,
        info_only,
        [v for v in node_views if not v.reachable],
        probes_unrun,
    )

    run = report["run"]
    meta = [
        (ui("started"), clean_line(run["started_at"])),
        (ui("finished"), clean_line(run["finished_at"])),
    ]
    start, end = _parse_time(run["started_at"]), _parse_time(run["finished_at"])
    if start and end and (start.tzinfo is None) == (end.tzinfo is None):
        meta.append((ui("duration_total"), _fmt_seconds((end - start).total_seconds(), ui)))
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

    summary = report["summary"]
    counts = {
        "nodes": len(report["nodes"]),
        "unreachable": len(unreachable_names),
        "findings": len(findings),
        "root_causes": len(roots),
        "consequences": len(consequences),
        "not_checked": len(report["not_checked"]),
        "exit_code": summary["exit_code"],
        **{s: sum(1 for f in findings if f.severity == s) for s in SEVERITIES},
    }

    return ReportView(
        lang=lang,
        ui=ui,
        title=ui("doc_title"),
        verdict=verdict,
        findings=findings,
        root_causes=roots,
        consequences=consequences,
        nodes_first=first,
        nodes_healthy=healthy,
        healthy_count=healthy_count,
        healthy_folded=healthy_folded,
        healthy_names=healthy_names,
        partial_folded=like_all_folded,
        partial_names=like_all_names,
        rows_where=(
            ui("rows_in", path=f"{clean_line(run['bundle'])}/report.json")
            if run["bundle"]
            else ui("rows_json")
        ),
        healthy_open=healthy_count <= HEALTHY_OPEN,
        not_checked=not_checked,
        not_checked_groups=not_checked_groups,
        meta=meta,
        connectivity=build_connectivity(
            report.get("connectivity"),
            ui,
            node_anchor,
            {n for f in report["findings"] if f["root_cause"] for n in f["nodes"]},
        ),
        counts=counts,
        bundle=clean_line(run["bundle"]) if run["bundle"] else "",
    )


def _partial_like_all(report: dict, states: dict[str, str]) -> set[str]:
    """Partly checked nodes with no error whose every not-checked entry (probe, status, reason,
    what it blocks) is one that every reachable node has."""
    reachable = {n["name"] for n in report["nodes"] if n["reachable"]}
    gaps: dict[str, set[tuple]] = {}
    for c in report["not_checked"]:
        gaps.setdefault(c["node"], set()).add((c["probe"], c["status"], c["reason"], c["blocks"]))
    holders: dict[tuple, int] = {}
    for name, keys in gaps.items():
        if name in reachable:
            for k in keys:
                holders[k] = holders.get(k, 0) + 1
    everywhere = {k for k, count in holders.items() if count == len(reachable)}
    return {
        n["name"]
        for n in report["nodes"]
        if states[n["name"]] == "partial" and not n["errors"] and gaps[n["name"]] <= everywhere
    }


def _group_not_checked(
    entries: list[dict], reachable: set[str], node_link: Callable[[str], Link]
) -> list[NotCheckedGroup]:
    groups: dict[tuple, list[str]] = {}
    for c in entries:
        key = (c["probe"], c["status"], c["reason"], c["blocks"])
        groups.setdefault(key, []).append(c["node"])
    out = []
    for (probe, status, reason, blocks), names in groups.items():
        names = list(dict.fromkeys(names))
        # Naming every node is only shorter than "all N reachable nodes" in a small cluster.
        every = len(names) > FINDING_NODES and set(names) == reachable
        out.append(
            NotCheckedGroup(
                probe=clean_line(probe),
                status=clean_line(status),
                reason=clean_block(reason).strip(),
                blocks=clean_block(blocks).strip(),
                nodes=[] if every else [node_link(n) for n in names],
                count=len(names),
                every_reachable=every,
            )
        )
    return out


def _verdict(
    report: dict,
    ui: UI,
    findings: list[FindingView],
    roots: list[FindingView],
    others: list[FindingView],
    consequences: list[FindingView],
    info_only: list[FindingView],
    unreachable: list[NodeView],
    probes_unrun: int,
) -> Verdict:
    worst = min((SEVERITY_RANK[f.severity] for f in findings), default=None)
    total = len(report["nodes"])
    unchecked = bool(unreachable) or probes_unrun > 0

    if total and len(unreachable) == total:
        level, headline = "unknown", ui("nothing_checked")
    elif roots:
        level, headline = SEVERITIES[worst], ui.n("root_causes_found", len(roots))
    elif others:
        level, headline = SEVERITIES[worst], ui.n("problems_no_root", len(others))
    elif unchecked:
        level, headline = "partial", ui("no_problems_partial")
    else:
        level, headline = "ok", ui("no_problems")

    notes = []
    if roots and others:
        notes.append(ui.n("other_findings", len(others)))
    if consequences:
        notes.append(ui.n("consequences_folded", len(consequences)))
    if info_only:
        notes.append(ui.n("info_findings", len(info_only)))
    if probes_unrun:
        notes.append(ui.n("unchecked_probes", probes_unrun))

    return Verdict(
        level=level,
        headline=headline,
        items=roots + others,
        notes=notes,
        unreachable=[Link(n.name, n.anchor) for n in unreachable[:10]],
        unreachable_more=max(0, len(unreachable) - 10),
        unchecked_warning=unchecked,
    )
