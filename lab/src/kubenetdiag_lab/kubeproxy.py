"""The real kube-proxy (iptables mode) as a daemon inside each lab node.

kube-proxy runs in the node's own network, mount and PID namespaces (started with nsenter into
the node's init, like sshd and bird), watches the lab's kube-apiserver as user
`system:kube-proxy` (Kubernetes' bootstrap ClusterRoleBinding system:node-proxier gives it
its rights) and programs the node's iptables: KUBE-SERVICES, KUBE-SVC-*, KUBE-SEP-*, ... are
its own, rewritten whenever Services or EndpointSlices change and re-synced by itself.

A network namespace cannot change some host-wide settings, so the configuration leaves them
alone through kube-proxy's own knobs instead of letting it fail: conntrack.maxPerCore 0 (do not
resize nf_conntrack_max), the conntrack TCP timeouts 0 (leave as is), localhost NodePorts off
(it would set route_localnet), oomScoreAdj 0. healthz and metrics listen on the node's
loopback only. Logs: `<workdir>/logs/kube-proxy-<node>.log`.

Stopping the node's init ends its kube-proxy with the whole PID namespace, and `down` kills
every process in a lab namespace, so a crashed run leaves nothing behind.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from kubenetdiag_lab import components, nodehost
from kubenetdiag_lab.errors import LabError
from kubenetdiag_lab.paths import LabPaths
from kubenetdiag_lab.runner import NodeRunner
from kubenetdiag_lab.topology import LabNode, Service, Topology, cluster_services

BINARY = "kube-proxy"
# argv[0] as a node's kube-proxy container shows it; the executable is the built binary.
ARGV0 = "/usr/local/bin/kube-proxy"
HEALTHZ = "127.0.0.1:10256"
METRICS = "127.0.0.1:10249"
SYNC_TIMEOUT = 60.0


def config_dir(paths: LabPaths, node: str) -> Path:
    return paths.node_files(node).dir / "kube-proxy"


def log_path(paths: LabPaths, node: str) -> Path:
    return paths.logs / f"kube-proxy-{node}.log"


def config(topology: Topology, node: LabNode, kubeconfig: Path) -> dict:
    """KubeProxyConfiguration for one node (what `--config` reads)."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": node.name,
        "clusterCIDR": topology.pod_network,
        "detectLocalMode": "ClusterCIDR",
        "bindAddress": node.address,
        "healthzBindAddress": HEALTHZ,
        "metricsBindAddress": METRICS,
        "oomScoreAdj": 0,
        # host-wide or read-only in a network namespace: leave them as they are
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s", "tcpBeLiberal": False,
                      "udpTimeout": "0s", "udpStreamTimeout": "0s"},
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False, "masqueradeBit": 14,
                     "minSyncPeriod": "1s", "syncPeriod": "30s"},
    }


def write_config(topology: Topology, paths: LabPaths, node: LabNode, kubeconfig: Path) -> Path:
    directory = config_dir(paths, node.name)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config(topology, node, kubeconfig), sort_keys=False))
    return path


def pids(node: LabNode) -> list[int]:
    """kube-proxy processes running in the node."""
    return nodehost.procs_in(node.netns, BINARY)


def start(paths: LabPaths, node: LabNode, runner: NodeRunner) -> None:
    """Start the node's kube-proxy (detached, inside the node) unless it runs already.
    The config must have been written (write_config)."""
    if pids(node):
        return
    binary = components.path_of(BINARY)
    cfg = config_dir(paths, node.name) / "config.yaml"
    if not cfg.exists():
        raise LabError(f"{node.name}: no kube-proxy config at {cfg}")
    log = log_path(paths, node.name)
    argv = [str(binary), f"--config={cfg}"]
    runner.shell(f"(exec -a {shlex.quote(ARGV0)} {shlex.join(argv)}) </dev/null "
                 f">>{shlex.quote(str(log))} 2>&1 &")
    nodehost.wait_started(node.netns, BINARY)


def stop(node: LabNode) -> None:
    nodehost.kill(pids(node))


def expected_comments(services: Sequence[Service]) -> list[str]:
    """The rule comments a synced kube-proxy has in KUBE-SERVICES for the lab's Services (as
    ActiveFaults.services gives them under the faults in force): "<ns>/<svc>:<port> cluster
    IP" (nat), or "... has no endpoints" (filter) for one without ready endpoints."""
    out = []
    for svc in services:
        for port in svc.ports:
            spn = f"{svc.namespace}/{svc.name}:{port.name}"
            out.append(f'"{spn} cluster IP"' if svc.endpoints else f'"{spn} has no endpoints"')
    return out


def wait_synced(topology: Topology, paths: LabPaths, nodes: Sequence[LabNode],
                runner_of: Callable[[LabNode], NodeRunner],
                services: Sequence[Service] | None = None,
                timeout: float = SYNC_TIMEOUT) -> None:
    """Wait until every node's kube-proxy has programmed every lab Service (`services`, as
    ActiveFaults.services gives them; default: the healthy ones), those without ready
    endpoints as rejects; raise with the log tail if one exits or the time runs out."""
    comments = expected_comments(cluster_services(topology) if services is None else services)

    def synced(node: LabNode) -> bool:
        saved = runner_of(node).run(["iptables-save"], check=False).stdout
        # KUBE-SERVICES only: a flushed chain leaves the same comments in KUBE-SVC-*
        services = "\n".join(line for line in saved.splitlines()
                             if line.startswith("-A KUBE-SERVICES "))
        return all(comment in services for comment in comments)

    nodehost.wait_nodes(BINARY, "program the lab's Services", nodes, synced,
                        lambda name: log_path(paths, name), timeout)

