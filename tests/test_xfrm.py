"""IPsec (xfrm) policies: the probe's parser on what ip prints (tests/fixtures/probes/xfrm),
and the path walk's lookup, which ends a flow at a block policy of its direction."""

from __future__ import annotations

from pathlib import Path

from kubenetdiag.facts.model import Fact
from kubenetdiag.probes.base import Section
from kubenetdiag.probes.xfrm import parse
from test_paths import cluster, f, stops

FIX = Path(__file__).parent / "fixtures" / "probes" / "xfrm"


def _parse(name: str) -> list[Fact]:
    return parse(Section("xfrm", "ip xfrm policy list", 0, 0.0, (FIX / name).read_text(), ""),
                 "n1")


def _policies(facts: list[Fact]) -> list[tuple]:
    return [(p.attrs["dir"], p.attrs["src"], p.attrs["dst"], p.attrs["action"],
             p.attrs["priority"], p.attrs["ipsec"]) for p in facts if p.kind == "xfrm_policy"]


def test_iproute2_6_1_every_selector_word_and_template():
    facts = _parse("iproute2-6.1-netns.txt")
    assert not [x for x in facts if x.kind == "probe_status"]
    assert _policies(facts) == [
        ("out", "::/0", "fd00::/64", "block", 0, False),
        ("out", "0.0.0.0/0", "10.96.0.0/12", "block", 20, False),
        ("out", "10.244.1.0/24", "10.244.3.0/24", "allow", 5, True),
        ("fwd", "10.244.1.0/24", "10.244.3.0/24", "allow", 5, True),
        ("in", "198.18.0.12/32", "198.18.0.11/32", "block", 10, False),
        ("out", "0.0.0.0/0", "10.244.2.0/24", "block", 0, False),
    ]
    marked = facts[1].attrs
    assert (marked["proto"], marked["dport"], marked["dev"], marked["mark"]) == (
        "tcp", 443, "lo", "0x1/0xffffffff")
    vxlan = facts[4].attrs
    assert (vxlan["proto"], vxlan["dport"], vxlan["mark"], vxlan["main"]) == (
        "udp", 8472, None, True)
    assert facts[5].source is not None and "action block" in facts[5].source.excerpt


def test_strongswan_socket_policies_are_left_out():
    facts = _parse("strongswan-socket-policies.txt")
    assert not [x for x in facts if x.kind == "probe_status"]
    assert [p[0] for p in _policies(facts)] == ["out", "fwd", "in"]
    assert all(p[3] == "allow" and p[5] for p in _policies(facts))


def test_centos7_iproute_without_ptype_and_a_large_priority():
    assert _policies(_parse("centos7-iproute-3.10.txt")) == [
        ("in", "10.244.3.0/24", "10.244.1.0/24", "allow", 2147483648, True),
        ("out", "0.0.0.0/0", "10.244.3.0/24", "block", 0, False),
    ]


def test_no_policy_gives_no_fact_and_no_complaint():
    assert _parse("lab-healthy-empty.txt") == []


def test_lines_in_another_form_are_partial_not_guessed():
    facts = _parse("odd-lines.txt")
    [status] = [x for x in facts if x.kind == "probe_status"]
    assert status.attrs["status"] == "partial" and status.attrs["kinds"] == ""
    assert "secctx" in status.attrs["reason"] and "weird" in status.attrs["reason"]
    # the policy whose other lines were read stands; the one with an unknown action does not
    assert _policies(facts) == [("out", "0.0.0.0/0", "10.244.2.0/24", "block", 0, False)]


def policy(node: str, direction: str, src: str, dst: str, action: str = "block",
           priority: int = 0, **extra) -> Fact:
    attrs = {"dir": direction, "src": src, "dst": dst, "proto": None, "sport": None,
             "dport": None, "dev": None, "action": action, "priority": priority,
             "ipsec": False, "mark": None, "main": True,
             "text": f"src {src} dst {dst} dir {direction} action {action}"}
    attrs.update(extra)
    return f("xfrm_policy", node, **attrs)


def test_a_block_policy_out_stops_the_nodes_pods_toward_one_peer():
    facts = cluster(policy("n2", "out", "0.0.0.0/0", "10.244.3.0/24"))
    got = stops(facts, "n2", "pod_out")
    assert {s["peer"] for s in got} == {"n3"}
    assert (got[0]["stage"], got[0]["verdict"]) == ("xfrm", "drop")
    assert got[0]["undo"] == "ip xfrm policy delete dir out src 0.0.0.0/0 dst 10.244.3.0/24"
    # the other direction, and the other peer, pass
    assert not stops(facts, "n2", "pod_in") and not stops(facts, "n3")


def test_fwd_and_in_policies_meet_forwarded_and_delivered_traffic():
    fwd = cluster(policy("n2", "fwd", "10.244.1.0/24", "0.0.0.0/0"))
    assert {(s["flow"], s["peer"]) for s in stops(fwd, "n2")} == {("pod_in", "n1")}
    inbound = cluster(policy("n2", "in", "198.18.0.11/32", "198.18.0.12/32", proto="udp",
                             dport=8472))
    assert {(s["flow"], s["peer"], s["stage"]) for s in stops(inbound, "n2")} == {
        ("overlay_in", "n1", "xfrm")}


def test_the_lowest_priority_decides_and_a_tie_is_not_guessed():
    allowed = cluster(policy("n2", "out", "0.0.0.0/0", "10.244.3.0/24", priority=10),
                      policy("n2", "out", "10.244.0.0/16", "10.244.0.0/16", "allow", 5))
    assert not stops(allowed, "n2")
    tie = cluster(policy("n2", "out", "0.0.0.0/0", "10.244.3.0/24", priority=5),
                  policy("n2", "out", "10.244.0.0/16", "10.244.0.0/16", "allow", 5))
    got = stops(tie, "n2", "pod_out")
    assert got and {(s["verdict"], s["stage"], s["peer"]) for s in got} == {
        ("unknown", "xfrm", "n3")}


def test_policies_limited_to_a_mark_or_another_selector_are_left_out():
    facts = cluster(policy("n2", "out", "0.0.0.0/0", "10.244.3.0/24", mark="0x1/0xffffffff"),
                    policy("n2", "out", "0.0.0.0/0", "10.244.3.0/24", proto="tcp", dport=443),
                    policy("n2", "out", "::/0", "fd00::/64"))
    assert not stops(facts, "n2")


def test_a_device_selector_is_the_routes_device():
    """The kernel compares a selector's device with the device of the packet's route: for a
    pod's packet to a peer's pod on VXLAN, flannel.1, not the node's NIC."""
    on_overlay = cluster(policy("n2", "out", "0.0.0.0/0", "10.244.3.0/24", dev="flannel.1"))
    assert {s["peer"] for s in stops(on_overlay, "n2", "pod_out")} == {"n3"}
    on_nic = cluster(policy("n2", "out", "0.0.0.0/0", "10.244.3.0/24", dev="eth0"))
    assert not stops(on_nic, "n2")
