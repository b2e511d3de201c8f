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
                      "promisc": False}


def test_without_the_api_the_bridge_cnis_name_stands_in():
    (bridge,) = pod_bridge_facts(interfaces() + docker0("vethd1"))
    assert (bridge.attrs["bridge"], bridge.attrs["identified_by"]) == ("cni0", "name")


def test_a_node_whose_pods_are_routed_has_no_pod_bridge():
    # the API's pod range is not on any bridge (Calico routes each pod on its own veth)
    assert pod_bridge_facts(interfaces() + [k8s_node("10.244.9.0/24")]) == []


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
