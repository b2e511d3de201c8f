"""The census the engine counts before the rules run: which nodes count, for which value."""

from kubenetdiag.engine import infer, load_ruleset
from kubenetdiag.facts.census import census_facts
from kubenetdiag.facts.model import Fact
from kubenetdiag.facts.registry import validate_fact


def _node(name: str, address: str) -> Fact:
    return Fact("node_status", name, {"reachable": True, "address": address, "reason": None})


def _iface(node: str, name: str, mtu: int | None, addresses: str | None = None,
           kind: str = "device", port: int | None = None) -> Fact:
    return Fact("interface", node, {
        "name": name, "kind": kind, "mtu": mtu, "state": "UP", "admin_up": True,
        "lower_up": True, "addresses": addresses, "vxlan_port": port,
    })


def _counts(facts: list[Fact]) -> dict[tuple, int]:
    return {(f.attrs["of"], f.attrs["group"], f.attrs["value"]): f.attrs["nodes"]
            for f in census_facts(facts)}


def test_underlay_is_the_interface_with_the_node_address_exactly():
    facts = [
        _node("n1", "10.0.0.1"),
        # 10.0.0.11 contains "10.0.0.1" as text, but it is another address
        _iface("n1", "eth1", 9000, "10.0.0.11/24"),
        _iface("n1", "eth0", 1500, "192.168.9.9/32,10.0.0.1/24"),
        _iface("n1", "cni0", 1450, "10.244.1.1/24"),
        _node("n2", "10.0.0.2"),
        _iface("n2", "ens3", 1500, "10.0.0.2/24"),
        # an inventory host name is no address: that node's underlay is unknown, not guessed
        _node("n3", "node3.example"),
        _iface("n3", "eth0", 1400, "10.0.0.3/24"),
    ]
    assert _counts(facts) == {("underlay_mtu", "", 1500): 2}


def test_vxlan_ports_are_counted_per_device_and_once_per_node():
    facts = [
        _iface("n1", "flannel.1", 1450, kind="vxlan", port=8472),
        _iface("n2", "flannel.1", 1450, kind="vxlan", port=8472),
        _iface("n3", "flannel.1", 1450, kind="vxlan", port=8475),
        _iface("n1", "vxlan.calico", 1450, kind="vxlan", port=4789),
        _iface("n2", "vxlan.calico", 1450, kind="vxlan", port=None),  # unknown: not counted
        _iface("n3", "eth0", 1500, kind="device", port=8472),  # not a VXLAN device
    ]
    assert _counts(facts) == {
        ("vxlan_port", "flannel.1", 8472): 2,
        ("vxlan_port", "flannel.1", 8475): 1,
        ("vxlan_port", "vxlan.calico", 4789): 1,
    }


def test_vxlan_macs_are_counted_only_when_two_nodes_share_one():
    def vtep(node: str, name: str, mac: str | None) -> Fact:
        fact = _iface(node, name, 1450, kind="vxlan")
        return Fact("interface", node, {**fact.attrs, "mac": mac})

    facts = [
        vtep("n1", "flannel.1", "22:27:bd:f5:46:b1"),
        vtep("n2", "flannel.1", "9a:09:11:d3:4b:b8"),
        vtep("n3", "flannel.1", "9a:09:11:d3:4b:b8"),
        # the same MAC on another device of a node, unknown, or all zeroes: not a VTEP shared
        vtep("n1", "vxlan.calico", "9a:09:11:d3:4b:b8"),
        vtep("n4", "flannel.1", None),
        vtep("n5", "flannel.1", "00:00:00:00:00:00"),
        vtep("n6", "flannel.1", "00:00:00:00:00:00"),
    ]
    shared = [f for f in census_facts(facts) if f.attrs["of"] == "vxlan_mac"]
    assert [(f.attrs["group"], f.attrs["text"], f.attrs["nodes"]) for f in shared] == [
        ("flannel.1", "9a:09:11:d3:4b:b8", 2)]
    assert shared[0].source.excerpt == "vxlan_mac flannel.1 = 9a:09:11:d3:4b:b8 on 2 nodes: n2, n3"
    assert all(validate_fact(f) == [] for f in shared)



def test_a_nic_mac_counts_only_when_nodes_of_one_network_share_it():
    def nic(node: str, name: str, addresses: str | None, mac: str, kind: str = "device") -> Fact:
        fact = _iface(node, name, 1500, addresses, kind=kind)
        return Fact("interface", node, {**fact.attrs, "mac": mac})

    cloned = "52:54:00:12:34:56"
    facts = [
        *(_node(f"n{i}", f"10.0.{(i - 1) // 3}.{i}") for i in range(1, 9)),
        # n1 and n2, one network, cloned with the MAC kept; n3 has its own
        nic("n1", "eth0", "10.0.0.1/24", cloned),
        nic("n2", "ens3", "10.0.0.2/24", cloned),
        nic("n3", "eth0", "10.0.0.3/24", "52:54:00:ab:cd:ef"),
        # the same MAC in another network: no switch sees both, counted apart
        nic("n4", "eth0", "10.0.1.4/24", cloned),
        # ipvlan devices share their parent's MAC by design; each /32 is a network alone
        nic("n5", "ipvl0", "10.0.1.5/24", "02:42:00:00:00:01", kind="ipvlan"),
        nic("n6", "ipvl0", "10.0.1.6/24", "02:42:00:00:00:01", kind="ipvlan"),
        nic("n7", "eth0", "10.0.2.7/32", "02:42:00:00:00:07"),
        nic("n8", "eth0", "10.0.2.8/32", "02:42:00:00:00:07"),
        # a device without the node's address (a bridge's port) is not its underlay
        nic("n3", "eth1", None, cloned),
    ]
    shared = [f for f in census_facts(facts) if f.kind == "shared_mac"]
    assert [(f.node, f.attrs["group"], f.attrs["mac"], f.attrs["nodes"], f.attrs["seen"],
             f.attrs["with"]) for f in shared] == [
        ("n1", "10.0.0.0/24", cloned, 2, "its eth0", "n2"),
        ("n2", "10.0.0.0/24", cloned, 2, "its ens3", "n1")]
    assert all(validate_fact(f) == [] for f in shared)


def test_a_node_not_read_shares_a_mac_when_a_peer_resolves_its_address_to_another_nodes():
    cloned = "52:54:00:12:34:56"

    def seen_by_n2(ip: str, mac: str, state: str = "REACHABLE") -> Fact:
        return Fact("neighbor", "n2", {"dev": "eth0", "ip": ip, "mac": mac, "state": state})

    base = [_node("n1", "10.0.0.1"), _node("n2", "10.0.0.2"), _node("n3", "10.0.0.3"),
            Fact("interface", "n1", {**_iface("n1", "eth0", 1500, "10.0.0.1/24").attrs,
                                     "mac": cloned}),
            Fact("interface", "n2", {**_iface("n2", "eth0", 1500, "10.0.0.2/24").attrs,
                                     "mac": "52:54:00:ab:cd:ef"})]
    # n3 was not read; n2 resolves n1's and n3's addresses to n1's MAC
    facts = [*base, seen_by_n2("10.0.0.1", cloned), seen_by_n2("10.0.0.3", cloned)]
    got = {f.node: f.attrs["seen"] for f in census_facts(facts) if f.kind == "shared_mac"}
    assert got == {"n1": "its eth0", "n3": "n2's neighbour entry for its address 10.0.0.3"}
    # a permanent entry says what someone typed, not who answered
    facts = [*base, seen_by_n2("10.0.0.3", cloned, "PERMANENT")]
    assert not [f for f in census_facts(facts) if f.kind == "shared_mac"]
    # n1 holds n3's address: it answers for it, which is not a MAC two machines send with
    holder = Fact("interface", "n1", {**_iface("n1", "eth0", 1500, "10.0.0.1/24,10.0.0.3/24")
                                      .attrs, "mac": cloned})
    facts = [*base[:3], holder, base[4], seen_by_n2("10.0.0.3", cloned)]
    assert not [f for f in census_facts(facts) if f.kind == "shared_mac"]
    # two nodes not read behind a MAC no node that was read has: a cloud's virtual network
    # answering every ARP with one MAC (Azure's 12:34:56:78:9a:bc), not clones
    facts = [*base, _node("n4", "10.0.0.4"), seen_by_n2("10.0.0.3", "12:34:56:78:9a:bc"),
             seen_by_n2("10.0.0.4", "12:34:56:78:9a:bc")]
    assert not [f for f in census_facts(facts) if f.kind == "shared_mac"]

def _route(node: str, dst: str, gateway: str | None, dev: str = "eth0") -> Fact:
    return Fact("route", node, {
        "table": "main", "type": "unicast", "dst": dst, "gateway": gateway, "dev": dev,
        "protocol": "boot", "scope": "global" if gateway else "link", "metric": None,
        "onlink": False, "linkdown": False, "paths": 1, "weight": None})


def _prefixes(facts: list[Fact]) -> dict[str, tuple]:
    return {f.node: (f.attrs["address"], f.attrs["network"], f.attrs["with"],
                     f.attrs["cut_off"], f.attrs["unrouted"])
            for f in census_facts(facts) if f.kind == "underlay_prefix"}


def test_a_narrower_prefix_names_what_it_puts_off_the_nodes_link():
    nodes = [_node(f"n{i}", f"198.18.0.{10 + i}") for i in range(1, 4)] + [
        _node("n9", "198.18.0.40")]  # not read: its address still counts as cut off
    peers = [_iface("n1", "eth0", 1500, "198.18.0.11/24"),
             _iface("n2", "ens3", 1500, "198.18.0.12/24"),
             _route("n1", "203.0.113.0/24", "198.18.0.250"),
             _route("n2", "203.0.113.0/24", "198.18.0.250"),
             # a gateway still on the odd node's link is no consequence of its prefix
             _route("n2", "192.0.2.0/24", "198.18.0.1")]
    narrow = [_iface("n3", "eth0", 1500, "198.18.0.13/28")]
    got = _prefixes([*nodes, *peers, *narrow])
    assert got == {"n3": ("198.18.0.13/28", "198.18.0.0/24", "n1, n2", "198.18.0.40, 198.18.0.250",
                          "198.18.0.40, 198.18.0.250, 203.0.113.0/24")}
    assert all(validate_fact(f) == [] for f in census_facts([*nodes, *peers, *narrow]))
    # a default route through a gateway still on its link covers all of it: nothing unrouted
    covered = _prefixes([*nodes, *peers, *narrow, _route("n3", "0.0.0.0/0", "198.18.0.1")])
    assert covered["n3"][4] == ""
    # mid-change the node holds both: the wider one reaches, nothing is off its link
    both = [_iface("n3", "eth0", 1500, "198.18.0.13/28,198.18.0.13/24")]
    assert _prefixes([*nodes, *peers, *both]) == {}


def test_no_odd_prefix_where_the_nodes_do_not_agree_or_nothing_is_cut_off():
    two = [_node("n1", "10.0.0.1"), _node("n2", "10.0.0.2"),
           _iface("n1", "eth0", 1500, "10.0.0.1/24"), _iface("n2", "eth0", 1500, "10.0.0.2/28")]
    # one peer each way: nothing off n2's link (no gateway, n1 inside its /28)
    assert _prefixes(two) == {}
    # as many peers on the node's own /28 as on the wider network: not the odd one out
    tie = [*two, _node("n3", "10.0.0.3"), _iface("n3", "eth0", 1500, "10.0.0.3/28"),
           _route("n1", "0.0.0.0/0", "10.0.0.254")]
    assert _prefixes(tie) == {}
    # every node on a /32 of its own, as some clouds give: no network holds another node
    cloud = [_node("n1", "10.128.0.11"), _node("n2", "10.128.0.12"),
             _iface("n1", "ens4", 1460, "10.128.0.11/32"),
             _iface("n2", "ens4", 1460, "10.128.0.12/32")]
    assert _prefixes(cloud) == {}


def _cni(node: str, file: str, kind: str | None, active: bool) -> Fact:
    return Fact("cni_config", node, {
        "file": file, "valid": kind is not None, "active": active, "name": None,
        "cni_version": None, "types": kind, "primary_type": kind, "mtu": None,
        "ipam_type": None, "redacted": False,
    })


def test_the_cni_type_each_runtime_uses_is_counted_as_a_word():
    facts = [
        _cni("n1", "/etc/cni/net.d/10-flannel.conflist", "flannel", True),
        _cni("n2", "/etc/cni/net.d/10-flannel.conflist", "flannel", True),
        _cni("n2", "/etc/cni/net.d/87-podman-bridge.conflist", "bridge", False),  # unused
        _cni("n3", "/etc/cni/net.d/10-containerd-net.conflist", "bridge", True),
        _cni("n3", "/etc/cni/net.d/10-flannel.conflist", "flannel", False),
        _cni("n4", "/etc/cni/net.d/10-flannel.conflist", None, False),  # does not parse
    ]
    got = {(f.attrs["of"], f.attrs["text"], f.attrs["value"]): f.attrs["nodes"]
           for f in census_facts(facts)}
    assert got == {("active_cni", "flannel", None): 2, ("active_cni", "bridge", None): 1}
    assert all(not validate_fact(f) for f in census_facts(facts))


def test_census_facts_conform_and_name_a_sample_of_nodes():
    facts = [_iface(f"n{i:02d}", "flannel.1", 1450, kind="vxlan", port=8472) for i in range(25)]
    (c,) = census_facts(facts)
    assert c.node == "cluster" and validate_fact(c) == []
    assert c.attrs["nodes"] == 25
    assert "n00, n01" in c.source.excerpt and "and 15 more" in c.source.excerpt


def test_a_minority_of_two_is_found_in_a_large_cluster_and_healthy_nodes_are_not_blamed():
    """Before the census the rule compared each node with pairs of peers, so in a 2-of-40 split
    every one of the 38 healthy nodes also saw two peers that disagreed with it."""
    facts = []
    for i in range(1, 41):
        addr = f"10.0.0.{i}"
        facts += [_node(f"n{i}", addr), _iface(f"n{i}", "eth0", 1400 if i in (7, 30) else 1500,
                                                f"{addr}/24")]
    found = [f for f in infer(load_ruleset(), facts) if f["rule"] == "underlay-mtu-differs"]
    assert [f["nodes"] for f in found] == [["n30", "n7"]]
    assert "38 other nodes use 1500" in found[0]["title"]
    assert any(e["kind"] == "census" and e["attrs"]["value"] == 1500 for e in found[0]["evidence"])


def test_nodes_that_report_the_same_thing_share_one_copy_of_it():
    """At 5,000 nodes a million facts are held as evidence: what every node reports alike
    (keys, rule text, the raw lines behind them) is kept once, with the values unchanged."""
    import json
    from pathlib import Path

    from kubenetdiag.facts.parse import (
        checks_not_collected,
        checks_ran,
        facts_from_records,
        node_facts,
        not_collected,
        probes_ran,
    )
    from kubenetdiag.facts.producers import active_kinds, derived_inputs

    example = Path(__file__).parent.parent / "examples" / "bundles" / "lab-three-faults"
    record = json.loads((example / "nodes" / "node1.json").read_text())
    # two records with equal but separate strings, as two nodes' files give
    twins = [json.loads(json.dumps({**record, "name": n})) for n in ("a", "b")]
    facts = facts_from_records(twins)
    a = [f for f in facts if f.node == "a" and f.kind == "iptables_rule"]
    b = [f for f in facts if f.node == "b" and f.kind == "iptables_rule"]
    assert a and len(a) == len(b)
    assert all(x.attrs["spec"] is y.attrs["spec"] and x.source is y.source
               for x, y in zip(a, b, strict=True))
    # (derived kinds, path verdicts and the pod bridge among them, are made after the records
    # are read, not from one node's record; the example predates some probes: both sides
    # expect only those its nodes ran, and say the others, passive or active, were not
    # collected)
    ran = probes_ran(twins)
    # the active phase's facts are the node's too, read from its record's `active` part
    derived = derived_inputs().keys() | active_kinds()
    assert [f.to_dict() for f in facts if f.node == "a" and f.kind not in derived] == [
        f.to_dict() for f in node_facts(json.loads(json.dumps({**record, "name": "a"})), ran=ran)
        + not_collected("a", ran, None)
        + checks_not_collected("a", record["active"], checks_ran(twins), None)
    ]
