"""Assemble the report: findings from the engine plus what was and was not checked.

This is the findings contract (docs/contracts.md) that `--format json` prints and every
renderer reads. It decides the exit code, so it lives in one place.
"""

from __future__ import annotations

from collections.abc import Sequence

from kubenetdiag import __version__
from kubenetdiag.engine.model import PLACEHOLDER_RE, Rule
from kubenetdiag.engine.needs import rule_needs
from kubenetdiag.errors import EXIT_ALL_FAILED, EXIT_FINDINGS, EXIT_OK
from kubenetdiag.facts.model import Fact, by_kind
from kubenetdiag.facts.producers import ALL_PROBES, API, blocked_kinds
from kubenetdiag.vocabulary import ALARMING, SEVERITIES

from .schema import validate_report

REPORT_SCHEMA = "kubenetdiag/report/v1"


# Matrix layers in the order a reader narrows a fault down: pods first (what users feel), then
# the node addresses under them, then the overlay or routing that carries pod traffic.
REACH_LAYERS = ("pod", "underlay", "vxlan", "bgp")


def exit_code(nodes: list[dict], findings: list[dict]) -> int:
    if nodes and not any(n["reachable"] for n in nodes):
        return EXIT_ALL_FAILED
    if any(f["severity"] in ALARMING for f in findings):
        return EXIT_FINDINGS
    return EXIT_OK


# Failed pairs whose details the report keeps; the matrix still has every pair. A cluster-wide
# outage at 500 nodes would otherwise put 250,000 entries into report.json.
FAILED_DETAILS_MAX = 1000
MATRIX_OK, MATRIX_FAILED, MATRIX_UNMEASURED = "1", "0", "."


def connectivity(facts: list[Fact], node_names: list[str]) -> dict:
    """The node x node matrix from `reach` facts: axis order, and per layer one string per row.

    Rows are strings ("1" answered, "0" failed, "." not measured) rather than one object per
    pair: at 500 nodes a layer has 249,500 pairs, which as objects made report.json tens of
    megabytes and its validation take seconds. What a failed probe saw is kept beside it.

    Inventory order first, so the picture lines up with the nodes table; a target that is not in
    the inventory still gets a row and a column rather than being dropped. No reach fact gives
    no layer at all: the matrix was not measured, which renderers must not show as healthy.
    """
    order = list(node_names)
    index = {n: i for i, n in enumerate(order)}
    seen: dict[str, dict[tuple[int, int], Fact]] = {}
    for f in facts:
        if f.kind != "reach":
            continue
        src = str(f.attrs.get("src") or f.node)
        dst = str(f.attrs["dst"])
        for name in (src, dst):
            if name not in index:
                index[name] = len(order)
                order.append(name)
        pairs = seen.setdefault(str(f.attrs["layer"]), {})
        key = (index[src], index[dst])
        # Repeated probes of one pair: a failure is kept over a success, since one lost answer
        # is evidence and a later success does not make it go away.
        if key not in pairs or (pairs[key].attrs["ok"] and not f.attrs["ok"]):
            pairs[key] = f
    if not seen:
        return {"nodes": [], "layers": []}
    layers = []
    for layer in sorted(
        seen, key=lambda la: (REACH_LAYERS.index(la) if la in REACH_LAYERS else 99, la)
    ):
        rows = [[MATRIX_UNMEASURED] * len(order) for _ in order]
        failed = []
        for (i, j), f in sorted(seen[layer].items()):
            ok = bool(f.attrs["ok"])
            rows[i][j] = MATRIX_OK if ok else MATRIX_FAILED
            if not ok and len(failed) < FAILED_DETAILS_MAX:
                failed.append({"src": order[i], "dst": order[j], "rtt_ms": f.attrs.get("rtt_ms"),
                               "detail": f.attrs.get("detail")})
        layers.append({"layer": layer, "matrix": ["".join(r) for r in rows], "failed": failed})
    return {"nodes": order, "layers": layers}


def _bare_title(text: str) -> str:
    """A rule's title where it did not run: no value is known, so each `{name}` says what
    would have gone there, as `<name>`."""
    return PLACEHOLDER_RE.sub(lambda m: f"<{m.group(1)}>", text)


def not_evaluated(
    not_checked: list[dict], rules: Sequence[Rule], findings: list[dict]
) -> list[dict]:
    """Fill each not-checked entry's `rules` with the ids of the reporting rules it left
    unevaluated on its node, and return those rules, each with the nodes where that happened.

    A rule is not evaluated on a node when a fact kind it needs (engine.needs) is one the
    entry's probe would have given there (facts.producers): its silence there is not "healthy".
    A rule that fired on that node was evaluated; it is not listed there.
    """
    reporting = [r for r in rules if r.fault]
    needs = rule_needs(rules)
    fired = {(f["rule"], n) for f in findings for n in f["nodes"]}
    # rule id -> its nodes, in order (a dict as an ordered set: 5,000 nodes per rule)
    where: dict[str, dict[str, None]] = {}
    blocks: dict[tuple[str, str | None], list[str]] = {}
    for entry in not_checked:
        key = (entry["probe"], entry.pop("kinds", None))
        if key not in blocks:  # the same probe on every node: judged once
            blocked = blocked_kinds(*key)
            blocks[key] = [r.id for r in reporting if needs[r.id] & blocked]
        node = entry["node"]
        ids = [rule_id for rule_id in blocks[key] if (rule_id, node) not in fired]
        entry["rules"] = ids
        for rule_id in ids:
            where.setdefault(rule_id, {})[node] = None
    out = []
    for r in reporting:
        if r.id not in where:
            continue
        titles = r.texts.get("title", {})
        item = {
            "rule": r.id,
            "fault": r.fault,
            "title": _bare_title(titles.get("en") or r.title),
            "nodes": list(where[r.id]),
            "i18n": {},
        }
        if "zh-CN" in titles:
            item["i18n"]["zh-CN"] = {"title": _bare_title(titles["zh-CN"])}
        out.append(item)
    return out


def build_report(
    meta: dict,
    records: list[dict],
    facts: list[Fact],
    findings: list[dict],
    *,
    rules_count: int,
    rules_digest: str,
    bundle: str | None,
    rules: Sequence[Rule] = (),
) -> dict:
    """The report of one run, checked against report.schema.json (ValueError if it breaks it).
    `rules`: the rules the run evaluated, to name those a missing answer left unevaluated."""
    picked = by_kind(facts, ("kernel", "probe_status", "cluster_api", "reach"))
    kernels = {f.node: f.attrs.get("release") for f in picked["kernel"]}
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
            "probe": ALL_PROBES,
            "status": "unreachable",
            "reason": r.get("error") or "not reached",
            "blocks": "every check on this node",
        }
        for r in records
        if not r["reachable"]
    ]
    not_checked += [
        {"node": f.node, **{k: f.attrs[k] for k in ("probe", "status", "reason", "blocks")},
         "kinds": f.attrs.get("kinds")}
        for f in picked["probe_status"]
    ]
    # Cluster checks that were never attempted are as unknown as failed ones: say so.
    not_checked += [
        {
            "node": "cluster",
            "probe": API,
            "status": "not_queried",
            "reason": f.attrs.get("reason") or "no kubeconfig given",
            "blocks": "cluster checks from the Kubernetes API (nodes, CNI and DNS pods, "
            "services and endpoints); pass --kubeconfig to include them",
        }
        for f in picked["cluster_api"]
        if not f.attrs.get("queried")
    ]
    unevaluated = not_evaluated(not_checked, rules, findings)
    by_sev = {s: sum(1 for f in findings if f["severity"] == s) for s in SEVERITIES}
    report = {
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
        "not_evaluated": unevaluated,
        "connectivity": connectivity(picked["reach"], [r["name"] for r in records]),
        "summary": {
            "nodes": len(nodes),
            "unreachable": sum(1 for n in nodes if not n["reachable"]),
            "findings": len(findings),
            "root_causes": sum(1 for f in findings if f["root_cause"]),
            "by_severity": by_sev,
            "exit_code": exit_code(nodes, findings),
        },
    }
    # Checked here, once per run, so that nothing is written from a report that breaks the
    # contract; renderers given this report can then skip their own check (validated=True).
    validate_report(report)
    return report
