"""The report as JUnit XML, for CI systems that gate on test results (as they gate on
kube-bench's and Popeye's): one test suite per node, one test case per reporting rule.

A case fails when the rule found something of severity warning or above on the node, is
skipped when the rule could not be evaluated there (the node was not reached, or a probe it
reads gave no answer), and passes otherwise; an info finding passes with its text as output.
Findings that name no node (the cluster's own) go to a suite called `cluster`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from kubenetdiag.engine.model import Rule
from kubenetdiag.findings.schema import validate_report
from kubenetdiag.reports.changes_view import fact_line

ALARM = ("critical", "error", "warning")
CLUSTER = "cluster"
# XML 1.0 has no way to write these, even escaped: node output may hold them
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _text(value: object) -> str:
    return _NOT_XML.sub("\ufffd", str(value))


def _details(finding: dict, node: str) -> str:
    """The finding's title, explanation, the evidence from this node (or from no node: the
    API's) and the remedies."""
    lines = [finding["title"], "", finding.get("explain") or ""]
    for e in finding.get("evidence") or []:
        if e.get("node") not in (node, None, CLUSTER):
            continue
        source = e.get("source") or {}
        attrs = " ".join(f"{k}={v}" for k, v in (e.get("attrs") or {}).items()
                         if v not in (None, ""))
        lines.append(f"evidence {e.get('node') or CLUSTER} {e['kind']}: {attrs} "
                     f"(from: {source.get('command') or source.get('probe') or '?'})")
    for r in finding.get("remediation") or []:
        lines.append(f"remedy: {r.get('text') or ''}"
                     + (f"\n    {r['command']}" if r.get("command") else ""))
    return _text("\n".join(lines))


def render_junit(report: dict, rules: Sequence[Rule], *, validated: bool = False) -> str:
    if not validated:
        validate_report(report)
    reporting = sorted((r for r in rules if r.fault), key=lambda r: r.id)
    fired: dict[tuple[str, str], list[dict]] = {}
    for f in report["findings"]:
        for node in f["nodes"] or [CLUSTER]:
            fired.setdefault((f["rule"], node), []).append(f)
    skipped = {(e["rule"], node) for e in report.get("not_evaluated") or []
               for node in e["nodes"]}
    unreached = {n["name"]: "; ".join(n.get("errors") or []) or "not reached"
                 for n in report["nodes"] if not n["reachable"]}
    nodes = [n["name"] for n in report["nodes"]]
    if any(node == CLUSTER for _, node in fired):
        nodes.append(CLUSTER)
    changed: dict[str, list[str]] | None = None
    if report.get("changes") is not None:
        changed = {}
        for c in report["changes"]["facts"]:
            changed.setdefault(c["node"], []).append(fact_line(c))
    run = report.get("run") or {}
    root = ET.Element("testsuites", name="kubenetdiag", timestamp=_text(run.get("started_at")
                                                                        or ""))
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    for node in nodes:
        suite = ET.SubElement(root, "testsuite", name=_text(node))
        counts = {"tests": 0, "failures": 0, "skipped": 0}
        for rule in reporting:
            if node == CLUSTER and (rule.id, node) not in fired:
                continue
            case = ET.SubElement(suite, "testcase", name=_text(rule.id),
                                 classname=_text(f"kubenetdiag.{node}"))
            counts["tests"] += 1
            found = fired.get((rule.id, node), [])
            alarms = [f for f in found if f["severity"] in ALARM]
            if alarms:
                worst = alarms[0]
                failure = ET.SubElement(case, "failure", type=_text(worst["fault"]),
                                        message=_text(f"{worst['severity']}: {worst['title']}"))
                failure.text = "\n\n".join(_details(f, node) for f in alarms)
                counts["failures"] += 1
            elif node in unreached:
                ET.SubElement(case, "skipped", message=_text(f"node not reached: "
                                                             f"{unreached[node]}"))
                counts["skipped"] += 1
            elif (rule.id, node) in skipped:
                ET.SubElement(case, "skipped", message="not evaluated: a probe it reads gave "
                                                       "no answer on this node")
                counts["skipped"] += 1
            elif found:
                ET.SubElement(case, "system-out").text = "\n\n".join(_details(f, node)
                                                                      for f in found)
        if changed is not None and changed.get(node):
            # with --baseline: what changed on this node since, beside its test cases
            ET.SubElement(suite, "system-out").text = _text(
                "changed since the baseline:\n" + "\n".join(changed[node]))
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
