"""Issue 15's own case, recorded from the lab: node3 drops inbound VXLAN in a netdev ingress
table, which neither the rules nor the path walk read. Before the vantage facts the report had a
CRITICAL "CoreDNS pod does not answer" root cause on node1 (only node3 had failed to reach it)
and "pods on node1, node2, node3 cannot reach pods on node1, node2, node3"."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kubenetdiag.cli import main

BUNDLE = Path(__file__).parent / "fixtures" / "bundles" / "lab-netdev-vxlan-drop"
ALARM = ("critical", "error", "warning")


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict]]:
    bundle = tmp_path_factory.mktemp("b") / BUNDLE.name
    shutil.copytree(BUNDLE, bundle)
    assert main(["analyze", str(bundle), "--format", "json", "--report",
                 str(bundle / "r.json")]) == 1
    report = json.loads((bundle / "r.json").read_text())
    facts = json.loads((bundle / "facts.json").read_text())["facts"]
    return report, facts


def test_the_cut_off_node_is_the_one_root_cause(analyzed: tuple[dict, list[dict]]) -> None:
    report, _ = analyzed
    alarms = [(f["rule"], f["nodes"]) for f in report["findings"]
              if f["root_cause"] and f["severity"] in ALARM]
    assert alarms == [("pod-node-cut-off-walk-clean", ["node3"])]
    (f,) = [f for f in report["findings"] if f["rule"] == "pod-node-cut-off-walk-clean"]
    assert f["title"].startswith(
        "Pods on node3 are cut off from pods on every other node (both); the walk of node3's "
        "configuration found nothing that stops this traffic")
    assert "node1, node2" in f["explain"] and "netdev or bridge family" in f["explain"]


def test_coredns_is_not_blamed_and_the_dns_failures_are_node3s(
        analyzed: tuple[dict, list[dict]]) -> None:
    report, _ = analyzed
    assert not [f for f in report["findings"] if f["fault"] == "coredns_unreachable"]
    consequences = [f for f in report["findings"] if f["rule"] != "pod-node-cut-off-walk-clean"]
    assert consequences and all(
        f["nodes"] == ["node3"] and not f["root_cause"] and f["severity"] == "info"
        and "pod-node-cut-off-walk-clean" in f["explained_by"] for f in consequences)
    assert {f["fault"] for f in consequences} == {"dns_resolution_failed", "endpoint_unreachable"}


def test_the_facts_say_why(analyzed: tuple[dict, list[dict]]) -> None:
    _, facts = analyzed
    cut = [(f["node"], f["attrs"]["layer"], f["attrs"]["direction"]) for f in facts
           if f["kind"] == "cut_off"]
    assert cut == [("node3", "pod", "both")]
    assert not [f for f in facts if f["kind"] == "reach_pair"]
    # CoreDNS on node1 answered node1 and node2: node3's failure is node3's
    dns = [f["attrs"] for f in facts if f["kind"] == "target_failure"
           and f["attrs"]["target"] == "10.244.1.3"]
    assert [(a["src"], a["host"], a["localized"], a["answering"]) for a in dns] == [
        ("node3", "node1", "vantage_cut_off", "node1, node2")]
