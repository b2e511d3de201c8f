"""The pod layer of the active checks is sent to an address known to live on the peer's pod
network: the gateway a device of the peer holds (flannel's cni0), else a pod the peer routes to
(Calico's /32 routes on cali* veths), else a CoreDNS pod on it. With none of these the peer's
pod layer is "not checked", never a failed reach (issue 14: Calico has no `.1` to ping)."""

from __future__ import annotations

from pathlib import Path

from kubenetdiag.facts import parse
from kubenetdiag.facts.model import Fact
from kubenetdiag.inventory import Host
from kubenetdiag.probes.active import plan, script

FIX = Path(__file__).parent / "fixtures" / "active"
CIDR = "10.244.2.0/24"


def _node(i: int, *extra: Fact) -> list[Fact]:
    name = f"node{i}"
    return [
        Fact("node_status", name, {"reachable": True, "address": f"198.18.0.{10 + i}"}),
        Fact("k8s_node", name, {"name": name, "internal_ip": f"198.18.0.{10 + i}",
                                "pod_cidr": f"10.244.{i}.0/24"}),
        Fact("interface", name, {"name": "eth0", "kind": "device", "mtu": 1500,
                                 "addresses": f"198.18.0.{10 + i}/24"}),
        *extra,
    ]


def _cni0(i: int) -> Fact:
    return Fact("interface", f"node{i}", {"name": "cni0", "kind": "bridge", "mtu": 1450,
                                          "addresses": f"10.244.{i}.1/24"})


def _route(node: str, dst: str, dev: str, **attrs: object) -> Fact:
    return Fact("route", node, {"table": "main", "type": "unicast", "dst": dst,
                                "gateway": None, "dev": dev, "scope": "link",
                                "linkdown": False, **attrs})


def _calico_routes(i: int) -> list[Fact]:
    node = f"node{i}"
    return [
        _route(node, f"10.244.{i}.0/26", "", type="blackhole", scope="global"),  # the block
        _route(node, f"10.244.{i}.9", "cali0a1b2c3d4e5"),
        _route(node, f"10.244.{i}.4", "calif00dfeed123", linkdown=True),  # pod gone
        _route(node, "172.31.5.5", "cali77aa88bb99c"),  # outside every pod range
        _route(node, f"10.244.{i}.12/32", "cali1122334455a"),
        _route(node, f"10.244.{i + 1}.0/24", "tunl0", gateway=f"198.18.0.{11 + i}"),
    ]


def _dns_pod(i: int, ip: str, pod: str = "coredns-0", ready: bool = True) -> Fact:
    return Fact("dns_pod", f"node{i}", {"pod": pod, "ip": ip, "ready": ready, "restarts": 0})


def _hosts(n: int) -> list[Host]:
    return [Host(f"node{i}", f"198.18.0.{10 + i}") for i in range(1, n + 1)]


def _peer(facts: list[Fact], n: int = 2) -> dict:
    return plan.plan(facts, _hosts(n))["node1"]["peers"][0]


def _pod_jobs(node_plan: dict) -> dict[str, str]:
    """Pod-layer jobs of the node's script: ping, MTU at the pod layer, ping from a pod."""
    pod_mtu = [str(m) for m, mtu in enumerate(node_plan["mtu"]) if mtu["layer"] == "pod"]
    return {cid: cmd for cid, cmd in script.jobs(node_plan)
            if cid.startswith(("ping.pod.", "pod.ping.pod."))
            or (cid.startswith("mtu.") and cid.split(".")[1] in pod_mtu)}


def _overlay(i: int) -> Fact:
    return Fact("interface", f"node{i}", {"name": "flannel.1", "kind": "vxlan", "mtu": 1450,
                                          "vxlan_port": 8472, "vxlan_dev": "eth0"})


def test_flannel_peer_is_pinged_at_the_gateway_its_cni0_holds() -> None:
    facts = _node(1, _overlay(1)) + _node(2, _cni0(2), _overlay(2))
    peer = _peer(facts)
    assert (peer["pod_target"], peer["pod_target_source"]) == ("10.244.2.1", "interface")
    assert peer["pod_gateway"] == "10.244.2.1"  # kept as it was
    node_plan = plan.plan(facts, _hosts(2))["node1"]
    jobs = _pod_jobs(node_plan)
    assert set(jobs) == {"ping.pod.0", "mtu.0.0", "pod.ping.pod.0"}
    assert all(cmd.endswith(" 10.244.2.1") for cmd in jobs.values())


def test_calico_peer_is_pinged_at_a_pod_its_routes_show_not_at_a_dot_one() -> None:
    facts = _node(1) + _node(2, *_calico_routes(2))
    peer = _peer(facts)
    # the lowest live /32 inside the pod CIDR on a cali* veth; never the .1 no device holds
    assert (peer["pod_target"], peer["pod_target_source"]) == ("10.244.2.9", "route")
    jobs = _pod_jobs(plan.plan(facts, _hosts(2))["node1"])
    assert set(jobs) == {"ping.pod.0", "pod.ping.pod.0"}
    assert all(cmd.endswith(" 10.244.2.9") for cmd in jobs.values())
    assert not any("10.244.2.1" in cmd for _, cmd in script.jobs(plan.plan(facts, _hosts(2))
                                                                  ["node1"]))


def test_calico_ipam_pods_outside_the_node_podcidr_are_found_through_the_ippool() -> None:
    routes = [_route("node2", "192.168.77.3", "cali0a1b2c3d4e5")]
    pool = Fact("calico_ippool", "cluster", {"name": "default-ipv4-ippool",
                                             "cidr": "192.168.0.0/16", "disabled": False})
    assert _peer(_node(1) + _node(2, *routes))["pod_target"] is None  # outside 10.244.2.0/24
    peer = _peer(_node(1) + _node(2, *routes) + [pool])
    assert (peer["pod_target"], peer["pod_target_source"]) == ("192.168.77.3", "route")


def test_generic_veth_routes_count_only_inside_a_known_pod_range() -> None:
    veth = Fact("interface", "node2", {"name": "lxc12ab", "kind": "veth", "mtu": 1500})
    inside = _route("node2", "10.244.2.33", "lxc12ab")
    assert plan.choose_pod_target(CIDR, [veth], [inside], []) == ("10.244.2.33", "route")
    # no pod range known: only Calico's own device names say "this is a pod"
    assert plan.choose_pod_target(None, [veth], [inside], []) == (None, None)
    cali = _route("node2", "10.244.2.34", "cali0a1b2c3d4e5")
    assert plan.choose_pod_target(None, [], [cali], []) == ("10.244.2.34", "route")


def test_peer_known_only_through_its_coredns_pod() -> None:
    facts = _node(1) + _node(2) + [
        _dns_pod(2, "10.244.2.3", "coredns-b", ready=False),
        _dns_pod(2, "10.244.2.5", "coredns-c"),
        _dns_pod(1, "10.244.1.3", "coredns-a"),
    ]
    peer = _peer(facts)
    assert (peer["pod_target"], peer["pod_target_source"]) == ("10.244.2.5", "dns_pod")


def test_the_order_is_gateway_then_routes_then_coredns() -> None:
    cni0, routes, dns = _cni0(2), _calico_routes(2), [_dns_pod(2, "10.244.2.3")]
    assert plan.choose_pod_target(CIDR, [cni0], routes, dns) == ("10.244.2.1", "interface")
    assert plan.choose_pod_target(CIDR, [], routes, dns) == ("10.244.2.9", "route")
    assert plan.choose_pod_target(CIDR, [], [], dns) == ("10.244.2.3", "dns_pod")
    # a CoreDNS pod on the host network is the node, not its pod network
    assert plan.choose_pod_target(CIDR, [], [], [_dns_pod(2, "198.18.0.12")],
                                  address="198.18.0.12") == (None, None)


def test_peer_with_no_pod_address_is_not_checked_never_a_failed_reach() -> None:
    facts = _node(1, _overlay(1)) + _node(2, _overlay(2))
    node_plan = plan.plan(facts, _hosts(2))["node1"]
    peer = node_plan["peers"][0]
    assert (peer["pod_target"], peer["pod_target_source"]) == (None, None)
    assert peer["pod_gateway"] == "10.244.2.1"  # still recorded, just not pinged
    assert _pod_jobs(node_plan) == {}  # no ping, no pod-layer MTU, no ping from a pod
    assert {cid for cid, _ in script.jobs(node_plan)} >= {"ping.underlay.0", "mtu.1.0"}

    sections = [{"probe": "active.ping.underlay.0", "exit_code": 0,
                 "stdout": (FIX / "ping_iputils_ok.txt").read_text()}]
    facts_out = parse.active_facts("node1", {"plan": node_plan, "podns": None,
                                             "sections": sections})
    assert not [f for f in facts_out if f.kind in ("reach", "mtu_check")
                and f.attrs.get("layer") == "pod"]
    [status] = [f for f in facts_out if f.kind == "probe_status"]
    assert status.node == "node1"
    assert status.attrs["probe"] == "active.pod_target"
    assert status.attrs["status"] == "not_queried"
    assert status.attrs["reason"].startswith("no pod address is known on node2")
    assert "--kubeconfig" in status.attrs["reason"] and "routes" in status.attrs["reason"]
    assert status.attrs["blocks"] == ("pod-network reachability and pod-layer MTU from node1 "
                                      "to node2")
    assert [f.attrs["layer"] for f in facts_out if f.kind == "reach"] == ["underlay"]


def test_a_plan_from_an_older_bundle_still_pings_its_pod_gateway() -> None:
    old = {"node": "node1", "address": "198.18.0.11",
           "peers": [{"name": "node2", "address": "198.18.0.12", "pod_cidr": CIDR,
                      "pod_gateway": "10.244.2.1"}],
           "mtu": [{"layer": "pod", "size": 1422}], "vxlan": None, "dns": [],
           "dns_name": "kubernetes.default.svc.cluster.local", "http": [], "endpoints": []}
    jobs = _pod_jobs(old)
    assert set(jobs) == {"ping.pod.0", "mtu.0.0", "pod.ping.pod.0"}
    assert all(cmd.endswith(" 10.244.2.1") for cmd in jobs.values())
    sections = [{"probe": "active.ping.pod.0", "exit_code": 0,
                 "stdout": (FIX / "ping_iputils_ok.txt").read_text()}]
    facts = parse.active_facts("node1", {"plan": old, "sections": sections})
    assert [(f.kind, f.attrs["layer"], f.attrs["ok"]) for f in facts] == [("reach", "pod", True)]


def test_plan_module_doctests_hold() -> None:
    # plan.py defines no CHECKS, so test_probe_plugins does not run its examples
    import doctest

    result = doctest.testmod(plan, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 8 and result.failed == 0


def test_the_planner_reads_only_what_it_declares() -> None:
    """The pipeline parses only plan.INPUTS before the active phase: the plans must be the
    ones a whole parse gives (a kind read but not declared would be missing there)."""
    from pathlib import Path

    from kubenetdiag.bundle import Bundle
    from kubenetdiag.facts.parse import facts_from_records, facts_of_kinds
    from kubenetdiag.inventory import Host
    from kubenetdiag.probes.active.plan import INPUTS, plan

    example = Path(__file__).resolve().parent.parent / "examples" / "bundles" / "lab-three-faults"
    b = Bundle.read(example)
    hosts = [Host(r["name"], str(r["address"])) for r in b.records]
    few = facts_of_kinds(b.records, b.cluster, INPUTS)
    assert {f.kind for f in few} <= INPUTS
    assert plan(few, hosts) == plan(facts_from_records(b.records, b.cluster), hosts)
    assert plan(few, hosts)  # the example has reachable nodes: there is something to compare
