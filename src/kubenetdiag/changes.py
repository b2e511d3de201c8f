"""What changed between a run that worked and this one: `kubenetdiag diff OLD NEW`,
`diagnose --baseline OLD`.

    changes(old, new) -> {"schema", "old", "new", "findings", "facts", "nodes"}

Both runs are analyses (facts and report) of bundles made the same way. Facts are compared
kind by kind as the registry says (`diff:` in facts/kinds/*.yaml): facts of one node with the
same key attributes are the same thing (a sysctl by its key, an iptables rule by its table,
chain and text, a route by its table, type, destination and metric), whose other attributes
may have changed; attributes that move on their own (counters, PIDs, positions) are left out,
and kinds the registry does not list (measurements, derived views) are not compared. A kind
whose probe gave no answer on a node in either run is not compared there: missing is unknown,
not gone. Pod interfaces, their queueing hooks and Calico's per-pod routes come and go with
pods and are left out too.

Findings are compared by rule and node: the ones that appeared and the ones that went away.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from kubenetdiag.facts.model import Fact
from kubenetdiag.facts.producers import blocked_kinds, observed
from kubenetdiag.facts.registry import DiffSpec, registry

SCHEMA = "kubenetdiag/changes/v1"
_POD_DEVICES = ("veth", "cali")
# nft prints a rule's counters and, with -a, its handle inside the rule's text
_NFT_VOLATILE = re.compile(r"\s*(?:counter packets \d+ bytes \d+|# handle \d+)")


def _churn(f: Fact) -> bool:
    """Facts about one pod's plumbing, which appear and go with the pod."""
    a = f.attrs
    if f.kind == "interface":
        return str(a.get("name") or "").startswith(_POD_DEVICES)
    if f.kind == "tc_hook":
        return str(a.get("dev") or "").startswith(_POD_DEVICES)
    if f.kind == "route":
        return str(a.get("dev") or "").startswith(_POD_DEVICES) \
            and str(a.get("dst") or "").endswith("/32")
    return False


def _value(f: Fact, name: str) -> Any:
    value = f.attrs.get(name)
    if f.kind == "nft_rule" and name == "text" and isinstance(value, str):
        return _NFT_VOLATILE.sub("", value)
    return value


def _index(facts: Iterable[Fact], specs: dict[str, DiffSpec]
           ) -> dict[tuple[str, str, tuple], Fact]:
    out: dict[tuple[str, str, tuple], Fact] = {}
    for f in facts:
        spec = specs.get(f.kind)
        if spec is None or _churn(f):
            continue
        out[(f.node, f.kind, tuple(_value(f, k) for k in spec.key))] = f
    return out


def _unknown(facts: Iterable[Fact]) -> dict[str, set[str]]:
    """node -> the kinds a probe that gave no answer left unknown there."""
    out: dict[str, set[str]] = defaultdict(set)
    for f in facts:
        if f.kind == "probe_status" and f.attrs.get("status") != "not_queried":
            kinds = f.attrs.get("kinds")
            out[f.node] |= blocked_kinds(str(f.attrs.get("probe")),
                                         None if kinds is None else str(kinds))
    return out


def _reached(report: dict) -> set[str]:
    return {n["name"] for n in report["nodes"] if n["reachable"]}


def _shown(f: Fact, spec: DiffSpec) -> dict[str, Any]:
    return {k: _value(f, k) for k in f.attrs if k not in spec.ignore}


def changes(old_facts: list[Fact], old_report: dict, new_facts: list[Fact], new_report: dict
            ) -> dict[str, Any]:
    specs = {name: k.diff for name, k in registry().items() if k.diff is not None}
    before, after = _index(old_facts, specs), _index(new_facts, specs)
    unknown = _unknown(old_facts)
    for node, kinds in _unknown(new_facts).items():
        unknown[node] |= kinds
    reached_old, reached_new = _reached(old_report), _reached(new_report)
    compared = (reached_old & reached_new) | {"cluster"}
    # a kind is unknown on a node when its own probe, or one it is derived from, gave no answer
    made_from = {kind: {kind} | observed({kind}) for kind in specs}
    facts = []
    for key in sorted(before.keys() | after.keys(), key=repr):
        node, kind, ident = key
        if node not in compared or made_from[kind] & unknown[node]:
            continue
        spec = specs[kind]
        old, new = before.get(key), after.get(key)
        if old is not None and new is not None:
            fields = sorted(k for k in (set(old.attrs) | set(new.attrs)) - set(spec.ignore)
                            if _value(old, k) != _value(new, k))
            if not fields:
                continue
            change = "changed"
        else:
            fields, change = [], "appeared" if old is None else "gone"
        facts.append({
            "node": node, "kind": kind, "change": change,
            "key": dict(zip(spec.key, ident, strict=True)), "fields": fields,
            "before": _shown(old, spec) if old else None,
            "after": _shown(new, spec) if new else None,
            "source": (new or old).source.command if (new or old).source else None,
        })
    return {
        "schema": SCHEMA,
        "old": _run(old_report), "new": _run(new_report),
        "findings": _findings(old_report, new_report),
        "facts": facts,
        "nodes": {
            "only_old": sorted({n["name"] for n in old_report["nodes"]}
                               - {n["name"] for n in new_report["nodes"]}),
            "only_new": sorted({n["name"] for n in new_report["nodes"]}
                               - {n["name"] for n in old_report["nodes"]}),
            # in both inventories, but not reached in one run: nothing to compare there
            "not_compared": sorted((reached_old ^ reached_new)
                                   & {n["name"] for n in old_report["nodes"]}
                                   & {n["name"] for n in new_report["nodes"]}),
        },
    }


def _run(report: dict) -> dict[str, Any]:
    run = report.get("run") or {}
    return {"bundle": run.get("bundle"), "started_at": run.get("started_at")}


def _findings(old: dict, new: dict) -> dict[str, list[dict]]:
    def by_node(report: dict) -> dict[tuple[str, str], dict]:
        return {(f["rule"], node): f for f in report["findings"] for node in f["nodes"] or
                ["cluster"]}

    a, b = by_node(old), by_node(new)

    def row(key: tuple[str, str], f: dict) -> dict:
        return {"rule": key[0], "node": key[1], "fault": f["fault"], "severity": f["severity"],
                "root_cause": bool(f.get("root_cause")), "title": f["title"]}

    return {"appeared": [row(k, b[k]) for k in sorted(b.keys() - a.keys())],
            "gone": [row(k, a[k]) for k in sorted(a.keys() - b.keys())]}


class ChangeIndex:
    """The changes of a comparison by node and kind, to find the one about a given fact: what
    a report shows next to a finding's evidence."""

    def __init__(self, diff: dict | None) -> None:
        self._by: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for c in (diff or {}).get("facts") or []:
            self._by[(c["node"], c["kind"])].append(c)

    def of(self, fact: dict) -> dict | None:
        """The change about this fact ({kind, node, attrs}, as a finding's evidence has it)."""
        attrs = fact.get("attrs") or {}
        for c in self._by.get((fact.get("node"), fact.get("kind")), ()):
            if all(attrs.get(k) == v for k, v in c["key"].items()):
                return c
        return None
