"""Each node's pod bridge and the hairpin mode of its ports.

Under a bridge CNI (flannel's delegate, the plain bridge plugin, kubenet's cbr0) every pod's
veth is a port of one bridge on the node. A pod that calls a Service whose endpoint turns out to
be itself sends the packet in through its own port; with bridged traffic going through iptables
(net.bridge.bridge-nf-call-iptables = 1, as kube-proxy needs) the DNAT happens on the bridge, and
the bridge must then send the frame back out of the port it came in on. It does that only when
the port's hairpin mode is on (the CNI's `hairpinMode`, kubelet's `--hairpin-mode`); otherwise
the connection times out, and only for that pod and only when kube-proxy picks it.

Which bridge is the pod bridge: the one holding an address in the node's pod range (the API's
spec.podCIDR, or flannel's FLANNEL_SUBNET); without either, the names bridge CNIs give it (cni0,
cbr0). Other bridges (docker0, libvirt's virbr0) carry no pods of the cluster and are left
alone. Flannel's CNI plugin hands the bridge plugin FLANNEL_SUBNET's first address as the pods'
gateway, so a cni0 with pods on it that holds no address there has lost that gateway: the
address a node re-joined with a new range keeps (the bridge plugin's "cni0 already has an IP
address different from ..."), or none at all. The pods behind the ports with hairpin off are
named by their cached CNI results, or where the node knows their addresses and the API the
pods (facts/pod_addresses.py).
Pure functions of facts and the API's pods: one `pod_bridge` fact per pod bridge found
(kinds/bridges.yaml).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from kubenetdiag.facts.model import Fact, Source, by_kind
from kubenetdiag.facts.pod_addresses import veth_pods
from kubenetdiag.probes.active.plan import ipv4_networks

PROBE = "bridges"  # the evidence's source: facts computed here, from other facts
INPUTS: tuple[str, ...] = ("interface",)
# The pod ranges say which bridge is the pod bridge and whether it holds the pods' gateway; the
# names stand in without them. Cached CNI results name the pods behind the ports.
CONTEXT: tuple[str, ...] = ("k8s_node", "flannel_subnet", "cni_attachment")
PRODUCES: tuple[str, ...] = ("pod_bridge",)
BRIDGE_NAMES = ("cni0", "cbr0")
SHOWN = 10  # ports named in the fact; the count covers all of them


def _in_range(addresses: object, ranges: list[ipaddress.IPv4Network]) -> bool:
    for part in str(addresses or "").split(","):
        try:
            ip = ipaddress.ip_interface(part.strip()).ip
        except ValueError:
            continue
        if any(ip in net for net in ranges):
            return True
    return False


Ranges = dict[str, list[ipaddress.IPv4Network]]  # by node


def _pod_ranges(facts: list[Fact], attrs: tuple[str, ...]) -> Ranges:
    ranges: Ranges = defaultdict(list)
    for f in facts:
        text = next((f.attrs[a] for a in attrs if f.attrs.get(a)), None)
        ranges[f.node] += [n for n in ipv4_networks(text) if n not in ranges[f.node]]
    return ranges


def pod_bridge_facts(facts: Sequence[Fact], cluster: Any = None) -> list[Fact]:
    """`cluster`: the bundle's API answers, whose pods name those behind the ports."""
    kinds = by_kind(facts, PRODUCES + INPUTS + CONTEXT)
    api = _pod_ranges(kinds["k8s_node"], ("pod_cidrs", "pod_cidr"))
    flannel = _pod_ranges(kinds["flannel_subnet"], ("subnet",))
    ports: dict[tuple[str, str], list[Fact]] = defaultdict(list)
    bridges: list[Fact] = []
    for f in kinds["interface"]:
        if f.attrs.get("kind") == "bridge":
            bridges.append(f)
        elif isinstance(f.attrs.get("master"), str):
            ports[(f.node, f.attrs["master"])].append(f)
    out = []
    for br in bridges:
        name = str(br.attrs.get("name"))
        subnet = flannel.get(br.node, [])
        known = api.get(br.node, []) + [n for n in subnet if n not in api.get(br.node, [])]
        mine = ports.get((br.node, name), [])
        holds: bool | None = _in_range(br.attrs.get("addresses"), known)
        if holds:
            how = "pod_cidr"
        elif name in BRIDGE_NAMES and (not known or (subnet and mine)):
            how = "name"
            # only flannel's subnet says which address its CNI plugin wants on the bridge
            holds = False if subnet else None
        else:
            continue
        off_ports = sorted((p for p in mine if p.attrs.get("hairpin") is False),
                           key=lambda p: str(p.attrs["name"]))
        off = [str(p.attrs["name"]) for p in off_ports]
        pods = veth_pods(off_ports, kinds["cni_attachment"], cluster) if off_ports else {}
        off_pods = sorted(pods[key][0] for key in ((p.node, str(p.attrs["name"]))
                                                   for p in off_ports) if key in pods)
        printed = [p for p in mine if isinstance(p.attrs.get("hairpin"), bool)]
        shown = ",".join(off[:SHOWN]) + (f",... ({len(off)} in all)" if len(off) > SHOWN else "")
        out.append(Fact("pod_bridge", br.node, {
            "bridge": name,
            "identified_by": how,
            "ports": len(mine),
            "ports_known": len(printed),
            "hairpin_off": len(off),
            "hairpin_off_ports": shown,
            "hairpin_off_pods": ",".join(off_pods[:SHOWN]) or None,
            "promisc": bool(br.attrs.get("promisc")),
            "addresses": str(br.attrs.get("addresses") or "none"),
            "pod_range": ",".join(str(n) for n in known) or None,
            "holds_pod_gateway": holds,
        }, Source(PROBE, "the pod bridge's ports (interface facts)", None,
                  f"{name}: {len(mine)} ports, hairpin off on {len(off)}"
                  + (f" ({shown})" if off else ""))))
    return out
