"""The path walk fed with what the probes of issue 15 made of real outputs (their recorded
fixtures), not with facts written by hand: the two sides agree on what each attribute holds."""

from __future__ import annotations

from kubenetdiag.facts.model import Fact
from kubenetdiag.facts.paths import path_facts
from kubenetdiag.probes import BY_NAME, Section
from probe_sections import section
from test_paths import cluster, node, stops, walk_of


def recorded(probe: str, name: str, on: str = "n2") -> list[Fact]:
    return [f for f in BY_NAME[probe].parse(section(probe, name), on) if f.kind != "probe_status"]


def rules_from_text(text: str, on: str = "n2") -> list[Fact]:
    return BY_NAME["ip_rule"].parse(Section("ip_rule", "", 0, 0, text, ""), on)


def test_a_recorded_blackhole_rule_stops_pod_traffic_to_its_node():
    # CentOS 7's text: `100: from all to 10.244.2.0/24 blackhole`, n2's own pod CIDR
    facts = cluster(*recorded("ip_rule", "centos7-iproute-3.10-text"))
    got = stops(facts, "n2", "pod_in")
    assert got and all(s["verdict"] == "drop" and s["stage"] == "policy" for s in got)
    assert "10.244.2.0/24 blackhole" in got[0]["at"]
    assert not stops(facts, "n2", "overlay_in")  # addressed to the node: the local table


def test_a_goto_skips_the_rules_before_its_target():
    rules = ("##knd:rule text\n0:\tfrom all lookup local\n50:\tfrom all goto 32766\n"
             "100:\tfrom all to 10.244.2.0/24 blackhole\n32766:\tfrom all lookup main\n"
             "32767:\tfrom all lookup default\n")
    assert not stops(cluster(*rules_from_text(rules)), "n2")
    # without the goto, the blackhole is reached
    assert stops(cluster(*rules_from_text(rules.replace("50:\tfrom all goto 32766\n", ""))),
                 "n2", "pod_in")


def test_recorded_regular_nft_chains_are_followed_and_decided():
    # inet guard: input jumps to overlay (drops VXLAN from outside 198.18.0.0/24, goes to
    # peers for BGP), forward goes to pods; every match there is decidable for the cluster's
    # flows, and none of them stops one
    facts = cluster(*recorded("nftables", "nft-1.0.6-regular-chains"))
    assert not stops(facts, "n2")
    outsider = [f for f in facts if not f.kind.startswith("path")]
    for f in outsider:  # the same table on a node whose peers are outside that network
        if f.kind == "nft_rule" and f.attrs["chain"] == "overlay" and f.attrs["position"] == 1:
            f.attrs["text"] = f.attrs["text"].replace("198.18.0.0/24", "198.18.9.0/24")
    outsider += path_facts(outsider)
    got = stops(outsider, "n2", "overlay_in")
    assert got and got[0]["at"] == "inet guard overlay rule 1" and got[0]["verdict"] == "drop"


def test_a_recorded_arptables_rule_cuts_the_node_from_that_peer_alone():
    # the lab's arptables-nft rule on n2 for n3's address (198.18.0.13), beside the real
    # kube-proxy's and flannel's iptables-nft tables, which pass everything
    facts = cluster(*recorded("nftables", "arptables-nft-1.8.9-lab"))
    got = stops(facts, "n2")
    assert {(s["flow"], s["peer"], s["stage"]) for s in got} == {
        (flow, "n3", "arp") for flow in ("node_in", "node_out", "overlay_in", "overlay_out")}
    assert got[0]["undo"] == "nft delete rule arp filter INPUT handle 2"


def test_a_recorded_lvs_real_servers_arptables_rules_stop_nothing():
    # ARP for the balancer's virtual address dropped, and rewritten from it: no node's
    facts = cluster(*recorded("nftables", "arptables-nft-1.8.9-lvs-dr-lab"))
    assert not stops(facts, "n2")


def test_recorded_tc_hooks_and_xdp_are_what_the_walk_cannot_see():
    xdp = {f.attrs["name"]: f.attrs["xdp"] for f in recorded("links", "iproute2-6.1-xdp")}
    facts = [f for f in node("n1") + node("n2") + node("n3")]
    for f in facts:
        if f.kind == "interface" and f.node == "n2" and f.attrs["name"] == "eth0":
            f.attrs["xdp"] = xdp["eth0"]
    facts += recorded("tc", "iproute2-6.1-netns")
    facts += path_facts(facts)
    altered = walk_of(facts, "n2")["altered_by"]
    assert "XDP program (generic prog 99 name knd_guard)" in altered
    assert "tc ingress filters (u32,mirred)" in altered
    assert walk_of(facts, "n1")["altered_by"] is None
