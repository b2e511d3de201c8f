"""What the templates and the terminal summary receive: plain records of cleaned strings.

Nothing here reads the report dict; view.py and the modules it calls fill these in. Every
string in them has already been stripped of control characters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kubenetdiag.reports.connectivity import ConnectivityView
from kubenetdiag.reports.i18n import UI

FINDING_NODES = 20  # node names shown per finding before the rest is folded
EVIDENCE_SHOWN = 10  # evidence rows shown per finding before the rest is folded


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
    changed: str = ""  # with a baseline: how this fact changed since (changes_view.fact_line)


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
class RuleRef:
    rule: str
    title: str


@dataclass
class Cause:
    """Why rules were not evaluated: a probe, what happened to it and, in the node's or
    collector's words, why."""

    probe: str
    status: str  # translated
    reason: str  # empty when the status says it all


@dataclass
class NotEvaluatedGroup(_FoldedNodes):
    """Rules that could not be evaluated, for the same causes, on every node of the group: the
    same probe failing on 50 nodes is one group, not 50."""

    nodes: list[Link]  # empty when every_reachable says it more briefly
    count: int
    every_reachable: bool
    causes: list[Cause]
    rules: list[RuleRef]


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
    not_evaluated: list[NotEvaluatedGroup]  # rules not evaluated, grouped by nodes and causes
    meta: list[tuple[str, str]]
    connectivity: ConnectivityView
    counts: dict[str, int] = field(default_factory=dict)
    # a node's probe was refused for want of root: the fix is the login, said once
    needs_root: bool = False
    bundle: str = ""
    # with a baseline: what changed since, as lines (None: no baseline; []: nothing changed)
    changes: list[str] | None = None
    baseline: str = ""
