"""Chaining over the shipped rule base: one root cause, its consequences marked as such, and an
unexplained symptom reported with what was ruled out."""

from __future__ import annotations

from kubenetdiag.engine import infer, load_ruleset
from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.facts.vantage import vantage_facts

ALARM = ("critical", "error", "warning")


def fact(fact_kind: str, node: str, **attrs: object) -> Fact:
    return Fact(fact_kind, node, dict(attrs))


def reach(src: str, dst: str, layer: str, ok: bool) -> Fact:
    return fact("reach", src, src=src, dst=dst, layer=layer, ok=ok, rtt_ms=None, detail=None,
                vantage=None)


def path(node: str, flow: str, verdict: str, rule: str, **attrs: object) -> Fact:
    """A verdict as the path walk gives it (facts/paths), at the first rule of a chain."""
    chain = "INPUT" if flow.endswith("_in") and flow.startswith("overlay") else "FORWARD"
    return fact("path", node, flow=flow, peer=attrs.get("peer"), target=attrs.get("target"),
                toward=attrs.get("peer") or attrs.get("target"), state="new",
                src="198.18.0.11", dst="198.18.0.12", proto=attrs.get("proto", "udp"),
                dport=attrs.get("dport"), verdict=verdict, stage="netfilter",
                at=f"filter {chain} rule 1", hook=chain.lower(), table="filter", chain=chain,
                position=1, rule=rule, owner="unknown", backend="nf_tables", altered_by=None,
                matched="unknown", detail=f"{flow} | {verdict} at filter {chain} rule 1")


def matrix(broken: str, nodes: tuple[str, ...] = ("n1", "n2", "n3")) -> list[Fact]:
    """Underlay fine everywhere; pod traffic to and from `broken` fails. Every node was
    collected, and its iptables and sysctl probes answered."""
    out = []
    for s in nodes:
        out.append(Fact("node_status", s, {"reachable": True, "address": s, "reason": None}))
        out.append(Fact("sysctl", s, {"key": "net.ipv4.ip_forward", "value": "1", "number": 1,
                                      "present": True}, Source("sysctl")))
        out.append(Fact("iptables_chain", s, {"table": "filter", "chain": "FORWARD",
                                              "policy": "ACCEPT", "rules": 0,
                                              "backend": "legacy"}, Source("iptables")))
        for d in nodes:
            if s != d:
                out.append(reach(s, d, "underlay", True))
                out.append(reach(s, d, "pod", broken not in (s, d)))
    return out


def diagnose(facts: list[Fact]) -> list[dict]:
    """The rule base over the facts plus what the parse stage adds: where the active checks'
    failures localize (facts/vantage.py), as facts_from_records does."""
    return infer(load_ruleset(), [*facts, *vantage_facts(facts)])


def test_dead_vxlan_port_is_one_root_cause_with_consequences():
    facts = matrix("n2") + [
        fact("interface", "n2", name="flannel.1", kind="vxlan", mtu=1450, state="UNKNOWN",
             admin_up=True, lower_up=True, vxlan_port=8472),
        path("n2", "overlay_in", "drop", "-A INPUT -p udp -m udp --dport 8472 -j DROP",
             peer="n1", dport=8472),
        fact("dns_check", "n2", server="10.96.0.10", server_kind="service",
             name="kubernetes.default.svc.cluster.local", ok=False, detail="timeout"),
    ]
    found = diagnose(facts)
    roots = [f for f in found if f["root_cause"]]
    assert [(f["fault"], f["nodes"]) for f in roots] == [("vxlan_udp_blocked", ["n2"])]
    rest = {f["fault"]: f for f in found if not f["root_cause"]}
    assert set(rest) == {"pod_cross_node_broken", "dns_resolution_failed"}
    assert all(f["explained_by"] for f in rest.values())
    # the cut-off node is named alone, not every node that failed with it
    assert rest["pod_cross_node_broken"]["nodes"] == ["n2"]
    assert rest["pod_cross_node_broken"]["rule"] == "pod-node-cut-off-explained"
    # consequences of the pod path are shown, but only the cause alarms
    assert [f["fault"] for f in found if f["severity"] in ALARM] == ["vxlan_udp_blocked"]


def test_unexplained_cut_off_node_is_named_alone_with_what_was_checked_there():
    found = diagnose(matrix("n3"))
    (f,) = found
    assert f["rule"] == "pod-node-cut-off" and f["severity"] == "error" and f["root_cause"]
    assert f["nodes"] == ["n3"]  # not "pods on n1, n2, n3 cannot reach pods on n1, n2, n3"
    assert f["title"].startswith("Pods on n3 are cut off from pods on every other node (both)")
    # what was read on that node, and the runbooks' next steps
    assert "Read on n3 without finding a known cause: iptables, sysctl;" in f["explain"]
    assert "capture on n3 and on one peer at once" in f["explain"]
    assert "CNI agent's log on n3" in f["explain"]
    assert all(not r["changes_state"] for r in f["remediation"] if r["command"])


def test_unexplained_pair_says_what_was_ruled_out():
    facts = [f for f in matrix("none") if not (
        f.kind == "reach" and f.attrs["layer"] == "pod" and f.attrs["src"] == "n1"
        and f.attrs["dst"] == "n2")] + [reach("n1", "n2", "pod", False)]
    (f,) = diagnose(facts)
    assert f["rule"] == "pod-cross-node-unexplained" and f["nodes"] == ["n1"]
    assert "ruled out" in f["explain"] and "capture the VXLAN port" in f["explain"]


def test_bgp_down_explains_the_routes_its_peers_lost():
    facts = [
        fact("node_status", n, reachable=True, address=a, reason=None)
        for n, a in (("n1", "10.0.0.1"), ("n2", "10.0.0.2"), ("n3", "10.0.0.3"))
    ] + [
        fact("bgp_session", o, protocol="Mesh_10_0_0_3", peer="10.0.0.3", peer_as=64512,
             state="Active", established=False, proto_state="start", since="10:00",
             last_error="Socket: Connection refused", socket="/var/run/calico/bird.ctl")
        for o in ("n1", "n2")
    ] + [
        fact("node_match", "cluster", inventory_name=n, api_name=n, address=None,
             in_inventory=True, in_api=True, matched_by="name") for n in ("n1", "n2", "n3")
    ] + [
        fact("k8s_node", "cluster", name=n, pod_cidr=f"10.244.{i}.0/24")
        for i, n in enumerate(("n1", "n2", "n3"), start=1)
    ] + [
        fact("interface", "n1", name="lo", kind="device", mtu=65536, state="UNKNOWN",
             admin_up=True, lower_up=True),
        fact("route", "n1", table="main", type="unicast", dst="10.244.2.0/24",
             gateway="10.0.0.2", dev="eth0", protocol="bird", scope="global", onlink=False,
             linkdown=False),
    ]
    found = {f["fault"]: f for f in diagnose(facts)}
    assert found["bgp_session_down"]["root_cause"] and found["bgp_session_down"]["nodes"] == ["n3"]
    missing = found["pod_cidr_route_missing"]
    assert missing["nodes"] == ["n1"] and missing["explained_by"] == ["bgp-session-down"]


def test_a_drop_of_a_peers_node_traffic_explains_the_routes_bgp_withdrew_on_both():
    """Calico: n3 drops everything from n1's node address. Their BGP session times out, and
    each withdraws the other's pod routes: the missing routes on both nodes are the DROP's
    consequence (seen in the lab once the hold time had passed before the collection)."""
    addresses = {"n1": "10.0.0.1", "n2": "10.0.0.2", "n3": "10.0.0.3"}
    facts = [fact("node_status", n, reachable=True, address=a, reason=None)
             for n, a in addresses.items()] + [
        fact("node_match", "cluster", inventory_name=n, api_name=n, address=None,
             in_inventory=True, in_api=True, matched_by="name") for n in addresses
    ] + [
        fact("k8s_node", "cluster", name=n, pod_cidr=f"10.244.{i}.0/24")
        for i, n in enumerate(addresses, start=1)
    ]
    for node, lost in (("n1", "n3"), ("n3", "n1")):
        facts += [fact("interface", node, name="lo", kind="device", mtu=65536, state="UNKNOWN",
                       admin_up=True, lower_up=True),
                  fact("route", node, table="main", type="unicast", dst="10.244.2.0/24",
                       gateway="10.0.0.2", dev="eth0", protocol="bird", scope="global",
                       onlink=False, linkdown=False)]
        facts += [reach(node, lost, "underlay", False), reach(node, "n2", "underlay", True)]
    facts += [reach("n2", peer, "underlay", True) for peer in ("n1", "n3")]
    rule = "-A INPUT -s 10.0.0.1/32 -j DROP"
    facts += [fact("path", "n3", flow=flow, peer="n1", target=None, toward="n1", state="new",
                   src=src, dst=dst, proto=proto, dport=dport, verdict="drop",
                   stage="netfilter", at="filter INPUT rule 1", hook="input", table="filter",
                   chain="INPUT", position=1, rule=rule, owner="unknown", backend="nf_tables",
                   altered_by=None, undo="iptables -t filter -D INPUT -s 10.0.0.1/32 -j DROP",
                   matched="unknown", detail=f"{flow} | drop at filter INPUT rule 1")
              for flow, src, dst, proto, dport in (
                  ("node_in", "10.0.0.1", "10.0.0.3", "icmp", None),
                  ("bgp_in", "10.0.0.1", "10.0.0.3", "tcp", 179))]
    found = diagnose(facts)
    roots = [(f["rule"], f["nodes"]) for f in found if f["root_cause"]]
    assert roots == [("peer-node-traffic-stopped", ["n3"])], roots
    missing = [f for f in found if f["fault"] == "pod_cidr_route_missing"]
    assert missing and all("peer-node-traffic-stopped" in f["explained_by"] for f in missing)
    assert sorted(n for f in missing for n in f["nodes"]) == ["n1", "n3"]


def test_a_node_off_the_network_explains_its_bgp_sessions_going_down():
    """Calico: a node that drops off the node network takes its BGP sessions with it; the one
    root cause is the node, found by its peers' pings, not BGP."""
    address = {"n1": "10.0.0.1", "n2": "10.0.0.2", "n3": "10.0.0.3"}
    facts = [
        fact("node_status", "n1", reachable=True, address=address["n1"], reason=None),
        fact("node_status", "n3", reachable=True, address=address["n3"], reason=None),
        fact("node_status", "n2", reachable=False, address=address["n2"],
             reason="cannot connect to 10.0.0.2:22: No route to host"),
    ] + [
        fact("bgp_session", o, protocol="Mesh_10_0_0_2", peer="10.0.0.2", peer_as=64512,
             state="Active", established=False, proto_state="start", since="10:00",
             last_error="Socket: No route to host", socket="/var/run/calico/bird.ctl")
        for o in ("n1", "n3")
    ] + [reach(s, d, "underlay", ok=d != "n2") for s in ("n1", "n3")
         for d in ("n1", "n2", "n3") if s != d]
    found = {f["fault"]: f for f in diagnose(facts)}
    assert [f for f in found.values() if f["root_cause"]] == [found["node_unreachable"]]
    assert found["node_unreachable"]["nodes"] == ["n2"]
    assert found["bgp_session_down"]["explained_by"] == ["node-unreachable-and-cut-off"]


def test_dns_failures_behind_a_broken_coredns_node_are_consequences():
    facts = [
        fact("dns_pod", "n1", pod="coredns-0", ip="10.244.1.3", ready=True, restarts=0),
        path("n1", "pod_in", "reject", "-A FORWARD -j REJECT", peer="n2", proto="icmp"),
        path("n1", "dns_pod_in", "reject", "-A FORWARD -j REJECT", peer="n2",
             target="coredns-0", dport=53),
        fact("dns_check", "n2", server="10.96.0.10", server_kind="service",
             name="kubernetes.default.svc.cluster.local", ok=False, detail="timeout"),
        fact("dns_check", "n2", server="10.244.1.3", server_kind="pod",
             name="kubernetes.default.svc.cluster.local", ok=False, detail="timeout"),
    ]
    found = diagnose(facts)
    assert [(f["fault"], f["nodes"]) for f in found if f["severity"] in ALARM] == [
        ("forward_chain_reject", ["n1"])]
    dns = [f for f in found if f["fault"] == "dns_resolution_failed"]
    assert dns and all(f["severity"] == "info" for f in dns)


def _listener_overflowing(node: str, process: str, pid: int) -> list[Fact]:
    return [
        fact("tcp_listener", node, local="0.0.0.0:30082", port=30082, wildcard=True,
             accept_queue=129, backlog=128, full=True, process=process, pid=pid),
        # still full when read again: it cannot accept
        fact("tcp_listener_later", node, local="0.0.0.0:30082", accept_queue=129, backlog=128,
             full=True, interval_s=2.0),
        fact("net_counter", node, name="TcpExtListenOverflows", group="TcpExt",
             counter="ListenOverflows", value=70, delta=0, interval_s=1.0, rate_per_s=0.0,
             rising=False),
    ]


def test_a_listener_out_of_descriptors_explains_its_full_accept_queue():
    facts = _listener_overflowing("n2", "python", 185) + [
        fact("process_fds", "n2", pid=185, process="python", ports="30082", open=64, limit=64,
             hard_limit=20000, free=0, usage_pct=100.0, at_limit=True)]
    found = diagnose(facts)
    assert [(f["fault"], f["nodes"]) for f in found if f["root_cause"]] == [
        ("fd_limit_reached", ["n2"])]
    (queue,) = [f for f in found if f["fault"] == "listen_queue_overflow"]
    assert queue["explained_by"] == ["listener-out-of-file-descriptors"]


def test_a_close_wait_leak_explains_the_descriptors_it_runs_out_of():
    # the process leaks what its peers closed until its limit, and its queue fills
    facts = _listener_overflowing("n1", "java", 2210) + [
        fact("process_fds", "n1", pid=2210, process="java", ports="8080", open=4096,
             limit=4096, hard_limit=4096, free=0, usage_pct=100.0, at_limit=True),
        fact("close_wait_process", "n1", process="java", pid=2210, count=3980)]
    found = diagnose(facts)
    assert [(f["fault"], f["nodes"]) for f in found if f["root_cause"]] == [
        ("close_wait_leak", ["n1"])]
    explained = {f["fault"]: f["explained_by"] for f in found if not f["root_cause"]}
    assert explained == {"fd_limit_reached": ["close-wait-pileup"],
                         "listen_queue_overflow": ["close-wait-pileup",
                                                   "listener-out-of-file-descriptors"]}


def _fin_wait2_toward(node: str, peer: str, count: int) -> list[Fact]:
    return [
        fact("tcp_states", node, established=20, syn_sent=0, syn_recv=0, fin_wait1=0,
             fin_wait2=count + 12, time_wait=40, close=0, close_wait=0, last_ack=0, listen=5,
             closing=0, total=count + 77, source="ss"),
        fact("fin_wait2_peer", node, peer=f"{peer}:8080", address=peer, port=8080, count=count),
    ]


def test_a_peer_nodes_close_wait_leak_explains_the_fin_wait2_it_leaves_behind():
    # n1's clients closed 2400 connections to n2's java service, which keeps its end of each
    facts = _fin_wait2_toward("n1", "10.20.0.12", 2400) + [
        fact("k8s_node", "n2", name="n2", internal_ip="10.20.0.12"),
        fact("close_wait_process", "n2", process="java", pid=2210, count=2400)]
    found = diagnose(facts)
    assert [(f["fault"], f["nodes"]) for f in found if f["root_cause"]] == [
        ("close_wait_leak", ["n2"])]
    (fw,) = [f for f in found if f["fault"] == "fin_wait2_pileup"]
    assert (fw["nodes"], fw["explained_by"]) == (["n1"], ["close-wait-pileup"])


def test_fin_wait2_toward_an_address_no_node_holds_is_the_nodes_own_finding():
    # the peer is outside the cluster (a database): nothing in the inventory explains it,
    # not even a CLOSE-WAIT leak on another node toward someone else
    facts = _fin_wait2_toward("n1", "203.0.113.10", 2400) + [
        fact("k8s_node", "n2", name="n2", internal_ip="10.20.0.12"),
        fact("close_wait_process", "n2", process="java", pid=2210, count=2400)]
    roots = sorted((f["fault"], tuple(f["nodes"])) for f in diagnose(facts) if f["root_cause"])
    assert roots == [("close_wait_leak", ("n2",)), ("fin_wait2_pileup", ("n1",))]
