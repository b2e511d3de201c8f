"""NetworkPolicy verdicts on the flows the diagnosis cares about, and who enforces them.

A NetworkPolicy that denies DNS, a declared endpoint or pod traffic looks, from the probes,
exactly like a broken network: the packets vanish. Whether a policy is the reason is a question
of semantics (facts/netpol.py) asked of the flows the cluster needs:

* the flows the active checks sent: DNS queries and CoreDNS metrics to each CoreDNS pod, the
  pod-layer pings between nodes (from the node and from a pod on it), the connects to each
  declared endpoint; each verdict says whether that check failed;
* DNS from the pods of every namespace to every CoreDNS pod, UDP and TCP 53, which no check
  sends: pods with the same labels in one namespace get the same verdict, so one verdict
  stands for them all (`pods`).

A verdict is kept only where a policy isolates one of the two sides (a flow no policy touches
is allowed, and saying so thousands of times says nothing), and at most MAX_VERDICTS of them:
the failed checks first, then the denied flows (`policy_enforcement` says how many were left
out). The checks' sources: a node is a node (never isolated, its address on the wire unknown,
see netpol.py), and the pod whose network namespace the checks entered on a node is found by
the address own_pod_check read inside it.

`policy_enforcement` says which agent enforces policies (from DaemonSets and pods of any
namespace, and the nodes' processes): a policy nobody enforces is decoration.

Pure functions of facts and the bundle's raw API answers (cluster.json: pods, namespaces,
networkpolicies, daemonsets) and active plans, which the parse stage passes in.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubenetdiag.facts.cluster import ApiCalls
from kubenetdiag.facts.model import Fact, Source, by_kind
from kubenetdiag.facts.netpol import (
    NAME_LABEL,
    Peer,
    PolicyError,
    check_policy,
    evaluate,
    near_misses,
)
from kubenetdiag.probes.active.plan import service_port_name

PROBE = "policies"
INPUTS: tuple[str, ...] = ("network_policy", "dns_pod", "node_match", "own_pod_check",
                           "dns_check", "tcp_check", "reach", "http_check", "cni", "cni_pod",
                           "process", "nodeport_check", "service_port")
CONTEXT: tuple[str, ...] = ()
PRODUCES: tuple[str, ...] = ("policy_verdict", "policy_enforcement")
# Who enforces policies is read from the API's agents and the nodes' processes, not from the
# checks: an old bundle without own_pod_check still says whether anything enforces them.
KIND_INPUTS: dict[str, tuple[str, ...]] = {
    "policy_enforcement": ("network_policy", "cni", "cni_pod", "process"),
}
MAX_VERDICTS = 400  # a 500-node cluster has thousands of pods: keep the rule engine's load flat
MAX_GROUPS = 20000  # distinct (namespace, node, labels) sets evaluated for DNS; more are left out
DNS_PORT = 53
METRICS_PORT = 9153
NEAR_MISS_CHARS = 600  # a few rules' worth; labels are short, but a hostile object need not be

# Agents that enforce NetworkPolicy, by the names their DaemonSets, pods, containers or node
# processes carry; flannel alone enforces nothing (canal = flannel + calico's felix does).
ENFORCERS: tuple[tuple[str, str], ...] = (
    ("canal", "canal"),
    ("calico-node", "calico"),
    ("calico-felix", "calico"),
    ("cilium-agent", "cilium"),
    ("cilium", "cilium"),
    ("kube-router", "kube-router"),
    ("antrea-agent", "antrea"),
    ("weave-npc", "weave-npc"),
    ("kube-network-policies", "kube-network-policies"),
)


# ---------------------------------------------------------------- reading the API answer


def _items(cluster: Any, prefix: str) -> list[dict] | None:
    """Items of every ok call of one kind; None when none answered (or no API at all)."""
    if not isinstance(cluster, dict) or cluster.get("queried") is not True:
        return None
    return ApiCalls(cluster).items(prefix)

def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list:
    return value if isinstance(value, list) else []


def _labels(obj: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in _d(_d(obj.get("metadata")).get("labels")).items()
            if isinstance(v, str | int | bool)}


def _ports(pod: dict) -> tuple[tuple[str, int, str], ...]:
    out = []
    for c in _l(_d(pod.get("spec")).get("containers")):
        for p in _l(_d(c).get("ports")):
            p = _d(p)
            num = p.get("containerPort")
            if isinstance(num, int) and not isinstance(num, bool):
                out.append((str(p.get("name") or ""), num, str(p.get("protocol") or "TCP")))
    return tuple(out)


@dataclass
class _World:
    policies: list[dict]
    unreadable: list[str]
    by_ip: dict[str, Peer]
    groups: dict[tuple[str, str | None, tuple[tuple[str, str], ...]], tuple[Peer, int]]
    namespaces_known: bool
    left_out: int = 0  # pods whose group came past MAX_GROUPS: DNS not evaluated


def _world(cluster: Any, to_inventory: Mapping[str, str]) -> _World | None:
    raw = _items(cluster, "networkpolicies")
    pods = _items(cluster, "pods")
    if raw is None or pods is None:
        return None  # without both there is nothing to evaluate (their not-checked entries say)
    policies, unreadable = [], []
    for p in raw:
        meta = _d(p.get("metadata"))
        name = f"{meta.get('namespace') or ''}/{meta.get('name') or '?'}"
        try:
            check_policy(p)
            if not isinstance(meta.get("namespace"), str):
                raise PolicyError("metadata.namespace is missing")
        except PolicyError as exc:
            unreadable.append(f"{name}: {exc}")
            continue
        policies.append(p)
    namespaces = _items(cluster, "namespaces")
    ns_labels: dict[str, dict[str, str]] = {}
    for ns in namespaces or []:
        name = _d(ns.get("metadata")).get("name")
        if isinstance(name, str):
            ns_labels[name] = {NAME_LABEL: name, **_labels(ns)}
    by_ip: dict[str, Peer] = {}
    groups: dict[tuple[str, str | None, tuple[tuple[str, str], ...]], tuple[Peer, int]] = {}
    left_out = 0
    for pod in pods:
        meta, spec, status = _d(pod.get("metadata")), _d(pod.get("spec")), _d(pod.get("status"))
        ns, name, ip = meta.get("namespace"), meta.get("name"), status.get("podIP")
        if not isinstance(ns, str) or not isinstance(name, str):
            continue
        if status.get("phase") in ("Succeeded", "Failed"):
            continue
        node = spec.get("nodeName")
        node = to_inventory.get(node, node) if isinstance(node, str) else None
        host = spec.get("hostNetwork") is True
        labels = _labels(pod)
        peer = Peer(ip=ip if isinstance(ip, str) else None,
                    namespace=None if host else ns, labels=labels,
                    ns_labels=ns_labels.get(ns, {NAME_LABEL: ns}), ports=_ports(pod),
                    node=node, name=f"{ns}/{name}")
        if isinstance(ip, str) and ip and not host:
            by_ip[ip] = peer  # a hostNetwork pod shares its node's address: that is a node
        if host:
            continue
        # per node as well: a verdict names the node its pods run on, and the same labels on
        # three nodes are three nodes whose pods cannot resolve, not one
        key = (ns, node, tuple(sorted(labels.items())))
        if key in groups:
            groups[key] = (groups[key][0], groups[key][1] + 1)
        elif len(groups) < MAX_GROUPS:
            groups[key] = (peer, 1)
        else:
            left_out += 1
    return _World(policies, unreadable, by_ip, groups, namespaces is not None, left_out)


# ---------------------------------------------------------------- flows


@dataclass
class _Flow:
    flow: str  # dns, metrics, endpoint, pod, own_pod, nodeport
    check: str  # dns, http, tcp, ping; none when no check sent it
    failed: bool | None
    src: Peer
    dst: Peer
    port: int | None
    protocol: str
    vantage: str | None
    pods: int = 1


def _node_peer(node: str) -> Peer:
    # a node's own traffic: never isolated; which address it carries on the wire (node,
    # tunnel device) is not known here, so an ipBlock deciding it gives "unknown"
    return Peer(ip=None, node=node, name=node)


def _address_peer(world: _World, ip: str | None, nodes: Mapping[str, str]) -> Peer:
    if ip and ip in world.by_ip:
        return world.by_ip[ip]
    return Peer(ip=ip, node=nodes.get(ip or ""), name=ip)


def _src(node: str, vantage: Any, pod_of: Mapping[str, Peer]) -> Peer | None:
    if vantage in (None, "", "node"):
        return _node_peer(node)
    return pod_of.get(node)  # None: the pod the check ran in is not known by address


def _check_flows(facts: dict[str, list[Fact]], world: _World, plans: Mapping[str, Any],
                 pod_of: Mapping[str, Peer], nodes: Mapping[str, str]) -> list[_Flow]:
    out: list[_Flow] = []
    for f in facts["dns_check"]:
        a = f.attrs
        if a.get("server_kind") != "pod" or a.get("server") not in world.by_ip:
            continue  # the Service VIP is DNATed to some pod: its pods' verdicts say it
        src = _src(f.node, a.get("vantage"), pod_of)
        # dig, nslookup and host ask over UDP; a node without them is asked over an SSH
        # channel, whose own `dns:` answer line says so, and that query is TCP
        raw = f.source.excerpt if f.source is not None else ""
        proto = "TCP" if str(raw or "").lstrip().startswith("dns:") else "UDP"
        if src is not None:
            out.append(_Flow("dns", "dns", a.get("ok") is False, src,
                             world.by_ip[str(a["server"])], DNS_PORT, proto, a.get("vantage")))
    for f in facts["http_check"]:
        a = f.attrs
        host = str(a.get("url") or "").removeprefix("http://").split("/")[0]
        ip, _, port = host.partition(":")
        if ip in world.by_ip and port.isdigit():
            out.append(_Flow("metrics", "http", a.get("ok") is False, _node_peer(f.node),
                             world.by_ip[ip], int(port), "TCP", None))
    for f in facts["tcp_check"]:
        a = f.attrs
        port = str(a.get("target") or "").rpartition(":")[2]
        src = _src(f.node, a.get("vantage"), pod_of)
        if src is None or not port.isdigit() or not a.get("address"):
            continue
        out.append(_Flow("endpoint", "tcp", a.get("ok") is False, src,
                         _address_peer(world, str(a["address"]), nodes), int(port), "TCP",
                         a.get("vantage")))
    for f in facts["own_pod_check"]:
        # the pod's ping to its own node (the other way, a node is never refused by its pod)
        a = f.attrs
        src = _src(f.node, a.get("vantage"), pod_of)
        if a.get("direction") != "pod_to_node" or src is None or not a.get("address"):
            continue
        out.append(_Flow("own_pod", "ping", a.get("ok") is False, src,
                         Peer(ip=str(a["address"]), node=f.node, name=f.node), None, "ICMP",
                         a.get("vantage")))
    for f in facts["reach"]:
        a = f.attrs
        if a.get("layer") != "pod":
            continue
        peer = next((p for p in _l(_d(plans.get(f.node)).get("peers"))
                     if isinstance(p, dict) and p.get("name") == a.get("dst")), None)
        address = (peer.get("pod_target") if "pod_target" in peer else peer.get("pod_gateway")
                   ) if peer else None
        src = _src(f.node, a.get("vantage"), pod_of)
        if src is None or not isinstance(address, str):
            continue
        dst = world.by_ip.get(address) or Peer(ip=address, node=str(a.get("dst")),
                                               name=address)
        out.append(_Flow("pod", "ping", a.get("ok") is False, src, dst, None, "ICMP",
                         a.get("vantage")))
    return out


MAX_NODEPORT_ENDPOINTS = 4  # endpoints of one NodePort judged per forwarding node


def _nodeport_flows(facts: dict[str, list[Fact]], world: _World) -> list[_Flow]:
    """The NodePort checks' connects from peers, as a policy enforcer sees them reach the
    Service's endpoints. Enforcers filter in FORWARD, before kube-proxy's masquerade: an
    endpoint on the node connected to sees the peer's own address; one on another node sees
    the address of the node that forwarded it (externalTrafficPolicy Local keeps the peer's
    address all the way)."""
    ports = {service_port_name(f.attrs): f.attrs for f in facts["service_port"]}
    failed: dict[tuple[str, str], bool] = {}
    for f in facts["nodeport_check"]:
        a = f.attrs
        svc = ports.get(str(a.get("service")))
        if a.get("own") or svc is None or not isinstance(a.get("dst"), str):
            continue
        via = str(a["dst"])
        for endpoint in str(svc.get("endpoints") or "").split(",")[:MAX_NODEPORT_ENDPOINTS]:
            pod = world.by_ip.get(endpoint.rpartition(":")[0])
            local = svc.get("external_traffic_policy") == "Local" or (
                pod is not None and pod.node == via)
            key = (f.node if local else via, endpoint)
            failed[key] = failed.get(key, False) or a.get("ok") is False
    out = []
    for (src, endpoint), bad in sorted(failed.items()):
        ip, _, port = endpoint.rpartition(":")
        if ip in world.by_ip and port.isdigit():
            out.append(_Flow("nodeport", "tcp", bad, _node_peer(src), world.by_ip[ip],
                             int(port), "TCP", None))
    return out


def _dns_need_flows(world: _World, dns: Sequence[Peer]) -> list[_Flow]:
    # CoreDNS replicas with the same labels and ports get the same verdict from any pod (the
    # verdict is between two pods, so the own-node exception does not apply): ask one
    distinct: dict[tuple, Peer] = {}
    for d in dns:
        distinct.setdefault((d.namespace, tuple(sorted(d.labels.items())), d.ports), d)
    return [_Flow("dns", "none", None, src, dst, DNS_PORT, proto, None, pods=n)
            for src, n in world.groups.values() for dst in distinct.values()
            for proto in ("UDP", "TCP")]


# ---------------------------------------------------------------- enforcement


def _enforcement(cluster: Any, facts: dict[str, list[Fact]]) -> tuple[str, bool | None, str]:
    """(enforcer, enforced, where seen). enforced None: nothing was readable to tell."""
    seen: list[tuple[str, str]] = []
    read = False

    def look(name: str, where: str, args: Iterable[Any] = ()) -> None:
        for marker, enforcer in ENFORCERS:
            if marker in name:
                # kube-router enforces policies unless started with --run-firewall=false
                if enforcer == "kube-router" and any(
                        "--run-firewall=false" in str(x) for x in args):
                    return
                seen.append((enforcer, where))
                return

    for ds in _items(cluster, "daemonsets") or []:
        read = True
        meta = _d(ds.get("metadata"))
        tmpl = _d(_d(_d(ds.get("spec")).get("template")).get("spec"))
        names = [str(meta.get("name") or "")]
        args: list[Any] = []
        for c in _l(tmpl.get("containers")):
            names.append(str(_d(c).get("name") or ""))
            args += _l(_d(c).get("args")) + _l(_d(c).get("command"))
        for n in names:
            look(n, f"DaemonSet {meta.get('namespace')}/{meta.get('name')}", args)
    pods = _items(cluster, "pods")
    if pods is not None:
        read = True
        for pod in pods:
            meta = _d(pod.get("metadata"))
            names = [str(meta.get("name") or "")] + [
                str(_d(c).get("name") or "") for c in _l(_d(pod.get("spec")).get("containers"))]
            for n in names:
                look(n, f"pod {meta.get('namespace')}/{meta.get('name')}")
    for f in facts["process"]:
        read = True
        if f.attrs.get("running"):
            look(str(f.attrs.get("name") or ""), f"process {f.attrs.get('name')} on {f.node}",
                 [f.attrs.get("args")])
    if not seen:
        return ("none" if read else "unknown"), (False if read else None), ""
    kinds = sorted({e for e, _ in seen})
    # canal is calico's policy engine on flannel: name it as the operator knows it
    enforcer = "canal" if "canal" in kinds else ",".join(kinds)
    wheres = sorted({w for _, w in seen})
    return enforcer, True, "; ".join(wheres[:5]) + (
        f"; and {len(wheres) - 5} more" if len(wheres) > 5 else "")


# ---------------------------------------------------------------- facts


def _who(p: Peer) -> str:
    if p.is_pod:
        return p.name or f"{p.namespace}/?"
    return f"node {p.node}" if p.ip is None and p.node else (p.ip or "?")


def _verdict_fact(fl: _Flow, by_ns: Mapping[str | None, list[dict]],
                  unreadable_ns: set[str]) -> Fact | None:
    # only the policies of the two ends' namespaces can select them: thousands of pods times
    # hundreds of policies stay cheap
    mine = by_ns.get(fl.src.namespace, [])
    if fl.dst.namespace != fl.src.namespace:
        mine = mine + by_ns.get(fl.dst.namespace, [])
    if not mine:
        return None
    v = evaluate(mine, fl.src, fl.dst, fl.port, fl.protocol)
    if not (v.egress.isolated or v.ingress.isolated):
        return None
    verdict = {True: "allowed", False: "denied", None: "unknown"}[v.allowed]
    # a policy of either side's namespace that could not be read could change the answer
    if verdict != "denied" and {fl.src.namespace, fl.dst.namespace} & unreadable_ns:
        verdict = "unknown"
    denied_on = v.denied_on
    node = (fl.dst.node if denied_on == "ingress" else fl.src.node) or fl.src.node \
        or fl.dst.node or "cluster"
    where = {"egress": "the source's egress", "ingress": "the destination's ingress",
             "both": "both sides"}.get(denied_on, "")
    port = f"{fl.protocol}/{fl.port}" if fl.port is not None else fl.protocol
    # the rules meant for this port whose selectors miss the far end: what to fix
    misses: tuple[str, ...] = ()
    protocol = fl.protocol.upper()
    if v.egress.allowed is False:
        misses += near_misses(mine, "egress", fl.src, fl.dst, fl.port, protocol, fl.dst)
    if v.ingress.allowed is False:
        misses += near_misses(mine, "ingress", fl.dst, fl.src, fl.port, protocol, fl.dst)
    near_miss = "; ".join(misses)[:NEAR_MISS_CHARS]
    text = (f"{_who(fl.src)} -> {_who(fl.dst)} {port}: {verdict}"
            + (f" on {where} ({', '.join(v.isolating)} select it and allow none of it)"
               if denied_on else "")
            + (f"; allowed by {', '.join(v.allowing)}" if v.allowing else "")
            + (f"; a rule for the port misses it: {near_miss}" if near_miss else ""))
    return Fact("policy_verdict", node, {
        "flow": fl.flow,
        "check": fl.check,
        "failed": fl.failed,
        "src": _who(fl.src),
        "src_node": fl.src.node,
        "src_namespace": fl.src.namespace,
        "vantage": fl.vantage or ("node" if not fl.src.is_pod else None),
        "dst": _who(fl.dst),
        "dst_node": fl.dst.node,
        "dst_namespace": fl.dst.namespace,
        "dst_address": fl.dst.ip,
        "port": fl.port,
        "protocol": fl.protocol,
        "verdict": verdict,
        "denied_on": denied_on,
        "policies": ", ".join(v.isolating),
        "allowing": ", ".join(v.allowing),
        "near_miss": near_miss,
        "pods": fl.pods,
    }, Source(PROBE, "NetworkPolicy semantics on the flows the cluster needs", None, text))


def policy_facts(facts: list[Fact], cluster: Any, plans: Mapping[str, Any] | None = None
                 ) -> list[Fact]:
    kinds = by_kind(facts, INPUTS)
    n_policies = len(kinds["network_policy"])
    if not n_policies:
        return []  # nothing to evaluate, and no protection anyone could believe in
    enforcer, enforced, seen = _enforcement(cluster, kinds)
    to_inventory = {str(f.attrs["api_name"]): str(f.attrs["inventory_name"])
                    for f in kinds["node_match"]
                    if f.attrs.get("api_name") and f.attrs.get("inventory_name")}
    nodes = {str(f.attrs["address"]): f.node for f in kinds["node_match"]
             if f.attrs.get("address")}
    world = _world(cluster, to_inventory)
    out: list[Fact] = []
    total = denied = 0
    if world is not None:
        pod_of = {}
        for f in kinds["own_pod_check"]:
            a = f.attrs
            if a.get("direction") == "node_to_pod" and a.get("address") in world.by_ip:
                pod_of[f.node] = world.by_ip[str(a["address"])]
        dns = [world.by_ip[str(f.attrs["ip"])] for f in kinds["dns_pod"]
               if f.attrs.get("ip") in world.by_ip]
        unreadable_ns = {u.split("/", 1)[0] for u in world.unreadable}
        by_ns: dict[str | None, list[dict]] = defaultdict(list)
        for p in world.policies:
            by_ns[p["metadata"]["namespace"]].append(p)
        made = [f for fl in _check_flows(kinds, world, plans or {}, pod_of, nodes)
                + _nodeport_flows(kinds, world) + _dns_need_flows(world, dns)
                if (f := _verdict_fact(fl, by_ns, unreadable_ns)) is not None]
        # an unchecked flow is worth a fact only when a policy stops it
        made = [f for f in made if f.attrs["check"] != "none"
                or f.attrs["verdict"] != "allowed"]
        total = len(made)
        denied = sum(1 for f in made if f.attrs["verdict"] == "denied")
        made.sort(key=lambda f: (f.attrs["failed"] is not True, f.attrs["verdict"] != "denied",
                                 f.attrs["flow"], f.attrs["src"], f.attrs["dst"]))
        out = made[:MAX_VERDICTS]
    unreadable = world.unreadable if world else []
    out.append(Fact("policy_enforcement", "cluster", {
        "enforcer": enforcer,
        "enforced": enforced,
        "seen": seen,
        "policies": n_policies,
        "unreadable": "; ".join(unreadable)[:1000],
        "namespaces_known": world.namespaces_known if world else None,
        "verdicts": total,
        "denied": denied,
        "shown": min(total, MAX_VERDICTS),
        "pods_not_evaluated": world.left_out if world else None,
    }, Source(PROBE, "NetworkPolicy enforcers in the API and on the nodes", None,
              f"{n_policies} NetworkPolicies; enforcer: {enforcer}"
              + (f" ({seen})" if seen else "")
              + (f"; {total} flow verdicts, {denied} denied" if world else "")
              + (f"; DNS of {world.left_out} pods not evaluated (more than {MAX_GROUPS} "
                 "distinct label sets on a node)" if world and world.left_out else "")
              + (f"; unreadable: {'; '.join(unreadable)}" if unreadable else ""))))
    return out
