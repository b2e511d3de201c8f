"""The Kubernetes objects a real API server would serve for a lab, built from its lab.json.

Pure functions: state dict in, JSON-shaped objects out; apisync.py writes them to the lab's real
kube-apiserver (without uid, resourceVersion and creationTimestamp, which the server sets; status
through the status subresource), and tests can build objects without a server. Objects carry
only the fields the real API has and kubenetdiag reads; their shapes follow the Kubernetes API
(core/v1, apps/v1, discovery.k8s.io/v1, networking.k8s.io/v1, crd.projectcalico.org/v1).

Choices that a reader of the served objects would otherwise have to guess:

* flannel lives in namespace ``kube-flannel`` (the upstream manifest since flannel 0.20), with
  its DaemonSet ``kube-flannel-ds``, its pods and its ``kube-flannel-cfg`` ConfigMap; calico
  lives in ``kube-system`` (the manifest install) as DaemonSet ``calico-node`` plus IPPools.
  A collector that only looked at kube-system would miss flannel, as it would on a real cluster.
* Faults change what the API says only where a real cluster's API would change:
  ``cni_pod_not_running`` (via=kill) makes that node's CNI pod not Ready in CrashLoopBackOff
  with restarts; a node whose ``cni_pod_ready`` is false (its readiness probe fails) has it
  not Ready, running, without restarts;
  a lab.json pod with ``"ready": false`` is not Ready (running, as under a failing readiness
  probe, or in CrashLoopBackOff when it has ``restarts``); ``node_not_ready`` makes that
  node's Ready condition Unknown, as when its kubelet stops posting status.
* EndpointSlices only for a Service without a selector (its lab.json entry lists `external`
  addresses), as an operator writes one beside it: the lab's real kube-controller-manager
  writes the others from the Services and the pods' Ready condition (controlplane.py), as on
  a real cluster.
* A service is topology-aware when its lab.json entry says ``"topology_aware": true``: it then
  has the ``service.kubernetes.io/topology-mode: Auto`` annotation (the EndpointSlice controller
  adds the zone hints; it needs the nodes' allocatable CPU, which node objects carry).
* lab.json keys beyond ``nodes`` are optional; a missing one yields fewer objects, not an error.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
from typing import Any

KUBELET_VERSION = "v1.30.4"
CREATED = "2026-01-05T08:00:00Z"  # fixed, so two reads of one state give identical objects
FLANNEL_NAMESPACE = "kube-flannel"
# `lab up --network-policy kube-router`: its DaemonSet as upstream's
# kube-router-firewall-daemonset.yaml deploys it (the lab runs the binary of that version)
KUBE_ROUTER_IMAGE = "docker.io/cloudnativelabs/kube-router:v2.1.0"
KUBE_ROUTER_ARGS = ["--run-router=false", "--run-firewall=true", "--run-service-proxy=false",
                    "--kubeconfig=/var/lib/kube-router/kubeconfig"]
CNI_RESTARTS_WHEN_FAILING = 17
NODE_RESOURCES = {"cpu": "2", "memory": "4026532Ki", "pods": "110"}
# A resolver address on the lab's underlay that no namespace holds (node addresses end at
# .210, the outside's is .250): queries sent there are ARPed for on the lab's switch and go
# nowhere, as to a DNS server that was retired.
RETIRED_RESOLVER = "198.18.0.249"
# coredns_zone_mismatch: the zone a Corefile restored from another cluster's backup serves
OTHER_ZONE = "k8s.example"

Obj = dict[str, Any]


def _suffix(*parts: str, n: int = 5) -> str:
    """The random-looking suffix Kubernetes gives generated names, but stable per input."""
    digest = hashlib.sha256("/".join(parts).encode()).hexdigest()
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return "".join(alphabet[int(digest[i : i + 2], 16) % len(alphabet)] for i in range(0, 2 * n, 2))


def _uid(*parts: str) -> str:
    h = hashlib.sha256("uid/".join(parts).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _meta(name: str, namespace: str | None = None, **extra: Any) -> Obj:
    m: Obj = {
        "name": name,
        "uid": _uid(namespace or "", name),
        "resourceVersion": "1",
        "creationTimestamp": CREATED,
    }
    if namespace is not None:
        m["namespace"] = namespace
    m.update({k: v for k, v in extra.items() if v})
    return m


def _faults(state: dict, fault: str) -> list[dict]:
    """Active faults of one kind; also reads the older ``active_faults: [[fault, node]]``."""
    out = [f for f in state.get("faults") or [] if isinstance(f, dict) and f.get("fault") == fault]
    for item in state.get("active_faults") or []:
        if isinstance(item, list | tuple) and len(item) >= 2 and item[0] == fault:
            out.append({"fault": fault, "node": item[1], "params": {}})
    return out


def _nodes(state: dict) -> list[dict]:
    return [n for n in state.get("nodes") or [] if isinstance(n, dict) and n.get("name")]


def _cni(state: dict) -> str:
    return str(state.get("cni") or "flannel-host-gw")


def cluster_domain(state: dict) -> str:
    return str(state.get("cluster_domain") or "cluster.local")


# ---------------------------------------------------------------- nodes


def _ready(state: dict, node: dict) -> Obj:
    """The Ready condition: True, or Unknown under node_not_ready (its kubelet stopped
    posting), as the node lifecycle controller writes it, or False under cni_config_missing,
    as the kubelet posts it while its runtime finds no CNI network configuration."""
    if any(f.get("node") == node["name"] for f in _faults(state, "node_not_ready")):
        return {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                "message": "Kubelet stopped posting node status.",
                "lastTransitionTime": CREATED}
    if any(f.get("node") == node["name"] for f in _faults(state, "cni_config_missing")):
        return {"type": "Ready", "status": "False", "reason": "KubeletNotReady",
                "message": "container runtime network not ready: NetworkReady=false "
                           "reason:NetworkPluginNotReady message:Network plugin returns error: "
                           "cni plugin not initialized",
                "lastTransitionTime": CREATED}
    return {"type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "kubelet is posting ready status", "lastTransitionTime": CREATED}


# node_network_unavailable's ways, as the component that writes each sets the condition
NETWORK_DOWN = {
    "route": ("NoRouteCreated", "RouteController failed to create a route"),
    "cni": ("CalicoIsDown", "Calico is shutting down on this node"),
}


def _network_unavailable(state: dict, node: dict) -> list[Obj]:
    """The NetworkUnavailable condition, where the lab writes it. calico-node clears it once it
    runs on the node; the lab has no calico-node, so it writes that here (flanneld writes its
    own, FlannelIsUp, when it starts). Under node_network_unavailable: True, with the reason
    the cloud's route controller (via=route) or calico-node going down (via=cni) gives."""
    for fault in _faults(state, "node_network_unavailable"):
        if fault.get("node") == node["name"]:
            via = str((fault.get("params") or {}).get("via") or "route")
            reason, message = NETWORK_DOWN.get(via, NETWORK_DOWN["route"])
            return [{"type": "NetworkUnavailable", "status": "True", "reason": reason,
                     "message": message, "lastTransitionTime": CREATED}]
    if _cni(state).startswith("flannel"):
        return []
    return [{"type": "NetworkUnavailable", "status": "False", "reason": "CalicoIsUp",
             "lastTransitionTime": CREATED}]


def node_object(state: dict, node: dict) -> Obj:
    labels = {
        "kubernetes.io/hostname": node["name"],
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
    }
    if node.get("zone"):
        labels["topology.kubernetes.io/zone"] = str(node["zone"])
    if node.get("index") == 1:
        labels["node-role.kubernetes.io/control-plane"] = ""
    # What kubeadm and the kubelet put on every Node (flanneld assumes a Node has some: it
    # panics on one with none). flannel's own (backend-type, backend-data, public-ip) are
    # written by the real flanneld (flannel.py).
    annotations = {
        "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///var/run/containerd/containerd.sock",
        "node.alpha.kubernetes.io/ttl": "0",
        "volumes.kubernetes.io/controller-managed-attach-detach": "true",
    }
    addresses = [{"type": "Hostname", "address": node["name"]}]
    if node.get("address"):
        addresses.insert(0, {"type": "InternalIP", "address": str(node["address"])})
    spec: Obj = {}
    if node.get("pod_cidr"):
        spec = {"podCIDR": node["pod_cidr"], "podCIDRs": [node["pod_cidr"]]}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": _meta(node["name"], labels=labels, annotations=annotations),
        "spec": spec,
        "status": {
            "addresses": addresses,
            "conditions": [*_network_unavailable(state, node), _ready(state, node)],
            "nodeInfo": {
                # lab nodes are namespaces of this machine, so they all run its kernel
                "kernelVersion": os.uname().release,
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "osImage": "kubenetdiag lab",
                "containerRuntimeVersion": "containerd://1.7.20",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "bootID": _uid("boot", node["name"]),
                "machineID": _uid("machine", node["name"]).replace("-", ""),
                "systemUUID": _uid("system", node["name"]),
            },
            # What the kubelet reports; the EndpointSlice controller weighs zones by
            # allocatable CPU for topology hints and gives none without it.
            "capacity": NODE_RESOURCES,
            "allocatable": NODE_RESOURCES,
        },
    }


# ---------------------------------------------------------------- pods and daemonsets


def _container_status(name: str, image: str, ready: bool, restarts: int) -> Obj:
    state: Obj
    if ready or not restarts:  # not ready but never restarted: failing its readiness probe
        state = {"running": {"startedAt": CREATED}}
    else:
        state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off 5m0s restarting failed container={name}",
            }
        }
    return {
        "name": name,
        "image": image,
        "imageID": f"{image.split(':')[0]}@sha256:{hashlib.sha256(image.encode()).hexdigest()}",
        "containerID": f"containerd://{hashlib.sha256(name.encode()).hexdigest()}",
        "ready": ready,
        "started": "running" in state,
        "restartCount": restarts,
        "state": state,
    }


def _pod(
    name: str,
    namespace: str,
    node: dict,
    ip: str | None,
    labels: dict[str, str],
    container: str,
    image: str,
    *,
    ready: bool = True,
    restarts: int = 0,
    owner: tuple[str, str] | None = None,
    host_network: bool = False,
    ports: list[Obj] | None = None,
) -> Obj:
    meta = _meta(name, namespace, labels=labels)
    if owner:
        meta["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1], "controller": True,
             "uid": _uid(namespace, owner[1])}
        ]
    cond = "True" if ready else "False"
    status: Obj = {
        "phase": "Running",
        "hostIP": node.get("address"),
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": cond},
            {"type": "Ready", "status": cond},
        ],
        "containerStatuses": [_container_status(container, image, ready, restarts)],
        "startTime": CREATED,
    }
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "nodeName": node["name"],
            "hostNetwork": host_network,
            "containers": [{"name": container, "image": image,
                            **({"ports": ports} if ports else {})}],
        },
        "status": status,
    }


def _cni_parts(state: dict) -> tuple[str, str, str, str, dict[str, str]]:
    """(daemonset, namespace, container, image, labels) of the CNI agent."""
    if _cni(state) == "calico-bgp":
        return "calico-node", "kube-system", "calico-node", "docker.io/calico/node:v3.28.1", {
            "k8s-app": "calico-node"
        }
    return "kube-flannel-ds", FLANNEL_NAMESPACE, "kube-flannel", (
        "docker.io/flannel/flannel:v0.25.6"
    ), {"app": "flannel", "k8s-app": "flannel"}


def system_pods(state: dict) -> list[Obj]:
    """The per-node DaemonSet pods (CNI agent and kube-proxy), which run in the host network."""
    ds, ns, container, image, labels = _cni_parts(state)
    # a killed agent crash-loops; a hung one (via=hang) is not killed: it is only not Ready
    # when its readiness probe fails, which the lab found out and says in cni_pod_ready
    crashed = {f.get("node") for f in _faults(state, "cni_pod_not_running")
               if (f.get("params") or {}).get("via", "kill") == "kill"}
    failing = crashed | {n["name"] for n in _nodes(state) if n.get("cni_pod_ready") is False}
    # a stopped kube-proxy is a container the kubelet sees exit and restart, over and over;
    # a hung one (via=hang) is not seen at all: kube-proxy's DaemonSet has no probe
    proxy_down = {f.get("node") for f in _faults(state, "kube_proxy_rules_missing")
                  if (f.get("params") or {}).get("via", "kill") == "kill"}
    pods = []
    for node in _nodes(state):
        bad = node["name"] in failing
        proxy_bad = node["name"] in proxy_down
        pods.append(
            _pod(
                f"{ds}-{_suffix(ds, node['name'])}", ns, node, node.get("address"), labels,
                container, image, ready=not bad,
                restarts=CNI_RESTARTS_WHEN_FAILING if node["name"] in crashed else 0,
                owner=("DaemonSet", ds), host_network=True,
            )
        )
        pods.append(
            _pod(
                f"kube-proxy-{_suffix('kube-proxy', node['name'])}", "kube-system", node,
                node.get("address"), {"k8s-app": "kube-proxy"}, "kube-proxy",
                f"registry.k8s.io/kube-proxy:{KUBELET_VERSION}", ready=not proxy_bad,
                restarts=CNI_RESTARTS_WHEN_FAILING if proxy_bad else 0,
                owner=("DaemonSet", "kube-proxy"), host_network=True,
            )
        )
        if _kube_router(state):
            pods.append(
                _pod(
                    f"kube-router-{_suffix('kube-router', node['name'])}", "kube-system", node,
                    node.get("address"), {"k8s-app": "kube-router"}, "kube-router",
                    KUBE_ROUTER_IMAGE, owner=("DaemonSet", "kube-router"), host_network=True,
                )
            )
    return pods


def _kube_router(state: dict) -> bool:
    """The lab runs kube-router's NetworkPolicy controller (`lab up --network-policy
    kube-router`)."""
    return state.get("network_policy") == "kube-router"


def workload_pods(state: dict) -> list[Obj]:
    """The lab's own pods (CoreDNS and applications), as lab.json lists them, with the Ready
    condition and restart count the kubelet would report (lab.json's ``ready``, ``restarts``)."""
    nodes = {n["name"]: n for n in _nodes(state)}
    dns = state.get("coredns") if isinstance(state.get("coredns"), dict) else {}
    pods = []
    for p in state.get("pods") or []:
        if not isinstance(p, dict) or not p.get("name"):
            continue
        node = nodes.get(str(p.get("node")), {"name": str(p.get("node") or ""), "address": None})
        app = str(p.get("app") or p["name"])
        ns = str(p.get("namespace") or ("kube-system" if app == "coredns" else "default"))
        if app == "coredns":
            labels = {"k8s-app": "kube-dns"}
            version = str(dns.get("version") or "v1.11.1")
            container, image, owner = "coredns", f"registry.k8s.io/coredns/coredns:{version}", (
                "ReplicaSet", "coredns-7db6d8ff4d"
            )
        else:
            labels = {"app": app}
            container, image, owner = app, "registry.k8s.io/e2e-test-images/agnhost:2.52", None
        pods.append(
            _pod(str(p["name"]), ns, node, p.get("ip"), labels, container, image, owner=owner,
                 ready=p.get("ready") is not False, restarts=int(p.get("restarts") or 0),
                 ports=[port for port in p.get("ports") or [] if isinstance(port, dict)])
        )
    return pods


def daemonsets(state: dict, pods: list[Obj]) -> list[Obj]:
    """DaemonSets with a status computed from their pods, as the controller would."""
    ds_name, ns, container, image, labels = _cni_parts(state)
    out = []
    sets: list[tuple[str, str, dict[str, str], str, str]] = [
        (ds_name, ns, labels, container, image),
        ("kube-proxy", "kube-system", {"k8s-app": "kube-proxy"}, "kube-proxy",
         f"registry.k8s.io/kube-proxy:{KUBELET_VERSION}"),
    ]
    if _kube_router(state):
        sets.append(("kube-router", "kube-system", {"k8s-app": "kube-router"}, "kube-router",
                     KUBE_ROUTER_IMAGE))
    for name, namespace, lbl, cname, img in sets:
        mine = [
            p for p in pods
            if any(o.get("name") == name for o in p["metadata"].get("ownerReferences", []))
        ]
        ready = sum(1 for p in mine if p["status"]["containerStatuses"][0]["ready"])
        spec_container: Obj = {"name": cname, "image": img}
        if name == "kube-router":
            spec_container["args"] = list(KUBE_ROUTER_ARGS)
        out.append({
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": _meta(name, namespace, labels=lbl),
            "spec": {
                "selector": {"matchLabels": lbl},
                "template": {
                    "metadata": {"labels": lbl},
                    "spec": {"hostNetwork": True, "containers": [spec_container]},
                },
            },
            "status": {
                "desiredNumberScheduled": len(mine),
                "currentNumberScheduled": len(mine),
                "updatedNumberScheduled": len(mine),
                "numberReady": ready,
                "numberAvailable": ready,
                "numberUnavailable": len(mine) - ready,
                "numberMisscheduled": 0,
                "observedGeneration": 1,
            },
        })
    return out


# ---------------------------------------------------------------- config maps


def _flannel_backend(state: dict) -> str:
    return "host-gw" if _cni(state) == "flannel-host-gw" else "vxlan"


def flannel_net_conf(pod_network: str, backend: str, port: int | None = None,
                     vni: int | None = None) -> Obj:
    """net-conf.json as kube-flannel.yml ships it: no Port or VNI, so the kernel's VXLAN port
    (8472) and VNI 1. The lab's flanneld reads this same text (flannel.py); `port` and `vni`
    are for a node given others."""
    conf_backend: Obj = {"Type": backend}
    if port is not None:
        conf_backend["Port"] = port
    if vni is not None:
        conf_backend["VNI"] = vni
    return {"Network": pod_network, "EnableNFTables": False, "Backend": conf_backend}


def flannel_cni_conf(default_gateway: bool = True) -> str:
    """kube-flannel.yml's cni-conf.json, which its install-cni container copies to each node's
    /etc/cni/net.d/10-flannel.conflist: the network cbr0, the flannel plugin (delegating to
    the bridge plugin) and portmap. Without `default_gateway`, the delegate lacks
    isDefaultGateway, as in hand-written or old copies: the bridge plugin then gives a pod no
    default route, only flannel's route for the pod network."""
    delegate = {"hairpinMode": True, **({"isDefaultGateway": True} if default_gateway else {})}
    conf = {
        "name": "cbr0",
        "cniVersion": "0.3.1",
        "plugins": [
            {"type": "flannel", "delegate": delegate},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(conf, indent=2) + "\n"


def pod_uid(namespace: str, name: str) -> str:
    """The uid of the pod's object (metadata.uid), which the kubelet passes to CNI plugins."""
    return _uid(namespace, name)


def configmaps(state: dict) -> list[Obj]:
    out = []
    pod_network = str(state.get("pod_network") or "10.244.0.0/16")
    if _cni(state).startswith("flannel"):
        net_conf = flannel_net_conf(pod_network, _flannel_backend(state))
        out.append({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta("kube-flannel-cfg", FLANNEL_NAMESPACE,
                              labels={"app": "flannel", "tier": "node"}),
            "data": {
                "net-conf.json": json.dumps(net_conf, indent=2) + "\n",
                "cni-conf.json": flannel_cni_conf(),
            },
        })
    mode = str(state.get("kube_proxy_mode") or "iptables")
    config_conf = (
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\n"
        "kind: KubeProxyConfiguration\n"
        "bindAddress: 0.0.0.0\n"
        f"clusterCIDR: {pod_network}\n"
        "clientConnection:\n"
        "  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf\n"
        f"mode: {mode}\n"
        "iptables:\n"
        "  masqueradeAll: false\n"
        "  syncPeriod: 30s\n"
        "ipvs:\n"
        "  scheduler: \"\"\n"
    )
    out.append({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta("kube-proxy", "kube-system", labels={"app": "kube-proxy"}),
        "data": {"config.conf": config_conf, "kubeconfig.conf": "# in-cluster credentials\n"},
    })
    out.append({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta("coredns", "kube-system"),
        "data": {"Corefile": corefile(state)},
    })
    return out


STUB_ZONE = "corp.example"  # the site's own zone (its middleware's name is under it)


def corefile(state: dict) -> str:
    """The Corefile of the `coredns` ConfigMap, which is also, byte for byte, the file the lab's
    CoreDNS runs (coredns.py writes this text). CoreDNS's upstream manifest, with two lab
    changes lab.json's ``coredns`` entry asks for: ``kubeconfig`` (the pod has no service
    account token mounted, so the kubernetes plugin is given CoreDNS's own credentials) and
    the ``upstream`` resolver to forward to (the site's DNS in the outside namespace, instead of
    the machine's /etc/resolv.conf: no lab query may leave the lab)."""
    domain = cluster_domain(state)
    dns = state.get("coredns") if isinstance(state.get("coredns"), dict) else {}
    kubeconfig = f"       kubeconfig {dns['kubeconfig']}\n" if dns.get("kubeconfig") else ""
    upstream = dns.get("upstream") or "/etc/resolv.conf"
    # coredns_upstream_unreachable via=config: the ConfigMap edited to forward to a resolver
    # that was retired (RETIRED_RESOLVER: nothing answers there)
    if any((f.get("params") or {}).get("via") == "config"
           for f in _faults(state, "coredns_upstream_unreachable")):
        upstream = RETIRED_RESOLVER
    # coredns_unreachable via=loop: kubeadm's own forward target, the pod's resolv.conf
    if any((f.get("params") or {}).get("via") == "loop"
           for f in _faults(state, "coredns_unreachable")):
        upstream = "/etc/resolv.conf"
    if _faults(state, "coredns_zone_mismatch"):
        domain = OTHER_ZONE
    # benign_coredns_stub_domain: the site's own zone sent straight to its resolver, as a
    # stub domain (once kube-dns's stubDomains) is written
    stub = ""
    if _faults(state, "benign_coredns_stub_domain") and dns.get("upstream"):
        stub = (f"{STUB_ZONE}:53 {{\n    errors\n    cache 30\n"
                f"    forward . {dns['upstream']}\n}}\n")
    return (
        ".:53 {\n    errors\n    health {\n       lameduck 5s\n    }\n    ready\n"
        f"    kubernetes {domain} in-addr.arpa ip6.arpa {{\n{kubeconfig}"
        "       pods insecure\n       fallthrough in-addr.arpa ip6.arpa\n       ttl 30\n    }\n"
        f"    prometheus :9153\n    forward . {upstream} {{\n       max_concurrent 1000\n"
        "    }\n    cache 30\n    loop\n    reload\n    loadbalance\n}\n" + stub
    )


# ---------------------------------------------------------------- services


def _services(state: dict, pods: list[Obj]) -> list[dict]:
    """lab.json's services, plus the ones every cluster has when the state omits them."""
    services = [s for s in state.get("services") or [] if isinstance(s, dict) and s.get("name")]
    have = {(s.get("namespace") or "default", s["name"]) for s in services}
    try:
        base = ipaddress.ip_network(str(state.get("service_network") or "10.96.0.0/12"))
    except ValueError:
        base = ipaddress.ip_network("10.96.0.0/12")
    nodes = _nodes(state)
    if ("default", "kubernetes") not in have and nodes:
        services.append({
            "name": "kubernetes", "namespace": "default", "cluster_ip": str(base[1]),
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "target_port": 6443}],
        })
    dns_pods = [p["metadata"]["name"] for p in pods
                if p["metadata"].get("labels", {}).get("k8s-app") == "kube-dns"]
    if not any(s.get("app") == "coredns" or s["name"] == "kube-dns" for s in services) and dns_pods:
        services.append({
            "name": "kube-dns", "namespace": "kube-system", "cluster_ip": str(base[10]),
            "app": "coredns",
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "target_port": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "target_port": 53},
                {"name": "metrics", "port": 9153, "protocol": "TCP", "target_port": 9153},
            ],
        })
    return services


def _ports(svc: dict) -> list[dict]:
    return [p for p in svc.get("ports") or [] if isinstance(p, dict)]


def service_object(svc: dict) -> Obj:
    ns = str(svc.get("namespace") or "default")
    is_dns = svc.get("app") == "coredns" or svc["name"] == "kube-dns"
    labels = {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"} if is_dns else {}
    annotations = {"service.kubernetes.io/topology-mode": "Auto"} if svc.get(
        "topology_aware") else {}
    spec: Obj = {
        "type": "ClusterIP",
        "clusterIP": svc.get("cluster_ip"),
        "clusterIPs": [svc["cluster_ip"]] if svc.get("cluster_ip") else [],
        "ports": [
            {
                "name": p.get("name") or "",
                "port": int(p.get("port") or 0),
                "protocol": p.get("protocol") or "TCP",
                "targetPort": p.get("target_port") or p.get("port"),
            }
            for p in _ports(svc)
        ],
        "sessionAffinity": "None",
    }
    node_ports = {str(p.get("name") or ""): p["node_port"] for p in _ports(svc)
                  if isinstance(p.get("node_port"), int)}
    if node_ports:
        spec["type"] = "NodePort"
        for port in spec["ports"]:
            if port["name"] in node_ports:
                port["nodePort"] = node_ports[port["name"]]
        spec["externalTrafficPolicy"] = str(svc.get("external_traffic_policy") or "Cluster")
    if isinstance(svc.get("selector"), dict) and svc["selector"]:
        # one a fault replaced (service_no_endpoints via=selector)
        spec["selector"] = {str(k): str(v) for k, v in svc["selector"].items()}
    elif svc.get("app") and svc["name"] != "kubernetes":
        spec["selector"] = {"k8s-app": "kube-dns"} if is_dns else {"app": str(svc["app"])}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(svc["name"], ns, labels=labels, annotations=annotations),
        "spec": spec,
    }


# Whose hand a Service's own EndpointSlice says wrote it, where no controller manages it
SLICE_BY_HAND = "cluster-admins"


def external_slices(state: dict) -> list[Obj]:
    """An EndpointSlice per Service of lab.json that lists `external` addresses (it has no
    selector, so no controller writes one), as an operator writes it beside the Service."""
    out = []
    for svc in state.get("services") or []:
        if not isinstance(svc, dict) or not svc.get("external"):
            continue
        name, ns = str(svc["name"]), str(svc.get("namespace") or "default")
        out.append({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": _meta(f"{name}-1", ns, labels={
                "kubernetes.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": SLICE_BY_HAND}),
            "addressType": "IPv4",
            "endpoints": [{"addresses": [str(ip)], "conditions": {"ready": True}}
                          for ip in svc["external"]],
            "ports": [{"name": p.get("name") or "", "protocol": p.get("protocol") or "TCP",
                       "port": int(p.get("target_port") or p.get("port") or 0)}
                      for p in _ports(svc)],
        })
    return out


# ---------------------------------------------------------------- policies and calico


def network_policies(state: dict) -> list[Obj]:
    """lab.json's ``network_policies`` ({name, namespace, default_deny} or {name, namespace,
    spec}: a fault's own policy, its spec as given), optional."""
    out = []
    for p in state.get("network_policies") or []:
        if not isinstance(p, dict) or not p.get("name"):
            continue
        spec: Obj = {"podSelector": {}, "policyTypes": ["Ingress"]}
        if isinstance(p.get("spec"), dict):
            spec = json.loads(json.dumps(p["spec"]))
        elif not p.get("default_deny"):
            spec["podSelector"] = {"matchLabels": {"app": str(p.get("app") or "web")}}
            spec["ingress"] = [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]
        out.append({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _meta(str(p["name"]), str(p.get("namespace") or "default")),
            "spec": spec,
        })
    return out


def ippools(state: dict) -> list[Obj]:
    if _cni(state) != "calico-bgp":
        return []
    return [{
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "IPPool",
        "metadata": _meta("default-ipv4-ippool"),
        "spec": {
            "cidr": str(state.get("pod_network") or "10.244.0.0/16"),
            "blockSize": 24,
            "ipipMode": "Never",
            "vxlanMode": "Never",
            "natOutgoing": True,
            "nodeSelector": "all()",
        },
    }]


# ---------------------------------------------------------------- everything


def build(state: dict) -> dict[str, list[Obj]]:
    """Every object of the lab, keyed by resource (the plural the API uses in paths)."""
    sys_pods = system_pods(state)
    pods = sys_pods + workload_pods(state)
    services = _services(state, pods)
    return {
        "nodes": [node_object(state, n) for n in _nodes(state)],
        "pods": pods,
        "daemonsets": daemonsets(state, sys_pods),
        "configmaps": configmaps(state),
        "services": [service_object(s) for s in services],
        "endpointslices": external_slices(state),
        "networkpolicies": network_policies(state),
        "ippools": ippools(state),
    }
