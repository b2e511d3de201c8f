"""Packet-path verdicts: every flow the cluster needs, walked through each node's collected
configuration in kernel order (docs/paths.md).

    path_facts(facts) -> [path..., path_walk...]

Runs in the parse stage, after the probes' facts: it reads only facts, never a node. A flow that
passes is counted in the node's `path_walk` fact; every flow that does not pass is a `path`
fact naming the rule, route or setting that stops it, and who wrote it.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from kubenetdiag.facts.model import Fact, Source, by_kind, overlay_devices
from kubenetdiag.facts.paths import xfrm as xfrm_paths
from kubenetdiag.facts.paths.node import NodeView, build, pod_cidr_of
from kubenetdiag.facts.paths.packet import Packet, addr, in_net, network, show
from kubenetdiag.facts.paths.walk import Ending, Expect, Flow, walk
from kubenetdiag.probes.iptables import delete_command

MAX_PEERS = 32  # beyond this, a node is walked against the peers its active checks probed
RING_PEERS = 4  # ...or, without active checks, its next nodes by name: each node is then
# walked against 4 peers on its way out and met by 4 others on their way in
MAX_SERVICES = 16  # Service ports walked per node, DNS first
VXLAN_OVERHEAD = 50
# What a node's walk reads of its own facts (build), and what the flows come from
_NODE_KINDS = ("node_status", "interface", "route", "ip_rule", "sysctl", "tc_hook",
               "iptables_chain", "iptables_rule", "nft_table", "nft_chain", "nft_rule",
               "nft_set", "nft_element", "flannel_subnet", "ipset", "ipvs_service",
               "xfrm_policy")
# Read when present: a node without ipsets, IPVS or IPsec policies (most) is walked all the
# same, and a rule that matches a set not read stays undecided.
_NODE_OPTIONAL = ("ipset", "ipvs_service", "xfrm_policy")
_KINDS = (*_NODE_KINDS, "k8s_node", "dns_pod", "dns_service", "cni", "bgp_session", "reach",
          "tcp_check", "nodeport_check", "drop_counter_after", "probe_status", "own_pod_check",
          "xfrm_acquire")
# Declared for kubenetdiag.facts.producers. A rule on a path fact needs the node's own
# configuration the walk reads (INPUTS); the rest (CONTEXT) only adds flows to walk (Service
# VIPs, BGP peers, the peers probed; the DROP counters read after the checks) and is reported
# as not checked on its own when missing.
INPUTS: tuple[str, ...] = tuple(k for k in _NODE_KINDS if k not in _NODE_OPTIONAL)
CONTEXT: tuple[str, ...] = tuple(k for k in _KINDS if k not in _NODE_KINDS)
PRODUCES: tuple[str, ...] = ("path", "path_walk", "egress_untranslated", "next_hop")
PROBE = "path"  # the evidence's source: facts computed here, from other facts


@dataclass
class _Node:
    view: NodeView
    cidr: str | None
    pod_addr: int | None
    pod_dev: str | None
    overlay: dict | None  # the VXLAN device
    underlay: str | None
    gateway: int | None = None  # the node's own address in its pod range (flannel's cni0)

    def source_to_pods(self) -> int | None:
        """The address the node's own packets to other nodes' pods leave with: its overlay
        device's, else its node address (the kernel picks the output device's address)."""
        for a in str((self.overlay or {}).get("addresses") or "").split(","):
            if a:
                return addr(a.split("/")[0])
        return self.view.address


def _pod_side(v: NodeView, cidr: str | None) -> tuple[int | None, str | None]:
    """A pod address on the node and the device its traffic enters the node by: a /32 route
    of a pod (Calico's cali*), else the device holding the range's gateway (flannel's cni0)."""
    if not cidr or network(cidr) is None:
        return None, None
    for r in v.routes:
        if r.dst.endswith("/32") or "/" not in r.dst:
            host = r.dst.split("/")[0]
            if r.dev and in_net(addr(host), cidr) and r.type == "unicast":
                return addr(host), r.dev
    net = ipaddress.IPv4Network(cidr, strict=False)
    for name, i in v.ifaces.items():
        for a in str(i.get("addresses") or "").split(","):
            if a and in_net(addr(a.split("/")[0]), cidr) and i.get("kind") != "vxlan":
                return int(net.network_address) + 2, name
    return int(net.network_address) + 2 if net.num_addresses > 2 else None, None


def _overlay(v: NodeView, in_use: set[str]) -> dict | None:
    """The node's VXLAN device that carries its pods' traffic: the one its routes go out of,
    else one that is up, or one that is down here and up on another node (`in_use`: the
    cluster's overlay, switched off on this node). A device down everywhere is left by a CNI
    the cluster ran before and carries nothing, so a node with only that one routes its pods
    directly."""
    mine = [i for i in v.ifaces.values()
            if i.get("kind") == "vxlan" and (i.get("vxlan_local") in (None, show(v.address))
                                             if v.address else True)]
    best = overlay_devices(mine, [r.dev for r in v.routes if r.table in ("main", "254")
                                  and r.type == "unicast"])
    if best:
        return best[0]
    return next((i for i in mine if i.get("name") in in_use), None)


def _peers(name: str, names: list[str], reach: dict[str, set[str]]) -> list[str]:
    others = [n for n in names if n != name]
    if len(others) <= MAX_PEERS:
        return others
    probed = sorted(reach.get(name, set()))
    if probed:
        return probed[:MAX_PEERS]
    i = names.index(name) if name in names else 0
    return [names[(i + k) % len(names)] for k in range(1, RING_PEERS + 1)
            if names[(i + k) % len(names)] != name]


_NFT_SERVICE = re.compile(r"^goto (?:service|local)-[A-Z2-7]{8}-([^/\s]+)/([^/\s]+)/[a-z]+/(\S*)$")


def _services(dns_services: list[Fact], ipt_rules: list[Fact],
              nft_elements: Sequence[Fact] = (),
              ipvs: Sequence[tuple[str, int, str]] = ()) -> list[tuple[str, int, str, str]]:
    """(VIP, port, proto, name) of the Services kube-proxy programs on any node, DNS first:
    a node that lacks one the others have is then walked for it too. In nftables mode they
    are the ClusterIP elements of its service-ips map (`VIP . proto . port : goto
    service-<hash>-<ns>/<name>/<proto>/<port name>`); in ipvs mode the virtual servers on a
    VIP (`ipvs`: an address some node binds to kube-ipvs0), named VIP:port for want of the
    Service's name."""
    seen: dict[tuple[str, int, str], str] = {}
    for f in dns_services:
        if f.attrs.get("cluster_ip"):
            ns = f"{f.attrs['namespace']}/{f.attrs['name']}"
            seen[(str(f.attrs["cluster_ip"]), 53, "udp")] = f"{ns}:dns"
            seen[(str(f.attrs["cluster_ip"]), 53, "tcp")] = f"{ns}:dns-tcp"
    dns = list(seen.items())
    others: dict[tuple[str, int, str], str] = {}
    for f in ipt_rules:
        a = f.attrs
        if a.get("table") != "nat" or \
                a.get("chain") != "KUBE-SERVICES" or not a.get("dst") or not a.get("dport"):
            continue
        comment = str(a.get("comment") or "")
        if not comment.endswith("cluster IP"):
            continue
        try:
            key = (str(a["dst"]).split("/")[0], int(str(a["dport"])), str(a.get("proto") or "tcp"))
        except ValueError:
            continue
        if key not in seen:
            others[key] = comment.removesuffix(" cluster IP")
    for f in nft_elements:
        a = f.attrs
        m = _NFT_SERVICE.match(str(a.get("value") or ""))
        parts = str(a.get("key") or "").split(" . ")
        if a.get("table") != "kube-proxy" or a.get("set") != "service-ips" or not m \
                or len(parts) != 3 or not parts[2].strip().isdigit():
            continue
        key = (parts[0].strip(), int(parts[2]), parts[1].strip())
        if key not in seen:
            ns, name, port = m.groups()
            others[key] = f"{ns}/{name}:{port}" if port else f"{ns}/{name}"
    for vip, port, proto in ipvs:
        if (vip, port, proto) not in seen:
            others.setdefault((vip, port, proto), f"{vip}:{port}")
    rest = sorted(others.items(), key=lambda kv: kv[1])
    return [(k[0], k[1], k[2], n) for k, n in (dns + rest)[:MAX_SERVICES]]


IPVS_DEVICE = "kube-ipvs0"  # where kube-proxy's ipvs mode binds every Service VIP


def _ipvs_vips(nodes: Iterable[_Node]) -> list[tuple[str, int, str]]:
    """The IPVS virtual servers on a Service VIP, over every node: those whose address some
    node binds to kube-ipvs0 (the others are NodePorts on node addresses)."""
    views = [n.view for n in nodes]
    bound = {a.split("/")[0] for v in views
             for a in str(v.ifaces.get(IPVS_DEVICE, {}).get("addresses") or "").split(",") if a}
    return sorted({(show(a), port, proto) for v in views for (a, port, proto) in v.ipvs
                   if show(a) in bound})


def path_facts(facts: list[Fact]) -> list[Fact]:
    # one pass over every fact (a million at 5,000 nodes), then only the kinds read here
    kinds = by_kind(facts, _KINDS)
    by_node: dict[str, list[Fact]] = defaultdict(list)
    for k in _NODE_KINDS:
        for f in kinds[k]:
            by_node[f.node].append(f)
    names = sorted(n for n in by_node if any(
        f.kind == "node_status" and f.attrs.get("reachable") for f in by_node[n]))
    if not names:
        return []
    api_cidrs = {f.node: str(f.attrs["pod_cidr"]) for f in kinds["k8s_node"]
                 if f.attrs.get("pod_cidr")}
    nodes: dict[str, _Node] = {}
    asked: dict[str, list[Fact]] = defaultdict(list)
    for f in kinds["xfrm_acquire"]:
        asked[f.node].append(f)
    views = {n: build(n, by_node[n]) for n in sorted(by_node)}
    in_use = {str(i.get("name")) for v in views.values() for i in v.ifaces.values()
              if i.get("kind") == "vxlan" and i.get("admin_up") is not False}
    for n, v in views.items():
        if asked.get(n):  # the checks' packets made the kernel ask, and no SA came
            v.xfrm = [xfrm_paths.unanswered(p, asked[n]) for p in v.xfrm]
        cidr = pod_cidr_of(api_cidrs.get(n), by_node[n])
        pod, dev = _pod_side(v, cidr)
        ov = _overlay(v, in_use)
        under = v.dev_of(v.address) if v.address else None
        gw = next((a for a in sorted(v.local) if cidr and in_net(a, cidr)
                   and v.dev_of(a) != (ov or {}).get("name")), None)
        nodes[n] = _Node(v, cidr, pod, dev, ov, under or (ov or {}).get("vxlan_dev"), gw)
    for f in kinds["probe_status"]:
        if f.attrs.get("probe") == "routes" and f.node in nodes:
            nodes[f.node].view.routes_complete = False
    reach: dict[str, set[str]] = defaultdict(set)
    for f in kinds["reach"]:
        if isinstance(f.attrs.get("dst"), str):
            reach[f.node].add(str(f.attrs["dst"]))
            reach[str(f.attrs["dst"])].add(f.node)
    bgp = bool(kinds["bgp_session"]) or any(
        f.attrs.get("plugin") == "calico" for f in kinds["cni"]) or any(
        r.protocol == "bird" for n in nodes.values() for r in n.view.routes)
    services = _services(kinds["dns_service"], kinds["iptables_rule"], kinds["nft_element"],
                         _ipvs_vips(nodes.values()))
    dns_pods = [(str(f.attrs["pod"]), f.node, str(f.attrs["ip"])) for f in kinds["dns_pod"]
                if f.attrs.get("ip")]
    endpoints = sorted({(str(f.attrs["target"]), str(f.attrs["address"]))
                        for f in kinds["tcp_check"] if f.attrs.get("address")})
    # A node SSH could not reach is still a peer: its address and pod range are known (the
    # inventory, the API), and the way to it is walked on every node that was reached.
    peer_names = sorted(n for n in by_node if nodes[n].view.address is not None)
    after: _After = {(f.node, str(f.attrs["backend"]), str(f.attrs["table"]),
                      str(f.attrs["spec"])): f.attrs.get("pkts")
                     for f in kinds["drop_counter_after"]}
    # Pairs of nodes the checks pinged each other's pod network between: those pings and their
    # replies ride the tunnel both ways, so they cross every rule on the overlay flows.
    tunnelled = {frozenset((f.node, str(f.attrs["dst"]))) for f in kinds["reach"]
                 if f.attrs.get("layer") == "pod" and isinstance(f.attrs.get("dst"), str)}
    # NodePorts the peers connected to on each node: walked in from each of those peers
    nodeports: dict[str, set[tuple[str, int, str]]] = defaultdict(set)
    for f in kinds["nodeport_check"]:
        a = f.attrs
        if not a.get("own") and isinstance(a.get("dst"), str) and isinstance(
                a.get("node_port"), int):
            nodeports[str(a["dst"])].add((f.node, int(a["node_port"]), str(a.get("service"))))
    # The pod the own-pod check pinged in vain: the node's way to that very pod is walked,
    # which may not be the pod the other flows stand for (a pod whose host route is gone is
    # never chosen as a pod-network target)
    own_pod: dict[str, int] = {}
    for f in kinds["own_pod_check"]:
        a = f.attrs
        if a.get("direction") == "node_to_pod" and a.get("ok") is False \
                and isinstance(a.get("address"), str) and network(str(a["address"])) is not None:
            own_pod[f.node] = addr(str(a["address"]).split("/")[0])
    # the pod network: a pod's traffic to another pod is meant to leave untranslated
    pod_nets = sorted({n.cidr for n in nodes.values() if n.cidr})
    out: list[Fact] = []
    for name in names:
        me = nodes[name]
        flows = list(_flows(me, name, nodes, _peers(name, peer_names, reach), bgp, services,
                            dns_pods, endpoints, own_pod.get(name)))
        flows += _nodeport_flows(me, nodes, sorted(nodeports.get(name, ())))
        out.extend(_facts_of(me, name, flows, after, tunnelled, pod_nets))
    return out


# (node, backend, table, rule spec) -> the rule's packet counter read after the checks
_After = dict[tuple[str, str, str, str], int | None]
# Flows the checks' own packets are known to cross, whatever tools the node has: the pod-layer
# pings between two nodes travel in the tunnel. The others are not (the pings go to the peer's
# pod gateway, which the node delivers locally rather than forwards; a DNS check asked over an
# SSH channel is TCP where pods use UDP), so a 0 there says nothing.
_CHECKED_FLOWS = ("overlay_in", "overlay_out")


def _matched(name: str, flow: Flow, end: Ending, after: _After,
             tunnelled: set[frozenset[str]]) -> tuple[int | None, str]:
    """(the deciding rule's counter after the checks, whether it is known to have matched):
    see the path kind's `matched`."""
    if end.stage != "netfilter" or end.backend not in ("legacy", "nf_tables") or not end.rule:
        return None, "seen" if end.pkts else "unknown"
    pkts_after = after.get((name, end.backend, str(end.table), end.rule))
    if end.pkts or pkts_after:
        return pkts_after, "seen"
    crossed = flow.name in _CHECKED_FLOWS and frozenset((name, flow.peer)) in tunnelled
    return pkts_after, "never" if crossed and pkts_after == 0 and end.pkts == 0 else "unknown"


def _flows(me: _Node, name: str, nodes: dict[str, _Node], peers: list[str], bgp: bool,
           services, dns_pods, endpoints, own_pod: int | None = None):
    v = me.view
    port = int((me.overlay or {}).get("vxlan_port") or 8472)
    # where a peer's ping to this node's address arrives: the same for every peer
    node_dev = (v.dev_of(v.address) if v.address is not None else None) or me.underlay
    for p in peers:
        peer = nodes.get(p)
        if peer is None or peer.view.address is None or v.address is None:
            continue
        pa, na = peer.view.address, v.address
        if me.overlay is not None:
            # the tunnel runs between the VXLAN devices' own addresses, which need not be the
            # address the inventory logs in to
            mine, theirs = _vtep(me) or na, _vtep(peer) or pa
            if mine != theirs:
                yield Flow("overlay_in", "in",
                           Packet(theirs, mine, "udp", None, port, me.view.dev_of(mine)
                                  or me.underlay), p)
                yield Flow("overlay_out", "out", Packet(mine, theirs, "udp", None, port, None),
                           p, expect=Expect(dev=me.underlay, what="the tunnel to the peer"))
        # the peer's ping to this node's address, as the connectivity matrix's underlay layer
        # sends it
        yield Flow("node_in", "in", Packet(pa, na, "icmp", None, None, node_dev), p)
        # and this node's ping to the peer's, which leaves through its own output hooks
        to_peer = Expect(dev=me.underlay, what="the peer's node address",
                         only_addresses=True) if me.underlay else None
        yield Flow("node_out", "out", Packet(na, pa, "icmp", None, None, None), p,
                   expect=to_peer)
        if bgp:
            yield Flow("bgp_in", "in", Packet(pa, na, "tcp", None, 179, me.underlay), p)
            yield Flow("bgp_in", "in", Packet(pa, na, "tcp", 179, None, me.underlay,
                                              state="established"), p)
            yield Flow("bgp_out", "out", Packet(na, pa, "tcp", None, 179, None), p,
                       expect=to_peer)
            yield Flow("bgp_out", "out", Packet(na, pa, "tcp", 179, None, None,
                                                state="established"), p, expect=to_peer)
        if me.pod_addr is None or peer.pod_addr is None or _overlap(me.cidr, peer.cidr):
            continue  # two nodes with one pod range: no route can tell them apart
        if me.overlay is not None:
            out_expect = Expect(dev=str(me.overlay["name"]), gateway=show(pa),
                                what=f"the overlay to {p}'s pods")
            in_dev = str(me.overlay["name"])
            sender_dev = peer.overlay or {}
            mtu_in = (int(sender_dev.get("mtu") or 0), VXLAN_OVERHEAD,
                      str(sender_dev.get("name") or "vxlan"), p) if sender_dev.get("mtu") else None
        else:
            out_expect = Expect(gateway=show(pa), what=f"routing to {p}'s pods")
            in_dev = me.underlay
            pdev = peer.view.ifaces.get(peer.pod_dev or "", {})
            mtu_in = (int(pdev["mtu"]), 0, str(peer.pod_dev), p) if pdev.get("mtu") else None
        for state in ("new", "established"):
            yield Flow("pod_out", "forward",
                       Packet(me.pod_addr, peer.pod_addr, "icmp", None, None, me.pod_dev,
                              state=state), p, expect=out_expect)
            yield Flow("pod_in", "forward",
                       Packet(peer.pod_addr, me.pod_addr, "icmp", None, None, in_dev,
                              state=state), p,
                       expect=Expect(dev=me.pod_dev, what="delivery to this node's pods")
                       if me.pod_dev else None, mtu_in=mtu_in, underlay=me.underlay)
        src = peer.source_to_pods()
        if me.gateway is not None and src is not None:
            # the peer node's own packets to this node's pod-network address (what the
            # connectivity matrix pings, and where replies to the peer's DNS queries go)
            yield Flow("pod_node_in", "in", Packet(src, me.gateway, "icmp", None, None, in_dev),
                       p)
        for target, ip in endpoints:
            if me.cidr and in_net(addr(ip), me.cidr):
                port_ = _port_of(target)
                if port_ is not None:
                    yield Flow("endpoint_in", "forward",
                               Packet(peer.pod_addr, addr(ip), "tcp", None, port_, in_dev), p,
                               target, mtu_in=mtu_in, underlay=me.underlay)
        for pod, where, ip in dns_pods:
            if where == p:
                yield Flow("dns_pod", "forward",
                           Packet(me.pod_addr, addr(ip), "udp", None, 53, me.pod_dev), p, pod,
                           expect=out_expect)
            elif where == name:
                yield Flow("dns_pod_in", "forward",
                           Packet(peer.pod_addr, addr(ip), "udp", None, 53, in_dev), p, pod,
                           mtu_in=mtu_in, underlay=me.underlay)
    if me.pod_addr is not None and me.pod_dev is not None and v.address is not None:
        # a pod here and its own node, as the own-pod check pings: the pod's ping to the
        # node's address, and the node's reply back through the pod's device
        yield Flow("own_pod_in", "in", Packet(me.pod_addr, v.address, "icmp", None, None,
                                              me.pod_dev), None)
        yield Flow("own_pod_out", "out", Packet(v.address, me.pod_addr, "icmp", None, None,
                                                None, state="established"), None)
    if own_pod is not None and own_pod != me.pod_addr and v.address is not None:
        # the node's ping to the pod the own-pod check used, new, as the check sends it
        yield Flow("own_pod_out", "out", Packet(v.address, own_pod, "icmp", None, None, None),
                   None)
    if me.pod_addr is not None and v.has_netfilter:
        for vip, vport, proto, svc in services:
            yield Flow("service", "forward",
                       Packet(me.pod_addr, addr(vip), proto, None, vport, me.pod_dev), None, svc)
    if v.address is not None:
        for target, ip in endpoints:
            host_port = _port_of(target)
            if host_port is None:
                continue
            yield Flow("endpoint", "out",
                       Packet(v.address, addr(ip), "tcp", None, host_port, None), None, target)
            if me.pod_addr is not None:
                yield Flow("endpoint_pod", "forward",
                           Packet(me.pod_addr, addr(ip), "tcp", None, host_port, me.pod_dev),
                           None, target)


def _nodeport_flows(me: _Node, nodes: dict[str, _Node],
                    checked: list[tuple[str, int, str]]) -> list[Flow]:
    """A peer node's connect to a NodePort on this node's address, as the checks sent it: in
    on the underlay, DNAT to an endpoint, then forwarded to it (or delivered, when it is a
    pod here behind no bridge)."""
    v = me.view
    out = []
    for src, port, service in checked:
        peer = nodes.get(src)
        if v.address is None or peer is None or peer.view.address is None:
            continue
        out.append(Flow("nodeport_in", "forward",
                        Packet(peer.view.address, v.address, "tcp", None, port, me.underlay),
                        src, f"{service} (NodePort {port})"))
    return out


def _vtep(n: _Node) -> int | None:
    local = (n.overlay or {}).get("vxlan_local")
    try:
        return addr(str(local)) if local else None
    except ValueError:
        return None


@lru_cache(maxsize=65536)
def _overlap(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    try:
        return ipaddress.IPv4Network(a, strict=False).overlaps(
            ipaddress.IPv4Network(b, strict=False))
    except ValueError:
        return False


def _port_of(target: str) -> int | None:
    try:
        return int(target.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


_NFT_HANDLE = re.compile(r"#\s*handle\s+(\d+)\s*$")


_SETTING = re.compile(
    r"^net\.ipv4\.(?:(ip_forward|icmp_echo_ignore_all)|conf\.(\S+)\.(forwarding|rp_filter))"
    r"=(\d+)$")
# the value each setting that stops a flow goes back to (rp_filter: loose, below)
_SETTING_BACK = {"ip_forward": "1", "forwarding": "1", "rp_filter": "2",
                 "icmp_echo_ignore_all": "0"}


def _sysctl_undo(end: Ending) -> str | None:
    """A forwarding switch that is off goes back on; a strict (1) reverse-path filter goes to
    loose (2), which keeps the anti-spoofing check (the kernel takes the larger of `all` and the
    interface's). A loose filter that still drops has no route back: no setting lifts that.
    An interface name with a dot (eth0.100) is written with slashes, as sysctl reads it.

    >>> _sysctl_undo(Ending("drop", "rp_filter", rule="net.ipv4.conf.eth0.100.rp_filter=1"))
    'sysctl -w net/ipv4/conf/eth0.100/rp_filter=2'
    >>> _sysctl_undo(Ending("drop", "forwarding", rule="net.ipv4.ip_forward=0"))
    'sysctl -w net.ipv4.ip_forward=1'
    >>> _sysctl_undo(Ending("drop", "icmp_echo", rule="net.ipv4.icmp_echo_ignore_all=1"))
    'sysctl -w net.ipv4.icmp_echo_ignore_all=0'
    """
    m = _SETTING.match(end.rule or "")
    if not m:
        return None
    glob, dev, what, value = m.groups()
    what = glob or what
    if what == "rp_filter" and value != "1":
        return None
    new = _SETTING_BACK[what]
    if dev is None:
        key = f"net.ipv4.{what}"
    elif "." in dev:
        key = f"net/ipv4/conf/{dev}/{what}"
    else:
        key = f"net.ipv4.conf.{dev}.{what}"
    return shlex.join(["sysctl", "-w", f"{key}={new}"])


_IP_RULE = re.compile(r"^(\d+):\s+(\S.*)$")


def _ip_rule_undo(end: Ending) -> str | None:
    """An `ip rule` that stops a flow, deleted with its selector and action as printed: by its
    priority alone `ip rule del` would take the first rule of that priority, maybe another one.
    A decision of a table the rule only looks up has no one rule to delete.

    >>> _ip_rule_undo(Ending("drop", "policy", at="ip rule 100: from all to 10.244.3.0/24 "
    ...               "blackhole", rule="100: from all to 10.244.3.0/24 blackhole"))
    'ip rule del priority 100 from all to 10.244.3.0/24 blackhole'
    """
    m = _IP_RULE.match(end.rule or "")
    if not m or not end.at.startswith("ip rule "):
        return None
    try:
        words = shlex.split(m.group(2))
    except ValueError:
        return None
    return shlex.join(["ip", "rule", "del", "priority", m.group(1), *words])


def _address_undo(end: Ending) -> str | None:
    """An interface address whose connected route takes a flow, deleted (the kernel deletes its
    route with it).

    >>> _address_undo(Ending("drop", "address", rule="10.244.3.1/25 dev docker0"))
    'ip address del 10.244.3.1/25 dev docker0'
    """
    words = (end.rule or "").split()
    if len(words) != 3 or words[1] != "dev":
        return None
    return shlex.join(["ip", "address", "del", words[0], "dev", words[2]])


def _xfrm_undo(end: Ending) -> str | None:
    """An IPsec policy that blocks a flow, deleted by its direction and selector.

    >>> _xfrm_undo(Ending("drop", "xfrm", rule="dir out src 0.0.0.0/0 dst 10.244.2.0/24"))
    'ip xfrm policy delete dir out src 0.0.0.0/0 dst 10.244.2.0/24'
    """
    try:
        words = shlex.split(end.rule or "")
    except ValueError:
        return None
    if len(words) < 6 or words[0] != "dir":
        return None
    return shlex.join(["ip", "xfrm", "policy", "delete", *words])


def undo_command(end: Ending, both_backends: bool = False) -> str | None:
    """The command that deletes exactly the rule that stopped a flow, every word shell-quoted,
    or None when it cannot be known from what was collected.

    An iptables rule is deleted by repeating its spec as collected (`-A CHAIN ...` becomes
    `-D CHAIN ...`), with the binary of the backend that holds it: `iptables-legacy` only where
    the node also has nf_tables tables (iptables 1.4 and 1.6, CentOS 7's, have no such binary and
    are legacy anyway). A native nftables rule is deleted by its handle, which `nft list ruleset`
    prints only with -a: without it there is no exact delete. A forwarding switch or a strict
    reverse-path filter is set back (_sysctl_undo), a policy routing rule deleted
    (_ip_rule_undo), an address that took a flow deleted (_address_undo), an IPsec policy
    deleted (_xfrm_undo); pings ignored by the kernel are answered again (_sysctl_undo). A
    chain policy or a route has no one command that undoes it.

    >>> e = Ending("drop", "netfilter", hook="input", table="filter", chain="INPUT", position=1,
    ...            rule='-A INPUT -p udp --dport 8472 -m comment --comment "a; b" -j DROP',
    ...            backend="nf_tables")
    >>> print(undo_command(e))
    iptables -t filter -D INPUT -p udp --dport 8472 -m comment --comment 'a; b' -j DROP
    >>> e.backend = "legacy"
    >>> print(undo_command(e, both_backends=True))
    iptables-legacy -t filter -D INPUT -p udp --dport 8472 -m comment --comment 'a; b' -j DROP
    >>> print(undo_command(Ending("drop", "netfilter", table="inet guard", chain="input",
    ...       position=2, rule="udp dport 8472 drop # handle 7", backend="nft")))
    nft delete rule inet guard input handle 7
    >>> print(undo_command(Ending("drop", "netfilter", table="inet guard", chain="input",
    ...       position=2, rule="udp dport 8472 drop", backend="nft")))
    None
    >>> print(undo_command(Ending("drop", "netfilter", table="inet guard", chain="input",
    ...       position=2, rule="udp dport 8472 drop", backend="nft", handle=12)))
    nft delete rule inet guard input handle 12
    """
    if end.verdict not in ("drop", "reject"):
        return None  # nothing stopped it, or the walk cannot tell what did
    if end.stage in ("forwarding", "rp_filter", "icmp_echo"):
        return _sysctl_undo(end)
    if end.stage == "policy":
        return _ip_rule_undo(end)
    if end.stage in ("address", "peer_address"):
        return _address_undo(end)
    if end.stage == "xfrm":
        return _xfrm_undo(end)
    if end.stage not in ("netfilter", "notrack", "arp") or end.position is None or not end.rule \
            or not end.table or not end.chain:
        return None
    if end.backend == "nft":
        m = _NFT_HANDLE.search(end.rule)
        handle = end.handle if end.handle is not None else int(m.group(1)) if m else None
        family, _, table = end.table.partition(" ")
        if handle is None or not table:
            return None
        return shlex.join(["nft", "delete", "rule", family, table, end.chain, "handle",
                           str(handle)])
    binary = "iptables-legacy" if end.backend == "legacy" and both_backends else "iptables"
    return delete_command(binary, end.table, end.rule, end.chain)


def _facts_of(me: _Node, name: str, flows: list[Flow], after: _After,
              tunnelled: set[frozenset[str]], pod_nets: Sequence[str] = ()) -> list[Fact]:
    v = me.view
    both = {"legacy", "nf_tables"} <= {b.table.backend for b in v.chains}
    counts = {"pass": 0, "drop": 0, "reject": 0, "unknown": 0}
    out: list[Fact] = []
    for flow in flows:
        end = walk(v, flow)
        counts[end.verdict] = counts.get(end.verdict, 0) + 1
        if end.verdict == "pass":
            # only where the node's NAT rules were read: unread, nothing is known of them
            if flow.name == "endpoint_pod" and end.untranslated is not None \
                    and v.has_netfilter and not any(in_net(flow.pkt.dst, n) for n in pod_nets):
                out.append(_untranslated_fact(name, flow, end.untranslated))
            if flow.name == "endpoint" and end.next_hop is not None:
                out.append(_next_hop_fact(name, flow, *end.next_hop))
            continue
        out.append(_path_fact(name, flow, end, v.altered, both, after, tunnelled))
    kinds = ",".join(sorted({f.name for f in flows}))
    peers = len({f.peer for f in flows if f.peer})
    alt = "; ".join(f"{d}: {', '.join(h)}" for d, h in sorted(v.altered.items())) or None
    out.append(Fact("path_walk", name, {
        "flows": len(flows), "passed": counts["pass"],
        "dropped": counts["drop"] + counts["reject"], "unknown": counts["unknown"],
        "peers": peers, "kinds": kinds, "netfilter": v.has_netfilter, "altered_by": alt,
    }, Source(PROBE, f"walk of {name}'s collected configuration", None,
              f"{len(flows)} flows: {counts}")))
    return out


def _untranslated_fact(name: str, flow: Flow, where: tuple[str, str | None, str]) -> Fact:
    at, rule, owner = where
    pkt = flow.pkt
    text = (f"{show(pkt.src)} -> {flow.target}: passes and leaves with the pod's own address; "
            f"{at}" + (f": {rule}" if rule else ""))
    return Fact("egress_untranslated", name, {
        "target": flow.target, "src": show(pkt.src), "dst": show(pkt.dst), "dport": pkt.dport,
        "at": at, "rule": rule, "owner": owner,
    }, Source(PROBE, f"walk of {name}'s endpoint_pod flow", None, text[:2000]))


def _next_hop_fact(name: str, flow: Flow, hop: str, dev: str) -> Fact:
    return Fact("next_hop", name, {"target": flow.target, "hop": hop, "dev": dev},
                Source(PROBE, f"walk of {name}'s endpoint flow", None,
                       f"{show(flow.pkt.src)} -> {flow.target}: handed to {hop} on {dev}"))


def _toward(flow: Flow) -> str:
    """Who or what the flow is with, in words, never null (a finding names it).

    >>> _toward(Flow("dns_pod", "forward", None, "node1", "coredns-0"))
    'coredns-0 on node1'
    >>> _toward(Flow("own_pod_in", "in", None, None))
    "the node's own pod"
    """
    if flow.peer and flow.target:
        return f"{flow.target} on {flow.peer}"
    return flow.peer or flow.target or "the node's own pod"


def _path_fact(name: str, flow: Flow, end: Ending, altered: dict[str, list[str]],
               both_backends: bool, after: _After, tunnelled: set[frozenset[str]]) -> Fact:
    pkt = flow.pkt
    devs = [d for d in (pkt.iif, flow.underlay) if d]
    alt = "; ".join(f"{d}: {', '.join(altered[d])}" for d in dict.fromkeys(devs) if d in altered)
    detail = " | ".join(end.steps + [f"{end.verdict} at {end.at}" + (f": {end.why}"
                                                                       if end.why else "")])
    pkts_after, matched = _matched(name, flow, end, after, tunnelled)
    return Fact("path", name, {
        "flow": flow.name, "peer": flow.peer, "target": flow.target,
        "toward": _toward(flow), "state": pkt.state,
        "src": show(pkt.src), "dst": show(pkt.dst), "proto": pkt.proto, "dport": pkt.dport,
        "verdict": end.verdict, "stage": end.stage, "at": end.at, "hook": end.hook,
        "table": end.table, "chain": end.chain, "position": end.position, "rule": end.rule,
        "owner": end.owner, "backend": end.backend, "altered_by": alt or None,
        "undo": undo_command(end, both_backends), "pkts": end.pkts, "pkts_after": pkts_after,
        "matched": matched, "detail": detail[:1000],
    }, Source(PROBE, f"walk of {name}'s {flow.name} flow", None, detail[:2000]))
