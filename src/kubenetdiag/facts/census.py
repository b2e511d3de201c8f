"""Census facts: for settings every node should share, how many nodes hold each value (and
for values each node should hold alone, those two nodes or more share).

A rule that finds the odd node out by comparing it with two agreeing peers joins every node
with every pair of others: at 5,000 nodes that was most of the engine's time. Counting here, in
one pass, lets such a rule compare a node with a handful of census facts instead.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections import defaultdict
from collections.abc import Sequence

from kubenetdiag.facts.model import Fact, Source, by_kind, interface_ips, overlay_devices

SAMPLE = 10  # node names kept in a census fact's evidence
# Declared for kubenetdiag.facts.producers: a rule on a census fact needs what it counts
INPUTS: tuple[str, ...] = ("interface", "node_status", "cni_config", "route", "neighbor")
CONTEXT: tuple[str, ...] = ()
PRODUCES: tuple[str, ...] = ("census", "shared_mac")
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
    return out + _shared_macs(picked, address)


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
