"""Each node's pod bridge and the hairpin mode of its ports.

Under a bridge CNI (flannel's delegate, the plain bridge plugin, kubenet's cbr0) every pod's
veth is a port of one bridge on the node. A pod that calls a Service whose endpoint turns out to
be itself sends the packet in through its own port; with bridged traffic going through iptables
(net.bridge.bridge-nf-call-iptables = 1, as kube-proxy needs) the DNAT happens on the bridge, and
the bridge must then send the frame back out of the port it came in on. It does that only when
the port's hairpin mode is on (the CNI's `hairpinMode`, kubelet's `--hairpin-mode`); otherwise
the connection times out, and only for that pod and only when kube-proxy picks it.

Which bridge is the pod bridge: the one holding an address in the node's pod range (the API's
spec.podCIDR); without the API, the names bridge CNIs give it (cni0, cbr0). Other bridges
(docker0, libvirt's virbr0) carry no pods of the cluster and are left alone. Pure functions of
facts: one `pod_bridge` fact per pod bridge found (kinds/bridges.yaml).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Sequence

from kubenetdiag.facts.model import Fact, Source, by_kind
from kubenetdiag.probes.active.plan import ipv4_networks

PROBE = "bridges"  # the evidence's source: facts computed here, from other facts
INPUTS: tuple[str, ...] = ("interface",)
# The API's pod ranges only say which bridge is the pod bridge; the names stand in without it.
CONTEXT: tuple[str, ...] = ("k8s_node",)
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


def pod_bridge_facts(facts: Sequence[Fact]) -> list[Fact]:
    kinds = by_kind(facts, PRODUCES + INPUTS + CONTEXT)
    ranges: dict[str, list[ipaddress.IPv4Network]] = defaultdict(list)
    for f in kinds["k8s_node"]:
        ranges[f.node] += ipv4_networks(f.attrs.get("pod_cidrs") or f.attrs.get("pod_cidr"))
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
        if ranges.get(br.node):
            if not _in_range(br.attrs.get("addresses"), ranges[br.node]):
                continue
            how = "pod_cidr"
        elif name in BRIDGE_NAMES:
            how = "name"
        else:
            continue
        mine = ports.get((br.node, name), [])
        off = sorted(str(p.attrs["name"]) for p in mine if p.attrs.get("hairpin") is False)
        known = [p for p in mine if isinstance(p.attrs.get("hairpin"), bool)]
        shown = ",".join(off[:SHOWN]) + (f",... ({len(off)} in all)" if len(off) > SHOWN else "")
        out.append(Fact("pod_bridge", br.node, {
            "bridge": name,
            "identified_by": how,
            "ports": len(mine),
            "ports_known": len(known),
            "hairpin_off": len(off),
            "hairpin_off_ports": shown,
            "promisc": bool(br.attrs.get("promisc")),
        }, Source(PROBE, "the pod bridge's ports (interface facts)", None,
                  f"{name}: {len(mine)} ports, hairpin off on {len(off)}"
                  + (f" ({shown})" if off else ""))))
    return out
