"""Each node's VXLAN entries for its peers against the peers' own devices (facts/vxlan_peers.py),
and the rules that read them.

The facts come from a healthy three-node flannel-vxlan lab bundle (tests/fixtures/bundles), whose
entries were written by the real flanneld; each test changes one node's entries the way the
lab's vxlan_peer_entry_stale fault does on a live node (tests/test_lab_mechanisms.py proves that
those entries cut the pair).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from kubenetdiag.bundle import Bundle
from kubenetdiag.engine import infer, load_ruleset
from kubenetdiag.facts.model import Fact
from kubenetdiag.facts.parse import facts_from_records
from kubenetdiag.facts.vxlan_peers import INPUTS, vxlan_peer_facts

BUNDLE = Path(__file__).parent / "fixtures" / "bundles" / "lab-nft-healthy"
STALE_MAC = "02:00:5e:10:01:01"


@pytest.fixture(scope="module")
def recorded() -> list[Fact]:
    b = Bundle.read(BUNDLE)
    facts = facts_from_records(b.records, b.cluster, probes=b.meta.get("probes"))
    return [f for f in facts if f.kind in (*INPUTS, "node_status")]


def vtep_mac(facts: list[Fact], node: str) -> str:
    return next(f.attrs["mac"] for f in facts
                if f.kind == "interface" and f.node == node and f.attrs["name"] == "flannel.1")


def changed(facts: list[Fact], kind: str, node: str, match: dict, **attrs) -> list[Fact]:
    out, hit = [], 0
    for f in facts:
        if f.kind == kind and f.node == node and all(f.attrs.get(k) == v
                                                     for k, v in match.items()):
            f = dataclasses.replace(f, attrs={**f.attrs, **attrs})
            hit += 1
        out.append(f)
    assert hit == 1, (kind, node, match)
    return out


def states(facts: list[Fact]) -> dict[tuple[str, str], str]:
    return {(f.node, f.attrs["peer"]): f.attrs["state"] for f in vxlan_peer_facts(facts)}


def test_flanneld_s_entries_agree_with_every_peer(recorded):
    found = {(f.node, f.attrs["peer"]): f.attrs for f in vxlan_peer_facts(recorded)}
    assert set(found) == {(a, b) for a in ("node1", "node2", "node3")
                          for b in ("node1", "node2", "node3") if a != b}
    assert {a["state"] for a in found.values()} == {"ok"}
    one = found[("node2", "node1")]
    assert (one["gateway"], one["cidr"], one["peer_vtep"], one["dst"]) == (
        "10.244.1.0", "10.244.1.0/24", "198.18.0.11", "198.18.0.11")
    assert one["mac"] == one["peer_mac"] == vtep_mac(recorded, "node1")


def test_a_neighbour_entry_with_the_mac_of_a_re_created_device_is_stale(recorded):
    facts = changed(recorded, "neighbor", "node2", {"dev": "flannel.1", "ip": "10.244.1.0"},
                    mac=STALE_MAC)
    assert {k: v for k, v in states(facts).items() if v != "ok"} == {
        ("node2", "node1"): "stale_mac"}


def test_an_fdb_entry_with_an_address_the_peer_left_is_stale(recorded):
    mac = vtep_mac(recorded, "node1")
    facts = changed(recorded, "fdb_entry", "node2", {"dev": "flannel.1", "mac": mac},
                    dst="198.18.0.248")
    assert {k: v for k, v in states(facts).items() if v != "ok"} == {
        ("node2", "node1"): "stale_dst"}
    # another node's address is no better: the frames reach a device that drops them
    facts = changed(recorded, "fdb_entry", "node2", {"dev": "flannel.1", "mac": mac},
                    dst="198.18.0.13")
    assert states(facts)[("node2", "node1")] == "stale_dst"


def test_an_address_the_peer_announces_and_does_not_hold_is_its_own(recorded):
    # flannel's public-ip behind NAT: every node sends node1's frames to an address no device
    # of node1 holds, and that is where they arrive
    mac = vtep_mac(recorded, "node1")
    facts = recorded
    for node in ("node2", "node3"):
        facts = changed(facts, "fdb_entry", node, {"dev": "flannel.1", "mac": mac},
                        dst="203.0.113.77")
    assert set(states(facts).values()) == {"ok"}
    # ... unless one node alone still has the old one
    facts = changed(facts, "fdb_entry", "node3", {"dev": "flannel.1", "mac": mac},
                    dst="203.0.113.60")
    assert states(facts)[("node3", "node1")] == "stale_dst"


def test_what_was_not_read_is_not_judged(recorded):
    # node1 not reached: its device is unknown, so nobody's entries for it are judged
    without_peer = [f for f in recorded if f.node != "node1"]
    assert ("node2", "node1") not in states(without_peer)
    assert states(without_peer)[("node2", "node3")] == "ok"
    # node2's FDB not read: its entries' MACs can still be held against the peers
    no_fdb = [f for f in recorded if not (f.kind == "fdb_entry" and f.node == "node2")]
    assert states(no_fdb)[("node2", "node1")] == "unknown"
    stale = changed(no_fdb, "neighbor", "node2", {"dev": "flannel.1", "ip": "10.244.1.0"},
                    mac=STALE_MAC)
    assert states(stale)[("node2", "node1")] == "stale_mac"
    # node2's neighbours not read: nothing at all on node2
    no_neigh = [f for f in recorded if not (f.kind == "neighbor" and f.node == "node2")]
    assert not [k for k in states(no_neigh) if k[0] == "node2"]


def test_the_stale_neighbour_is_the_one_root_cause_on_its_node(recorded):
    facts = changed(recorded, "neighbor", "node2", {"dev": "flannel.1", "ip": "10.244.1.0"},
                    mac=STALE_MAC)
    findings = infer(load_ruleset(), facts + vxlan_peer_facts(facts))
    roots = [(f["rule"], f["nodes"]) for f in findings if f["root_cause"]]
    # the FDB has no entry for the stale MAC either; the rule for a missing one stays quiet
    assert roots == [("vxlan-peer-mac-stale", ["node2"])]
    (found,) = [f for f in findings if f["root_cause"]]
    assert STALE_MAC in found["title"] and vtep_mac(recorded, "node1") in found["title"]
