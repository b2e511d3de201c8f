"""Active probes against the lab: real pings, DNS, HTTP, TCP and tcpdump over real SSH."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from kubenetdiag.bundle import read_bundle, read_cluster
from kubenetdiag.engine import infer, load_ruleset
from kubenetdiag.facts.model import Fact
from kubenetdiag.facts.parse import facts_from_records
from kubenetdiag.vocabulary import ALARMING
from kubenetdiag_lab import Lab

pytestmark = pytest.mark.lab

ENDPOINTS = ["203.0.113.10:3306", "mysql.kubenetdiag-lab.invalid:3306"]


def collect(lab: Lab, tmp: Path) -> list[Fact]:
    inv = yaml.safe_load(lab.inventory_path.read_text())
    inv["all"]["vars"]["kubenetdiag_endpoints"] = ENDPOINTS
    path = tmp / "hosts.yaml"
    path.write_text(yaml.safe_dump(inv))
    out = tmp / "bundle"
    cp = lab.client_exec([sys.executable, "-m", "kubenetdiag", "collect", "--active", "-q",
                          "-i", str(path), "--kubeconfig", str(lab.kubeconfig_path),
                          "-o", str(out)], timeout=120)
    assert cp.returncode == 0, cp.stderr
    _, records = read_bundle(out)
    for rec in records:  # every node's active phase stays well under its budget
        assert rec["active"]["duration_s"] < 15, rec["active"]
    return facts_from_records(records, read_cluster(out))


def of(facts: list[Fact], kind: str, **match: object) -> list[Fact]:
    return [f for f in facts if f.kind == kind and
            all(f.attrs.get(k) == v for k, v in match.items())]


@pytest.mark.parametrize("which", ["lab", "hostgw_lab", "calico_lab"])
def test_healthy_lab_matrix_dns_and_endpoints(which: str, request: pytest.FixtureRequest,
                                              tmp_path: Path) -> None:
    lab: Lab = request.getfixturevalue(which)
    facts = collect(lab, tmp_path)
    api_nodes = {f.node for f in of(facts, "k8s_node")}
    assert api_nodes == {n.name for n in lab.nodes}
    reach = of(facts, "reach")
    bad = [f.to_dict() for f in reach if not f.attrs["ok"]]
    assert not bad, bad
    for node in api_nodes:  # the matrix covers every pair the API names, both layers
        for layer in ("pod", "underlay"):
            got = {f.attrs["dst"] for f in of(facts, "reach", src=node, layer=layer,
                                               vantage=None)}
            assert got == api_nodes - {node}, (node, layer)
    assert of(facts, "reach", layer="pod", vantage=f"cni-client-{lab.nodes[0].name}-1")
    dns = of(facts, "dns_check")
    assert {f.attrs["server_kind"] for f in dns} == {"pod", "service"}
    assert all(f.attrs["ok"] and f.attrs["answer"] == "10.96.0.1" for f in dns), dns
    http = of(facts, "http_check")
    assert len(http) == len(lab.nodes) and all(f.attrs["status"] == 200 for f in http)
    assert all(f.attrs["ok"] for f in of(facts, "mtu_check"))
    # docs/runbooks.md#runbook-002: the IP answers, the name does not resolve, from the node
    # and from the pod
    by_ip = of(facts, "tcp_check", by="ip")
    by_name = of(facts, "tcp_check", by="name")
    assert len(by_ip) == 2 * len(lab.nodes) and all(f.attrs["ok"] for f in by_ip)
    assert len(by_name) == 2 * len(lab.nodes)
    assert all(not f.attrs["ok"] and f.attrs["detail"] == "unresolved" for f in by_name)
    if lab.cni == "flannel-vxlan":
        flows = of(facts, "vxlan_flow")
        assert len(flows) == len(lab.nodes) and all(
            f.attrs["sent"] > 0 and f.attrs["received"] > 0 for f in flows), flows


def test_mtu_mismatch_fails_at_the_full_size(lab: Lab, tmp_path: Path) -> None:
    with lab.injected("mtu_mismatch", "node2"):
        facts = collect(lab, tmp_path)
    big = of(facts, "mtu_check", dst="node2", layer="underlay", size=1472)
    assert big and not big[0].attrs["ok"]
    # node2 plans from its own (lowered) MTU: 1400 - 28, which fits its own link
    assert [f.attrs["size"] for f in of(facts, "mtu_check", layer="underlay")
            if f.node == "node2"] == [1372]
    assert all(f.attrs["ok"] for f in of(facts, "reach", layer="underlay"))


def test_coredns_unreachable_fails_dns_everywhere_but_pings_pass(lab: Lab, tmp_path: Path
                                                                 ) -> None:
    with lab.injected("coredns_unreachable"):
        facts = collect(lab, tmp_path)
    dns = of(facts, "dns_check")
    assert {f.node for f in dns} == {n.name for n in lab.nodes}
    assert dns and not any(f.attrs["ok"] for f in dns), [f.attrs for f in dns]
    assert all(f.attrs["ok"] for f in of(facts, "reach"))


def test_vxlan_blocked_on_the_switch_and_a_drop_rule_behind_it_that_matched_nothing(
        lab: Lab, tmp_path: Path) -> None:
    # VXLAN toward node2 is lost on the switch, before node2: the DROP of VXLAN in node2's own
    # INPUT is on the walk's path of the tunnel, but none of the checks' packets reach it
    spec = ["INPUT", "-p", "udp", "-m", "udp", "--dport", "8472", "-j", "DROP"]
    with lab.injected("vxlan_udp_blocked", "node2", {"via": "switch"}):
        lab.node_exec("node2", ["iptables", "-I", spec[0], "1", *spec[1:]])
        try:
            facts = collect(lab, tmp_path)
        finally:
            lab.node_exec("node2", ["iptables", "-D", *spec])
    # the checks see the block: pods cut, nodes fine, node2's VXLAN goes out and none comes in
    pod = of(facts, "reach", src="node1", dst="node2", layer="pod", vantage=None)
    assert pod and not pod[0].attrs["ok"]
    assert of(facts, "reach", src="node1", dst="node2", layer="underlay")[0].attrs["ok"]
    at2 = [f for f in of(facts, "vxlan_flow", peer="node1") if f.node == "node2"]
    assert at2 and at2[0].attrs["sent"] > 0 and at2[0].attrs["received"] == 0, at2
    at1 = [f for f in of(facts, "vxlan_flow", peer="node2") if f.node == "node1"]
    assert at1[0].attrs["sent"] > 0
    tunnel = [f for f in of(facts, "path", flow="overlay_in", chain="INPUT") if f.node == "node2"]
    assert tunnel and {(f.attrs["pkts"], f.attrs["pkts_after"], f.attrs["matched"])
                       for f in tunnel} == {(0, 0, "never")}, [f.attrs for f in tunnel]
    found = infer(load_ruleset(), facts)
    roots = {(f["rule"], tuple(f["nodes"])) for f in found
             if f["root_cause"] and f["severity"] in ALARMING}
    # the capture's finding (sent, never received) is the cause, not the rule
    assert ("vxlan-inbound-never-arrives", ("node2",)) in roots, roots
    assert "vxlan-blocked-on-path" not in {r for r, _ in roots}, roots
    assert [f["nodes"] for f in found if f["rule"] == "drop-rule-on-path-never-matched"] == [
        ["node2"]]


def test_a_drop_rule_that_stops_the_tunnel_counts_the_checks_packets(lab: Lab, tmp_path: Path
                                                                      ) -> None:
    with lab.injected("vxlan_udp_blocked", "node2", {"via": "input"}):
        facts = collect(lab, tmp_path)
    tunnel = [f for f in of(facts, "path", flow="overlay_in") if f.node == "node2"]
    assert tunnel and all(f.attrs["matched"] == "seen" and f.attrs["pkts_after"] > 0
                          for f in tunnel), [f.attrs for f in tunnel]
