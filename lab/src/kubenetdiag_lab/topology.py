"""The lab's shape as plain data: nodes, pods, addresses, pod CIDRs, CNI mode, services.

Everything here is computed from (prefix, node count, CNI mode, kube-proxy mode) by pure
functions and runs no command, so the shape can be built, compared and serialised without root
or a running lab.
The running lab (lab.py) builds exactly this shape; lab.json carries it (`Topology.to_dict`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from ipaddress import IPv4Network, ip_network
from typing import Any

from kubenetdiag_lab.errors import LabError

CNI_MODES = ("flannel-vxlan", "flannel-host-gw", "calico-bgp")
DEFAULT_CNI = "flannel-vxlan"
# kube-proxy's --proxy-mode (kubeproxy.py): its rules in iptables chains, or in its own
# nftables table `ip kube-proxy`
PROXY_MODES = ("iptables", "nftables")
DEFAULT_PROXY_MODE = "iptables"
NETWORK_POLICY_MODES = ("none", "kube-router")  # `lab up --network-policy`
# An SSH login to a node runs the shell start-up files of its own root home ("node", the
# default: a fresh node's, as a real node has), or this machine's ("machine": a developer's
# machine may run a version manager from them, which a real node would not pay for).
LOGIN_MODES = ("node", "machine")

UNDERLAY = ip_network("198.18.0.0/24")  # RFC 2544 benchmarking range: never routed for real
POD_SUPERNET = ip_network("10.244.0.0/16")  # flannel's default cluster CIDR
CLIENT_ADDRESS = "198.18.0.2"
NODE_HOST_OFFSET = 10  # node i is 198.18.0.(10+i)
FULL_NODES = 200  # keeps node addresses below the outside's .250 and pod /24s inside the /16
# Above FULL_NODES a lab is light (`Topology.light`) and wider: node 201 on is 198.18.1.1,
# 198.18.1.2, ... (250 a /24, so no address ends in .0 or .255), each with a /24 of pods from
# a /14. One switch still takes it: a Linux bridge has 1,024 ports.
LARGE_UNDERLAY = ip_network("198.18.0.0/22")
LARGE_POD_SUPERNET = ip_network("10.244.0.0/14")
MAX_NODES = FULL_NODES + 3 * 250
# No "-": it keeps every lab's namespace names unambiguous for `down`.
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")

SERVICE_NETWORK = ip_network("10.96.0.0/12")
OUTSIDE_NETWORK = ip_network("203.0.113.0/24")  # TEST-NET-3: documentation only
OUTSIDE_UNDERLAY = "198.18.0.250"
# An underlay address no lab machine holds: where a peer's VXLAN frames go after it was
# renumbered, from an FDB entry that kept its old address (faults.vxlan_peer_entry_stale), or
# a retired router a host route still names (faults.underlay_route_broken via=gateway).
RETIRED_NODE_ADDRESS = "198.18.0.248"
OUTSIDE_HOST = "203.0.113.10"
OUTSIDE_PORT = 3306
# The site's DNS, a resolver in the outside namespace (on its underlay address) that CoreDNS
# forwards to; it knows the middleware's name and nothing else (NXDOMAIN).
OUTSIDE_DNS = OUTSIDE_UNDERLAY
OUTSIDE_HOST_NAME = "mysql.corp.example"  # RFC 2606 .example: never a real name
CLUSTER_DOMAIN = "cluster.local"
KUBERNETES_VIP = "10.96.0.1"
DNS_VIP = "10.96.0.10"
WEB_VIP = "10.96.0.20"
WEB_PORT = 8080
# The web Service is a NodePort Service (externalTrafficPolicy Cluster), as a web app exposed
# to a load balancer is: every node answers on this port, whether it runs the web pod or not.
WEB_NODE_PORT = 30085
METRICS_PORT = 9153
# Calico's pods route everything via this link-local address, which no device holds: the host
# side of each pod's cali* veth answers its ARP by proxy.
CALICO_POD_GATEWAY = "169.254.1.1"


@dataclass(frozen=True)
class LabNode:
    name: str  # inventory name, node1..nodeN
    index: int
    netns: str
    address: str  # underlay address on eth0
    pod_cidr: str
    pod_gateway: str  # the pods' default gateway: cni0's address, or Calico's 169.254.1.1
    pod_netns: str  # the node's first pod ("client" app), kept for simple pod-to-pod checks
    pod_address: str
    zone: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabNode:
        # lab.json's node entries carry runtime fields too (vxlan_port, ...): keep ours only.
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class LabPod:
    name: str
    namespace: str
    node: str
    ip: str
    netns: str
    app: str
    slot: int  # j in <node>-pod<j>: the order its node's IPAM gives addresses in

    def to_dict(self) -> dict[str, Any]:
        # lab.json's pod entry: the veth slot is the lab's wiring detail, not part of the contract.
        return {"name": self.name, "namespace": self.namespace, "node": self.node, "ip": self.ip,
                "netns": self.netns, "app": self.app}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabPod:
        slot = int(data["netns"].rpartition("-pod")[2])
        return cls(data["name"], data["namespace"], data["node"], data["ip"], data["netns"],
                   data["app"], slot)


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    protocol: str  # TCP or UDP, as in the Service object
    target_port: int | str  # a name: the container port of that name on each pod
    node_port: int | None = None  # set: the Service is of type NodePort


@dataclass(frozen=True)
class Service:
    name: str
    namespace: str
    cluster_ip: str
    ports: tuple[ServicePort, ...]
    app: str
    endpoints: tuple[str, ...] = ()  # pod names
    # a selector that replaced the one its app's pods carry (service_no_endpoints
    # via=selector): ((label, value), ...); empty: the app's own (pod_labels)
    selector: tuple[tuple[str, str], ...] = ()
    external_traffic_policy: str | None = None  # Local or Cluster, for a NodePort Service
    # addresses outside the cluster that an EndpointSlice written by hand lists for a Service
    # without a selector (app ""), as a Service in front of an external database is made
    external: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        ports = [{k: v for k, v in asdict(port).items() if v is not None} for port in self.ports]
        out = {"name": self.name, "namespace": self.namespace, "cluster_ip": self.cluster_ip,
               "ports": ports, "app": self.app, "endpoints": list(self.endpoints)}
        if self.selector:
            out["selector"] = dict(self.selector)
        if self.external_traffic_policy:
            out["external_traffic_policy"] = self.external_traffic_policy
        if self.external:
            out["external"] = list(self.external)
        return out


@dataclass(frozen=True)
class Topology:
    prefix: str
    cni: str
    nodes: tuple[LabNode, ...]
    pods: tuple[LabPod, ...]
    pod_network: str = str(POD_SUPERNET)
    client_address: str = CLIENT_ADDRESS
    proxy_mode: str = DEFAULT_PROXY_MODE
    # what enforces NetworkPolicies: "none" (the default) or "kube-router" (kuberouter.py)
    network_policy: str = "none"
    # whose shell start-up files an SSH login to a node runs (LOGIN_MODES)
    login: str = "node"
    underlay: str = str(UNDERLAY)
    # Light nodes run sshd, their init and agents and their pods, and none of the per-node
    # components (flanneld, kube-proxy: about 90 MiB a node); the lab writes the routes that
    # flannel's host-gw backend would. For labs larger than this machine could hold whole.
    light: bool = False
    # derived from the prefix; fields (not properties) so they show in repr and compare
    switch_netns: str = field(init=False)
    client_netns: str = field(init=False)
    outside_netns: str = field(init=False)
    cp_netns: str = field(init=False)  # etcd + kube-apiserver (controlplane.py)

    def __post_init__(self) -> None:
        object.__setattr__(self, "switch_netns", f"{self.prefix}-sw")
        object.__setattr__(self, "client_netns", f"{self.prefix}-client")
        object.__setattr__(self, "outside_netns", f"{self.prefix}-outside")
        object.__setattr__(self, "cp_netns", f"{self.prefix}-cp")

    @property
    def namespaces(self) -> list[str]:
        return [
            self.switch_netns,
            self.client_netns,
            self.outside_netns,
            self.cp_netns,
            *(node.netns for node in self.nodes),
            *(pod.netns for pod in self.pods),
        ]

    def node(self, name: str) -> LabNode:
        """A node by inventory name, netns name or underlay address."""
        for node in self.nodes:
            if name in (node.name, node.netns, node.address):
                return node
        known = ", ".join(node.name for node in self.nodes)
        raise LabError(f"no lab node {name!r}; nodes are {known}")

    def pod(self, name: str) -> LabPod:
        """A pod by name, netns name or IP."""
        for pod in self.pods:
            if name in (pod.name, pod.netns, pod.ip):
                return pod
        raise LabError(f"no lab pod {name!r}")

    def pods_on(self, node: str) -> list[LabPod]:
        name = self.node(node).name
        return [pod for pod in self.pods if pod.node == name]

    def pod_for_app(self, app: str) -> LabPod:
        for pod in self.pods:
            if pod.app == app:
                return pod
        raise LabError(f"no lab pod runs {app!r}")

    @property
    def underlay_prefixlen(self) -> int:
        return ip_network(self.underlay).prefixlen

    def peers(self, node: LabNode) -> list[LabNode]:
        return [other for other in self.nodes if other.name != node.name]

    def to_dict(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "cni": self.cni,
            "kube_proxy_mode": self.proxy_mode,
            "network_policy": self.network_policy,
            "login": self.login,
            "pod_network": self.pod_network,
            "underlay": self.underlay,
            "light": self.light,
            "namespaces": self.namespaces,
            "switch_netns": self.switch_netns,
            "client": {"netns": self.client_netns, "address": self.client_address},
            "nodes": [node.to_dict() for node in self.nodes],
            "pods": [pod.to_dict() for pod in self.pods],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Topology:
        return cls(
            prefix=data["prefix"],
            cni=data.get("cni", DEFAULT_CNI),
            nodes=tuple(LabNode.from_dict(node) for node in data["nodes"]),
            pods=tuple(LabPod.from_dict(pod) for pod in data["pods"]),
            pod_network=data.get("pod_network", str(POD_SUPERNET)),
            client_address=data.get("client", {}).get("address", CLIENT_ADDRESS),
            proxy_mode=data.get("kube_proxy_mode", DEFAULT_PROXY_MODE),
            network_policy=data.get("network_policy", "none"),
            login=data.get("login", "node"),
            underlay=data.get("underlay", str(UNDERLAY)),
            light=bool(data.get("light", False)),
        )


def node_address(index: int) -> str:
    """Node i's underlay address: 198.18.0.(10+i) up to FULL_NODES, then 250 a /24 from
    198.18.1.1 on.

    >>> node_address(1), node_address(200), node_address(201), node_address(451)
    ('198.18.0.11', '198.18.0.210', '198.18.1.1', '198.18.2.1')
    """
    if index <= FULL_NODES:
        return str(UNDERLAY.network_address + NODE_HOST_OFFSET + index)
    block, host = divmod(index - FULL_NODES - 1, 250)
    return str(LARGE_UNDERLAY.network_address + 256 * (1 + block) + 1 + host)


def make_node(prefix: str, index: int, cni: str = DEFAULT_CNI) -> LabNode:
    pod_net = IPv4Network(f"{POD_SUPERNET.network_address + (index << 8)}/24")
    gateway = CALICO_POD_GATEWAY if cni == "calico-bgp" else str(pod_net.network_address + 1)
    return LabNode(
        name=f"node{index}",
        index=index,
        netns=f"{prefix}-node{index}",
        address=node_address(index),
        pod_cidr=str(pod_net),
        pod_gateway=gateway,
        pod_netns=f"{prefix}-node{index}-pod1",
        pod_address=str(pod_net.network_address + 2),
        zone="zone-a" if index % 2 else "zone-b",
    )


def _node_apps(node: LabNode, web_node: LabNode) -> list[str]:
    # CoreDNS on node1, the web app on node2; a one-node lab carries both, web as a third pod.
    apps = ["client", "client"]
    if node.index == 1:
        apps[1] = "coredns"
    if node.name == web_node.name:
        if node.index == 1:
            apps.append("web")
        else:
            apps[1] = "web"
    return apps


def make_pods(nodes: Sequence[LabNode]) -> tuple[LabPod, ...]:
    pods = []
    web_node = nodes[1] if len(nodes) > 1 else nodes[0]
    for node in nodes:
        base = IPv4Network(node.pod_cidr).network_address
        for slot, app in enumerate(_node_apps(node, web_node), start=1):
            name, namespace = {
                "coredns": ("coredns-0", "kube-system"),
                "web": ("web-0", "default"),
            }.get(app, (f"client-{node.name}-{slot}", "default"))
            pods.append(LabPod(name, namespace, node.name, str(base + 1 + slot),
                               f"{node.netns}-pod{slot}", app, slot))
    return tuple(pods)


def build(prefix: str = "knd", node_count: int = 2, cni: str = DEFAULT_CNI,
          proxy_mode: str = DEFAULT_PROXY_MODE, network_policy: str = "none",
          login: str = "node", light: bool = False) -> Topology:
    """The lab's shape for a prefix, a node count, a CNI mode, kube-proxy's mode, what
    enforces NetworkPolicies ("none" or "kube-router"), whose start-up files a login runs
    ("node": the node's own, "machine": this machine's) and whether its nodes are light."""
    if not PREFIX_RE.match(prefix):
        raise LabError(f"lab prefix {prefix!r} must match {PREFIX_RE.pattern}")
    if not 1 <= node_count <= MAX_NODES:
        raise LabError(f"lab node count must be 1..{MAX_NODES}, got {node_count}")
    if node_count > FULL_NODES and not light:
        raise LabError(f"a lab of more than {FULL_NODES} nodes runs light nodes (--light): a "
                       f"whole node with flanneld and kube-proxy takes about 110 MiB, "
                       f"{node_count * 110 // 1024} GiB for {node_count}")
    if light and (cni != "flannel-host-gw" or network_policy != "none"):
        raise LabError("light nodes route pods as flannel's host-gw backend does, with no "
                       "agent on the node: use --cni flannel-host-gw and no --network-policy")
    if cni not in CNI_MODES:
        raise LabError(f"unknown CNI mode {cni!r}; one of {', '.join(CNI_MODES)}")
    if proxy_mode not in PROXY_MODES:
        raise LabError(f"unknown kube-proxy mode {proxy_mode!r}; one of {', '.join(PROXY_MODES)}")
    nodes = tuple(make_node(prefix, index, cni) for index in range(1, node_count + 1))
    if network_policy not in NETWORK_POLICY_MODES:
        raise LabError(f"unknown network policy mode {network_policy!r}; "
                       f"one of {', '.join(NETWORK_POLICY_MODES)}")
    if network_policy != "none" and cni == "calico-bgp":
        raise LabError(f"--network-policy {network_policy} runs beside flannel only: on "
                       "calico-bgp, Calico's felix enforces policies, and the lab does not "
                       "run felix")
    if login not in LOGIN_MODES:
        raise LabError(f"unknown login mode {login!r}; one of {', '.join(LOGIN_MODES)}")
    large = node_count > FULL_NODES
    return Topology(prefix=prefix, cni=cni, nodes=nodes, pods=make_pods(nodes),
                    pod_network=str(LARGE_POD_SUPERNET if large else POD_SUPERNET),
                    proxy_mode=proxy_mode, network_policy=network_policy, login=login,
                    underlay=str(LARGE_UNDERLAY if large else UNDERLAY), light=light)


def pod_labels(app: str) -> dict[str, str]:
    """The labels a lab app's pods carry, which its Service selects on."""
    return {"k8s-app": "kube-dns"} if app == "coredns" else {"app": app}


def cluster_services(topology: Topology, unready: Collection[str] = (),
                     selectors: Mapping[str, Mapping[str, str]] | None = None,
                     renamed: Collection[str] = ()) -> list[Service]:
    """The Services, with their ready endpoints as the EndpointSlice controller lists them and
    kube-proxy programs them; `unready` names the pods a fault made not Ready, `selectors`
    the Services (by name) whose selector a fault replaced: they select the pods whose
    labels it matches (none, as the faults make them); `renamed` the Services whose ports a
    fault made target a container port by a name no pod declares (`<port name>-alt`): the
    controller resolves it on none of their pods, so they have no endpoints."""
    selectors = selectors or {}
    by_app: dict[str, list[str]] = {}
    for pod in topology.pods:
        by_app.setdefault(pod.app, []).append(pod.name)

    def selected(name: str, app: str) -> list[str]:
        if name not in selectors:
            return by_app.get(app, [])
        want = selectors[name].items()
        return [pod.name for pod in topology.pods if want <= pod_labels(pod.app).items()]

    shapes = [
        ("kube-dns", "kube-system", DNS_VIP,
         (ServicePort("dns", 53, "UDP", 53), ServicePort("dns-tcp", 53, "TCP", 53),
          ServicePort("metrics", METRICS_PORT, "TCP", METRICS_PORT)), "coredns"),
        ("web", "default", WEB_VIP, (ServicePort("http", 80, "TCP", WEB_PORT, WEB_NODE_PORT),),
         "web"),
    ]
    return [
        Service(name, namespace, vip,
                tuple(replace(p, target_port=f"{p.name}-alt") for p in ports)
                if name in renamed else ports, app,
                () if name in renamed else
                tuple(pod for pod in selected(name, app) if pod not in unready),
                tuple(sorted(selectors.get(name, {}).items())))
        for name, namespace, vip, ports, app in shapes
    ]


def container_ports(topology: Topology, app: str) -> list[dict[str, Any]]:
    """The container ports an app's pods declare, as its manifest would: each port its
    Services send to, named as the Service's port (what a named targetPort resolves against)."""
    declared: dict[tuple[object, str], dict[str, Any]] = {}
    for svc in cluster_services(topology):
        for p in svc.ports if svc.app == app else ():
            declared.setdefault((p.target_port, p.protocol), {
                "name": p.name, "containerPort": p.target_port, "protocol": p.protocol})
    return list(declared.values())
