"""The packet-path walk (facts/paths): each flow through one node's configuration in kernel
order, ending at the rule, route or setting that stops it, whoever wrote it."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubenetdiag.facts.model import Fact
from kubenetdiag.facts.paths import path_facts
from kubenetdiag.facts.paths.ipt import compile_rule as ipt_rule
from kubenetdiag.facts.paths.nft import compile_rule as nft_rule
from kubenetdiag.facts.paths.nft import priority
from kubenetdiag.facts.paths.packet import Packet, addr
from kubenetdiag.facts.paths.ruleset import Context
from kubenetdiag.probes import BY_NAME
from probe_sections import section

NODES = {"n1": 1, "n2": 2, "n3": 3}


def f(fact_kind: str, node: str, **attrs) -> Fact:
    return Fact(fact_kind, node, attrs)


def iface(node: str, name: str, kind: str, mtu: int, addresses: str | None, **extra) -> Fact:
    a = {"name": name, "kind": kind, "mtu": mtu, "state": "UP", "admin_up": True,
         "lower_up": True, "master": None, "mac": None, "vxlan_id": None, "vxlan_port": None,
         "vxlan_local": None, "vxlan_dev": None, "addresses": addresses}
    a.update(extra)
    return f("interface", node, **a)


def route(node: str, dst: str, dev: str | None, gateway: str | None = None, table: str = "main",
          rtype: str = "unicast", protocol: str = "kernel") -> Fact:
    return f("route", node, table=table, type=rtype, dst=dst, gateway=gateway, dev=dev,
             protocol=protocol, scope="global", metric=None, onlink=bool(gateway),
             linkdown=False)


def chain(node: str, table: str, name: str, policy: str | None = "ACCEPT",
          backend: str = "nf_tables") -> Fact:
    return f("iptables_chain", node, table=table, chain=name, policy=policy, rules=0,
             backend=backend)


def ipt(node: str, table: str, spec: str, position: int, backend: str = "nf_tables") -> Fact:
    return f("iptables_rule", node, table=table, chain=spec.split()[1], position=position,
             target="", target_kind="other", unconditional=False, spec=spec, comment=None,
             pkts=0, bytes=0, src=None, dst=None, in_if=None, out_if=None, proto=None,
             dport=None, backend=backend)


def nft_base(node: str, family: str, table: str, chain_name: str, kind: str, hook: str,
             priority: str, *rules: tuple[str | None, str]) -> list[Fact]:
    """A native nftables table with one base chain holding `rules` ((verdict, text), in
    order), as the nftables probe reports it."""
    return [f("nft_table", node, family=family, table=table, owner="nft", chains=1,
              rules=len(rules)),
            f("nft_chain", node, family=family, table=table, chain=chain_name, owner="nft",
              type=kind, hook=hook, priority=priority, policy="accept", rules=len(rules),
              drop_rules=0, reject_rules=0),
            *(f("nft_rule", node, family=family, table=table, chain=chain_name, position=i,
                verdict=verdict, text=text, pkts=None, bytes=None)
              for i, (verdict, text) in enumerate(rules, start=1))]


def sysctl(node: str, key: str, n: int) -> Fact:
    return f("sysctl", node, key=key, value=str(n), number=n, present=True)


def node(name: str, mtu: int = 1500, overlay_mtu: int = 1450) -> list[Fact]:
    """A flannel-vxlan node as the lab's real flanneld programs it, with an empty filter."""
    i = NODES[name]
    out = [
        f("node_status", name, reachable=True, address=f"198.18.0.1{i}", reason=None),
        iface(name, "eth0", "veth", mtu, f"198.18.0.1{i}/24"),
        iface(name, "cni0", "bridge", overlay_mtu, f"10.244.{i}.1/24"),
        iface(name, "flannel.1", "vxlan", overlay_mtu, f"10.244.{i}.0/32", vxlan_id=1,
              vxlan_port=8472, vxlan_local=f"198.18.0.1{i}", vxlan_dev="eth0"),
        route(name, "198.18.0.0/24", "eth0"),
        route(name, f"10.244.{i}.0/24", "cni0"),
        sysctl(name, "net.ipv4.ip_forward", 1),
        sysctl(name, "net.ipv4.conf.all.rp_filter", 0),
        f("k8s_node", name, name=name, internal_ip=f"198.18.0.1{i}",
          pod_cidr=f"10.244.{i}.0/24"),
    ]
    for peer, j in NODES.items():
        if peer != name:
            out.append(route(name, f"10.244.{j}.0/24", "flannel.1", f"10.244.{j}.0",
                             protocol="boot"))
    for c in ("INPUT", "FORWARD", "OUTPUT"):
        out.append(chain(name, "filter", c))
    return out


def cluster(*extra: Fact, names: tuple[str, ...] = ("n1", "n2", "n3")) -> list[Fact]:
    facts = [x for n in names for x in node(n)] + list(extra)
    return facts + path_facts(facts)


def stops(facts: list[Fact], node: str, flow: str | None = None) -> list[dict]:
    return [x.attrs for x in facts if x.kind == "path" and x.node == node
            and (flow is None or x.attrs["flow"] == flow)]


def walk_of(facts: list[Fact], node: str) -> dict:
    (w,) = [x.attrs for x in facts if x.kind == "path_walk" and x.node == node]
    return w


def test_a_healthy_cluster_passes_every_flow():
    facts = cluster()
    assert not [x for x in facts if x.kind == "path"]
    w = walk_of(facts, "n2")
    assert w["flows"] == w["passed"] > 0 and w["peers"] == 2
    assert {"overlay_in", "overlay_out", "pod_in", "pod_out"} <= set(w["kinds"].split(","))


def test_a_vxlan_device_left_down_by_a_former_cni_is_not_the_overlay():
    # calico's vxlan.calico (VNI 4096, UDP 4789), down, listed before flannel.1 on n2, whose
    # INPUT admits the overlay's UDP 8472 only: the tunnel is flannel.1's, and passes
    leftover = iface("n2", "vxlan.calico", "vxlan", 1450, None, state="DOWN", admin_up=False,
                     lower_up=False, vxlan_id=4096, vxlan_port=4789, vxlan_dev="eth0")
    facts = [*node("n1"), leftover, *node("n2"), *node("n3"),
             ipt("n2", "filter", "-A INPUT -p udp -m udp --dport 8472 -j ACCEPT", 1),
             ipt("n2", "filter", "-A INPUT -p icmp -j ACCEPT", 2)]
    facts = [x for x in facts if not (x.kind == "iptables_chain" and x.node == "n2"
                                      and x.attrs["chain"] == "INPUT")]
    facts += [chain("n2", "filter", "INPUT", "DROP")]
    facts += path_facts(facts)
    assert not stops(facts, "n2", "overlay_in")
    # the cluster's overlay switched off on n2 is still n2's overlay: its tunnel is walked
    down = [x for x in facts if x.kind != "path" and x.kind != "path_walk"]
    down = [iface("n2", "flannel.1", "vxlan", 1450, "10.244.2.0/32", state="DOWN",
                  admin_up=False, lower_up=False, vxlan_id=1, vxlan_port=8472,
                  vxlan_local="198.18.0.12", vxlan_dev="eth0")
            if x.kind == "interface" and x.node == "n2" and x.attrs["name"] == "flannel.1"
            else x for x in down]
    assert "overlay_in" in walk_of(down + path_facts(down), "n2")["kinds"].split(",")


def test_catch_all_reject_in_forward_names_the_rule_and_its_position():
    facts = cluster(
        ipt("n2", "filter", '-A FORWARD -m comment --comment "kubernetes forwarding rules" '
            "-j KUBE-FORWARD", 1),
        ipt("n2", "filter", "-A FORWARD -j REJECT --reject-with icmp-host-prohibited", 2),
        ipt("n2", "filter", "-A FORWARD -s 10.244.0.0/16 -j ACCEPT", 3),
        chain("n2", "filter", "KUBE-FORWARD", None),
        ipt("n2", "filter", "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP", 1),
    )
    got = stops(facts, "n2", "pod_out")
    assert got and all(s["verdict"] == "reject" and s["at"] == "filter FORWARD rule 2"
                       for s in got)
    assert got[0]["rule"].startswith("-A FORWARD -j REJECT") and got[0]["owner"] == "unknown"
    assert not stops(facts, "n1") and not stops(facts, "n3")
    assert not stops(facts, "n2", "overlay_in")  # INPUT is untouched


def test_user_chain_return_and_drop_are_followed():
    facts = cluster(
        ipt("n3", "filter", "-A FORWARD -j GUARD", 1),
        chain("n3", "filter", "GUARD", None),
        ipt("n3", "filter", "-A GUARD -p tcp -j RETURN", 1),
        ipt("n3", "filter", "-A GUARD -d 10.244.3.0/24 -j DROP", 2),
    )
    (first, *_) = got = stops(facts, "n3", "pod_in")
    assert all(s["verdict"] == "drop" for s in got)
    assert first["chain"] == "GUARD" and first["position"] == 2
    assert not stops(facts, "n3", "pod_out")  # not for the node's pod range: passes


def test_a_legacy_table_next_to_nf_tables_still_drops():
    facts = cluster(
        chain("n1", "filter", "INPUT", backend="legacy"),
        ipt("n1", "filter", "-A INPUT -p udp -m udp --dport 8472 -j DROP", 1, backend="legacy"),
        ipt("n1", "filter", "-A INPUT -j ACCEPT", 1),  # the nf_tables table accepts it
    )
    got = stops(facts, "n1", "overlay_in")
    assert len(got) == 2 and {s["peer"] for s in got} == {"n2", "n3"}
    assert all(s["backend"] == "legacy" and s["verdict"] == "drop" for s in got)


def test_a_native_nftables_table_is_walked_by_hook_and_priority():
    facts = cluster(
        f("nft_table", "n2", family="inet", table="guard", owner="nft", chains=2, rules=2),
        f("nft_chain", "n2", family="inet", table="guard", chain="pre", owner="nft",
          type="filter", hook="prerouting", priority="raw", policy="accept", rules=1,
          drop_rules=0, reject_rules=0),
        f("nft_rule", "n2", family="inet", table="guard", chain="pre", position=1,
          verdict="jump", text="iifname \"eth0\" meta l4proto udp jump vxlan", pkts=None,
          bytes=None),
        f("nft_rule", "n2", family="inet", table="guard", chain="vxlan", position=1,
          verdict="drop", text="udp dport { 4789, 8472 } counter packets 9 bytes 900 drop",
          pkts=9, bytes=900),
    )
    got = stops(facts, "n2", "overlay_in")
    assert len(got) == 2
    assert got[0]["at"] == "inet guard vxlan rule 1" and got[0]["hook"] == "prerouting"
    assert got[0]["owner"] == "nft" and got[0]["backend"] == "nft"
    assert not stops(facts, "n2", "pod_in")  # inner traffic arrives on flannel.1


def _firewalld_nft(node_name: str, drop_line: str = "") -> list[Fact]:
    """The nftables probe's facts for firewalld 0.9's nftables backend set up for Kubernetes,
    as recorded on a lab node, less the rule lines containing `drop_line`."""
    sec = section("nftables", "firewalld-0.9-nft-for-k8s-lab")
    if drop_line:
        sec = replace(sec, stdout="".join(line for line in sec.stdout.splitlines(keepends=True)
                                          if drop_line not in line))
    return BY_NAME["nftables"].parse(sec, node_name)


def test_firewalld_set_up_for_the_cluster_passes_every_flow_through_its_empty_chains():
    # its zones jump through pre/log/deny/allow/post chains, most of them empty
    facts = cluster(*_firewalld_nft("n2"))
    assert not stops(facts, "n2")
    w = walk_of(facts, "n2")
    assert w["flows"] == w["passed"] > 0 and w["netfilter"] is True


def test_firewalld_without_the_overlay_port_refuses_vxlan_at_its_catch_all_reject():
    facts = cluster(*_firewalld_nft("n2", drop_line="udp dport 8472"))
    got = stops(facts, "n2", "overlay_in")
    assert {s["peer"] for s in got} == {"n1", "n3"}
    assert {(s["verdict"], s["owner"], s["backend"]) for s in got} == {
        ("reject", "firewalld", "nft")}
    assert got[0]["rule"] == "reject with icmpx admin-prohibited"
    assert not stops(facts, "n2", "pod_in")  # pods' traffic: the trusted zone


def test_an_empty_chain_not_named_by_the_bundle_leaves_the_verdict_unknown():
    # a bundle from before nft_table named its empty chains: a jump to one is undecidable
    old = [Fact(x.kind, x.node, {k: v for k, v in x.attrs.items() if k != "empty_chains"},
                x.source) for x in _firewalld_nft("n2")]
    got = stops(cluster(*old), "n2")
    assert got and {s["verdict"] for s in got} == {"unknown"}


def _bridge_table(node_name: str, hook: str, *rules: str) -> list[Fact]:
    """A native table of the bridge family with one base chain (as ebtables-nft or a security
    agent writes one), its rules in order."""
    return [f("nft_table", node_name, family="bridge", table="guard", owner="nft", chains=1,
              rules=len(rules)),
            f("nft_chain", node_name, family="bridge", table="guard", chain="c", owner="nft",
              type="filter", hook=hook, priority="filter", policy="accept", rules=len(rules),
              drop_rules=sum("drop" in r for r in rules), reject_rules=0)] + [
            f("nft_rule", node_name, family="bridge", table="guard", chain="c", position=i,
              verdict=r.split()[-1], text=r, pkts=None, bytes=None)
            for i, r in enumerate(rules, start=1)]


def test_a_bridge_family_rule_meets_pod_traffic_where_it_crosses_cni0():
    # routed out of cni0 to a pod here: the bridge's output hook, after the IP ones
    facts = cluster(*_bridge_table("n2", "output",
                                   "ip saddr != 10.244.2.0/24 ip daddr 10.244.2.0/24 drop"))
    got = stops(facts, "n2", "pod_in")
    assert {s["peer"] for s in got} == {"n1", "n3"}
    assert got[0]["at"] == "bridge guard c rule 1" and got[0]["hook"] == "bridge output"
    assert not stops(facts, "n2", "pod_out")  # a pod's frame to its gateway is input, not output
    # a pod's frame coming in to its gateway: prerouting and input of the bridge
    facts = cluster(*_bridge_table("n2", "input", "ip saddr 10.244.2.0/24 drop"))
    assert {s["peer"] for s in stops(facts, "n2", "pod_out")} == {"n1", "n3"}
    assert not stops(facts, "n2", "pod_in")


def test_which_port_of_the_bridge_a_frame_uses_is_unknown():
    facts = cluster(*_bridge_table("n2", "prerouting", 'iifname "veth*" drop'))
    got = stops(facts, "n2", "pod_out")
    assert got and all(s["verdict"] == "unknown" for s in got)
    # the overlay's own traffic never crosses the bridge
    assert not stops(facts, "n2", "overlay_in") and not stops(facts, "n2", "pod_in")


def test_an_ipset_match_is_unknown_not_a_guess():
    facts = cluster(
        ipt("n1", "filter", "-A FORWARD -m set --match-set blocked src -j DROP", 1))
    got = stops(facts, "n1", "pod_in")
    assert got and all(s["verdict"] == "unknown" for s in got)
    assert "-m set" in got[0]["at"] and "depends on" in got[0]["detail"]


def test_undecidable_rules_that_cannot_change_the_verdict_are_decided():
    facts = cluster(
        ipt("n1", "filter", "-A FORWARD -m limit --limit 5/min -j LOG", 1),
        ipt("n1", "filter", "-A FORWARD -m set --match-set friends src -j ACCEPT", 2))
    assert not stops(facts, "n1")


def test_policy_rule_blackhole_is_policy_routing_not_a_missing_route():
    facts = cluster(
        f("ip_rule", "n2", priority=0, action="lookup", table="local", src=None, dst=None,
          iif=None, oif=None, fwmark=None, invert=False, ipproto=None, dport=None,
          text="0: from all lookup local"),
        f("ip_rule", "n2", priority=100, action="blackhole", table=None, src=None,
          dst="10.244.3.0/24", iif=None, oif=None, fwmark=None, invert=False, ipproto=None,
          dport=None, text="100: from all to 10.244.3.0/24 blackhole"),
        f("ip_rule", "n2", priority=32766, action="lookup", table="main", src=None, dst=None,
          iif=None, oif=None, fwmark=None, invert=False, ipproto=None, dport=None,
          text="32766: from all lookup main"),
    )
    got = stops(facts, "n2", "pod_out")
    assert {s["peer"] for s in got} == {"n3"}
    assert got[0]["stage"] == "policy" and got[0]["verdict"] == "drop"
    assert "10.244.3.0/24 blackhole" in got[0]["at"]


def test_missing_route_to_a_peer_pod_cidr_is_refused_at_routing():
    facts = [x for x in cluster() if not (x.kind == "route" and x.node == "n2"
                                          and x.attrs["dst"] == "10.244.3.0/24")]
    facts = [x for x in facts if not x.kind.startswith("path")]
    facts += path_facts(facts)
    (s,) = [s for s in stops(facts, "n2", "pod_out") if s["state"] == "new"]
    assert s["stage"] == "route" and s["verdict"] == "reject" and s["peer"] == "n3"


def test_forwarding_off_on_one_interface_only():
    facts = cluster(sysctl("n1", "net.ipv4.conf.cni0.forwarding", 0),
                    sysctl("n1", "net.ipv4.conf.flannel.1.forwarding", 1))
    assert {s["flow"] for s in stops(facts, "n1")} >= {"pod_out"}
    assert not stops(facts, "n1", "pod_in")  # arrives on flannel.1, which forwards
    s = stops(facts, "n1", "pod_out")[0]
    assert s["stage"] == "forwarding" and s["at"] == "net.ipv4.conf.cni0.forwarding=0"


def test_strict_rp_filter_drops_only_an_asymmetric_path():
    # n1 reaches n2's pods via eth0 (as host-gw would) while the tunnel delivers them on
    # flannel.1: strict reverse-path filtering on flannel.1 drops them.
    facts = [x for x in cluster() if not x.kind.startswith("path") and not (
        x.kind == "route" and x.node == "n1" and x.attrs["dst"] == "10.244.2.0/24")]
    facts += [route("n1", "10.244.2.0/24", "eth0", "198.18.0.12"),
              sysctl("n1", "net.ipv4.conf.flannel.1.rp_filter", 1)]
    facts += path_facts(facts)
    got = [s for s in stops(facts, "n1", "pod_in") if s["stage"] == "rp_filter"]
    assert {s["peer"] for s in got} == {"n2"}
    assert got[0]["at"] == "net.ipv4.conf.flannel.1.rp_filter=1"
    # strict on its own, with symmetric routes, drops nothing
    assert not stops(cluster(sysctl("n3", "net.ipv4.conf.all.rp_filter", 1)), "n3")


def test_underlay_mtu_lowered_on_the_receiving_node():
    facts = [x for n in ("n1", "n2", "n3") for x in node(n, mtu=1400 if n == "n2" else 1500)]
    facts += path_facts(facts)
    got = stops(facts, "n2", "pod_in")
    assert got and all(s["stage"] == "mtu" for s in got)
    assert got[0]["at"].endswith("> n2 eth0 1400")
    assert not stops(facts, "n1") and not stops(facts, "n3")


def _kube_proxy(node_name: str, endpoints: list[str]) -> list[Fact]:
    out = [chain(node_name, "nat", c) for c in ("PREROUTING", "OUTPUT", "POSTROUTING")]
    out += [chain(node_name, "nat", c, None) for c in ("KUBE-SERVICES", "KUBE-SVC-WEB")]
    out.append(ipt(node_name, "nat", '-A PREROUTING -m comment --comment "kubernetes service '
                   'portals" -j KUBE-SERVICES', 1))
    svc = ipt(node_name, "nat", '-A KUBE-SERVICES -d 10.96.0.20/32 -p tcp -m comment '
              '--comment "default/web:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-WEB', 1)
    svc.attrs.update(dst="10.96.0.20/32", dport="80", proto="tcp",
                     comment="default/web:http cluster IP")
    out.append(svc)
    for k, ep in enumerate(endpoints, 1):
        sep = f"KUBE-SEP-{k}"
        out.append(chain(node_name, "nat", sep, None))
        prob = (f"-m statistic --mode random --probability {1 / (len(endpoints) - k + 1):.5f} "
                if k < len(endpoints) else "")
        out.append(ipt(node_name, "nat", f"-A KUBE-SVC-WEB {prob}-j {sep}", k))
        out.append(ipt(node_name, "nat", f"-A {sep} -p tcp -m tcp -j DNAT --to-destination "
                       f"{ep}:8080", 1))
    return out


def test_service_vip_is_translated_and_forwarded_to_every_endpoint():
    extra = [x for n in NODES for x in _kube_proxy(n, ["10.244.2.3", "10.244.3.3"])]
    facts = cluster(*extra)
    assert not stops(facts, "n1", "service")
    assert "service" in walk_of(facts, "n1")["kinds"]


def test_a_dnat_no_service_proxy_wrote_sends_the_traffic_elsewhere():
    extra = [x for n in NODES for x in _kube_proxy(n, ["10.244.2.3", "10.244.3.3"])]
    # n1's PREROUTING: an "interception" rule above kube-proxy's jump, and one for pod traffic
    extra = [x for x in extra if not (x.node == "n1" and x.kind == "iptables_rule"
                                      and x.attrs["chain"] == "PREROUTING")]
    extra += [ipt("n1", "nat", "-A PREROUTING -p tcp -m tcp --dport 80 -j DNAT "
                  "--to-destination 203.0.113.80", 1),
              ipt("n1", "nat", '-A PREROUTING -m comment --comment "kubernetes service '
                  'portals" -j KUBE-SERVICES', 2),
              ipt("n1", "nat", "-A PREROUTING -d 10.244.1.2/32 -p icmp -j DNAT "
                  "--to-destination 10.244.1.3", 3)]
    facts = cluster(*extra)
    (svc,) = stops(facts, "n1", "service")
    assert (svc["stage"], svc["table"], svc["chain"], svc["position"]) == (
        "netfilter", "nat", "PREROUTING", 1)
    assert svc["at"] == "nat PREROUTING rule 1: DNAT of 10.96.0.20:80 to 203.0.113.80:80"
    assert svc["undo"] == ("iptables -t nat -D PREROUTING -p tcp -m tcp --dport 80 -j DNAT "
                           "--to-destination 203.0.113.80")
    assert {s["peer"] for s in stops(facts, "n1", "pod_in")} == {"n2", "n3"}
    # kube-proxy's own translation on the other nodes is the Service path, not a stop
    assert not stops(facts, "n2", "service") and not stops(facts, "n3", "service")


def test_an_snat_to_an_address_the_node_does_not_hold_loses_the_replies():
    facts = cluster(
        chain("n2", "nat", "POSTROUTING"),
        ipt("n2", "nat", "-A POSTROUTING -s 10.244.2.0/24 -d 10.244.0.0/16 -j SNAT "
            "--to-source 10.99.0.7", 1),
        # the same on n3, but to the node's own address, and a masquerade: both come back
        chain("n3", "nat", "POSTROUTING"),
        ipt("n3", "nat", "-A POSTROUTING -s 10.244.3.0/24 -d 10.244.0.0/16 -j SNAT "
            "--to-source 198.18.0.13", 1),
        chain("n1", "nat", "POSTROUTING"),
        ipt("n1", "nat", "-A POSTROUTING -s 10.244.1.0/24 -j MASQUERADE", 1),
    )
    got = stops(facts, "n2", "pod_out")
    assert {s["peer"] for s in got} == {"n1", "n3"}
    assert all(s["verdict"] == "drop" and s["hook"] == "postrouting" for s in got)
    assert got[0]["at"] == "nat POSTROUTING rule 1: SNAT of 10.244.2.2 to 10.99.0.7"
    assert got[0]["undo"] == ("iptables -t nat -D POSTROUTING -s 10.244.2.0/24 -d "
                              "10.244.0.0/16 -j SNAT --to-source 10.99.0.7")
    assert not stops(facts, "n2", "pod_in")  # replies to n2's own pods are not translated
    assert not stops(facts, "n3") and not stops(facts, "n1")


def test_a_native_nft_snat_is_followed_too():
    facts = cluster(*nft_base(
        "n2", "ip", "egress", "post", "nat", "postrouting", "srcnat",
        ("snat", "ip saddr 10.244.2.0/24 snat ip to 10.99.0.7-10.99.0.9:1024-2048")))
    got = stops(facts, "n2", "pod_out")
    assert got and got[0]["at"] == "ip egress post rule 1: SNAT of 10.244.2.2 to 10.99.0.7"


def _untranslated(facts: list[Fact], node_name: str) -> list[dict]:
    return [x.attrs for x in facts if x.kind == "egress_untranslated" and x.node == node_name]


def test_a_pods_connection_that_leaves_unmasqueraded_is_said_with_where_nat_let_it_go():
    check = f("tcp_check", "n1", target="203.0.113.10:3306", address="203.0.113.10", by="ip",
              ok=False, detail="timeout", rtt_ms=None, vantage="cni-1")
    outside = [route(n, "203.0.113.0/24", "eth0", "198.18.0.1") for n in NODES]
    masq = "-A POSTROUTING -s 10.244.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE"
    facts = cluster(
        check, *outside,
        chain("n1", "nat", "POSTROUTING"), ipt("n1", "nat", masq, 1),
        # an exception above the masquerade, as ip-masq-agent writes one
        chain("n2", "nat", "POSTROUTING"),
        ipt("n2", "nat", "-A POSTROUTING -s 10.244.2.0/24 -d 203.0.113.0/24 -j RETURN", 1),
        ipt("n2", "nat", masq, 2),
        # a CNI agent that runs without its masquerade: the chain holds none
        chain("n3", "nat", "POSTROUTING"))
    assert not _untranslated(facts, "n1")
    [n2] = _untranslated(facts, "n2")
    assert (n2["target"], n2["src"], n2["at"], n2["rule"]) == (
        "203.0.113.10:3306", "10.244.2.2",
        "nat POSTROUTING rule 1 returns it before any masquerade",
        "-A POSTROUTING -s 10.244.2.0/24 -d 203.0.113.0/24 -j RETURN")
    [n3] = _untranslated(facts, "n3")
    assert (n3["at"], n3["rule"]) == ("nat POSTROUTING: no rule masquerades it", None)
    # it passes: the walk does not call it lost (a routed pod network leaves so on purpose)
    assert not stops(facts, "n2") and not stops(facts, "n3")
    # a native nftables masquerade counts as one
    facts = cluster(check, *outside, *nft_base(
        "n3", "ip", "nat", "post", "nat", "postrouting", "srcnat",
        ("masquerade", "ip saddr 10.244.0.0/16 masquerade")))
    assert not _untranslated(facts, "n3")


def test_the_neighbour_each_node_hands_its_connection_to_an_endpoint_is_named():
    check = f("tcp_check", "n1", target="203.0.113.10:3306", address="203.0.113.10", by="ip",
              ok=False, detail="timeout", rtt_ms=None, vantage="cni-1")
    near = f("tcp_check", "n1", target="198.18.0.250:53", address="198.18.0.250", by="ip",
             ok=True, detail=None, rtt_ms=1.0, vantage="cni-1")
    facts = cluster(check, near, *(route(n, "203.0.113.0/24", "eth0", "198.18.0.250")
                                   for n in ("n1", "n2")))
    hops = {(x.node, x.attrs["target"]): (x.attrs["hop"], x.attrs["dev"])
            for x in facts if x.kind == "next_hop"}
    # through the gateway; on the node's own link, the endpoint itself; n3 has no route to it
    assert hops == {("n1", "203.0.113.10:3306"): ("198.18.0.250", "eth0"),
                    ("n2", "203.0.113.10:3306"): ("198.18.0.250", "eth0"),
                    **{(n, "198.18.0.250:53"): ("198.18.0.250", "eth0") for n in NODES}}


def test_an_untracked_pod_connection_leaves_untranslated_and_the_notrack_is_named():
    check = f("tcp_check", "n2", target="203.0.113.10:3306", address="203.0.113.10", by="ip",
              ok=False, detail="timeout", rtt_ms=None, vantage="cni-2")
    notrack = "-A PREROUTING -s 10.244.2.0/24 -d 203.0.113.0/24 -j NOTRACK"
    facts = cluster(
        check, route("n2", "203.0.113.0/24", "eth0", "198.18.0.1"),
        chain("n2", "raw", "PREROUTING"), ipt("n2", "raw", notrack, 1),
        chain("n2", "nat", "POSTROUTING"),
        ipt("n2", "nat", "-A POSTROUTING -s 10.244.0.0/16 -j MASQUERADE", 1))
    [kept] = _untranslated(facts, "n2")
    assert kept["rule"] == notrack and "exempts it from connection tracking" in kept["at"]


def test_a_masquerade_behind_a_match_the_walk_cannot_decide_is_not_called_missing():
    # Calico's natOutgoing masquerades by ipset; without the set's members the walk cannot
    # tell whether it matches, so it says nothing of the source the connection leaves with
    check = f("tcp_check", "n2", target="203.0.113.10:3306", address="203.0.113.10", by="ip",
              ok=False, detail="timeout", rtt_ms=None, vantage="cni-2")
    facts = cluster(
        check, route("n2", "203.0.113.0/24", "eth0", "198.18.0.1"),
        chain("n2", "nat", "POSTROUTING"),
        ipt("n2", "nat", "-A POSTROUTING -m set --match-set masq-pools src -j MASQUERADE", 1))
    assert not _untranslated(facts, "n2") and not stops(facts, "n2", "endpoint_pod")


def test_a_declared_endpoint_in_the_pod_network_is_meant_to_be_reached_untranslated():
    check = f("tcp_check", "n1", target="10.244.2.3:8080", address="10.244.2.3", by="ip",
              ok=True, detail=None, rtt_ms=1.0, vantage="cni-1")
    facts = cluster(check, chain("n1", "nat", "POSTROUTING"))
    assert not _untranslated(facts, "n1")


def test_nothing_is_said_of_nat_where_the_packet_filter_was_not_read():
    check = f("tcp_check", "n1", target="203.0.113.10:3306", address="203.0.113.10", by="ip",
              ok=False, detail="timeout", rtt_ms=None, vantage="cni-1")
    facts = [x for n in ("n1", "n2") for x in node(n) if x.kind != "iptables_chain"]
    facts += [check, route("n1", "203.0.113.0/24", "eth0", "198.18.0.1")]
    assert not _untranslated(facts + path_facts(facts), "n1")


def test_the_pod_the_own_pod_check_pinged_is_walked_from_its_node():
    """A pod whose host route is gone is never a pod-network target, but the own-pod check
    found it; the node's way to it ends at the blackhole that took its traffic."""
    checked = [f("own_pod_check", "n2", direction="node_to_pod", address="10.244.2.9",
                 ok=False, detail="timeout", rtt_ms=None, vantage="cni-a")]
    facts = cluster(route("n2", "10.244.2.9/32", None, rtype="blackhole"), *checked)
    (stop,) = stops(facts, "n2", "own_pod_out")
    assert (stop["state"], stop["dst"], stop["stage"], stop["verdict"]) == (
        "new", "10.244.2.9", "route", "drop")
    assert not stops(cluster(*checked), "n2")  # routed to cni0 like every pod there


def test_a_node_that_lost_its_service_rules_is_named():
    extra = [x for n in ("n1", "n3") for x in _kube_proxy(n, ["10.244.2.3"])]
    extra += [chain("n2", "nat", c) for c in ("PREROUTING", "OUTPUT", "POSTROUTING")]
    facts = cluster(*extra)
    (s,) = stops(facts, "n2", "service")
    assert s["owner"] == "kube-proxy" and "nothing translates 10.96.0.20:80" in s["at"]
    assert not stops(facts, "n1", "service") and not stops(facts, "n3", "service")


def _nft_raw_notrack(node_name: str, text: str) -> list[Fact]:
    return nft_base(node_name, "ip", "dns_notrack", "pre", "filter", "prerouting", "raw",
                    (None, text))


@pytest.mark.parametrize("untrack", [
    [chain("n2", "raw", "PREROUTING"),
     ipt("n2", "raw", "-A PREROUTING -s 10.244.0.0/16 -j NOTRACK", 1)],
    [chain("n2", "raw", "PREROUTING"),
     ipt("n2", "raw", "-A PREROUTING -p tcp -m tcp --dport 80 -j CT --notrack", 1)],
    _nft_raw_notrack("n2", "tcp dport 80 notrack"),
], ids=["NOTRACK", "CT --notrack", "nft notrack"])
def test_an_untracked_service_packet_is_never_translated_and_the_notrack_is_named(untrack):
    extra = [x for n in NODES for x in _kube_proxy(n, ["10.244.3.3"])] + untrack
    facts = cluster(*extra)
    (s,) = stops(facts, "n2", "service")
    # kube-proxy's rules are all there: the exemption, not kube-proxy, is named
    assert s["stage"] == "notrack" and s["owner"] != "kube-proxy", s
    assert s["position"] == 1 and s["hook"] == "prerouting"
    assert "nothing translates 10.96.0.20:80" in s["at"]
    if s["backend"] != "nft":
        assert s["undo"].startswith("iptables -t raw -D PREROUTING ")
    assert not stops(facts, "n1", "service") and not stops(facts, "n3", "service")
    assert not stops(facts, "n2", "pod_out")  # pod to pod needs no translation


def test_a_notrack_the_service_packet_does_not_match_changes_nothing():
    extra = [x for n in NODES for x in _kube_proxy(n, ["10.244.3.3"])]
    extra += _nft_raw_notrack("n2", "udp dport 53 notrack")  # the web Service is TCP 80
    assert not stops(cluster(*extra), "n2", "service")


def test_a_notrack_after_connection_tracking_has_no_effect():
    # nft accepts `notrack` in a chain of any priority; at filter (0) conntrack has already
    # tracked the packet, so kube-proxy's DNAT still happens
    extra = [x for n in NODES for x in _kube_proxy(n, ["10.244.3.3"])]
    late = _nft_raw_notrack("n2", "tcp dport 80 notrack")
    late[1].attrs["priority"] = "filter"
    assert not stops(cluster(*extra, *late), "n2", "service")


def test_an_untracked_packet_matches_untracked_and_no_other_state():
    p = Packet(addr("10.244.2.2"), addr("10.96.0.20"), "tcp", None, 80, "cni0",
               untracked_by=("raw", "PREROUTING", None))
    ctx = Context(frozenset())
    assert nft_rule("c", 1, "ct state untracked accept").matches(p, ctx) is True
    assert nft_rule("c", 1, "ct state new,established accept").matches(p, ctx) is False
    assert ipt_rule("-A FORWARD -m conntrack --ctstate UNTRACKED -j ACCEPT", 1
                    ).matches(p, ctx) is True
    assert ipt_rule("-A FORWARD -m conntrack --ctstate NEW -j ACCEPT", 1).matches(p, ctx) is False


def _nodeport_rules(node_name: str) -> list[Fact]:
    """kube-proxy's NodePort jump and chain for the web Service (iptables mode)."""
    out = [chain(node_name, "nat", "KUBE-NODEPORTS", None)]
    out.append(ipt(node_name, "nat", '-A KUBE-SERVICES ! -d 127.0.0.0/8 -m comment --comment '
                   '"kubernetes service nodeports" -m addrtype --dst-type LOCAL '
                   "-j KUBE-NODEPORTS", 2))
    out.append(ipt(node_name, "nat", "-A KUBE-NODEPORTS -p tcp -m comment --comment "
                   '"default/web:http" -m tcp --dport 30085 -j KUBE-SVC-WEB', 1))
    return out


def _nodeport_checked(dst: str, *srcs: str) -> list[Fact]:
    return [f("nodeport_check", s, service="default/web:http", node_port=30085, dst=dst,
              address=f"198.18.0.1{NODES[dst]}", own=False, ok=False, detail="refused")
            for s in srcs]


def test_a_peers_nodeport_connect_is_walked_through_the_dnat_and_forwarded():
    extra = [x for n in NODES for x in _kube_proxy(n, ["10.244.2.3"]) + _nodeport_rules(n)]
    facts = cluster(*extra, *_nodeport_checked("n1", "n2", "n3"))
    assert not stops(facts, "n1", "nodeport_in")
    assert "nodeport_in" in walk_of(facts, "n1")["kinds"]
    assert "nodeport_in" not in walk_of(facts, "n2")["kinds"]  # nobody connected to n2's


def test_a_forward_reject_stops_the_peers_nodeport_connect_on_that_node_only():
    extra = [x for n in NODES for x in _kube_proxy(n, ["10.244.2.3"]) + _nodeport_rules(n)]
    extra.append(ipt("n1", "filter", "-A FORWARD -j REJECT --reject-with icmp-host-prohibited",
                     1))
    facts = cluster(*extra, *_nodeport_checked("n1", "n2", "n3"))
    got = sorted((s["peer"], s["verdict"], s["at"]) for s in stops(facts, "n1", "nodeport_in"))
    assert got == [("n2", "reject", "filter FORWARD rule 1"),
                   ("n3", "reject", "filter FORWARD rule 1")]


def test_a_node_without_the_nodeport_is_named_for_it():
    extra = [x for n in NODES for x in _kube_proxy(n, ["10.244.2.3"])]  # no NodePort rules
    facts = cluster(*extra, *_nodeport_checked("n3", "n1"))
    (s,) = stops(facts, "n3", "nodeport_in")
    assert s["owner"] == "kube-proxy" and "nothing translates 198.18.0.13:30085" in s["at"]


def test_tc_filters_are_reported_as_what_the_walk_cannot_see():
    facts = cluster(f("tc_hook", "n3", dev="eth0", direction="ingress", qdisc="clsact",
                      filters=1, actions="drop", text="..."))
    assert "eth0: tc ingress filters (drop)" in walk_of(facts, "n3")["altered_by"]
    assert walk_of(facts, "n1")["altered_by"] is None


def test_facts_validate_against_the_registry():
    from kubenetdiag.facts.registry import validate_fact

    facts = cluster(ipt("n2", "filter", "-A FORWARD -j REJECT", 1),
                    ipt("n1", "filter", "-A FORWARD -m set --match-set x src -j DROP", 1))
    for x in facts:
        if x.kind.startswith("path"):
            assert validate_fact(x) == [], x


@pytest.mark.parametrize("text, pkt, expected", [
    ('ct state established,related accept', {"state": "established"}, True),
    ('ct state { established, related } accept', {"state": "new"}, False),
    ('iifname != "lo" udp dport 8472 drop', {}, True),
    ('iifname "cali*" drop', {}, False),
    ('ip saddr @blocked drop', {}, None),
    ('ip6 saddr ::1 drop', {}, False),
    ('meta l4proto { tcp, udp } th dport 8472 counter packets 0 bytes 0 drop', {}, True),
    ('fib daddr type local udp dport 8472 drop', {}, True),
])
def test_nft_expressions(text, pkt, expected):
    p = Packet(addr("198.18.0.11"), addr("198.18.0.12"), "udp", None, 8472, "eth0")
    p = p.but(**pkt)
    rule = nft_rule("c", 1, text)
    assert rule.matches(p, Context(frozenset({addr("198.18.0.12")}))) is expected


def test_nft_priorities_by_name_and_offset():
    assert [priority(x) for x in ("filter", "mangle - 5", "-100", "srcnat + 10", "raw")] == [
        0, -155, -100, 110, -300]


_TOKENS = st.sampled_from([
    "-p tcp", "-p udp", "! -s 10.0.0.0/8", "-d 10.244.0.0/16", "-i eth0", "-o cni0",
    "-m conntrack --ctstate NEW", "-m set --match-set x src", "--dport 53", "-m statistic",
    "-m comment --comment \"x y\"", "-m addrtype --dst-type LOCAL", "-j DROP", "-j ACCEPT",
    "-j RETURN", "-j LOG", "-j NOPE", "-j GUARD", "-g GUARD", "-m mark --mark 0x4000/0x4000",
    "-j MARK --set-xmark 0x4000/0x4000", "-j DNAT --to-destination 10.244.2.3:80", "\"", "!",
])


@settings(max_examples=150)
@given(st.lists(st.lists(_TOKENS, min_size=0, max_size=6), min_size=0, max_size=6))
def test_any_rule_set_gives_a_verdict_and_never_crashes(rules):
    extra = [chain("n1", "filter", "GUARD", None)]
    for pos, toks in enumerate(rules, 1):
        extra.append(ipt("n1", "filter", "-A " + ("GUARD " if pos % 2 else "FORWARD ")
                         + " ".join(toks), pos))
    facts = cluster(*extra)
    for s in stops(facts, "n1"):
        assert s["verdict"] in ("drop", "reject", "unknown")


def test_a_drop_of_pod_network_sources_in_input_cuts_the_node_own_pod_address():
    facts = cluster(ipt("n2", "filter", "-A INPUT -s 10.244.0.0/16 -j DROP", 1))
    got = stops(facts, "n2", "pod_node_in")
    assert {s["peer"] for s in got} == {"n1", "n3"}
    assert got[0]["at"] == "filter INPUT rule 1" and got[0]["dst"] == "10.244.2.1"
    assert got[0]["src"] == "10.244.1.0"  # the peer's flannel.1 address, as the kernel picks it


def test_a_block_of_one_peer_in_output_or_by_a_host_route_stops_the_nodes_own_pings_to_it():
    # what the matrix's underlay layer sends from the node itself: its output hooks, and the
    # route it picks for the peer's address
    got = stops(cluster(ipt("n1", "filter", "-A OUTPUT -d 198.18.0.12/32 -j DROP", 1)), "n1",
                "node_out")
    assert [(s["peer"], s["at"], s["verdict"]) for s in got] == [
        ("n2", "filter OUTPUT rule 1", "drop")]
    got = stops(cluster(route("n1", "198.18.0.12/32", None, rtype="unreachable")), "n1", "node_out")
    assert [(s["peer"], s["stage"], s["verdict"]) for s in got] == [("n2", "route", "reject")]


def test_a_port_drop_is_found_where_the_declared_endpoint_lives():
    check = f("tcp_check", "n1", target="10.244.2.3:8080", address="10.244.2.3", by="ip",
              ok=False, detail="timeout", rtt_ms=None, vantage=None)
    drop = ipt("n2", "filter", "-A FORWARD -d 10.244.2.0/24 -p tcp -m tcp --dport 8080 -j DROP",
               1)
    facts = cluster(check, drop)
    got = stops(facts, "n2", "endpoint_in")
    assert {s["peer"] for s in got} == {"n1", "n3"} and got[0]["target"] == "10.244.2.3:8080"
    assert not stops(facts, "n2", "pod_in")  # icmp and other ports pass
    # the same rule on a node that hosts no endpoint on that port stops nothing the cluster uses
    facts = cluster(check, ipt("n3", "filter", drop.attrs["spec"].replace("2.0/24", "3.0/24"), 1))
    assert not stops(facts, "n3")


def _rule(node_name: str, priority_: int, text: str, **attrs) -> Fact:
    base = {"priority": priority_, "action": "lookup", "table": "main", "src": None, "dst": None,
            "iif": None, "oif": None, "fwmark": None, "invert": False, "ipproto": None,
            "dport": None, "text": text}
    base.update(attrs)
    return f("ip_rule", node_name, **base)


def test_policy_rules_by_protocol_port_and_selectors_the_walk_does_not_follow():
    blackhole = {"action": "blackhole", "table": None}
    facts = cluster(_rule("n1", 0, "0: from all lookup local", table="local"),
                    _rule("n1", 50, "50: from all ipproto udp dport 53 blackhole",
                          ipproto="udp", dport="53", **blackhole),
                    _rule("n1", 60, "60: from all uidrange 0-0 blackhole", **blackhole),
                    _rule("n1", 32766, "32766: from all lookup main"),
                    f("dns_pod", "n2", pod="coredns-0", ip="10.244.2.3", ready=True, restarts=0))
    (dns,) = stops(facts, "n1", "dns_pod")  # udp/53 from a pod here: the rule at 50 decides
    assert dns["stage"] == "policy" and dns["verdict"] == "drop" and "dport 53" in dns["at"]
    got = stops(facts, "n1", "pod_out")
    assert got and all(s["verdict"] == "unknown" for s in got)  # which socket: undecidable


def test_wg_quick_suppress_prefixlength_ignores_only_the_default_route():
    facts = cluster(route("n2", "0.0.0.0/0", "eth0", "198.18.0.1"),
                    _rule("n2", 0, "0: from all lookup local", table="local"),
                    _rule("n2", 32764, "32764: from all lookup main suppress_prefixlength 0"),
                    _rule("n2", 32765, "32765: not from all fwmark 0xca6c lookup 51820",
                          table="51820", invert=True, fwmark="0xca6c"),
                    _rule("n2", 32766, "32766: from all lookup main"))
    assert not stops(facts, "n2")  # the pod routes are more specific than the default


def test_a_netem_qdisc_is_reported_even_without_filters():
    facts = cluster(f("tc_hook", "n1", dev="eth0", direction="root", qdisc="netem", filters=0,
                      actions=None, text="qdisc netem 8001: root loss 30%"))
    assert "eth0" in walk_of(facts, "n1")["altered_by"]


def _netdev(node_name: str, device: str, text: str, hook: str = "ingress") -> list[Fact]:
    chain = "in" if hook == "ingress" else "out"
    return [
        f("nft_table", node_name, family="netdev", table="guard", owner="nft", chains=1, rules=1),
        f("nft_chain", node_name, family="netdev", table="guard", chain=chain, owner="nft",
          type="filter", hook=hook, priority="filter", policy="accept", device=device,
          rules=1, drop_rules=1, reject_rules=0),
        f("nft_rule", node_name, family="netdev", table="guard", chain=chain, position=1,
          verdict="drop", text=text, pkts=None, bytes=None),
    ]


def test_a_netdev_ingress_table_drops_before_netfilter_sees_the_packet():
    facts = cluster(*_netdev("n3", "eth0", "udp dport 8472 drop"))
    got = stops(facts, "n3", "overlay_in")
    assert {s["peer"] for s in got} == {"n1", "n2"}
    assert got[0]["hook"] == "ingress" and got[0]["at"] == "netdev guard in rule 1"
    assert not stops(facts, "n3", "pod_in")  # decapsulated pod traffic arrives on flannel.1
    # the same table on another device sees none of it
    assert not stops(cluster(*_netdev("n3", "eth1", "udp dport 8472 drop")), "n3")


def test_a_netdev_egress_table_drops_what_leaves_by_its_device_after_postrouting():
    facts = cluster(*_netdev("n3", "eth0", "udp dport 8472 drop", hook="egress"))
    got = stops(facts, "n3", "overlay_out")
    assert {s["peer"] for s in got} == {"n1", "n2"}
    assert got[0]["hook"] == "egress" and got[0]["at"] == "netdev guard out rule 1"
    assert got[0]["detail"].endswith("postrouting, egress | drop at netdev guard out rule 1")
    # what arrives is not its business, nor what leaves by another device
    assert not stops(facts, "n3", "overlay_in")
    assert not stops(cluster(*_netdev("n3", "eth1", "udp dport 8472 drop", hook="egress")),
                     "n3")
    # the pod traffic itself leaves by flannel.1, before it is encapsulated
    facts = cluster(*_netdev("n3", "flannel.1", "ip daddr 10.244.1.0/24 drop", hook="egress"))
    assert {(s["flow"], s["peer"]) for s in stops(facts, "n3")} == {("pod_out", "n1")}


def test_a_direct_route_to_the_peer_is_a_way_to_its_pods_too():
    # next to the overlay, a route straight to the peer's node address (host-gw style) works
    facts = [x for x in cluster() if not x.kind.startswith("path") and not (
        x.kind == "route" and x.node == "n1" and x.attrs["dst"] == "10.244.2.0/24")]
    facts += [route("n1", "10.244.2.0/24", "eth0", "198.18.0.12")]
    facts += path_facts(facts)
    assert not stops(facts, "n1", "pod_out")
    # a route that reaches neither is misrouted
    facts = [x for x in facts if not x.kind.startswith("path") and not (
        x.kind == "route" and x.node == "n1" and x.attrs["dst"] == "10.244.2.0/24")]
    facts += [route("n1", "10.244.2.0/24", "eth0", "198.18.0.99")]
    facts += path_facts(facts)
    got = [s for s in stops(facts, "n1", "pod_out") if s["peer"] == "n2"]
    assert got and got[0]["stage"] == "route"
    assert "out of flannel.1 or via 198.18.0.12" in got[0]["at"]


def test_an_address_on_another_device_whose_route_takes_a_peers_traffic_is_named():
    # docker's bridge with an address in the first half of n3's pod range: the kernel's
    # connected route is more specific than flannel's, which stays in the table
    facts = cluster(iface("n1", "docker0", "bridge", 1500, "10.244.3.1/25"),
                    route("n1", "10.244.3.0/25", "docker0"))
    got = [s for s in stops(facts, "n1") if s["verdict"] != "pass"]
    assert {(s["flow"], s["peer"], s["stage"]) for s in got} == {
        ("pod_out", "n3", "address")}
    assert got[0]["rule"] == "10.244.3.1/25 dev docker0"
    assert got[0]["undo"] == "ip address del 10.244.3.1/25 dev docker0"
    assert "the overlay to n3's pods needs it out of flannel.1" in got[0]["at"]
    # around a peer's node address: the tunnel and the node's own pings to it
    facts = cluster(iface("n1", "docker0", "bridge", 1500, "198.18.0.14/30"),
                    route("n1", "198.18.0.12/30", "docker0"))
    got = stops(facts, "n1")
    assert {(s["flow"], s["peer"], s["stage"]) for s in got} == {
        (flow, peer, "address") for flow in ("node_out", "overlay_out") for peer in ("n2", "n3")}
    # the same route written by hand with no address behind it is a route, not an address
    facts = cluster(route("n1", "198.18.0.12/30", "docker0"))
    assert {s["stage"] for s in stops(facts, "n1", "overlay_out")} == {"route"}
    assert not stops(facts, "n1", "node_out")  # how the node reaches peers is the network's
    # a second address on the node's own NIC keeps the traffic where it belongs
    facts = [x for x in cluster() if not x.kind.startswith("path")
             and not (x.kind == "interface" and x.node == "n1" and x.attrs["name"] == "eth0")]
    facts += [iface("n1", "eth0", "veth", 1500, "198.18.0.11/24,198.18.0.14/30"),
              route("n1", "198.18.0.12/30", "eth0")]
    facts += path_facts(facts)
    assert not stops(facts, "n1")



def test_a_peers_own_address_held_by_the_node_keeps_everything_sent_to_that_peer():
    # n2's address typed on n1's own NIC as well (a configuration cloned from n2): the local
    # table answers before any route, so n1's tunnel and pings to n2 never leave n1
    facts = [x for x in cluster() if not x.kind.startswith("path")
             and not (x.kind == "interface" and x.node == "n1" and x.attrs["name"] == "eth0")]
    facts += [iface("n1", "eth0", "veth", 1500, "198.18.0.11/24,198.18.0.12/24")]
    facts += path_facts(facts)
    got = stops(facts, "n1")
    assert {(s["flow"], s["peer"], s["stage"], s["verdict"]) for s in got} == {
        (flow, "n2", "peer_address", "drop") for flow in ("node_out", "overlay_out")}
    assert got[0]["rule"] == "198.18.0.12/24 dev eth0"
    assert got[0]["undo"] == "ip address del 198.18.0.12/24 dev eth0"
    assert got[0]["owner"] == "unknown"
    assert not stops(facts, "n2") and not stops(facts, "n3")  # the others' flows are theirs
    # a Service externalIP equal to n3's address, which kube-proxy's IPVS mode binds on
    # kube-ipvs0: kube-proxy's doing
    facts = cluster(iface("n1", "kube-ipvs0", "dummy", 1500, "10.96.0.1/32,198.18.0.13/32"))
    got = stops(facts, "n1")
    assert {(s["flow"], s["peer"], s["stage"]) for s in got} == {
        (flow, "n3", "peer_address") for flow in ("node_out", "overlay_out")}
    assert got[0]["owner"] == "kube-proxy"
    assert got[0]["undo"] == "ip address del 198.18.0.13/32 dev kube-ipvs0"
    # an inventory that reaches two nodes through one address (a NAT, a port forward) says
    # nothing of what they hold
    facts = [x for x in cluster() if not x.kind.startswith("path")
             and not (x.kind == "node_status" and x.node == "n2")]
    facts += [f("node_status", "n2", reachable=True, address="198.18.0.11", reason=None)]
    facts += path_facts(facts)
    assert not [s for s in stops(facts, "n1") if s["stage"] == "peer_address"]

def _arp_table(node_name: str, hook: str, *rules: str) -> list[Fact]:
    """The arp family's filter table as arptables-nft writes it: INPUT or OUTPUT."""
    chain_name = hook.upper()
    return [f("nft_table", node_name, family="arp", table="filter", owner="nft", chains=1,
              rules=len(rules)),
            f("nft_chain", node_name, family="arp", table="filter", chain=chain_name,
              owner="nft", type="filter", hook=hook, priority="filter", policy="accept",
              rules=len(rules), drop_rules=sum(r.endswith("drop") for r in rules),
              reject_rules=0)] + [
            f("nft_rule", node_name, family="arp", table="filter", chain=chain_name,
              position=i, verdict=r.split()[-1], text=r, pkts=0, bytes=0, handle=i + 1)
            for i, r in enumerate(rules, start=1)]


ARPTABLES = "arp htype 1 arp hlen 6 arp plen 4 {} counter packets 0 bytes 0 drop"


def test_an_arp_rule_that_drops_a_peers_arp_ends_everything_between_the_two():
    # `arptables -A INPUT -s 198.18.0.13 -j DROP` on n2: neither n2's request for n3 gets its
    # reply, nor n3's request its answer; the IP chains pass it all
    facts = cluster(*_arp_table("n2", "input", ARPTABLES.format("arp saddr ip 198.18.0.13")))
    got = stops(facts, "n2")
    assert {(s["flow"], s["peer"], s["stage"], s["verdict"]) for s in got} == {
        (flow, "n3", "arp", "drop") for flow in ("node_in", "node_out", "overlay_in",
                                                  "overlay_out")}
    assert got[0]["hook"] == "arp input" and got[0]["at"] == "arp filter INPUT rule 1"
    assert got[0]["undo"] == "nft delete rule arp filter INPUT handle 2"
    assert not stops(facts, "n1") and not stops(facts, "n3")
    # only n2's requests for n3 (`--opcode 1` in OUTPUT): n2 cannot send, and n3's packets
    # need n2's reply, which is not a request
    facts = cluster(*_arp_table("n2", "output", ARPTABLES.format(
        "arp operation request arp daddr ip 198.18.0.13")))
    assert {(s["flow"], s["peer"]) for s in stops(facts, "n2")} == {
        ("node_out", "n3"), ("overlay_out", "n3")}


def test_arp_rules_for_other_addresses_or_macs_stop_nothing():
    # a direct-routing real server hiding a load balancer's address: no node's ARP
    facts = cluster(*_arp_table("n2", "output", ARPTABLES.format("arp saddr ip 198.18.0.100")))
    assert not stops(facts, "n2")
    # which MAC a peer sends with is not walked: undecided, never blamed
    facts = cluster(*_arp_table("n2", "input", ARPTABLES.format(
        "arp saddr ether 02:00:00:00:00:01")))
    assert not [s for s in stops(facts, "n2") if s["verdict"] in ("drop", "reject")]
    # every ARP dropped: the node resolves neither its peers nor its own pods on cni0, nor
    # they it, so what it forwards to and from its pods stops as well
    facts = cluster(*_arp_table("n2", "input", "drop"))
    assert {s["flow"] for s in stops(facts, "n2")} == {
        "node_in", "node_out", "overlay_in", "overlay_out", "own_pod_in", "own_pod_out",
        "pod_in", "pod_out"}


def test_pings_the_filter_passes_and_the_kernel_ignores_end_at_the_setting():
    facts = cluster(sysctl("n2", "net.ipv4.icmp_echo_ignore_all", 1))
    got = stops(facts, "n2")
    assert {(s["flow"], s["stage"]) for s in got} == {
        ("node_in", "icmp_echo"), ("pod_node_in", "icmp_echo"), ("own_pod_in", "icmp_echo")}
    assert {s["undo"] for s in got} == {"sysctl -w net.ipv4.icmp_echo_ignore_all=0"}
    # the filter comes first: a DROP there is named, not the setting behind it
    facts = cluster(sysctl("n2", "net.ipv4.icmp_echo_ignore_all", 1),
                    ipt("n2", "filter", "-A INPUT -p icmp -m icmp --icmp-type 8 -j DROP", 1))
    assert {s["stage"] for s in stops(facts, "n2", "node_in")} == {"netfilter"}
    # UDP and TCP to the node are not pings
    assert not [s for s in stops(cluster(sysctl("n2", "net.ipv4.icmp_echo_ignore_all", 1)), "n2")
                if s["proto"] != "icmp"]


def test_the_way_to_a_node_ssh_could_not_reach_is_still_walked():
    # node1 could not be logged in to; its address and pod range are known (inventory, API)
    facts = [x for x in node("n2") + node("n3")]
    facts += [f("node_status", "n1", reachable=False, address="198.18.0.11", reason="timeout"),
              f("k8s_node", "n1", name="n1", internal_ip="198.18.0.11", pod_cidr="10.244.1.0/24")]
    facts = [x for x in facts if not (x.kind == "route" and x.node == "n3"
                                      and x.attrs["dst"] == "10.244.1.0/24")]
    facts.append(route("n3", "10.244.1.0/24", None, rtype="blackhole", protocol="boot"))
    facts += path_facts(facts)
    got = [s for s in stops(facts, "n3", "pod_out") if s["peer"] == "n1"]
    assert got and got[0]["stage"] == "route" and "blackhole 10.244.1.0/24" in got[0]["at"]
    assert not [x for x in facts if x.kind == "path_walk" and x.node == "n1"]  # nothing read


def test_every_stop_says_the_command_that_undoes_it_when_one_does():
    # iptables: the spec as collected, with -A turned into -D, in its table and backend
    facts = cluster(
        ipt("n2", "filter", '-A FORWARD -m comment --comment "a; b" -j REJECT', 1),
        chain("n1", "filter", "INPUT", backend="legacy"),
        ipt("n1", "filter", "-A INPUT -p udp -m udp --dport 8472 -j DROP", 1, backend="legacy"),
        ipt("n1", "filter", "-A INPUT -j ACCEPT", 1),
        sysctl("n3", "net.ipv4.conf.cni0.forwarding", 0),
    )
    assert stops(facts, "n2", "pod_out")[0]["undo"] == \
        "iptables -t filter -D FORWARD -m comment --comment 'a; b' -j REJECT"
    # n1 has both backends: the legacy rule needs the legacy binary
    assert stops(facts, "n1", "overlay_in")[0]["undo"] == \
        "iptables-legacy -t filter -D INPUT -p udp -m udp --dport 8472 -j DROP"
    assert stops(facts, "n3", "pod_out")[0]["undo"] == \
        "sysctl -w net.ipv4.conf.cni0.forwarding=1"


def test_a_native_nftables_rule_is_undone_by_its_handle_only_when_it_was_listed():
    def guard(handle: int | None) -> list[Fact]:
        return cluster(
            f("nft_table", "n2", family="inet", table="guard", owner="nft", chains=1, rules=1),
            f("nft_chain", "n2", family="inet", table="guard", chain="pre", owner="nft",
              type="filter", hook="prerouting", priority="raw", policy="accept", rules=1,
              drop_rules=1, reject_rules=0),
            f("nft_rule", "n2", family="inet", table="guard", chain="pre", position=1,
              verdict="drop", text="udp dport 8472 drop", pkts=None, bytes=None, handle=handle),
        )

    assert stops(guard(7), "n2", "overlay_in")[0]["undo"] == \
        "nft delete rule inet guard pre handle 7"
    assert stops(guard(None), "n2", "overlay_in")[0]["undo"] is None


def test_a_drop_in_the_raw_table_carries_its_counter_and_an_nft_rule_none():
    dropped = ipt("n2", "raw", "-A PREROUTING -p udp -m udp --dport 8472 -j DROP", 1)
    dropped.attrs["pkts"] = 37  # what iptables-save -c showed when it was read
    facts = cluster(chain("n2", "raw", "PREROUTING"), dropped)
    (got,) = stops(facts, "n2", "overlay_in")[:1]
    assert (got["table"], got["chain"], got["pkts"]) == ("raw", "PREROUTING", 37)
    never = ipt("n3", "mangle", "-A FORWARD -d 10.244.3.0/24 -j DROP", 1)  # pkts 0: not yet
    facts = cluster(chain("n3", "mangle", "FORWARD"), never)
    assert {s["pkts"] for s in stops(facts, "n3", "pod_in")} == {0}


# ---- route lookup: an index per prefix length gives what a scan of every route gives ------

_PREFIX = st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32))


@settings(max_examples=200)
@given(routes=st.lists(st.tuples(_PREFIX, st.integers(0, 3), st.sampled_from(["main", "100"]),
                                 st.sampled_from(["unicast", "blackhole", "throw"])),
                       max_size=40),
       dsts=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=20),
       suppress=st.one_of(st.none(), st.integers(0, 32)))
def test_route_lookup_is_the_longest_prefix_then_the_lowest_metric(routes, dsts, suppress):
    """The kernel's choice, as a scan would make it: of the routes whose prefix holds the
    destination, the longest, and of those the lowest metric (the first one read on a tie);
    none when `suppress_prefixlength` rules the longest one out."""
    from kubenetdiag.facts.paths.packet import show
    from kubenetdiag.facts.paths.routing import Route, Routing

    def cidr(base, length):
        mask = (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF
        return f"{show(base & mask)}/{length}", mask

    table = [Route(t, kind, cidr(base, length)[0], None, "eth0", "boot", metric)
             for (base, length), metric, t, kind in routes]
    routing = Routing(table, [], frozenset())
    for name in ("main", "100"):
        for dst in dsts:
            held = [(i, r) for i, r in enumerate(table) if r.table == name
                    and (dst & cidr(*_parts(r.dst))[1]) == _parts(r.dst)[0]]
            best = min(held, key=lambda ir: (-_parts(ir[1].dst)[1], ir[1].metric, ir[0]),
                       default=(None, None))[1]
            if best is not None and suppress is not None and _parts(best.dst)[1] <= suppress:
                best = None
            assert routing._lookup_table(name, dst, suppress) == best


def _parts(text: str) -> tuple[int, int]:
    base, _, length = text.partition("/")
    return addr(base), int(length)
