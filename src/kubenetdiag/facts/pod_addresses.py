"""Which pod holds an address, from the API's pods: what names the far end of a pod's veth,
whose node-side name (veth3a9f..., cali1b2c...) tells an operator nothing. The node gives the
addresses behind each veth (interface.peer_addresses, from its neighbour table and its
bridge's forwarding database); this gives the pod.
"""

from __future__ import annotations

from typing import Any

from kubenetdiag.facts.cluster import ApiCalls

# pods whose addresses are free again: another pod may hold them now
_ENDED = frozenset({"Succeeded", "Failed"})


def pods_by_address(cluster: Any) -> dict[str, tuple[str, str] | None]:
    """Address -> (namespace, name) of the pod holding it, from the API's pods: those on the
    pod network (not the node's), not ended. None for an address two pods claim."""
    if not isinstance(cluster, dict) or cluster.get("queried") is not True:
        return {}
    out: dict[str, tuple[str, str] | None] = {}
    for pod in ApiCalls(cluster).items("pods") or ():
        meta, spec, status = (pod.get(k) if isinstance(pod.get(k), dict) else {}
                              for k in ("metadata", "spec", "status"))
        if spec.get("hostNetwork") is True or status.get("phase") in _ENDED:
            continue
        who = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
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
