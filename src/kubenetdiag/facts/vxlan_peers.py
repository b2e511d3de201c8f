"""Each node's VXLAN entries for its peers, held against what the peers' own devices say.

A VXLAN CNI (flannel's vxlan backend, Calico's VXLAN mode) reaches a peer's pods in three
steps it programs on the node's VXLAN device: a route to the peer's pod range via the peer's
VTEP address (onlink), a permanent neighbour entry giving that address the peer device's MAC,
and an FDB entry sending frames for that MAC to the peer's underlay address. The agent writes
the last two from what the peer announced (flannel's node annotations, Calico's VXLAN tunnel
addresses) and again only when that changes. Entries it missed or did not delete stay: a peer
whose device was re-created has a new MAC, a renumbered peer a new address, and frames still
go to the old ones, where nothing takes them.

Whether an entry is missing needs only the node's own facts (rules/overlay/vxlan_device.yaml).
Whether it is wrong needs the peer's: its VXLAN device holds the VTEP address the route names,
and its MAC and local address are what the entries should say. Pure functions of facts: one
`vxlan_peer` fact per route to a peer's pods on a VXLAN device whose peer was read
(kinds/vxlan_peers.yaml).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from kubenetdiag.facts.model import Fact, Source, by_kind, interface_ips

PROBE = "vxlan_peers"  # the evidence's source: facts computed here, from other facts
INPUTS: tuple[str, ...] = ("interface", "route", "neighbor", "fdb_entry")
CONTEXT: tuple[str, ...] = ()
PRODUCES: tuple[str, ...] = ("vxlan_peer",)


def _mac(value: object) -> str | None:
    return value.lower() if isinstance(value, str) and value else None


def vxlan_peer_facts(facts: Sequence[Fact]) -> list[Fact]:
    kinds = by_kind(facts, INPUTS + ("node_status",))
    devices: dict[tuple[str, str], Fact] = {}  # (node, name) -> its VXLAN device
    vteps: dict[str, list[Fact]] = defaultdict(list)  # VTEP address -> the devices holding it
    own: dict[str, set[str]] = defaultdict(set)  # every address a node's devices hold
    for f in kinds["interface"]:
        ips = interface_ips(f.attrs.get("addresses"))
        own[f.node] |= ips
        if f.attrs.get("kind") == "vxlan":
            devices[(f.node, str(f.attrs.get("name")))] = f
            for ip in ips:
                vteps[ip].append(f)
    if not devices:
        return []
    neighbors: dict[tuple[str, str], dict[str, str | None]] = defaultdict(dict)
    for f in kinds["neighbor"]:
        neighbors[(f.node, str(f.attrs.get("dev")))][str(f.attrs.get("ip"))] = _mac(
            f.attrs.get("mac"))
    fdb: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    # who sends a MAC's frames where: a peer announces one address (flannel's public-ip, which
    # may be a NAT address no device of the peer holds), so an address other nodes use for
    # the peer is the peer's as well
    sent_to: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for f in kinds["fdb_entry"]:
        if isinstance(f.attrs.get("dst"), str) and (mac := _mac(f.attrs.get("mac"))):
            fdb[(f.node, str(f.attrs.get("dev")))][mac].append(str(f.attrs["dst"]))
            sent_to[mac][f.node].add(str(f.attrs["dst"]))
    addresses = {f.node: f.attrs.get("address") for f in kinds["node_status"]}

    out = []
    for r in kinds["route"]:
        dev, gw = str(r.attrs.get("dev")), r.attrs.get("gateway")
        if (r.node, dev) not in devices or not isinstance(gw, str):
            continue
        owners = [d for d in vteps.get(gw, ()) if d.node != r.node]
        if len(owners) != 1:  # no peer read holds it, or two do: nothing to hold it against
            continue
        peer = owners[0]
        peer_mac = _mac(peer.attrs.get("mac"))
        peer_vtep = peer.attrs.get("vxlan_local") or addresses.get(peer.node)
        seen = neighbors.get((r.node, dev))
        if peer_mac is None or not isinstance(peer_vtep, str) or not seen:
            continue  # the peer's side, or this device's neighbours, were not read
        mac = seen.get(gw)
        known = fdb.get((r.node, dev))
        dsts = known.get(mac, []) if known and mac else []
        if mac is None:
            state = "no_neighbor"
        elif mac != peer_mac:
            state = "stale_mac"
        elif not known:
            state = "unknown"  # the FDB was not read
        elif not dsts:
            state = "no_fdb"
        elif (set(dsts).isdisjoint(own[peer.node] | {peer_vtep, addresses.get(peer.node)})
              # asked only of an address that is none of the peer's own: the other nodes'
              # entries for a peer are as many as the nodes
              and not any(d in held for n, held in sent_to[mac].items()
                          if n not in (r.node, peer.node) for d in dsts)):
            state = "stale_dst"
        else:
            state = "ok"
        out.append(Fact("vxlan_peer", r.node, {
            "dev": dev,
            "peer": peer.node,
            "gateway": gw,
            "cidr": r.attrs.get("dst"),
            "mac": mac,
            "peer_mac": peer_mac,
            "dst": ",".join(dsts) or None,
            "peer_vtep": peer_vtep,
            "state": state,
        }, Source(PROBE, f"{dev} entries for {gw} against {peer.node}'s "
                         f"{peer.attrs.get('name')}",
                  None,
                  f"neighbour {gw} lladdr {mac or 'none'}, fdb {mac or '-'} dst "
                  f"{','.join(dsts) or 'none'}; {peer.node}'s {peer.attrs.get('name')}: "
                  f"mac {peer_mac}, local {peer_vtep}")))
    return out
