"""Cluster facts: the bundle's cluster.json (what the Kubernetes API said) turned into facts.

Pure functions, no client import. The input is untrusted JSON from an API server or a bundle
file: every field is read defensively, a malformed object is skipped, and a section that
cannot be read at all becomes a `probe_status` fact, so a surprise shape never hides the rest.
A call that failed (403, timeout...) becomes a `probe_status` naming what it blocked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

from kubenetdiag.facts.model import Fact, Source, excerpt
from kubenetdiag.vocabulary import CNI_MARKERS

CLUSTER = "cluster"

# What each call's failure leaves unchecked, so the report can say it.
BLOCKS = {
    "version": "the API server version",
    "nodes": "API nodes: pod CIDRs, Ready/NetworkUnavailable conditions, zones, and matching "
    "them to the inventory",
    "daemonsets": "which CNI plugin runs and its rollout (desired vs ready), kube-proxy rollout",
    "pods": "CNI, kube-proxy and CoreDNS pod health (readiness, restarts, which node), and "
    "which pods a Service or a NetworkPolicy selects",
    "namespaces": "namespace labels, which a NetworkPolicy's namespaceSelector matches",
    "flannel_config": "flannel's network, backend type and VXLAN port",
    "kube_proxy_config": "kube-proxy mode (iptables/ipvs)",
    "coredns_config": "the cluster DNS domain",
    "services": "Services and the DNS Service VIP",
    "endpointslices": "Services without ready endpoints, and endpoints spread across zones",
    "networkpolicies": "NetworkPolicies (default deny per namespace)",
    "calico_ippools": "calico IP pools and their encapsulation",
    "controller_lease": "whether kube-controller-manager still leads (its lease), without which "
    "no Service's endpoints follow its pods",
}
# The fact kinds each call's answer goes into: when a call fails, the rules that read these
# kinds are listed as not evaluated (kubenetdiag.facts.producers). tests/test_producers.py fails
# a call and checks that no other kind changes.
CALL_KINDS: dict[str, tuple[str, ...]] = {
    "version": (),
    "nodes": ("k8s_node", "node_match", "service_endpoints"),
    "daemonsets": ("cni", "kube_proxy"),
    "pods": ("cni", "cni_pod", "kube_proxy", "dns_pod", "service_port", "endpoint_lag"),
    "flannel_config": ("flannel_config",),
    "kube_proxy_config": ("kube_proxy",),
    "coredns_config": ("dns_service",),
    "services": ("dns_service", "service_endpoints", "service_port", "endpoint_lag"),
    "endpointslices": ("service_endpoints", "service_port", "endpoint_lag"),
    "networkpolicies": ("network_policy",),
    "calico_ippools": ("calico_ippool",),
    "controller_lease": ("controller_lease",),
}
FLANNEL_DEFAULT_VXLAN_PORT = 8472
# A Service port's endpoints are compared with every node's rules by ip:port; past this many
# the fact keeps the first ones only (a 5,000-pod Deployment behind one Service).
SERVICE_ENDPOINTS_SHOWN = 2000
# Set by the EndpointSlice controller: when the change it last wrote was made.
LAST_CHANGE = "endpoints.kubernetes.io/last-change-trigger-time"
# Objects whose absence is an answer (not calico, kube-proxy replaced), not a failure.
OPTIONAL = {"flannel_config", "kube_proxy_config", "coredns_config", "calico_ippools",
            "controller_lease"}
STATUS_TO_PROBE_STATUS = {
    "forbidden": "permission_denied",
    "unauthorized": "permission_denied",
    "timeout": "timeout",
    "unreachable": "unreachable",
    "not_found": "failed",
    "error": "failed",
}
PLUGINS = (("flannel", "flannel"), ("canal", "other"), ("calico", "calico"), ("cilium", "cilium"))
TOPOLOGY_ANNOTATIONS = (
    "service.kubernetes.io/topology-mode",
    "service.kubernetes.io/topology-aware-hints",
)


# ---------------------------------------------------------------- safe access


def _as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _as_text(value: Any) -> str | None:
    """A scalar as str, or None; containers are not strings."""
    if value is None or isinstance(value, dict | list):
        return None
    return str(value)


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _name(obj: Any) -> str | None:
    name = _get(obj, "metadata", "name")
    return name if isinstance(name, str) and name else None  # a Kubernetes name is a string


def _ns(obj: Any) -> str:
    return _as_text(_get(obj, "metadata", "namespace")) or ""


def _condition(obj: Any, kind: str) -> bool | None:
    for c in _as_list(_get(obj, "status", "conditions")):
        if isinstance(c, dict) and c.get("type") == kind:
            return {"True": True, "False": False}.get(str(c.get("status")))
    return None


# ---------------------------------------------------------------- calls


class ApiCalls:
    """The calls of one cluster.json, by kind (facts/policies.py reads the same answer)."""

    def __init__(self, doc: dict) -> None:
        self.calls = [c for c in _as_list(doc.get("calls"))
                      if isinstance(c, dict) and c.get("name")]

    def named(self, prefix: str) -> list[dict]:
        """Calls of one kind: 'pods' covers pods/kube-system, pods/kube-flannel..."""
        return [c for c in self.calls if str(c["name"]).split("/")[0] == prefix]

    def items(self, prefix: str) -> list[dict] | None:
        """Items of every ok call of one kind; None when none of them answered."""
        calls = [c for c in self.named(prefix) if c.get("status") == "ok"]
        if not calls:
            return None
        return [o for c in calls for o in _as_list(c.get("items")) if isinstance(o, dict)]

    def obj(self, name: str) -> dict | None:
        for c in self.named(name):
            if c.get("status") == "ok" and isinstance(c.get("object"), dict):
                return c["object"]
        return None

    def source(self, prefix: str, obj: Any = None) -> Source:
        """Where a fact from these calls came from. An API call has no exit code: the slot
        holds the HTTP status of the answer the fact was read from."""
        calls = self.named(prefix)
        path = " ".join(str(c.get("path", "")) for c in calls) or prefix
        text = json.dumps(obj, sort_keys=True, default=str)[:600] if obj is not None else ""
        status = next((c.get("http_status") for c in calls if c.get("status") == "ok"
                       and isinstance(c.get("http_status"), int)), None)
        return Source(f"api:{prefix}", f"GET {path}", status, excerpt(text, 600))


def _call_status_facts(calls: ApiCalls) -> list[Fact]:
    facts = []
    unreachable = [c for c in calls.calls if c.get("status") == "unreachable"]
    if unreachable:
        # One entry, not one per call: the report should say "the API was down" once.
        first = unreachable[0]
        facts.append(Fact(
            "probe_status",
            CLUSTER,
            {
                "probe": "api",
                "status": "unreachable",
                "reason": _as_text(first.get("reason")) or "unreachable",
                "blocks": "every cluster check: "
                + ", ".join(sorted({str(c["name"]) for c in unreachable})),
            },
            Source("api", f"GET {_as_text(first.get('path')) or ''}", None,
                   excerpt(_as_text(first.get("reason")) or "", 1000)),
        ))
    for c in calls.calls:
        status = c.get("status")
        base = str(c["name"]).split("/")[0]
        if status in ("ok", "unreachable") or (status == "not_found" and base in OPTIONAL):
            continue
        facts.append(
            Fact(
                "probe_status",
                CLUSTER,
                {
                    "probe": f"api:{c['name']}",
                    "status": STATUS_TO_PROBE_STATUS.get(str(status), "failed"),
                    "reason": _as_text(c.get("reason")) or str(status),
                    "blocks": BLOCKS.get(base, f"what the API call {c['name']} would have told"),
                },
                Source(f"api:{c['name']}", f"GET {_as_text(c.get('path')) or ''}",
                       c["http_status"] if isinstance(c.get("http_status"), int) else None,
                       excerpt(_as_text(c.get("reason")) or "", 1000)),
            )
        )
    return facts


# ---------------------------------------------------------------- nodes


def _node_addresses(node: dict) -> list[str]:
    return [
        str(a["address"]) for a in _as_list(_get(node, "status", "addresses"))
        if isinstance(a, dict) and a.get("address")
    ]


def _internal_ip(node: dict) -> str | None:
    for a in _as_list(_get(node, "status", "addresses")):
        if isinstance(a, dict) and a.get("type") == "InternalIP" and a.get("address"):
            return str(a["address"])
    return None


def match_nodes(
    api_nodes: list[dict], inventory: list[tuple[str, str]]
) -> tuple[dict[str, str], list[Fact]]:
    """API node name -> inventory name, and a node_match fact for every host on either side.

    Matched in order of confidence: same name, then an API address equal to the inventory
    address (or its name), then the same short host name (node1 vs node1.example.com).
    """
    names = [n for n in (_name(o) for o in api_nodes) if n]
    by_api = {n: o for n, o in zip((_name(o) for o in api_nodes), api_nodes, strict=True) if n}
    free = dict(inventory)  # inventory name -> address, still unmatched
    matched: dict[str, tuple[str, str]] = {}
    for api_name in names:
        if api_name in free:
            matched[api_name] = (api_name, "name")
            del free[api_name]
    for api_name in names:
        if api_name in matched:
            continue
        addrs = set(_node_addresses(by_api[api_name]))
        hit = next((inv for inv, addr in free.items() if addr in addrs or inv in addrs), None)
        if hit is not None:
            matched[api_name] = (hit, "address")
            del free[hit]
    for api_name in names:
        if api_name in matched:
            continue
        short = api_name.split(".")[0]
        hit = next((inv for inv in free if inv.split(".")[0] == short), None)
        if hit is not None:
            matched[api_name] = (hit, "short_name")
            del free[hit]
    facts = []
    inv_addr = dict(inventory)
    for api_name in names:
        inv, how = matched.get(api_name, (None, "none"))
        facts.append(Fact("node_match", inv or api_name, {
            "inventory_name": inv,
            "api_name": api_name,
            "address": inv_addr.get(inv) if inv else _internal_ip(by_api[api_name]),
            "in_inventory": inv is not None,
            "in_api": True,
            "matched_by": how,
        }, Source("api:nodes", "GET /api/v1/nodes", None, "")))
    for inv, addr in free.items():
        facts.append(Fact("node_match", inv, {
            "inventory_name": inv, "api_name": None, "address": addr or None,
            "in_inventory": True, "in_api": False, "matched_by": "none",
        }, Source("api:nodes", "GET /api/v1/nodes", None, "")))
    return {api: inv for api, (inv, _) in matched.items()}, facts


def _node_facts(calls: ApiCalls, nodes: list[dict], where: Callable[[str], str]) -> list[Fact]:
    facts = []
    for n in nodes:
        name = _name(n)
        if not name:
            continue
        labels = _as_dict(_get(n, "metadata", "labels"))
        cidrs = [str(c) for c in _as_list(_get(n, "spec", "podCIDRs")) if isinstance(c, str)]
        info = _as_dict(_get(n, "status", "nodeInfo"))
        facts.append(Fact("k8s_node", where(name), {
            "name": name,
            "internal_ip": _internal_ip(n),
            "pod_cidr": _as_text(_get(n, "spec", "podCIDR")) or (cidrs[0] if cidrs else None),
            "pod_cidrs": ",".join(cidrs) or None,
            "ready": _condition(n, "Ready"),
            "network_unavailable": _condition(n, "NetworkUnavailable"),
            "kernel": _as_text(info.get("kernelVersion")),
            "kubelet": _as_text(info.get("kubeletVersion")),
            "zone": _as_text(labels.get("topology.kubernetes.io/zone")
                       or labels.get("failure-domain.beta.kubernetes.io/zone")),
        }, calls.source("nodes", {"name": name, "spec": n.get("spec"),
                                  "conditions": _get(n, "status", "conditions")})))
    return facts


# ---------------------------------------------------------------- CNI, kube-proxy, DNS pods


def _plugin(name: str) -> str:
    for marker, plugin in PLUGINS:
        if marker in name:
            return plugin
    return "other"


def _pod_health(pod: dict) -> tuple[bool, int, str | None]:
    statuses = [s for s in _as_list(_get(pod, "status", "containerStatuses"))
                if isinstance(s, dict)]
    restarts = sum(_as_int(s.get("restartCount")) or 0 for s in statuses)
    reason = None
    for s in statuses:
        state = _as_dict(s.get("state"))
        for key in ("waiting", "terminated"):
            if isinstance(state.get(key), dict) and state[key].get("reason"):
                reason = _as_text(state[key]["reason"])
    return _condition(pod, "Ready") is True, restarts, reason


def _owner(pod: dict) -> str:
    for o in _as_list(_get(pod, "metadata", "ownerReferences")):
        if isinstance(o, dict) and o.get("kind") == "DaemonSet" and o.get("name"):
            return str(o["name"])
    return ""


def _match_labels(ds: dict) -> str | None:
    """The DaemonSet's spec.selector.matchLabels as `kubectl -l` takes it (`app=flannel`), so a
    remediation can name this cluster's agent pods; None when it selects by expressions only."""
    labels = _as_dict(_get(ds, "spec", "selector", "matchLabels"))
    pairs = [f"{k}={v}" for k, v in sorted(labels.items()) if isinstance(v, (str, int))]
    return ",".join(pairs) or None


def _cni_facts(calls: ApiCalls, daemonsets: list[dict] | None, pods: list[dict] | None,
               where: Callable[[str], str]) -> list[Fact]:
    facts = []
    for ds in daemonsets or []:
        name = _name(ds) or ""
        if not any(m in name for m in CNI_MARKERS):
            continue
        status = _as_dict(ds.get("status"))
        facts.append(Fact("cni", CLUSTER, {
            "plugin": _plugin(name),
            "daemonset": name,
            "namespace": _ns(ds),
            "selector": _match_labels(ds),
            "desired": _as_int(status.get("desiredNumberScheduled")),
            "ready": _as_int(status.get("numberReady")),
        }, calls.source("daemonsets", {"name": name, "status": status})))
    for pod in pods or []:
        name = _name(pod) or ""
        owner = _owner(pod)
        # by owning DaemonSet when the pod says; its name otherwise (static or bare pods)
        if not any(m in (owner or name) for m in CNI_MARKERS):
            continue
        ready, restarts, reason = _pod_health(pod)
        node = _as_text(_get(pod, "spec", "nodeName"))
        facts.append(Fact("cni_pod", where(node) if node else CLUSTER, {
            "pod": name,
            "namespace": _ns(pod),
            "plugin": _plugin(owner or name),
            "ready": ready,
            "restarts": restarts,
            "phase": _as_text(_get(pod, "status", "phase")),
            "reason": reason,
        }, calls.source("pods", {"name": name, "status": pod.get("status")})))
    return facts


def _kube_proxy_fact(calls: ApiCalls, daemonsets: list[dict] | None,
                     pods: list[dict] | None) -> list[Fact]:
    cm = calls.obj("kube_proxy_config")
    mode = None
    if cm is not None:
        conf = _as_text(_get(cm, "data", "config.conf")) or ""
        m = re.search(r"^mode:\s*\"?([A-Za-z]*)\"?\s*$", conf, re.M)
        if m:
            mode = m.group(1) or "iptables"  # "" means the platform default: iptables on Linux
    ready = desired = None
    ds = next((d for d in daemonsets or [] if _name(d) == "kube-proxy"), None)
    if ds is not None:
        ready = _as_int(_get(ds, "status", "numberReady"))
        desired = _as_int(_get(ds, "status", "desiredNumberScheduled"))
    elif pods is not None:
        mine = [p for p in pods if _get(p, "metadata", "labels", "k8s-app") == "kube-proxy"]
        if mine:
            desired = len(mine)
            ready = sum(1 for p in mine if _pod_health(p)[0])
    if mode is None and ready is None and desired is None:
        return []
    return [Fact("kube_proxy", CLUSTER, {"mode": mode, "pods_ready": ready,
                                         "pods_desired": desired},
                 calls.source("kube_proxy_config", _get(cm, "data", "config.conf")))]


def _root_forward(corefile: str) -> str | None:
    """Where CoreDNS sends every name outside its own zones: the `forward .` targets of the
    server block for the root zone (`.:53 {`); a stub zone's block (`corp.example:53 {`)
    forwards only its own names. None when no root block forwards."""
    depth, root = 0, False
    for line in corefile.splitlines():
        text = line.split("#", 1)[0].strip()
        if depth == 0 and text.endswith("{"):
            keys = text[:-1].split()
            root = any(k.split("://")[-1].split(":")[0] == "." for k in keys)
        elif depth == 1 and root:
            m = re.match(r"forward\s+\.\s+([^{]+)", text)
            if m:
                return " ".join(m.group(1).split())[:200] or None
        depth = max(0, depth + text.count("{") - text.count("}"))
    return None


def _dns_facts(calls: ApiCalls, pods: list[dict] | None, services: list[dict] | None,
               where: Callable[[str], str]) -> list[Fact]:
    facts = []
    for pod in pods or []:
        if _get(pod, "metadata", "labels", "k8s-app") != "kube-dns":
            continue
        ready, restarts, _ = _pod_health(pod)
        node = _as_text(_get(pod, "spec", "nodeName"))
        facts.append(Fact("dns_pod", where(node) if node else CLUSTER, {
            "pod": _name(pod) or "",
            "ip": _as_text(_get(pod, "status", "podIP")),
            "ready": ready,
            "restarts": restarts,
        }, calls.source("pods", {"name": _name(pod), "status": pod.get("status")})))
    domain = None
    corefile = _as_text(_get(calls.obj("coredns_config"), "data", "Corefile")) or ""
    m = re.search(r"^\s*kubernetes\s+([^{\n]*)", corefile, re.M)
    if m:
        zones = [z for z in m.group(1).split() if not z.endswith(("in-addr.arpa", "ip6.arpa"))]
        domain = zones[0].rstrip(".") if zones else None
    upstream = _root_forward(corefile)
    for svc in services or []:
        labels = _as_dict(_get(svc, "metadata", "labels"))
        if _ns(svc) != "kube-system" or not (
            labels.get("k8s-app") == "kube-dns" or _name(svc) in ("kube-dns", "coredns")
        ):
            continue
        facts.append(Fact("dns_service", CLUSTER, {
            "name": _name(svc) or "",
            "namespace": _ns(svc),
            "cluster_ip": _as_text(_get(svc, "spec", "clusterIP")),
            "cluster_domain": domain,
            "upstream": upstream,
        }, calls.source("services", {"name": _name(svc), "spec": svc.get("spec"),
                                     "cluster_domain": domain, "upstream": upstream})))
    return facts


# ---------------------------------------------------------------- services and policies


def _service_facts(calls: ApiCalls, services: list[dict], slices: list[dict],
                   node_zone: dict[str, str]) -> list[Fact]:
    by_svc: dict[tuple[str, str], list[dict]] = {}
    for sl in slices:
        svc = _as_text(_get(sl, "metadata", "labels", "kubernetes.io/service-name"))
        if svc:
            by_svc.setdefault((_ns(sl), svc), []).append(sl)
    facts = []
    for svc in services:
        name, ns = _name(svc), _ns(svc)
        spec = _as_dict(svc.get("spec"))
        mine = by_svc.get((ns, name or ""), [])
        if not name or spec.get("type") == "ExternalName":
            continue
        if not spec.get("selector") and not mine:
            continue  # no selector: its endpoints are its owner's business, not the cluster's
        ready = total = 0
        zones: set[str] = set()
        hinted = False
        for sl in mine:
            for ep in _as_list(sl.get("endpoints")):
                if not isinstance(ep, dict):
                    continue
                n_addr = len([a for a in _as_list(ep.get("addresses")) if isinstance(a, str)]) or 1
                total += n_addr
                # API contract: an unset ready condition is to be read as ready
                if _get(ep, "conditions", "ready") is not False:
                    ready += n_addr
                    zone = (_as_text(ep.get("zone"))
                            or node_zone.get(_as_text(ep.get("nodeName")) or ""))
                    if zone:
                        zones.add(zone)
                hinted = hinted or bool(_get(ep, "hints", "forZones"))
        ann = _as_dict(_get(svc, "metadata", "annotations"))
        topology = hinted or any(
            str(ann.get(a, "")).lower() in ("auto", "preferzone") for a in TOPOLOGY_ANNOTATIONS
        ) or _as_text(spec.get("trafficDistribution")) in ("PreferClose", "PreferSameZone",
                                                     "PreferSameNode")
        facts.append(Fact("service_endpoints", CLUSTER, {
            "namespace": ns,
            "name": name,
            "cluster_ip": _as_text(spec.get("clusterIP")),
            "ready_endpoints": ready,
            "endpoints": total,
            "zones": len(zones),
            "zone_list": ",".join(sorted(zones)),
            "topology_aware": topology,
        }, calls.source("endpointslices", {"service": f"{ns}/{name}",
                                           "endpoints": [_as_list(s.get("endpoints"))
                                                         for s in mine]})))
    return facts


def _selects(selector: dict, labels: dict) -> bool:
    return all(k in labels and str(labels[k]) == str(v) for k, v in selector.items())


def _container_port(pod: dict, name: str, protocol: str) -> int | None:
    """The number a named targetPort resolves to in this pod, as the EndpointSlice controller
    looks it up: a container port of that name and protocol."""
    for c in _as_list(_get(pod, "spec", "containers")):
        for p in _as_list(_get(c, "ports")):
            if isinstance(p, dict) and p.get("name") == name and \
                    str(p.get("protocol") or "TCP") == protocol:
                return _as_int(p.get("containerPort"))
    return None


def _slice_endpoints(slices: list[dict], port_name: str, protocol: str
                     ) -> tuple[list[str], list[str], set[str]]:
    """(ready, listed but not ready) endpoints of one Service port as `ip:port`, over its
    EndpointSlices (each slice says the port number its endpoints resolved the targetPort to),
    and the API names of the nodes the ready ones are on."""
    ready, other, nodes = set(), set(), set()
    for sl in slices:
        number = next((_as_int(p.get("port")) for p in _as_list(sl.get("ports"))
                       if isinstance(p, dict) and str(p.get("name") or "") == port_name
                       and str(p.get("protocol") or "TCP") == protocol), None)
        if number is None:
            continue
        for ep in _as_list(sl.get("endpoints")):
            if not isinstance(ep, dict):
                continue
            # API contract: an unset ready condition is to be read as ready
            into = other if _get(ep, "conditions", "ready") is False else ready
            for a in _as_list(ep.get("addresses")):
                if isinstance(a, str) and a:
                    into.add(f"{a}:{number}")
            node = _as_text(ep.get("nodeName"))
            if into is ready and node:
                nodes.add(node)
    return sorted(ready), sorted(other - ready), nodes


def _when(value: Any) -> datetime | None:
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _changed_s(read: datetime | None, svc: dict, slices: list[dict]) -> int | None:
    """Seconds between the last change of a Service's endpoints (the EndpointSlice
    controller's last-change-trigger-time, or the Service's creation) and the API read."""
    times = [_when(_get(sl, "metadata", "annotations", LAST_CHANGE)) for sl in slices]
    times.append(_when(_get(svc, "metadata", "creationTimestamp")))
    known = [t for t in times if t is not None]
    if read is None or not known:
        return None
    return max(0, int((read - max(known)).total_seconds()))


def _service_port_facts(calls: ApiCalls, services: list[dict], slices: list[dict],
                        pods: list[dict] | None, where: Callable[[str], str]) -> list[Fact]:
    """One fact per port of every Service with a ClusterIP: what each node's kube-proxy must
    have programmed (its ready endpoints), and what its selector and targetPort find."""
    by_svc: dict[tuple[str, str], list[dict]] = {}
    for sl in slices:
        svc = _as_text(_get(sl, "metadata", "labels", "kubernetes.io/service-name"))
        if svc:
            by_svc.setdefault((_ns(sl), svc), []).append(sl)
    by_ns: dict[str, list[dict]] = {}
    for pod in pods or []:
        if _as_text(_get(pod, "status", "phase")) not in ("Succeeded", "Failed"):
            by_ns.setdefault(_ns(pod), []).append(pod)
    read = _read_at(calls, "endpointslices")  # once for every Service
    facts = []
    for svc in services:
        name, ns = _name(svc), _ns(svc)
        spec = _as_dict(svc.get("spec"))
        vip = _as_text(spec.get("clusterIP"))
        if not name or not vip or vip == "None" or spec.get("type") == "ExternalName":
            continue
        selector = _as_dict(spec.get("selector"))
        changed = _changed_s(read, svc, by_svc.get((ns, name), []))
        # kube-proxy gives each node only some endpoints: its own (internalTrafficPolicy
        # Local) or its zone's (topology hints)
        hints = any(_get(ep, "hints", "forZones") for sl in by_svc.get((ns, name), [])
                    for ep in _as_list(sl.get("endpoints")) if isinstance(ep, dict))
        per_node = _as_text(spec.get("internalTrafficPolicy")) == "Local" or hints
        chosen = [p for p in by_ns.get(ns, [])
                  if selector and _selects(selector, _as_dict(_get(p, "metadata", "labels")))]
        for port in _as_list(spec.get("ports")):
            if not isinstance(port, dict) or _as_int(port.get("port")) is None:
                continue
            protocol = _as_text(port.get("protocol")) or "TCP"
            target = port.get("targetPort", port.get("port"))
            named = isinstance(target, str) and not target.isdigit()
            unresolved = sum(1 for p in chosen
                             if named and _container_port(p, str(target), protocol) is None)
            endpoints, not_ready, on = _slice_endpoints(by_svc.get((ns, name), []),
                                                        _as_text(port.get("name")) or "",
                                                        protocol)
            facts.append(Fact("service_port", CLUSTER, {
                "namespace": ns,
                "name": name,
                "port_name": _as_text(port.get("name")) or "",
                "port": _as_int(port.get("port")),
                "protocol": protocol,
                "cluster_ip": vip,
                "type": _as_text(spec.get("type")) or "ClusterIP",
                "node_port": _as_int(port.get("nodePort")),
                "target_port": str(target),
                "external_traffic_policy": _as_text(spec.get("externalTrafficPolicy")),
                "selector": ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or None,
                "selected_pods": len(chosen) if selector and pods is not None else None,
                "target_port_unresolved": unresolved if pods is not None else None,
                "endpoints": ",".join(endpoints[:SERVICE_ENDPOINTS_SHOWN]),
                "ready_endpoints": len(endpoints),
                "endpoint_nodes": ",".join(sorted(where(n) for n in on)),
                "not_ready_endpoints": ",".join(not_ready[:SERVICE_ENDPOINTS_SHOWN]),
                "per_node_endpoints": per_node,
                "changed_s": changed,
            }, calls.source("services", {"service": f"{ns}/{name}", "port": port,
                                         "selector": selector, "endpoints": endpoints[:20]})))
    return facts


# ---------------------------------------------------------------- the EndpointSlice controller

# The slices the EndpointSlice controller writes for Services with a selector (others, by a
# mesh or by hand, follow rules of their own).
SLICE_MANAGER = "endpointslice-controller.k8s.io"
LAG_SHOWN = 20  # pods named per Service in an endpoint_lag fact


def _read_at(calls: ApiCalls, name: str) -> datetime | None:
    return next((_when(c.get("read_at")) for c in calls.named(name) if c.get("read_at")), None)


def _ready_since(pod: dict) -> datetime | None:
    """When the pod's Ready condition last changed (the kubelet's lastTransitionTime)."""
    for c in _as_list(_get(pod, "status", "conditions")):
        if isinstance(c, dict) and c.get("type") == "Ready":
            return _when(c.get("lastTransitionTime")) if c.get("lastTransitionTime") else None
    return None


def _pod_ips(pod: dict) -> set[str]:
    ips = {_as_text(_get(i, "ip")) for i in _as_list(_get(pod, "status", "podIPs"))}
    ips.add(_as_text(_get(pod, "status", "podIP")))
    return {ip for ip in ips if ip}


def _serves_a_port(pod: dict, ports: list) -> bool:
    """Whether the EndpointSlice controller lists the pod for at least one port: a numeric
    targetPort always resolves, a named one only in a pod that declares it."""
    for port in ports:
        if not isinstance(port, dict):
            continue
        target = port.get("targetPort", port.get("port"))
        if not (isinstance(target, str) and not target.isdigit()):
            return True
        if _container_port(pod, target, _as_text(port.get("protocol")) or "TCP") is not None:
            return True
    return not ports


def _lag_of(svc: dict, slices: list[dict], pods: list[dict], by_name: dict[str, dict],
            read: datetime | None) -> dict | None:
    """How one Service's EndpointSlices differ from its pods, or None when they agree.

    A pod that should be listed as ready (selected, with an address, not terminating, Ready or
    the Service publishes not-ready addresses, a port it serves) and is not; an address listed
    as ready whose pod is gone, terminating, no longer selected or not Ready. A difference
    whose pod changed before the slices last did is dropped: the controller wrote the slices
    from a newer view of that pod than the pod list read a moment earlier (a change between
    the two reads), not from an older one."""
    spec = _as_dict(svc.get("spec"))
    selector = _as_dict(spec.get("selector"))
    publish = spec.get("publishNotReadyAddresses") is True
    ports = _as_list(spec.get("ports"))
    listed: dict[str, str] = {}  # ready address -> the pod the slice names (targetRef)
    for sl in slices:
        for ep in _as_list(sl.get("endpoints")):
            if not isinstance(ep, dict) or _get(ep, "conditions", "ready") is False:
                continue
            ref = _as_text(_get(ep, "targetRef", "name")) or ""
            for a in _as_list(ep.get("addresses")):
                if isinstance(a, str) and a:
                    listed[a] = ref
    triggers = [_when(_get(sl, "metadata", "annotations", LAST_CHANGE)) for sl in slices
                if _get(sl, "metadata", "annotations", LAST_CHANGE)]
    # what the slices last caught up with: their latest trigger, or the Service's creation
    # when the controller never wrote one for it
    caught_up = max((t for t in triggers if t), default=None) if slices else _when(
        _get(svc, "metadata", "creationTimestamp"))
    missing: list[str] = []
    stale: list[str] = []
    ages: list[int] = []

    def counted(since: datetime | None) -> bool:
        if since is not None and caught_up is not None and since <= caught_up:
            return False  # the slices are newer than this view of the pod
        # Without a time for the slices, a pod that changed between the two reads cannot be
        # told from one the controller missed: the difference is listed, its age unknown.
        if since is not None and read is not None and caught_up is not None:
            ages.append(max(0, int((read - since).total_seconds())))
        return True

    selected = [pod for pod in pods
                if _selects(selector, _as_dict(_get(pod, "metadata", "labels")))]
    chosen = {id(pod) for pod in selected}
    by_ip = {ip: pod for pod in selected for ip in _pod_ips(pod)}
    for pod in selected:
        ips = _pod_ips(pod)
        ready = _condition(pod, "Ready") is True
        if (not ips or _get(pod, "metadata", "deletionTimestamp") or not (ready or publish)
                or not _serves_a_port(pod, ports) or ips & set(listed)):
            continue
        if counted(_ready_since(pod) if not publish else _when(
                _get(pod, "metadata", "creationTimestamp"))):
            missing.append(f"{_name(pod)} {min(ips)}")
    for address, ref in sorted(listed.items()):
        pod = by_ip.get(address) or (by_name.get(ref) if ref else None)
        if pod is None:
            why, since = "gone", None
        elif _get(pod, "metadata", "deletionTimestamp"):
            why, since = "terminating", None
        elif id(pod) not in chosen:
            why, since = "not selected", None
        elif _condition(pod, "Ready") is not True and not publish:
            why, since = "not Ready", _ready_since(pod)
        else:
            continue
        if counted(since):
            stale.append(f"{address} ({ref or _name(pod) or '?'}: {why})")
    if not missing and not stale:
        return None
    return {
        "not_listed": ", ".join(sorted(missing)[:LAG_SHOWN]),
        "still_listed": ", ".join(stale[:LAG_SHOWN]),
        "differences": len(missing) + len(stale),
        "behind_s": max(ages) if ages else None,
        "slices_changed_s": (max(0, int((read - caught_up).total_seconds()))
                             if read is not None and caught_up is not None else None),
    }


def _endpoint_lag_facts(calls: ApiCalls, services: list[dict], slices: list[dict],
                        pods: list[dict] | None) -> list[Fact]:
    """One fact per Service whose controller-managed EndpointSlices disagree with its pods."""
    if pods is None:
        return []
    by_svc: dict[tuple[str, str], list[dict]] = {}
    others: set[tuple[str, str]] = set()  # Services with slices someone else manages
    for sl in slices:
        svc = _as_text(_get(sl, "metadata", "labels", "kubernetes.io/service-name"))
        manager = _as_text(_get(sl, "metadata", "labels", "endpointslice.kubernetes.io/managed-by"))
        if svc and manager == SLICE_MANAGER:
            by_svc.setdefault((_ns(sl), svc), []).append(sl)
        elif svc:
            others.add((_ns(sl), svc))
    by_ns: dict[str, list[dict]] = {}
    by_name: dict[str, dict[str, dict]] = {}
    for pod in pods:
        if _as_text(_get(pod, "status", "phase")) not in ("Succeeded", "Failed"):
            by_ns.setdefault(_ns(pod), []).append(pod)
            by_name.setdefault(_ns(pod), {})[_name(pod) or ""] = pod
    # the later of the two reads the comparison rests on
    reads = [t for t in (_read_at(calls, "pods"), _read_at(calls, "endpointslices")) if t]
    read = max(reads) if reads else None
    facts = []
    for svc in services:
        name, ns = _name(svc), _ns(svc)
        spec = _as_dict(svc.get("spec"))
        if (not name or not _as_dict(spec.get("selector")) or (ns, name) in others
                or spec.get("type") == "ExternalName"):
            continue
        lag = _lag_of(svc, by_svc.get((ns, name), []), by_ns.get(ns, []),
                      by_name.get(ns, {}), read)
        if lag is None:
            continue
        facts.append(Fact("endpoint_lag", CLUSTER, {"namespace": ns, "name": name,
                                                    "service": f"{ns}/{name}", **lag},
                          calls.source("endpointslices", {"service": f"{ns}/{name}", **lag})))
    return facts


def _lease_fact(calls: ApiCalls, api_nodes: list[dict] | None,
                where: Callable[[str], str]) -> list[Fact]:
    lease = calls.obj("controller_lease")
    if lease is None:
        return []
    spec = _as_dict(lease.get("spec"))
    holder = _as_text(spec.get("holderIdentity")) or ""
    renewed = _when(spec.get("renewTime") or spec.get("acquireTime")) if (
        spec.get("renewTime") or spec.get("acquireTime")) else None
    duration = _as_int(spec.get("leaseDurationSeconds"))
    read = _read_at(calls, "controller_lease")
    age = max(0, int((read - renewed).total_seconds())) if read and renewed else None
    # kube-controller-manager names itself <hostname>_<uuid>; the host is a node when it runs
    # as a static pod on one
    host = holder.rsplit("_", 1)[0] if "_" in holder else holder
    known = {_name(n) for n in api_nodes or []}
    return [Fact("controller_lease", CLUSTER, {
        "name": _name(lease) or "",
        "holder": holder,
        "holder_node": where(host) if host and host in known else None,
        "renewed_s": age,
        "duration_s": duration,
        "expired_s": age - duration if age is not None and duration is not None else None,
    }, calls.source("controller_lease", spec))]


def _policy_facts(calls: ApiCalls, policies: list[dict]) -> list[Fact]:
    facts = []
    for p in policies:
        name = _name(p)
        if not name:
            continue
        spec = _as_dict(p.get("spec"))
        selector = spec.get("podSelector")
        all_pods = isinstance(selector, dict) and not selector.get("matchLabels") and not \
            selector.get("matchExpressions")
        # the API's defaulting: Egress only when the policy has egress rules (facts/netpol.py)
        types = [str(t) for t in _as_list(spec.get("policyTypes"))] or (
            ["Ingress", "Egress"] if _as_list(spec.get("egress")) else ["Ingress"]
        )
        deny = ("Ingress" in types and not _as_list(spec.get("ingress"))) or (
            "Egress" in types and not _as_list(spec.get("egress"))
        )
        facts.append(Fact("network_policy", CLUSTER, {
            "namespace": _ns(p),
            "name": name,
            "default_deny": bool(all_pods and deny),
            "policy_types": ",".join(types),
        }, calls.source("networkpolicies", {"name": name, "spec": spec})))
    return facts


def _flannel_fact(calls: ApiCalls) -> list[Fact]:
    cm = calls.obj("flannel_config")
    if cm is None:
        return []
    raw = _as_text(_get(cm, "data", "net-conf.json"))
    conf = _as_dict(json.loads(raw)) if raw else {}
    backend = _as_dict(conf.get("Backend"))
    kind = _as_text(backend.get("Type"))
    port = _as_int(backend.get("Port"))
    if port is None and (kind or "").lower() == "vxlan":
        # kube-flannel.yml sets no Port: flanneld leaves it to the kernel, whose VXLAN default
        # is 8472. Most clusters run that way, so the rules compare with the port in effect.
        port = FLANNEL_DEFAULT_VXLAN_PORT
    return [Fact("flannel_config", CLUSTER, {
        "namespace": _ns(cm),
        "network": _as_text(conf.get("Network")),
        "backend": kind,
        "port": port,
    }, calls.source("flannel_config", raw))]


def _ippool_facts(calls: ApiCalls) -> list[Fact]:
    facts = []
    for pool in calls.items("calico_ippools") or []:
        spec = _as_dict(pool.get("spec"))
        if not _name(pool):
            continue

        def flag(key: str, spec: dict = spec) -> bool | None:
            v = spec.get(key)
            return v if isinstance(v, bool) else None

        facts.append(Fact("calico_ippool", CLUSTER, {
            "name": _name(pool) or "",
            "cidr": _as_text(spec.get("cidr")),
            "ipip_mode": _as_text(spec.get("ipipMode")),
            "vxlan_mode": _as_text(spec.get("vxlanMode")),
            "nat_outgoing": flag("natOutgoing"),
            "disabled": flag("disabled"),
        }, calls.source("calico_ippools", spec)))
    return facts


# ---------------------------------------------------------------- entry point


def cluster_facts(doc: Any, inventory: Iterable[tuple[str, str]] = ()) -> list[Fact]:
    """Facts from a cluster.json document; `inventory` is (name, address) of the bundle's nodes."""
    if not isinstance(doc, dict):
        return [_unreadable("cluster", "cluster.json is not a JSON object")]
    calls = ApiCalls(doc)
    failed = _call_status_facts(calls)
    facts: list[Fact] = [Fact("cluster_api", CLUSTER, {
        "queried": doc.get("queried") is True,
        "server": _as_text(_get(doc, "source", "server")),
        "context": _as_text(_get(doc, "source", "context")),
        "reason": _as_text(doc.get("reason")),
        "calls": len(calls.calls),
        "failed": len(failed),
    }, Source("api", "kubernetes API", None, _as_text(doc.get("reason")) or ""))]
    if doc.get("queried") is not True:
        return facts
    facts += failed
    inventory = list(inventory)
    api_nodes = calls.items("nodes")
    to_inventory: dict[str, str] = {}
    if api_nodes is not None:
        step = _guard("nodes", lambda: match_nodes(api_nodes, inventory))
        if isinstance(step, tuple):
            to_inventory, matches = step
            facts += matches
        else:
            facts += step

    def where(api_name: str) -> str:
        return to_inventory.get(api_name, api_name)

    node_zone = {
        _name(n) or "": _as_text(_get(n, "metadata", "labels", "topology.kubernetes.io/zone")) or ""
        for n in api_nodes or []
    }
    daemonsets, pods = calls.items("daemonsets"), calls.items("pods")
    services, slices = calls.items("services"), calls.items("endpointslices")
    policies = calls.items("networkpolicies")
    steps: list[tuple[str, Callable[[], list[Fact]]]] = [
        ("nodes", lambda: _node_facts(calls, api_nodes or [], where)),
        ("pods", lambda: _cni_facts(calls, daemonsets, pods, where)),
        ("kube_proxy_config", lambda: _kube_proxy_fact(calls, daemonsets, pods)),
        ("pods", lambda: _dns_facts(calls, pods, services, where)),
        ("flannel_config", lambda: _flannel_fact(calls)),
        ("calico_ippools", lambda: _ippool_facts(calls)),
        ("networkpolicies", lambda: _policy_facts(calls, policies or [])),
    ]
    if services is not None and slices is not None:
        steps.append(("endpointslices",
                      lambda: _service_facts(calls, services, slices, node_zone)))
        steps.append(("endpointslices",
                      lambda: _service_port_facts(calls, services, slices, pods, where)))
        steps.append(("endpointslices",
                      lambda: _endpoint_lag_facts(calls, services, slices, pods)))
    steps.append(("controller_lease", lambda: _lease_fact(calls, api_nodes, where)))
    for name, fn in steps:
        out = _guard(name, fn)
        facts += out if isinstance(out, list) else []
    return facts


def _unreadable(name: str, reason: str) -> Fact:
    return Fact(
        "probe_status",
        CLUSTER,
        {"probe": f"api:{name}", "status": "failed", "reason": reason,
         "blocks": BLOCKS.get(name, "the cluster checks")},
        Source(f"api:{name}", "", None, excerpt(reason, 1000)),
    )


def _guard(name: str, fn: Callable[[], Any]) -> Any:
    """Run one section; a shape nobody expected becomes a probe_status, not a crash."""
    try:
        return fn()
    except Exception as exc:
        return [_unreadable(name, f"could not read the API answer: {exc!r}"[:500])]
