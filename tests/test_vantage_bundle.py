"""Issue 15's own case, recorded from the lab: node3 drops inbound VXLAN in a netdev ingress
table. Before the vantage facts the report had a CRITICAL "CoreDNS pod does not answer" root
cause on node1 (only node3 had failed to reach it; node1 and node2 had answers) and "pods on
node1, node2, node3 cannot reach pods on node1, node2, node3".

As recorded, the path walk reads the table and names it. With the table taken out of node3's
nftables output, it stands for a hook nothing the diagnoser reads shows (an XDP program, a
security agent's kernel module): the report must still name node3 alone and say that the walk
of node3 found nothing that stops the traffic."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from kubenetdiag.cli import main

BUNDLE = Path(__file__).parent / "fixtures" / "bundles" / "lab-netdev-vxlan-drop"
ALARM = ("critical", "error", "warning")


def _analyze(bundle: Path) -> tuple[dict, list[dict]]:
    out = bundle.parent / "r.json"
    assert main(["analyze", str(bundle), "--format", "json", "--report", str(out)]) == 1
    report = json.loads(out.read_text())
    return report, json.loads((bundle / "facts.json").read_text())["facts"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict]]:
    bundle = tmp_path_factory.mktemp("b") / BUNDLE.name
    shutil.copytree(BUNDLE, bundle)
    return _analyze(bundle)


@pytest.fixture(scope="module")
def hidden(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict]]:
    bundle = tmp_path_factory.mktemp("b") / BUNDLE.name
    shutil.copytree(BUNDLE, bundle)
    node3 = bundle / "nodes" / "node3.json"
    record = json.loads(node3.read_text())
    (section,) = [s for s in record["sections"] if s["probe"] == "nftables"]
    section["stdout"], n = re.subn(r"table netdev guard \{.*?\n\}\n", "", section["stdout"],
                                   flags=re.S)
    assert n == 1
    node3.write_text(json.dumps(record))
    return _analyze(bundle)


def alarms(report: dict) -> list[tuple[str, list[str]]]:
    return [(f["rule"], f["nodes"]) for f in report["findings"]
            if f["root_cause"] and f["severity"] in ALARM]


def test_as_recorded_the_walk_names_the_table_and_nothing_else_alarms(
        recorded: tuple[dict, list[dict]]) -> None:
    report, _ = recorded
    assert alarms(report) == [("vxlan-blocked-on-path", ["node3"])]
    pods = [f for f in report["findings"] if f["fault"] == "pod_cross_node_broken"]
    assert [(f["rule"], f["nodes"]) for f in pods] == [("pod-node-cut-off-explained", ["node3"])]


def test_a_hook_nothing_reads_still_names_node3_alone(hidden: tuple[dict, list[dict]]) -> None:
    report, _ = hidden
    assert alarms(report) == [("pod-node-cut-off-walk-clean", ["node3"])]
    (f,) = [f for f in report["findings"] if f["rule"] == "pod-node-cut-off-walk-clean"]
    assert f["title"].startswith(
        "Pods on node3 are cut off from pods on every other node (both); the walk of node3's "
        "configuration found nothing that stops this traffic")
    assert "(node1, node2)" in f["explain"]
    assert "the walk does not follow (the arp family), tc or XDP" in f["explain"]


@pytest.mark.parametrize("case", ["recorded", "hidden"])
def test_coredns_is_not_blamed_and_the_dns_failures_are_node3s(
        case: str, request: pytest.FixtureRequest) -> None:
    report, facts = request.getfixturevalue(case)
    assert not [f for f in report["findings"] if f["fault"] == "coredns_unreachable"]
    rest = [f for f in report["findings"] if f["severity"] not in ALARM]
    assert {f["fault"] for f in rest} >= {"dns_resolution_failed", "endpoint_unreachable"}
    assert all(f["nodes"] == ["node3"] and not f["root_cause"] for f in rest)
    # CoreDNS on node1 answered node1 and node2: node3's failure is node3's
    dns = [f["attrs"] for f in facts if f["kind"] == "target_failure"
           and f["attrs"]["target"] == "10.244.1.3"]
    assert [(a["src"], a["host"], a["localized"], a["answering"]) for a in dns] == [
        ("node3", "node1", "vantage_cut_off", "node1, node2")]
    assert [(f["node"], f["attrs"]["layer"], f["attrs"]["direction"]) for f in facts
            if f["kind"] == "cut_off"] == [("node3", "pod", "both")]
    assert not [f for f in facts if f["kind"] == "reach_pair"]
