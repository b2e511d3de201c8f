"""Which targets each node probes: a pure function of facts and the inventory.

Every target comes from a fact (API nodes, CoreDNS pods, the DNS Service, the nodes' own
interfaces and routes) or from the inventory (`kubenetdiag_endpoints`); nothing is guessed. The
plan is a plain dict, kept in the bundle beside the raw output so `analyze` can name the peer
behind each address without the network.

A peer's pod-network target (`pod_target`, what the pod-layer ping and MTU checks send to) is
an address known to live on the peer's pod network, taken from the first of (`pod_target_source`):
  * "interface": the pod CIDR's gateway held by one of the peer's devices (flannel's cni0);
  * "route": a pod the peer routes to itself, a /32 route inside its pod range on a pod veth
    (Calico's cali*, where pods sit behind proxy ARP and no node address is in the pod CIDR);
  * "dns_pod": a CoreDNS pod the API places on the peer;
  * None: no pod address is known there, so its pod layer is not checked (`not_checked` says
    so) rather than pinged at an address that may not exist.

A node of the inventory the passive phase could not log in to keeps its place in the ring as a
peer with `collected: False`: its node address is pinged, nothing else, so the other nodes say
whether it is down or cut off (every ping fails) or only its SSH is broken (they answer).

Bounds, so a 500-node cluster costs each node the same as a 10-node one:
  * at most MAX_PEERS peers per source, taken in ring order (node i probes i+1..i+K). Every
    node is then the target of exactly min(K, N-1) sources, so one broken node is still seen
    failing from several sides, and the matrix has N*K cells instead of N*N;
  * at most MAX_DNS_PODS CoreDNS pods per node, rotated by node position so that together the
    nodes cover every pod;
  * at most MAX_ENDPOINTS declared endpoints;
  * at most MAX_NODEPORTS NodePort Service ports per node (rotated by node position like the
    CoreDNS pods), each connected to on the node's own address and on its first
    NODEPORT_PEERS ring peers', so a NodePort that answers its own node but not the others
    (or the reverse) is seen from both sides.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any, Literal, TypedDict

from kubenetdiag.facts.model import Fact, Source

MAX_PEERS = 8
MAX_DNS_PODS = 4
MAX_ENDPOINTS = 16
MAX_NODEPORTS = 2
NODEPORT_PEERS = 2
ICMP_OVERHEAD = 28  # IPv4 header + ICMP header: a DF ping of size S fills an MTU of S + 28
DEFAULT_VXLAN_PORT = 8472  # flannel's default when net-conf.json names none
DEFAULT_DOMAIN = "cluster.local"
ENDPOINTS_VAR = "kubenetdiag_endpoints"



# The plan's shape. Plans stay plain dicts, since bundles store them as JSON and `analyze` reads
# them back; these say which keys they have (docs/contracts.md, "Bundle").


PodTargetSource = Literal["interface", "route", "dns_pod"]
# host-side names of pod veths: Calico's cali<hash>, and the veth<hash> of generic CNIs
POD_VETH_PREFIXES = ("cali", "veth")


class _PeerKeys(TypedDict):
    name: str
    address: str | None  # underlay address: the API's InternalIP, else the inventory's
    pod_cidr: str | None
    # the pod CIDR's first address (cni0 under flannel). Kept as it was for plans stored in
    # bundles; the checks send to `pod_address(peer)`, which prefers pod_target.
    pod_gateway: str | None


class Peer(_PeerKeys, total=False):  # plans stored by older versions lack these
    pod_target: str | None  # the pod-network address to probe; None: none known
    pod_target_source: PodTargetSource | None  # which fact it came from
    # False for a node the passive phase could not log in to: only its node address is
    # pinged, so the other nodes say whether it is down or only its SSH fails
    collected: bool


class MtuProbe(TypedDict):
    layer: Literal["pod", "underlay"]
    size: int  # ICMP payload of a DF ping that fills the layer's MTU exactly


class Vxlan(TypedDict):
    port: int
    dev: str  # the device the capture listens on


class DnsTarget(TypedDict):
    server: str
    kind: Literal["pod", "service"]
    pod: str | None


class HttpTarget(TypedDict):
    url: str
    target: str  # what the URL stands for, e.g. coredns_metrics
    pod: str | None


class Endpoint(TypedDict):
    target: str  # host:port as declared in the inventory
    host: str
    port: int
    by: Literal["ip", "name"]


class NodePortTarget(TypedDict):
    service: str  # namespace/name:port, the port's name or, for an unnamed one, its number
    node_port: int
    dst: str  # the node whose address is connected to
    address: str  # its address (the API's InternalIP, else the inventory's)
    own: bool  # the node connects to its own address


class _NodePlanKeys(TypedDict):
    node: str
    address: str | None
    peers: list[Peer]
    mtu: list[MtuProbe]
    vxlan: Vxlan | None
    dns: list[DnsTarget]
    dns_name: str
    http: list[HttpTarget]
    endpoints: list[Endpoint]


class NodePlan(_NodePlanKeys, total=False):  # plans stored by older versions lack these
    nodeports: list[NodePortTarget]
    # A name outside the cluster that no resolver can hold (RFC 6761's .invalid), asked of each
    # CoreDNS pod: its kubernetes plugin does not own it, so CoreDNS forwards it, and an
    # NXDOMAIN back proves the way to its upstream. None when CoreDNS forwards nothing.
    dns_outside_name: str | None
    # An IPsec policy whose SA a key manager negotiates at the first packet, idle when read:
    # the after-check asks the kernel whether the checks' packets got one (xfrm_after.py)
    xfrm_on_demand: bool


def is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def gateway_of(cidr: str | None) -> str | None:
    """The pod CIDR's first address: cni0's address under flannel, the `.1` that
    docs/runbooks.md#runbook-001 pings."""
    if not cidr:
        return None
    try:
        net = ipaddress.ip_network(cidr.split(",")[0].strip(), strict=False)
    except ValueError:
        return None
    if net.version != 4 or net.num_addresses < 4:
        return None
    return str(net.network_address + 1)


def ipv4_networks(text: str | None) -> list[ipaddress.IPv4Network]:
    """The IPv4 networks of a comma-separated list (a podCIDRs value); the rest left out."""
    out = []
    for part in (text or "").split(","):
        try:
            net = ipaddress.ip_network(part.strip(), strict=False)
        except ValueError:
            continue
        if net.version == 4:
            out.append(net)
    return out


def _host_route(dst: str) -> ipaddress.IPv4Address | None:
    """The address of a host route (`10.244.2.5`, or `10.244.2.5/32`), else None."""
    address, _, length = dst.partition("/")
    if length not in ("", "32"):
        return None
    try:
        return ipaddress.IPv4Address(address)
    except ValueError:
        return None


def choose_pod_target(
    pod_cidr: str | None,
    ifaces: Sequence[Fact],
    routes: Sequence[Fact],
    dns_pods: Sequence[Fact],
    *,
    address: str | None = None,
    pools: Sequence[str] = (),
) -> tuple[str | None, PodTargetSource | None]:
    """(address, source) of a pod-network target on one peer, from the peer's own `interface`
    and `route` facts and the CoreDNS pods the API places on it; (None, None) when none is
    known. `pools`: Calico IPPool CIDRs, where pods may live outside the node's podCIDR.

    flannel: cni0 holds the pod CIDR's gateway, so that is pinged.

    >>> cni0 = Fact("interface", "node2", {"name": "cni0", "kind": "bridge",
    ...                                    "addresses": "10.244.2.1/24"})
    >>> choose_pod_target("10.244.2.0/24", [cni0], [], [])
    ('10.244.2.1', 'interface')

    Calico: no device holds a .1; pods are /32 routes on their cali* veths.

    >>> pod = Fact("route", "node2", {"dst": "10.244.2.7", "dev": "cali1a2b3c4d5e6",
    ...                               "type": "unicast", "linkdown": False})
    >>> choose_pod_target("10.244.2.0/24", [], [pod], [])
    ('10.244.2.7', 'route')
    >>> choose_pod_target("10.244.2.0/24", [], [], [])
    (None, None)
    """
    gateway = gateway_of(pod_cidr)
    if gateway:
        for f in ifaces:
            held = str(f.attrs.get("addresses") or "").split(",")
            if any(a.split("/")[0].strip() == gateway for a in held):
                return gateway, "interface"
    ranges = ipv4_networks(pod_cidr) + [n for pool in pools for n in ipv4_networks(pool)]
    veths = {str(f.attrs.get("name")) for f in ifaces if f.attrs.get("kind") == "veth"}
    live = []
    for f in routes:
        dev = str(f.attrs.get("dev") or "")
        if f.attrs.get("linkdown") or str(f.attrs.get("type") or "unicast") != "unicast":
            continue
        if not (dev.startswith(POD_VETH_PREFIXES) or dev in veths):
            continue
        ip = _host_route(str(f.attrs.get("dst") or ""))
        if ip is None or str(ip) == address:
            continue
        # inside a known pod range; with none known, only Calico's own device names say "pod"
        if any(ip in net for net in ranges) if ranges else dev.startswith("cali"):
            live.append(ip)
    if live:
        return str(min(live)), "route"
    on_node = sorted((f for f in dns_pods if f.attrs.get("ip") and f.attrs["ip"] != address),
                     key=lambda f: (not f.attrs.get("ready"), str(f.attrs.get("pod"))))
    if on_node:
        return str(on_node[0].attrs["ip"]), "dns_pod"
    return None, None


def pod_address(peer: Any) -> str | None:
    """Where the pod-layer checks send to: the plan's `pod_target`; a plan stored by an older
    version has none and pinged `pod_gateway`, so its sections still read the same.

    >>> pod_address({"name": "node2", "pod_gateway": "10.244.2.1"})
    '10.244.2.1'
    >>> pod_address({"name": "node2", "pod_gateway": "10.244.2.1", "pod_target": "10.244.2.7",
    ...              "pod_target_source": "route"})
    '10.244.2.7'
    >>> pod_address({"name": "node2", "pod_gateway": "10.244.2.1", "pod_target": None,
    ...              "pod_target_source": None}) is None
    True
    """
    if "pod_target" in peer:
        return peer["pod_target"]
    return peer.get("pod_gateway")


NOT_CHECKED_PROBE = "active.pod_target"


def not_checked(node: str, node_plan: Any) -> list[Fact]:
    """One `probe_status` for the peers this node's plan found no pod address on: their pod
    layer was not checked from here, which says nothing about whether it works. Plans stored by
    older versions (no `pod_target`) give none.

    >>> p = {"peers": [{"name": "node2", "pod_cidr": None, "pod_target": None,
    ...                 "pod_target_source": None},
    ...                {"name": "node3", "pod_target": "10.244.3.1",
    ...                 "pod_target_source": "interface"}]}
    >>> [fact] = not_checked("node1", p)
    >>> fact.attrs["status"], fact.attrs["blocks"]
    ('not_queried', 'pod-network reachability and pod-layer MTU from node1 to node2')
    >>> print(fact.attrs["reason"])  # doctest: +ELLIPSIS
    no pod address is known on node2, so nothing was pinged: ... Pass --kubeconfig ...
    """
    missing = [p for p in (node_plan or {}).get("peers") or []
               if isinstance(p, dict) and "pod_target" in p and not p.get("pod_target")
               and p.get("collected") is not False]  # node_unreachable says that one
    if not missing:
        return []
    names = [str(p.get("name")) for p in missing]
    for k in range(len(names), 0, -1):  # as many names as fit the reason's 300 characters
        shown = ", ".join(names[:k]) + (f" and {len(names) - k} more" if k < len(names) else "")
        reason = (
            f"no pod address is known on {shown}, so nothing was pinged: no device there holds "
            "the pod CIDR's gateway, no /32 route leads to a pod veth, no CoreDNS pod runs "
            "there. Pass --kubeconfig (pod CIDRs, CoreDNS pods) or see why its routes were "
            "unreadable"
        )
        if len(reason) <= 300:
            break
    blocks = f"pod-network reachability and pod-layer MTU from {node} to {', '.join(names)}"
    return [Fact("probe_status", node, {
        "probe": NOT_CHECKED_PROBE, "status": "not_queried", "reason": reason[:300],
        "blocks": blocks}, Source(NOT_CHECKED_PROBE, "", None, reason))]


def parse_endpoint(spec: Any) -> tuple[str, int] | None:
    """`host:port` -> (host, port); anything else (a typo in the inventory) -> None."""
    if not isinstance(spec, str) or ":" not in spec:
        return None
    host, _, port = spec.rpartition(":")
    host = host.strip("[]").strip()
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    if not all(c.isalnum() or c in ".-_" for c in host):
        return None  # it ends up in a shell command line: only plain host names and IPs
    return host, int(port)


def _by_node(facts: Iterable[Fact], kind: str) -> dict[str, list[Fact]]:
    out: dict[str, list[Fact]] = {}
    for f in facts:
        if f.kind == kind:
            out.setdefault(f.node, []).append(f)
    return out


def _underlay(ifaces: list[Fact], address: str | None) -> tuple[str | None, int | None]:
    """The device holding the node's own address, and its MTU."""
    for f in ifaces:
        addrs = str(f.attrs.get("addresses") or "")
        if address and any(a.split("/")[0] == address for a in addrs.split(",")):
            return str(f.attrs["name"]), _int(f.attrs.get("mtu"))
    return None, None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# The fact kinds plan() reads: the pipeline parses only these before the active phase.
INPUTS = frozenset({"node_status", "k8s_node", "flannel_subnet", "interface", "route",
                    "calico_ippool", "flannel_config", "dns_service", "dns_pod",
                    "service_port", "xfrm_policy"})


OUTSIDE_NAME = "kubenetdiag-check.invalid"


def plan(
    facts: Sequence[Fact],
    hosts: Sequence[Any],
    *,
    max_peers: int = MAX_PEERS,
    outside_name: str = OUTSIDE_NAME,
) -> dict[str, NodePlan]:
    """node name -> its plan, for every inventory host the passive phase reached.
    `outside_name`: the .invalid name asked of CoreDNS (a run makes its own, so an answer
    CoreDNS cached in an earlier run does not stand in for its upstream's)."""
    reached = {f.node for f in facts if f.kind == "node_status" and f.attrs.get("reachable")}
    names = [h.name for h in hosts if h.name in reached]
    k8s = {f.node: f for f in facts if f.kind == "k8s_node"}
    subnet = {f.node: f for f in facts if f.kind == "flannel_subnet"}
    status = {f.node: f for f in facts if f.kind == "node_status"}
    ifaces = _by_node(facts, "interface")
    routes = _by_node(facts, "route")
    pools = [str(f.attrs["cidr"]) for f in facts if f.kind == "calico_ippool"
             and f.attrs.get("cidr") and not f.attrs.get("disabled")]
    flannel = next((f for f in facts if f.kind == "flannel_config"), None)
    dns_svc = next((f for f in facts if f.kind == "dns_service"), None)
    dns_pods = sorted(
        (f for f in facts if f.kind == "dns_pod" and f.attrs.get("ip")),
        key=lambda f: str(f.attrs["pod"]),
    )
    by_name = {h.name: h for h in hosts}
    on_demand = {f.node for f in facts if f.kind == "xfrm_policy"
                 and f.attrs.get("sa") == "on_demand"}
    nodeports = sorted(
        (f for f in facts if f.kind == "service_port" and _int(f.attrs.get("node_port"))
         and f.attrs.get("protocol") == "TCP" and _int(f.attrs.get("ready_endpoints"))),
        key=lambda f: (str(f.attrs.get("namespace")), str(f.attrs.get("name")),
                       _int(f.attrs.get("port")) or 0))

    def address(name: str) -> str | None:
        ip = k8s[name].attrs.get("internal_ip") if name in k8s else None
        if ip:
            return str(ip)
        host = by_name.get(name)
        for cand in (getattr(host, "address", None), status.get(name) and
                     status[name].attrs.get("address")):
            if isinstance(cand, str) and is_ipv4(cand):
                return cand
        return None

    def pod_cidr(name: str) -> str | None:
        if name in k8s and k8s[name].attrs.get("pod_cidr"):
            return str(k8s[name].attrs["pod_cidr"])
        sub = subnet.get(name)
        if sub and sub.attrs.get("subnet"):  # subnet.env holds the gateway address/len
            try:
                return str(ipaddress.ip_interface(str(sub.attrs["subnet"])).network)
            except ValueError:
                return None
        return None

    # Nodes the collector could not log in to stay in the ring as ping targets, underlay only:
    # their peers' pings tell a node that is down or cut off from one whose SSH alone fails.
    addresses = {h.name: address(h.name) for h in hosts}
    ring_names = [h.name for h in hosts if h.name in reached or addresses[h.name]]
    info = {n: {"name": n, "address": addresses[n], "pod_cidr": pod_cidr(n)}
            for n in ring_names}
    dns_on = _by_node(dns_pods, "dns_pod")
    for n, entry in info.items():
        entry["pod_gateway"] = gateway_of(entry["pod_cidr"])
        entry["pod_target"], entry["pod_target_source"] = choose_pod_target(
            entry["pod_cidr"], ifaces.get(n, []), routes.get(n, []), dns_on.get(n, []),
            address=entry["address"], pools=pools) if n in reached else (None, None)
        entry["collected"] = n in reached
    domain = str(dns_svc.attrs.get("cluster_domain") or DEFAULT_DOMAIN) if dns_svc else \
        DEFAULT_DOMAIN
    flannel_port = _int(flannel.attrs.get("port")) if flannel else None

    plans: dict[str, NodePlan] = {}
    position = {n: i for i, n in enumerate(ring_names)}
    for name in names:
        i = position[name]
        ring = ring_names[i + 1:] + ring_names[:i]
        peers = [dict(info[p]) for p in ring[: max(0, max_peers)]]
        mine = ifaces.get(name, [])
        vxlan = next((f for f in mine if f.attrs.get("kind") == "vxlan"), None)
        dev, dev_mtu = _underlay(mine, info[name]["address"])
        overlay_mtu = _int(vxlan.attrs.get("mtu")) if vxlan else None
        if overlay_mtu is None and name in subnet:
            overlay_mtu = _int(subnet[name].attrs.get("mtu"))
        port = (_int(vxlan.attrs.get("vxlan_port")) if vxlan else None) or flannel_port
        if vxlan is None and flannel and str(flannel.attrs.get("backend") or "") != "vxlan":
            port = None  # host-gw: no VXLAN to count
        elif vxlan is not None and port is None:
            port = DEFAULT_VXLAN_PORT
        capture_dev = (str(vxlan.attrs["vxlan_dev"]) if vxlan and vxlan.attrs.get("vxlan_dev")
                       else dev)
        mtu: list[dict] = []
        if overlay_mtu and overlay_mtu > ICMP_OVERHEAD:
            mtu.append({"layer": "pod", "size": overlay_mtu - ICMP_OVERHEAD})
        if dev_mtu and dev_mtu > ICMP_OVERHEAD:
            mtu.append({"layer": "underlay", "size": dev_mtu - ICMP_OVERHEAD})
        pods = dns_pods
        if len(pods) > MAX_DNS_PODS:  # rotate so the nodes together ask every pod
            start = (i * MAX_DNS_PODS) % len(pods)
            pods = (pods + pods)[start:start + MAX_DNS_PODS]
        dns = [{"server": str(f.attrs["ip"]), "kind": "pod", "pod": str(f.attrs["pod"])}
               for f in pods]
        if dns_svc and dns_svc.attrs.get("cluster_ip"):
            dns.append({"server": str(dns_svc.attrs["cluster_ip"]), "kind": "service",
                        "pod": None})
        host = by_name.get(name)
        declared = (getattr(host, "vars", None) or {}).get(ENDPOINTS_VAR) or []
        endpoints = []
        for spec in declared if isinstance(declared, list) else []:
            parsed = parse_endpoint(spec)
            if parsed and len(endpoints) < MAX_ENDPOINTS:
                endpoints.append({"target": f"{parsed[0]}:{parsed[1]}", "host": parsed[0],
                                  "port": parsed[1],
                                  "by": "ip" if is_ipv4(parsed[0]) else "name"})
        ports = nodeports
        if len(ports) > MAX_NODEPORTS:  # rotate so the nodes together try every port
            start = (i * MAX_NODEPORTS) % len(ports)
            ports = (ports + ports)[start:start + MAX_NODEPORTS]
        own_and_peers = [info[name]] + [info[p] for p in ring if info[p]["collected"]][
            :NODEPORT_PEERS]
        nodeport_targets: list[NodePortTarget] = [
            {"service": service_port_name(f.attrs), "node_port": int(f.attrs["node_port"]),
             "dst": dst["name"], "address": dst["address"], "own": dst["name"] == name}
            for f in ports for dst in own_and_peers
            if dst["address"] and _answers_nodeport(f, dst["name"])]
        plans[name] = {  # a NodePlan
            "node": name,
            "address": info[name]["address"],
            "peers": peers,
            "mtu": mtu,
            "vxlan": ({"port": port, "dev": capture_dev} if port and capture_dev else None),
            "dns": dns,
            "dns_name": f"kubernetes.default.svc.{domain}",
            "http": [{"url": f"http://{d['server']}:9153/metrics", "target": "coredns_metrics",
                      "pod": d["pod"]} for d in dns if d["kind"] == "pod"],
            "endpoints": endpoints,
            "nodeports": nodeport_targets,
            "dns_outside_name": (outside_name if dns_svc and dns_svc.attrs.get("upstream")
                                 else None),
            "xfrm_on_demand": name in on_demand,
        }
    return plans


def service_port_name(a: Any) -> str:
    """A service_port fact's attributes -> namespace/name:port, the port's name or, for an
    unnamed one, its number: how the NodePort checks name what they connect to."""
    return f"{a.get('namespace')}/{a.get('name')}:{a.get('port_name') or a.get('port')}"


def _answers_nodeport(fact: Fact, node: str) -> bool:
    """Whether a node should answer this NodePort. With externalTrafficPolicy Local only a node
    with a ready endpoint does (kube-proxy's own test: the endpoint's nodeName); the others
    drop it by design, and a connect there would only tick the drop counter that tells real
    misdirected traffic apart (a rule reads it)."""
    if fact.attrs.get("external_traffic_policy") != "Local":
        return True
    return node in str(fact.attrs.get("endpoint_nodes") or "").split(",")
