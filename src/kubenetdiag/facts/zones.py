"""Round-trip times between availability zones, for the Services whose endpoints span them.

The connectivity matrix already pings every peer's underlay address (`reach`, layer underlay,
with `rtt_ms`), and the API says which zone each node is in (`k8s_node.zone`) and which zones
each Service's ready endpoints are in (`service_endpoints.zone_list`). Read together they say
what a call that kube-proxy sends to the other zone pays, against one that stays in its zone
(docs/runbooks.md#runbook-003: endpoints spread over zones, the calls between them slow).

The comparison needs arithmetic over many facts (medians, a ratio), which rules do not do, so
it is computed here, before the rules run, as one `zone_latency` fact per Service and pair of
its zones (kinds/zones.yaml). The rule decides what ratio is worth a finding.

Only the underlay layer is read: it is the path between the zones, and the pod layer adds the
overlay's own cost on top, which is the CNI's business, not the zones'. Only probes sent from
the node itself count (not from a pod's namespace), so both sides of the comparison were
measured the same way. A median per side keeps one slow sample (a busy node during the run)
from deciding. Pure functions of facts.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from itertools import combinations

from kubenetdiag.facts.model import Fact, Source, by_kind

PROBE = "zones"  # the evidence's source: facts computed here, from other facts
COMMAND = "the underlay pings between the zones' nodes"
# Declared for kubenetdiag.facts.producers: a zone_latency fact needs the matrix, the API's
# nodes (their zones) and its Services; without any of them it is missing, not fast.
INPUTS: tuple[str, ...] = ("reach", "k8s_node", "service_endpoints")
CONTEXT: tuple[str, ...] = ()
PRODUCES: tuple[str, ...] = ("zone_latency",)
SAMPLE = 6  # pairs shown per side in the evidence text
MIN_RTT_MS = 0.001  # ping prints three decimals: a same-zone median of 0.000 is below this


def _addresses(nodes: Sequence[Fact]) -> dict[str, str]:
    """inventory node name -> its InternalIP, for the command that measures the slow pair."""
    return {f.node: str(f.attrs["internal_ip"]) for f in nodes
            if isinstance(f.attrs.get("internal_ip"), str) and f.attrs["internal_ip"]}


def _zone_of(nodes: Sequence[Fact]) -> dict[str, str]:
    """inventory node name -> zone, for the nodes the API labels with one."""
    out = {}
    for f in nodes:
        zone = f.attrs.get("zone")
        if isinstance(zone, str) and zone and f.node != "cluster":
            out[f.node] = zone
    return out


def _samples(reach: Sequence[Fact], zone: dict[str, str]
             ) -> dict[tuple[str, str], list[tuple[float, str, str]]]:
    """(zone, zone) sorted -> [(rtt, src, dst)] of the answered underlay pings between them."""
    out: dict[tuple[str, str], list[tuple[float, str, str]]] = {}
    for f in reach:
        a = f.attrs
        rtt, src, dst = a.get("rtt_ms"), a.get("src") or f.node, a.get("dst")
        if a.get("layer") != "underlay" or a.get("ok") is not True or a.get("vantage"):
            continue
        if not isinstance(rtt, int | float) or isinstance(rtt, bool):
            continue
        if src not in zone or dst not in zone or src == dst:
            continue
        za, zb = sorted((zone[src], zone[dst]))
        out.setdefault((za, zb), []).append((float(rtt), str(src), str(dst)))
    return out


def _median(samples: Sequence[tuple[float, str, str]]) -> float | None:
    return round(statistics.median(s[0] for s in samples), 3) if samples else None


def _lines(title: str, samples: Sequence[tuple[float, str, str]]) -> list[str]:
    shown = sorted(samples, key=lambda s: (-s[0], s[1], s[2]))[:SAMPLE]
    more = len(samples) - len(shown)
    return [title] + [f"  {src} -> {dst}: {rtt:g} ms" for rtt, src, dst in shown] + (
        [f"  ... and {more} more"] if more > 0 else [])


def zone_latency_facts(facts: Sequence[Fact]) -> list[Fact]:
    """One `zone_latency` per Service with ready endpoints in two zones or more, and per pair
    of those zones between which at least one underlay ping was answered.

    >>> def node(n, z): return Fact("k8s_node", n, {"name": n, "zone": z})
    >>> def ping(s, d, ms): return Fact("reach", s, {"src": s, "dst": d, "layer": "underlay",
    ...                                             "ok": True, "rtt_ms": ms, "vantage": None})
    >>> svc = Fact("service_endpoints", "cluster", {"namespace": "pay", "name": "payment",
    ...            "zones": 2, "zone_list": "az1,az2", "topology_aware": False})
    >>> [f] = zone_latency_facts([node("n1", "az1"), node("n2", "az1"), node("n3", "az2"),
    ...                           ping("n1", "n2", 0.2), ping("n2", "n1", 0.3),
    ...                           ping("n1", "n3", 31.0), ping("n3", "n1", 29.0), svc])
    >>> f.attrs["cross_ms"], f.attrs["same_ms"], f.attrs["ratio"], f.attrs["same_zones"]
    (30.0, 0.25, 120.0, 'az1')
    """
    picked = by_kind(facts, INPUTS)
    zone = _zone_of(picked["k8s_node"])
    address = _addresses(picked["k8s_node"])
    if len(set(zone.values())) < 2:
        return []
    samples = _samples(picked["reach"], zone)
    everywhere_same = [s for (a, b), ss in samples.items() if a == b for s in ss]
    out = []
    for svc in picked["service_endpoints"]:
        a = svc.attrs
        zones = sorted({z for z in str(a.get("zone_list") or "").split(",") if z})
        for za, zb in combinations(zones, 2):
            cross = samples.get((za, zb), [])
            if not cross:
                continue  # no answered ping between the two: nothing measured, nothing said
            # The baseline is the same-zone pairs of these two zones; a zone with one node has
            # none, so the cluster's other same-zone pairs stand in, and none means unknown.
            same = samples.get((za, za), []) + samples.get((zb, zb), [])
            same_zones = ",".join(z for z in (za, zb) if samples.get((z, z)))
            if not same:
                same = everywhere_same
                same_zones = ",".join(sorted({zone[s[1]] for s in same}))
            cross_ms, same_ms = _median(cross), _median(same)
            slow = max(cross)
            ratio = (round(cross_ms / max(same_ms, MIN_RTT_MS), 1)
                     if cross_ms is not None and same_ms is not None else None)
            text = _lines(f"underlay RTT between {za} and {zb} (median {cross_ms} ms):", cross)
            text += (_lines(f"within {same_zones} (median {same_ms} ms):", same) if same
                     else ["no same-zone pair was measured"])
            out.append(Fact("zone_latency", "cluster", {
                "namespace": a.get("namespace"),
                "service": a.get("name"),
                "zone_a": za,
                "zone_b": zb,
                "cross_ms": cross_ms,
                "cross_pairs": len(cross),
                "same_ms": same_ms,
                "same_pairs": len(same),
                "same_zones": same_zones,
                "ratio": ratio,
                "slowest": slow[0],
                "slowest_src": slow[1],
                "slowest_dst": slow[2],
                "slowest_dst_address": address.get(slow[2]),
            }, Source(PROBE, COMMAND, None, "\n".join(text))))
    return out
