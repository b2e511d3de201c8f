"""The pod each network namespace the pod_counters probe read belongs to, so that a rule on a
pod's own counters names the pod, not a list of addresses.

Pure function of facts and the API's pods: one `pod_name` fact per `pod_netns`, naming the one
API pod (not ended, on the pod network) that holds its addresses (kinds/pods.yaml).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kubenetdiag.facts.model import Fact, Source, by_kind
from kubenetdiag.facts.pod_addresses import pod_behind, pods_by_address

PROBE = "pod_names"  # the evidence's source: facts computed here, from other facts
INPUTS: tuple[str, ...] = ("pod_netns",)
CONTEXT: tuple[str, ...] = ()
PRODUCES: tuple[str, ...] = ("pod_name",)


def pod_name_facts(facts: Sequence[Fact], cluster: Any = None) -> list[Fact]:
    """`cluster`: the bundle's API answers, whose pods hold the namespaces' addresses."""
    namespaces = by_kind(facts, INPUTS)["pod_netns"]
    if not namespaces:
        return []
    pods = pods_by_address(cluster)
    out = []
    for f in namespaces:
        addrs = str(f.attrs["addresses"])
        who = pod_behind(addrs, pods)
        pod = "/".join(who) if who else None
        out.append(Fact("pod_name", f.node, {
            "addresses": addrs,
            "pod": pod,
            "holder": f"pod {pod}" if pod else f"the network namespace with {addrs}",
        }, Source(PROBE, "pod_netns facts and the API's pods", None,
                  f"{addrs}: " + (f"pod {pod}, the API's pod with that address" if pod
                                  else "no one API pod holds that address"))))
    return out
