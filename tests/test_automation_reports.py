"""Reports for automation: JUnit XML for CI gates, Prometheus text for node-exporter's textfile
collector. Made from the shipped example bundle (three faults, one node not reached)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kubenetdiag.engine import load_ruleset
from kubenetdiag.reports import render

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "bundles" / "lab-three-faults"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("r") / "report.json"
    proc = subprocess.run([sys.executable, "-m", "kubenetdiag", "analyze", str(EXAMPLE),
                           "--report", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    return json.loads(out.read_text())


def _cases(xml: str) -> dict[tuple[str, str], ET.Element]:
    root = ET.fromstring(xml)
    return {(suite.get("name"), case.get("name")): case
            for suite in root.iter("testsuite") for case in suite.iter("testcase")}


def test_junit_fails_each_fault_on_its_node_and_skips_the_node_not_reached(report):
    rules = load_ruleset().rules
    xml = render(report, "junit", rules=rules)
    cases = _cases(xml)
    reporting = {r.id for r in rules if r.fault}
    assert {rule for node, rule in cases if node == "node1"} == reporting
    failed = sorted((node, rule) for (node, rule), c in cases.items()
                    if c.find("failure") is not None)
    assert failed == [("node1", "forward-chain-reject"), ("node2", "ip-forward-disabled"),
                      ("node3", "node-unreachable")]
    failure = cases[("node2", "ip-forward-disabled")].find("failure")
    assert failure.get("type") == "ip_forward_disabled"
    assert "net.ipv4.ip_forward" in failure.text  # the evidence, from that node
    # node3 could not be reached: every other rule there is skipped, saying why
    node3 = [c for (node, rule), c in cases.items() if node == "node3"
             and rule != "node-unreachable"]
    assert node3 and all("not reached" in c.find("skipped").get("message") for c in node3)
    root = ET.fromstring(xml)
    assert int(root.get("failures")) == 3
    assert int(root.get("tests")) == 3 * len(reporting)


def test_junit_stays_valid_xml_whatever_a_node_printed(report):
    hostile = copy.deepcopy(report)
    hostile["findings"][0]["title"] = "bad \x1b[31m\x00 </failure><x> & \"q\" \ud800"
    hostile["nodes"][0]["name"] = "node1\x07<evil>"
    hostile["findings"][0]["nodes"] = ["node1\x07<evil>"]
    xml = render(hostile, "junit", rules=load_ruleset().rules)
    names = {node for node, _ in _cases(xml)}
    assert "node1\ufffd<evil>" in names  # kept as text, the control character replaced
    assert "\x1b" not in xml and "\x00" not in xml


def _metrics(text: str) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_prometheus_counts_findings_nodes_and_exit_code(report):
    m = _metrics(render(report, "prometheus"))
    roots = {(s.labels["fault"], s.labels["node"]) for s in m["kubenetdiag_finding"]
             if s.labels["root_cause"] == "true" and s.labels["severity"] != "info"}
    assert roots == {("forward_chain_reject", "node1"), ("ip_forward_disabled", "node2"),
                     ("node_unreachable", "node3")}
    nodes = {s.labels["state"]: s.value for s in m["kubenetdiag_nodes"]}
    assert nodes == {"reached": 2, "not_reached": 1}
    assert [s.value for s in m["kubenetdiag_exit_code"]] == [1]
    assert sum(s.value for s in m["kubenetdiag_findings"]) == report["summary"]["findings"]
    assert m["kubenetdiag_run_duration_seconds"][0].value > 0
    missing = {s.labels["node"] for s in m["kubenetdiag_not_checked"]}
    assert missing == {e["node"] for e in report["not_checked"]}


def test_prometheus_quotes_label_values_from_nodes(report):
    hostile = copy.deepcopy(report)
    hostile["findings"][0]["nodes"] = ['n"1\\\n} evil 1']
    m = _metrics(render(hostile, "prometheus"))
    assert 'n"1\\\n} evil 1' in {s.labels["node"] for s in m["kubenetdiag_finding"]}
    assert "evil" not in m  # no metric was injected


def test_the_report_suffix_picks_the_format(tmp_path):
    xml, prom = tmp_path / "results.xml", tmp_path / "kubenetdiag.prom"
    proc = subprocess.run([sys.executable, "-m", "kubenetdiag", "analyze", str(EXAMPLE),
                           "--report", str(xml), "--report", str(prom), "--format",
                           "prometheus"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert ET.fromstring(xml.read_text()).tag == "testsuites"
    assert "kubenetdiag_finding{" in prom.read_text()
    assert proc.stdout == prom.read_text()
