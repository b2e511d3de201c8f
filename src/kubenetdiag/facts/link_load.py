"""How full each link is: an interface's throughput over the run (interface_load, from two
samples of /proc/net/dev) against what it can carry.

What it can carry: sending, the rate of a token bucket (tbf) on the device (tc_hook.rate_bps:
the CNI bandwidth plugin's, or shaping set by hand), else the link speed the driver reports;
receiving, the link speed. Only real links report a speed (interface.speed_mbps: a NIC, a bond
or VLAN over NICs); a veth, a bridge or a tunnel is bounded by nothing a node can read, so its
load is not judged. A link at its capacity is saturated: what does not fit waits in its queue
(a tbf holds its `latency`'s worth) and is then dropped, for every flow through it, which is
what a traffic spike does to the calls that share the link (docs/runbooks.md#runbook-004).
A veth's saturation names the pod at its far end, from the pod's cached CNI result or where
the node's neighbour table knows the address behind it (interface.peer_addresses) and the API
has a pod with that address: the device name alone (veth3a9f...) tells an operator nothing.
Pure functions of facts and the API's pods: one `link_saturation` fact per interface and
direction at half its capacity or more (kinds/link_load.yaml).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kubenetdiag.facts.model import Fact, Source, by_kind
from kubenetdiag.facts.pod_addresses import KNOWN_BY, veth_pods

PROBE = "link_load"  # the evidence's source: facts computed here, from other facts
INPUTS: tuple[str, ...] = ("interface_load",)
# What bounds a link: without them no capacity is known, and no load is judged (and which pod
# a veth is: cached CNI results, else the neighbours behind it)
CONTEXT: tuple[str, ...] = ("interface", "tc_hook", "cni_attachment")
PRODUCES: tuple[str, ...] = ("link_saturation",)
FLOOR_PCT = 50  # below half its capacity a link is not worth a fact


def link_saturation_facts(facts: Sequence[Fact], cluster: Any = None) -> list[Fact]:
    """`cluster`: the bundle's API answers, whose pods name the far end of a pod's veth."""
    kinds = by_kind(facts, INPUTS + CONTEXT)
    pods: dict[tuple[str, str], tuple[str, str]] | None = None  # read once a veth needs them
    speed = {(f.node, f.attrs["name"]): f.attrs.get("speed_mbps")
             for f in kinds["interface"]}
    kind = {(f.node, f.attrs["name"]): f.attrs.get("kind") for f in kinds["interface"]}
    shaped = {(f.node, f.attrs["dev"]): f.attrs.get("rate_bps")
              for f in kinds["tc_hook"] if f.attrs.get("direction") == "root"}
    out = []
    for load in kinds["interface_load"]:
        key = (load.node, load.attrs["name"])
        wire = speed.get(key) * 1_000_000 if speed.get(key) else None
        for direction, rate, drops, limit in (
                ("send", load.attrs["tx_bps"], load.attrs["tx_drops"],
                 ("tbf rate", shaped[key]) if shaped.get(key) else ("link speed", wire)),
                ("receive", load.attrs["rx_bps"], load.attrs["rx_drops"], ("link speed", wire))):
            what, capacity = limit
            if not capacity:
                continue
            used = round(rate * 100 / capacity)
            if used < FLOOR_PCT:
                continue
            if pods is None:
                pods = veth_pods(kinds["interface"], kinds["cni_attachment"], cluster)
            who, how = pods.get(key, (None, None))
            pod = who.split("/", 1) if who else None
            out.append(Fact("link_saturation", load.node, {
                "name": load.attrs["name"],
                "kind": kind.get(key) or "device",
                "direction": direction,
                "rate_mbps": round(rate / 1_000_000, 1),
                "capacity_mbps": round(capacity / 1_000_000, 1),
                "limit": what,
                "used_pct": used,
                "drops": drops,
                "namespace": pod[0] if pod else None,
                "pod": pod[1] if pod else None,
            }, Source(PROBE, "interface_load against its capacity", None,
                      f"{load.attrs['name']} {direction}s {rate} bit/s over "
                      f"{load.attrs['interval_s']}s, {used}% of its {what} {capacity} bit/s; "
                      f"{drops} packets dropped"
                      + (f"; the pod at its far end: {who} (from {KNOWN_BY[how]})"
                         if who else ""))))
    return out
