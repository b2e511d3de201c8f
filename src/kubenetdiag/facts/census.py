"""Census facts: for settings every node should share, how many nodes hold each value (and
for values each node should hold alone, those two nodes or more share).

A rule that finds the odd node out by comparing it with two agreeing peers joins every node
with every pair of others: at 5,000 nodes that was most of the engine's time. Counting here, in
one pass, lets such a rule compare a node with a handful of census facts instead.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections import Counter, defaultdict
from collections.abc import Sequence

from kubenetdiag.facts.model import Fact, Source, by_kind, interface_ips, overlay_devices

SAMPLE = 10  # node names kept in a census fact's evidence
# Declared for kubenetdiag.facts.producers: a rule on a census fact needs what it counts
INPUTS: tuple[str, ...] = ("interface", "node_status", "cni_config", "route", "neighbor")
CONTEXT: tuple[str, ...] = ()
PRODUCES: tuple[str, ...] = ("census", "shared_mac", "underlay_prefix")
PROBE = "census"  # the evidence's source: facts computed here, from other facts
COMMAND = "every node's settings, side by side"
# Counted the other way round: values every node should hold alone (a VXLAN device's MAC,
# which peers map to that one node), kept only when two nodes or more share one.
UNIQUE = frozenset({"vxlan_mac"})
# Devices whose MAC is their parent's by design: ipvlan slaves on one host share it, and the
# driver tells them apart by address.
_SHARED_MAC_KINDS = frozenset({"ipvlan", "ipvtap"})


def census_facts(facts: Sequence[Fact]) -> list[Fact]:
    """One `census` fact per (of, group, value) seen on at least one node."""
    picked = by_kind(facts, INPUTS)
    address = {
        f.node: f.attrs["address"]
        for f in picked["node_status"]
        if isinstance(f.attrs.get("address"), str)
    }
    holders: dict[tuple[str, str, int | str], set[str]] = defaultdict(set)
    # The VXLAN network number of the device each node's pods' traffic goes out of, whatever
    # its name: flannel names its device after its VNI, so a node started on another VNI has
    # a flannel.2 beside a flannel.1 no route uses.
    vxlans: dict[str, list[dict]] = defaultdict(list)
    route_devs: dict[str, list[object]] = defaultdict(list)
    for f in picked["interface"]:
        vxlans[f.node].append(f.attrs)
    for f in picked["route"]:
        if f.attrs.get("table") in ("main", "254") and f.attrs.get("type") == "unicast":
            route_devs[f.node].append(f.attrs.get("dev"))
    for node, ifaces in vxlans.items():
        devs = overlay_devices(ifaces, route_devs[node])
        if len(devs) > 1 and not set(route_devs[node]) & {d.get("name") for d in devs}:
            continue  # several up and no route says which: not counted rather than guessed
        for dev in devs:
            if type(dev.get("vxlan_id")) is int:
                holders[("overlay_vni", "", dev["vxlan_id"])].add(node)
    for f in picked["cni_config"]:
        kind = f.attrs.get("primary_type")
        if f.attrs.get("active") is True and isinstance(kind, str):
            holders[("active_cni", "", kind)].add(f.node)
    for f in picked["interface"]:
        a = f.attrs
        port, mtu, mac = a.get("vxlan_port"), a.get("mtu"), a.get("mac")
        if a.get("kind") == "vxlan" and isinstance(a.get("name"), str):
            if type(port) is int:
                holders[("vxlan_port", a["name"], port)].add(f.node)
            if isinstance(mac, str) and mac.strip("0:"):
                holders[("vxlan_mac", a["name"], mac)].add(f.node)
        if type(mtu) is int and address.get(f.node) in interface_ips(a.get("addresses")):
            holders[("underlay_mtu", "", mtu)].add(f.node)
    out = []
    for (of, group, value), nodes in sorted(holders.items(), key=lambda kv: (
            kv[0][0], kv[0][1], str(kv[0][2]))):
        if of in UNIQUE and len(nodes) < 2:
            continue  # a value each node should hold alone: only the shared ones say anything
        names = sorted(nodes)
        shown = ", ".join(names[:SAMPLE])
        if len(names) > SAMPLE:
            shown += f" and {len(names) - SAMPLE} more"
        out.append(Fact(
            "census",
            "cluster",
            {"of": of, "group": group, "nodes": len(names),
             **({"value": None, "text": value} if isinstance(value, str) else
                {"value": value, "text": None})},
            Source(PROBE, COMMAND, None, f"{of} {group} = {value} on {len(names)} nodes: {shown}"),
        ))
    return out + _shared_macs(picked, address) + _narrow_prefixes(picked, address)


def _shared_macs(picked: dict[str, list[Fact]], address: dict[str, str]) -> list[Fact]:
    """One `shared_mac` fact per node whose NIC on the node network sends with a MAC another
    node's does too. A node that was read says its MAC itself; of one that was not (a clone
    is often out of the collector's reach, its frames going to the other), a peer's neighbour
    entry for its address, when it names a MAC a node that was read sends with, and that
    node does not hold the address (it would answer for it: the walk names that,
    node-holds-peer-address)."""
    held: dict[str, set[str]] = defaultdict(set)  # every address a node's devices hold
    # (network, MAC) -> {node: how it is known}
    seen: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for f in picked["interface"]:
        a = f.attrs
        ips = interface_ips(a.get("addresses"))
        held[f.node] |= ips
        mac = a.get("mac")
        if address.get(f.node) not in ips \
                or not isinstance(mac, str) or not mac.strip("0:") \
                or a.get("kind") in _SHARED_MAC_KINDS:
            continue
        # one MAC on two nodes matters only where one switch sees both: the same network
        net = _network_of(str(a["addresses"]), address[f.node])
        if net:
            seen[(net, mac.lower())][f.node] = f"its {a.get('name')}"
    node_of = {ip: node for node, ip in address.items()}
    for f in picked["neighbor"]:
        a = f.attrs
        x = node_of.get(str(a.get("ip")))
        mac = a.get("mac")
        if x is None or x in held or x == f.node or not isinstance(mac, str) \
                or a.get("state") == "PERMANENT":  # what someone typed, not who answered
            continue
        if any(str(a["ip"]) in ips for ips in held.values()):
            continue
        # only a MAC a node that was read sends with: a MAC no node has is a router's or a
        # cloud's answering for the segment (Azure answers every ARP with one MAC)
        nets = [net for (net, m) in seen if m == mac.lower()]
        if nets:
            seen[(nets[0], mac.lower())].setdefault(
                x, f"{f.node}'s neighbour entry for its address {a['ip']}")
    out = []
    for (net, mac), nodes in sorted(seen.items()):
        if len(nodes) < 2:
            continue
        for node, how in sorted(nodes.items()):
            out.append(Fact("shared_mac", node, {
                "mac": mac, "group": net, "nodes": len(nodes), "seen": how,
                "with": ", ".join(sorted(set(nodes) - {node})[:SAMPLE]),
            }, Source(PROBE, COMMAND, None, f"{mac} on {net}: " + "; ".join(
                f"{n} ({h})" for n, h in sorted(nodes.items())[:SAMPLE]))))
    return out


def _narrow_prefixes(picked: dict[str, list[Fact]], address: dict[str, str]) -> list[Fact]:
    """One `underlay_prefix` fact per node that holds its own address with a longer prefix
    than most of the nodes whose network holds it, when that leaves something the peers reach
    on their link off the node's: another node's address, or a gateway the peers route
    through (a netmask typed wrong, or a DHCP or cloud-init template of another subnet). The
    kernel refuses a route through a gateway that is not on a link of the node ("Nexthop has
    invalid gateway"), so such routes vanish at the next network restart."""
    held: dict[str, tuple[str, ipaddress.IPv4Interface]] = {}  # node -> (device, address)
    for f in picked["interface"]:
        mine = address.get(f.node)
        if mine is None or mine not in interface_ips(f.attrs.get("addresses")):
            continue
        for text in str(f.attrs["addresses"]).split(","):
            with contextlib.suppress(ValueError):
                iface = ipaddress.ip_interface(text.strip())
                old = held.get(f.node)
                # the same address held twice (mid-change): the widest is the one that reaches
                if str(iface.ip) == mine and iface.version == 4 and (
                        old is None or iface.network.prefixlen < old[1].network.prefixlen):
                    held[f.node] = (str(f.attrs.get("name")), iface)
    routes: dict[str, list[tuple[ipaddress.IPv4Network, str | None]]] = defaultdict(list)
    for f in picked["route"]:
        a = f.attrs
        if a.get("table") in ("main", "254") and a.get("type") == "unicast":
            with contextlib.suppress(ValueError):
                routes[f.node].append((ipaddress.ip_network(str(a.get("dst")), strict=False),
                                       a.get("gateway")))
    out = []
    for node, (dev, iface) in sorted(held.items()):
        others = {n: o.network for n, (_, o) in held.items() if n != node}
        nets = Counter(net for net in others.values()
                       if iface.ip in net and net.prefixlen < iface.network.prefixlen)
        if not nets:
            continue
        net, agree = nets.most_common(1)[0]
        if agree <= sum(1 for o in others.values() if o == iface.network):
            continue  # as many peers hold the node's own network: not the odd one out
        peers = sorted(n for n, o in others.items() if o == net)
        cut = sorted({ip for n, ip in address.items()
                      if n != node and _off_link(ip, net, iface.network)},
                     key=ipaddress.ip_address)
        through: dict[str, set[ipaddress.IPv4Network]] = defaultdict(set)  # gateway -> dsts
        for peer in peers:
            for dst, gateway in routes[peer]:
                if isinstance(gateway, str) and _off_link(gateway, net, iface.network):
                    through[gateway].add(dst)
        cut += sorted(set(through) - set(cut), key=ipaddress.ip_address)
        if not cut:
            continue
        mine = [dst for dst, _ in routes[node]]
        unrouted = [ip for ip in cut if not any(ipaddress.ip_address(ip) in dst for dst in mine)]
        unrouted += sorted({str(d) for dsts in through.values() for d in dsts
                            if not any(d.version == dst.version and d.subnet_of(dst)
                                       for dst in mine)})
        gateways = "; ".join(f"{g}: gateway of {', '.join(sorted(map(str, dsts)))}"
                             for g, dsts in sorted(through.items()))
        out.append(Fact("underlay_prefix", node, {
            "dev": dev, "address": str(iface), "network": str(net),
            "peers_prefix": net.prefixlen, "peers": len(peers),
            "with": ", ".join(peers[:SAMPLE]), "cut_off": ", ".join(cut[:SAMPLE]),
            "unrouted": ", ".join(unrouted[:SAMPLE]),
        }, Source(PROBE, COMMAND, None, f"{node} {dev} {iface}; {net} on " + ", ".join(
            f"{n} ({held[n][0]} {held[n][1]})" for n in peers[:SAMPLE])
            + (f"; {gateways}" if gateways else ""))))
    return out


def _off_link(ip: str, peers: ipaddress.IPv4Network, mine: ipaddress.IPv4Network) -> bool:
    """On the peers' link and off the node's."""
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return a in peers and a not in mine


def _network_of(addresses: str, address: str) -> str | None:
    """The network of `address` as the interface holds it (a /32 is a network of its own).

    >>> _network_of("198.18.0.11/24,198.18.0.12/24", "198.18.0.12")
    '198.18.0.0/24'
    """
    for a in addresses.split(","):
        with contextlib.suppress(ValueError):
            iface = ipaddress.ip_interface(a.strip())
            if str(iface.ip) == address:
                return str(iface.network)
    return None
