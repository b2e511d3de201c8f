"""Which pod is at the far end of a pod's veth, whose node-side name (veth3a9f...,
cali1b2c...) tells an operator nothing: from the pod's cached CNI result (cni_attachment), or
from the API's pod holding an address the node sees behind the veth (interface.peer_addresses,
from its neighbour table and its bridge's forwarding database).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

from kubenetdiag.facts.cluster import ApiCalls
from kubenetdiag.facts.model import Fact

# pods whose addresses are free again: another pod may hold them now
_ENDED = frozenset({"Succeeded", "Failed"})


def _network_pods(cluster: Any) -> Iterator[tuple[tuple[str, str], dict, dict]]:
    """((namespace, name), spec, status) of the API's pods on the pod network (not the
    node's) that have not ended; none when the API was not queried."""
    if not isinstance(cluster, dict) or cluster.get("queried") is not True:
        return
    for pod in ApiCalls(cluster).items("pods") or ():
        meta, spec, status = (pod.get(k) if isinstance(pod.get(k), dict) else {}
                              for k in ("metadata", "spec", "status"))
        if spec.get("hostNetwork") is True or status.get("phase") in _ENDED:
            continue
        yield (str(meta.get("namespace") or ""), str(meta.get("name") or "")), spec, status


def pods_by_address(cluster: Any) -> dict[str, tuple[str, str] | None]:
    """Address -> (namespace, name) of the pod holding it, from the API's pods: those on the
    pod network (not the node's), not ended. None for an address two pods claim."""
    out: dict[str, tuple[str, str] | None] = {}
    for who, _, status in _network_pods(cluster):
        listed = status.get("podIPs") if isinstance(status.get("podIPs"), list) else []
        ips = [status.get("podIP"), *(i.get("ip") for i in listed if isinstance(i, dict))]
        for ip in {ip for ip in ips if isinstance(ip, str) and ip}:
            out[ip] = who if out.get(ip, who) == who else None
    return out


def pod_behind(peers: object, pods: dict[str, tuple[str, str] | None]) -> tuple[str, str] | None:
    """The one pod behind a device's peer addresses; None when none, several, or an address
    two pods claim."""
    found = set()
    for address in str(peers or "").split(","):
        if address in pods:
            if pods[address] is None:
                return None
            found.add(pods[address])
    return found.pop() if len(found) == 1 else None


# Where a pod's name came from (veth_pods), as evidence says it
KNOWN_BY = {"cni_results": "the pod's cached CNI result",
            "neighbours": "the API's pod with the address the node sees behind it",
            "calico_name": "the name Calico gives the veth of the API's pod on the node"}
# How CNIs name the host side of a pod's veth: the bridge and ptp plugins veth..., Calico
# cali..., Cilium lxc...
POD_VETH_PREFIXES = ("veth", "cali", "lxc")


def veth_pods(interfaces: Sequence[Fact], attachments: Sequence[Fact],
              cluster: Any) -> dict[tuple[str, str], tuple[str, str]]:
    """(node, host-side veth) -> (namespace/name of its pod, how that is known).

    The pod's cached CNI result first (cni_attachment): the kubelet's own arguments, kept
    whatever state the veth is in. Else the one API pod holding an address the node sees
    behind the veth (interface.peer_addresses), which a veth set down or taken out of its
    bridge no longer has. Else, for a cali* veth, the API pod on that node whose name Calico
    would give it (calico_veth): Calico's plugin keeps no result in the runtime's cache."""
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for f in attachments:
        if f.attrs.get("host_veth") and f.attrs.get("pod"):
            out[(f.node, str(f.attrs["host_veth"]))] = (str(f.attrs["pod"]), "cni_results")
    # each read of the API's pods once a veth needs it
    pods: dict[str, tuple[str, str] | None] | None = None
    calico: dict[tuple[str, str], str] | None = None
    for f in interfaces:
        key = (f.node, str(f.attrs.get("name")))
        if key in out:
            continue
        if f.attrs.get("peer_addresses"):
            if pods is None:
                pods = pods_by_address(cluster)
            found = pod_behind(f.attrs.get("peer_addresses"), pods)
            if found:
                out[key] = (f"{found[0]}/{found[1]}", "neighbours")
                continue
        if key[1].startswith("cali"):
            if calico is None:
                calico = _calico_veths(cluster)
            if key in calico:
                out[key] = (calico[key], "calico_name")
    return out


def calico_veth(namespace: str, name: str) -> str:
    """The host-side name Calico's CNI plugin gives a Kubernetes pod's veth: cali and the
    first 11 hex digits of the SHA-1 of `namespace.name` (its default interface prefix)."""
    return "cali" + hashlib.sha1(f"{namespace}.{name}".encode()).hexdigest()[:11]


def _calico_veths(cluster: Any) -> dict[tuple[str, str], str]:
    """(node, the veth name Calico would give) -> namespace/name, for the API's pods on the pod
    network that are scheduled and not ended."""
    return {(str(spec["nodeName"]), calico_veth(ns, name)): f"{ns}/{name}"
            for (ns, name), spec, _ in _network_pods(cluster) if spec.get("nodeName")}
