"""The nodes as the report shows them, and what could not be checked on them.

A node's state decides whether it keeps its own row, and only a node with a row can be linked
to: so node states and anchors come first, and every other part of the view links to nodes
through the NodeLayout made here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from kubenetdiag import localize
from kubenetdiag.facts.producers import ALL_PROBES
from kubenetdiag.reports.i18n import UI
from kubenetdiag.reports.sanitize import clean_block, clean_line
from kubenetdiag.reports.viewmodel import (
    FINDING_NODES,
    Cause,
    Link,
    NodeView,
    NotCheckedGroup,
    NotCheckedView,
    NotEvaluatedGroup,
    RuleRef,
)

NODE_STATES = ("unreachable", "affected", "partial", "healthy")
# Healthy nodes keep their own rows up to this many (the heatmap folds at the same size). Above
# it the HTML gives their count and names, and their rows stay in the JSON report: 5,000 rows
# saying "healthy" bury the few that need someone.
HEALTHY_ROWS_MAX = 60
NOT_CHECKED_FLAT = 50  # not-checked entries the Markdown lists one by one


@dataclass
class NodeLayout:
    """Each node's state, which nodes are folded into a count and names, and the anchor of
    every node that keeps a row."""

    states: dict[str, str]
    healthy_count: int
    healthy_folded: bool
    partial_folded: bool
    folded: set[str]
    anchors: dict[str, str]
    _links: dict[str, Link] = field(default_factory=dict)

    def link(self, name: str) -> Link:
        """A link to the node's row, or its plain name when it has none."""
        # Memoised: the same few thousand names come back in evidence and not-checked entries.
        got = self._links.get(name)
        if got is None:
            got = self._links[name] = Link(clean_line(name), self.anchors.get(name))
        return got


class NodeRows(NamedTuple):
    first: list[NodeView]  # every node that needs a look
    healthy: list[NodeView]
    healthy_names: list[str]  # healthy nodes folded into names
    partial_names: list[str]  # partly checked nodes folded into names
    all_rows: list[NodeView]  # first and healthy together, unreachable first


class NotChecked(NamedTuple):
    entries: list[NotCheckedView]  # the first NOT_CHECKED_FLAT, one by one
    groups: list[NotCheckedGroup]  # every entry, grouped by probe and reason
    probes_unrun: int  # entries on nodes that were reached


def format_seconds(value: float | None, ui: UI) -> str:
    if value is None:
        return ui("none")
    if value < 10:
        return f"{value:.2f} s"
    if value < 600:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


def _node_states(report: dict) -> dict[str, str]:
    affected = {n for f in report["findings"] for n in f["nodes"]}
    partial = {c["node"] for c in report["not_checked"]}
    states: dict[str, str] = {}
    for node in report["nodes"]:
        if not node["reachable"]:
            state = "unreachable"
        elif node["name"] in affected:
            state = "affected"
        elif node["errors"] or node["name"] in partial:
            state = "partial"
        else:
            state = "healthy"
        states[node["name"]] = state
    return states


def _partial_like_all(report: dict, states: dict[str, str]) -> set[str]:
    """Partly checked nodes with no error whose every not-checked entry (probe, status, reason,
    what it blocks) is one that every reachable node has."""
    reachable = {n["name"] for n in report["nodes"] if n["reachable"]}
    gaps: dict[str, set[tuple]] = {}
    for entry in report["not_checked"]:
        gaps.setdefault(entry["node"], set()).add(
            (entry["probe"], entry["status"], entry["reason"], entry["blocks"])
        )
    holders: dict[tuple, int] = {}
    for name, keys in gaps.items():
        if name in reachable:
            for key in keys:
                holders[key] = holders.get(key, 0) + 1
    everywhere = {key for key, count in holders.items() if count == len(reachable)}
    return {
        n["name"]
        for n in report["nodes"]
        if states[n["name"]] == "partial" and not n["errors"] and gaps[n["name"]] <= everywhere
    }


def layout_nodes(report: dict) -> NodeLayout:
    states = _node_states(report)
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
    anchors = {
        n["name"]: f"n-{i}"
        for i, n in enumerate(report["nodes"], 1)
        if n["name"] not in folded
    }
    return NodeLayout(states, healthy_count, healthy_folded, like_all_folded, folded, anchors)


def node_rows(report: dict, layout: NodeLayout, ui: UI) -> NodeRows:
    """Rows for the nodes that keep one, those that need attention first, in inventory order
    within each state; the names of the folded ones."""
    views = []
    healthy_names, like_all_names = [], []
    for node in report["nodes"]:
        state = layout.states[node["name"]]
        if node["name"] in layout.folded:
            names = healthy_names if state == "healthy" else like_all_names
            names.append(clean_line(node["name"]))
            continue
        views.append(
            NodeView(
                name=clean_line(node["name"]),
                anchor=layout.anchors[node["name"]],
                address=clean_line(node["address"]) if node["address"] is not None
                else ui("none"),
                reachable=node["reachable"],
                kernel=clean_line(node["kernel"]) if node["kernel"] else ui("none"),
                duration=format_seconds(node["duration_s"], ui),
                errors=[clean_line(localize.value(e, ui.lang)) for e in node["errors"]],
                state=state,
                state_label=ui(f"node_{state}"),
            )
        )
    views.sort(key=lambda view: NODE_STATES.index(view.state))
    return NodeRows(
        first=[v for v in views if v.state != "healthy"],
        healthy=[v for v in views if v.state == "healthy"],
        healthy_names=healthy_names,
        partial_names=like_all_names,
        all_rows=views,
    )


def _group_not_checked(
    entries: list[dict], reachable: set[str], node_link: Callable[[str], Link], lang: str
) -> list[NotCheckedGroup]:
    groups: dict[tuple, list[str]] = {}
    for entry in entries:
        key = (entry["probe"], entry["status"], entry["reason"], entry["blocks"])
        groups.setdefault(key, []).append(entry["node"])
    out = []
    for (probe, status, reason, blocks), names in groups.items():
        names = list(dict.fromkeys(names))
        # Naming every node is only shorter than "all N reachable nodes" in a small cluster.
        every = len(names) > FINDING_NODES and set(names) == reachable
        out.append(
            NotCheckedGroup(
                probe=clean_line(localize.probe_name(probe, lang)),
                status=clean_line(localize.probe_status(status, lang)),
                reason=clean_block(localize.value(reason, lang)).strip(),
                blocks=clean_block(localize.value(blocks, lang)).strip(),
                nodes=[] if every else [node_link(n) for n in names],
                count=len(names),
                every_reachable=every,
            )
        )
    return out


def not_checked(report: dict, layout: NodeLayout, lang: str = "en") -> NotChecked:
    """What could not be checked, unreachable nodes first like the nodes table, so the two
    read the same way."""
    unreachable = {n["name"] for n in report["nodes"] if not n["reachable"]}
    in_order = sorted(report["not_checked"], key=lambda c: (c["node"] not in unreachable,))
    entries = [
        NotCheckedView(
            node=layout.link(entry["node"]),
            probe=clean_line(localize.probe_name(entry["probe"], lang)),
            status=clean_line(localize.probe_status(entry["status"], lang)),
            reason=clean_block(localize.value(entry["reason"], lang)).strip(),
            blocks=clean_block(localize.value(entry["blocks"], lang)).strip(),
        )
        for entry in in_order[:NOT_CHECKED_FLAT]
    ]
    reachable = {n["name"] for n in report["nodes"] if n["reachable"]}
    return NotChecked(
        entries=entries,
        groups=_group_not_checked(in_order, reachable, layout.link, lang),
        probes_unrun=sum(1 for c in report["not_checked"] if c["node"] not in unreachable),
    )


# Statuses whose label says everything the reason would: the reason is not repeated.
_SELF_EXPLAINED = {"not_collected"}


def _cause(entry: dict, ui: UI) -> Cause:
    status = entry["status"]
    key = f"status_{status}"
    # A status this version has no words for comes from a newer bundle: shown as written.
    label = ui(key) if ui.has(key) else clean_line(status)
    reason = "" if status in _SELF_EXPLAINED else clean_block(
        localize.value(entry["reason"], ui.lang)).strip()
    # a node not reached: no one probe is to blame, the status says it
    probe = "" if entry["probe"] == ALL_PROBES else clean_line(entry["probe"])
    return Cause(probe, label, reason)


def not_evaluated(report: dict, layout: NodeLayout, ui: UI, lang: str) -> list[NotEvaluatedGroup]:
    """The rules each node could not evaluate and why, grouped: nodes with the same rules left
    out for the same causes share one group, and within a node, rules left out for the same
    causes share one list. Unreachable nodes come first, as in Not checked."""
    titles: dict[str, str] = {}
    order: dict[str, int] = {}
    for i, item in enumerate(report.get("not_evaluated") or []):
        text = (item["i18n"].get(lang) or {}).get("title") or item["title"]
        titles[item["rule"]] = clean_line(text)
        order[item["rule"]] = i
    unreachable = {n["name"] for n in report["nodes"] if not n["reachable"]}
    entries = sorted(report["not_checked"], key=lambda c: c["node"] not in unreachable)
    # node -> its entries that left rules unevaluated, as (cause, rules) keys
    per_node: dict[str, list[tuple]] = {}
    entry_of: dict[tuple, dict] = {}
    for entry in entries:
        if entry.get("rules"):
            cause = (entry["probe"], entry["status"], entry["reason"])
            entry_of.setdefault(cause, entry)
            per_node.setdefault(entry["node"], []).append((cause, tuple(entry["rules"])))

    def signature(keys: tuple) -> tuple:
        """The node's rules, grouped by the set of causes that left each one unevaluated."""
        causes_of: dict[str, list[tuple]] = {}
        for cause, rules in keys:
            for rule in rules:
                causes_of.setdefault(rule, []).append(cause)
        by_causes: dict[tuple, list[str]] = {}
        for rule, causes in causes_of.items():
            by_causes.setdefault(tuple(causes), []).append(rule)
        return tuple(
            (causes, tuple(sorted(ids, key=lambda r: order.get(r, len(order)))))
            for causes, ids in by_causes.items()
        )

    # Nodes with the same entries share one signature: at 5,000 nodes it is worked out once.
    signatures: dict[tuple, tuple] = {}
    groups: dict[tuple, list[str]] = {}
    for node, keys in per_node.items():
        k = tuple(keys)
        if k not in signatures:
            signatures[k] = signature(k)
        groups.setdefault(signatures[k], []).append(node)
    reachable = {n["name"] for n in report["nodes"] if n["reachable"]}
    out = []
    for sig, names in groups.items():
        every = len(names) > FINDING_NODES and set(names) == reachable
        links = [] if every else [layout.link(n) for n in names]
        for causes, ids in sig:
            out.append(NotEvaluatedGroup(
                nodes=links,
                count=len(names),
                every_reachable=every,
                causes=[_cause(entry_of[cause], ui) for cause in causes],
                rules=[RuleRef(clean_line(r), titles.get(r, "")) for r in ids],
            ))
    return out
