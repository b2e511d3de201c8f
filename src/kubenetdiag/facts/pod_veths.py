"""The pod behind each host-side veth of a node, so that a rule finding one pod's link broken
names the pod, not only a device called veth3a9f01.

Known from the pod's cached CNI result (cni_attachment: the namespace and name the kubelet
passed the plugins, kept whatever state the veth is in), else from the API's pod holding the
address the node sees behind the veth (interface.peer_addresses), which a veth set down or
taken out of its bridge has lost (facts/pod_addresses.py).
Pure functions of facts and the API's pods: one `pod_veth` fact per veth that is a pod's host
side: a port of a bridge, a veth a cached CNI result names, or one named as CNIs name them
(veth..., cali..., lxc...); and one for each veth a cached result names that the node no
longer has, where the API still runs the pod with that address (kinds/pod_veths.yaml).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kubenetdiag.facts.model import Fact, Source, by_kind
from kubenetdiag.facts.pod_addresses import (
    KNOWN_BY,
    POD_VETH_PREFIXES,
    pods_by_address,
    veth_pods,
)

PROBE = "pod_veths"  # the evidence's source: facts computed here, from other facts
INPUTS: tuple[str, ...] = ("interface",)
# Without the cached results, pods are named from the neighbours alone (fewer of them)
CONTEXT: tuple[str, ...] = ("cni_attachment",)
PRODUCES: tuple[str, ...] = ("pod_veth",)


def pod_veth_facts(facts: Sequence[Fact], cluster: Any = None) -> list[Fact]:
    """`cluster`: the bundle's API answers, whose pods name those behind the veths."""
    kinds = by_kind(facts, INPUTS + CONTEXT)
    cached = {(f.node, f.attrs.get("host_veth")) for f in kinds["cni_attachment"]}
    veths = [f for f in kinds["interface"] if f.attrs.get("kind") == "veth" and (
        f.attrs.get("master") or (f.node, f.attrs.get("name")) in cached
        or str(f.attrs.get("name")).startswith(POD_VETH_PREFIXES))]
    pods = veth_pods(veths, kinds["cni_attachment"], cluster)
    out = []
    for f in veths:
        dev = str(f.attrs["name"])
        pod, how = pods.get((f.node, dev), (None, None))
        out.append(_fact(f.node, dev, pod, how, True, f.attrs.get("peer_addresses")))
    return out + _gone(kinds["interface"], kinds["cni_attachment"], cluster)


def _fact(node: str, dev: str, pod: str | None, how: str | None, present: bool,
          addresses: object) -> Fact:
    return Fact("pod_veth", node, {
        "dev": dev,
        "pod": pod,
        "holder": f"pod {pod}" if pod else "a pod",
        "known_by": how,
        "present": present,
        "addresses": str(addresses) if addresses else None,
    }, Source(PROBE, "interface facts and cached CNI results", None,
              f"{dev}: " + (f"pod {pod}, from {KNOWN_BY[how]}" if pod and how
                            else "no pod known behind it")
              + ("" if present else "; the node has no such device")))


def _gone(interfaces: Sequence[Fact], attachments: Sequence[Fact], cluster: Any) -> list[Fact]:
    """The veths a cached result names that the node no longer has, for pods the API still
    runs with the cached address: deleting either end of a veth deletes both, so the pod has
    no interface left. A result the API does not confirm may be a leftover of a pod that is
    gone (a CNI DEL that never ran), and says nothing."""
    devices: dict[str, set[str]] = {}
    for f in interfaces:
        devices.setdefault(f.node, set()).add(str(f.attrs.get("name")))
    # a pod with a present veth (a sandbox made again) is attached, whatever older files say
    attached = {(f.node, f.attrs.get("pod")) for f in attachments
                if f.attrs.get("host_veth") in devices.get(f.node, ())}
    api: dict[str, tuple[str, str] | None] | None = None
    out = []
    for f in attachments:
        dev, pod = f.attrs.get("host_veth"), f.attrs.get("pod")
        if (not dev or not pod or f.node not in devices or dev in devices[f.node]
                or (f.node, pod) in attached):
            continue
        if api is None:
            api = pods_by_address(cluster)
        running = [a for a in str(f.attrs.get("addresses") or "").split(",")
                   if api.get(a) and "/".join(api[a] or ()) == pod]
        if running:
            out.append(_fact(f.node, str(dev), str(pod), "cni_results", False, ",".join(running)))
    return out
