"""The pod bridge and its ports' hairpin mode (facts/bridges.py), and the rule that reads them.

The interfaces were recorded on node2 of this project's lab (flannel-vxlan, pod range
10.244.2.0/24) with hairpin mode turned off on the web pod's port, veth-pod2; on that kernel the
web pod then timed out calling its own Service's VIP, and answered again once it was back on.
"""

from __future__ import annotations

from kubenetdiag.engine import infer, load_ruleset
from kubenetdiag.facts.bridges import pod_bridge_facts
from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.probes import BY_NAME
from probe_sections import section


def interfaces() -> list[Fact]:
    return BY_NAME["links"].parse(section("links", "lab-node2-hairpin-off-veth-pod2"), "node2")


def fact(kind: str, attrs: dict, node: str = "node2") -> Fact:
    return Fact(kind, node, attrs, Source("test"))


def k8s_node(pod_cidr: str | None) -> Fact:
    return fact("k8s_node", {"name": "node2", "internal_ip": "198.18.0.12", "pod_cidr": pod_cidr,
                             "pod_cidrs": pod_cidr})


def docker0(*ports: str) -> list[Fact]:
    """A docker0 with containers, as on a node that also runs Docker: its ports are never in
    hairpin mode, and it carries none of the cluster's pods."""
    base = {"kind": "bridge", "mtu": 1500, "state": "UP", "admin_up": True, "lower_up": True,
            "master": None, "mac": None, "vxlan_id": None, "vxlan_port": None,
            "vxlan_local": None, "vxlan_dev": None, "xdp": None, "hairpin": None,
            "promisc": False}
    out = [fact("interface", {**base, "name": "docker0", "addresses": "172.17.0.1/16"})]
    out += [fact("interface", {**base, "name": p, "kind": "veth", "master": "docker0",
                               "addresses": None, "hairpin": False}) for p in ports]
    return out


def test_the_pod_bridge_is_the_one_in_the_pod_range_and_names_the_port_with_hairpin_off():
    (bridge,) = [f.attrs for f in pod_bridge_facts(
        interfaces() + docker0("vethd1", "vethd2") + [k8s_node("10.244.2.0/24")])]
    assert bridge == {"bridge": "cni0", "identified_by": "pod_cidr", "ports": 2,
                      "ports_known": 2, "hairpin_off": 1, "hairpin_off_ports": "veth-pod2",
                      "hairpin_off_pods": None, "promisc": False, "addresses": "10.244.2.1/24",
                      "pod_range": "10.244.2.0/24", "holds_pod_gateway": True}


def test_the_ports_with_hairpin_off_name_the_pods_behind_them():
    # the web pod's MAC is learned on veth-pod2 and its address is a neighbour of cni0
    from test_link_load import api_pods, pod

    cluster = api_pods(pod("default", "web-0", "10.244.2.3"),
                       pod("default", "client-node2-1", "10.244.2.2"))
    (bridge,) = pod_bridge_facts(interfaces() + [k8s_node("10.244.2.0/24")], cluster)
    assert (bridge.attrs["hairpin_off_ports"], bridge.attrs["hairpin_off_pods"]) == (
        "veth-pod2", "default/web-0")


def test_without_the_api_the_bridge_cnis_name_stands_in():
    (bridge,) = pod_bridge_facts(interfaces() + docker0("vethd1"))
    assert (bridge.attrs["bridge"], bridge.attrs["identified_by"]) == ("cni0", "name")


def test_a_node_whose_pods_are_routed_has_no_pod_bridge():
    # the API's pod range is not on any bridge (Calico routes each pod on its own veth)
    assert pod_bridge_facts(interfaces() + [k8s_node("10.244.9.0/24")]) == []


def flannel_subnet(subnet: str) -> Fact:
    return fact("flannel_subnet", {"network": "10.244.0.0/16", "subnet": subnet, "mtu": 1450,
                                   "ipmasq": True})


def with_addresses(facts: list[Fact], addresses: str | None) -> list[Fact]:
    """The recorded interfaces with cni0's addresses replaced, as `ip addr` would then show."""
    return [fact("interface", {**f.attrs, "addresses": addresses})
            if f.kind == "interface" and f.attrs["name"] == "cni0" else f for f in facts]


def test_a_cni0_with_pods_that_lost_flannels_gateway_is_still_the_pod_bridge():
    # the node re-joined with a new range and cni0 kept the old one's gateway, or lost it all
    for held, shown in (("10.244.7.1/24", "10.244.7.1/24"), (None, "none")):
        facts = with_addresses(interfaces(), held) + [
            k8s_node("10.244.2.0/24"), flannel_subnet("10.244.2.1/24")]
        (bridge,) = [f.attrs for f in pod_bridge_facts(facts)]
        assert (bridge["bridge"], bridge["identified_by"], bridge["addresses"],
                bridge["pod_range"], bridge["holds_pod_gateway"]) == (
            "cni0", "name", shown, "10.244.2.0/24", False)


def test_flannels_subnet_alone_identifies_the_bridge():
    # flannel with its etcd backend hands out ranges of its own: spec.podCIDR may be unset
    (bridge,) = pod_bridge_facts(interfaces() + [flannel_subnet("10.244.2.1/24")])
    assert (bridge.attrs["identified_by"], bridge.attrs["holds_pod_gateway"]) == ("pod_cidr", True)


def test_without_flannels_subnet_a_bridge_out_of_range_is_not_judged():
    # a bridge CNI configured with a range of its own (containerd's example, 10.88.0.0/16 on
    # cni0) works although spec.podCIDR says otherwise: nothing says which gateway it needs
    facts = with_addresses(interfaces(), "10.88.0.1/16") + [k8s_node("10.244.2.0/24")]
    assert pod_bridge_facts(facts) == []


def test_the_finding_names_the_bridge_its_range_and_what_it_holds():
    ruleset = load_ruleset()
    base = with_addresses(interfaces(), "10.244.7.1/24") + [
        k8s_node("10.244.2.0/24"), flannel_subnet("10.244.2.1/24")]
    (found,) = [f for f in infer(ruleset, base + pod_bridge_facts(base))
                if f["fault"] == "pod_bridge_address_wrong"]
    assert found["nodes"] == ["node2"] and found["root_cause"] is True
    assert "10.244.2.0/24" in found["title"] and "10.244.7.1/24" in found["title"]
    # the gateway back in place: nothing
    healthy = interfaces() + [k8s_node("10.244.2.0/24"), flannel_subnet("10.244.2.1/24")]
    assert not [f for f in infer(ruleset, healthy + pod_bridge_facts(healthy))
                if f["fault"] == "pod_bridge_address_wrong"]


def sysctl(value: int) -> Fact:
    return fact("sysctl", {"key": "net.bridge.bridge-nf-call-iptables", "value": str(value),
                           "number": value, "present": True, "file": None, "line": None})


def test_the_finding_names_the_node_bridge_and_port_only_when_bridged_traffic_meets_iptables():
    ruleset = load_ruleset()
    base = interfaces() + docker0("vethd1") + [k8s_node("10.244.2.0/24")]
    facts = base + pod_bridge_facts(base)
    (found,) = [f for f in infer(ruleset, facts + [sysctl(1)]) if f["fault"] == "hairpin_disabled"]
    assert found["nodes"] == ["node2"] and found["root_cause"] is True
    assert "veth-pod2" in found["explain"] and "vethd1" not in found["explain"]
    # measured: with bridged traffic kept out of iptables the call works, hairpin or not
    assert not [f for f in infer(ruleset, facts + [sysctl(0)]) if f["fault"] == "hairpin_disabled"]
