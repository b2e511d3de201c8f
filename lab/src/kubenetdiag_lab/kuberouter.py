"""kube-router's NetworkPolicy controller, the real binary, as the lab's policy enforcer.

`lab up --network-policy kube-router` runs kube-router (the `kube-router` binary of
lab/components/build.sh) in every node, beside flanneld, with only its firewall part on, as
upstream's kube-router-firewall-daemonset.yaml runs it: `--run-firewall=true
--run-router=false --run-service-proxy=false`. It runs in the node's own network, mount and
PID namespaces (nsenter into the node's init, like kube-proxy), as user
`system:serviceaccount:kube-system:kube-router` with the rights of upstream's ClusterRole
kube-router (controlplane.kube_router_rbac_manifest), `--hostname-override` the node's name
(NODE_NAME set too, as the DaemonSet sets it from spec.nodeName).

What it needs, from its source (v2.1.0, pkg/cmd/kube-router.go, pkg/controllers/netpol):

* informers on services, endpoints, endpointslices, pods, nodes, namespaces and
  networkpolicies (all started whatever runs, so all must be listable and watchable);
* its Node (by --hostname-override) with an InternalIP: local pods are the pods whose
  status.hostIP is that address;
* `--service-cluster-ip-range` (the lab's 10.96.0.0/12), the `iptables` and `ipset` commands
  (the node's: iptables-nft here), the filter table's FORWARD, INPUT and OUTPUT, where it
  jumps to KUBE-ROUTER-FORWARD / -INPUT / -OUTPUT, and the xt matches physdev, set, mark,
  comment, conntrack, addrtype, limit, multiport and the NFLOG target; the kernel has them all
  (CONFIG_NETFILTER_XT_MATCH_PHYSDEV, CONFIG_IP_SET, CONFIG_NETFILTER_XT_TARGET_NFLOG ...).
* No CNI configuration, bridge name or /var/lib/kube-router file: those are the routing
  controller's (off here). Its health server listens on :20244 (`/healthz`) in the node.

Logs: `<workdir>/logs/kube-router-<node>.log`. `down` needs nothing extra: kube-router dies
with the node's PID namespace, and its chains and ipsets with the node's network namespace.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from pathlib import Path

from kubenetdiag_lab import components, nodehost
from kubenetdiag_lab.errors import LabError
from kubenetdiag_lab.paths import LabPaths
from kubenetdiag_lab.runner import NodeRunner
from kubenetdiag_lab.topology import SERVICE_NETWORK, LabNode

BINARY = "kube-router"
# argv[0] as a node's kube-router container shows it (the image's /usr/local/bin/kube-router)
ARGV0 = "/usr/local/bin/kube-router"
MODE = "kube-router"  # the value of `lab up --network-policy`
MODES = ("none", MODE)
HEALTH_PORT = 20244
START_TIMEOUT = 60.0
SYNC_TIMEOUT = 60.0
# The chains kube-router's controller always keeps once it has synced, and the jumps to them
TOP_CHAINS = ("KUBE-ROUTER-FORWARD", "KUBE-ROUTER-INPUT", "KUBE-ROUTER-OUTPUT")
POLICY_CHAIN_PREFIX = "KUBE-NWPLCY-"
POD_CHAIN_PREFIX = "KUBE-POD-FW-"
# the ipsets kube-router makes for a policy's peers and targets (none without a policy)
IPSET_PREFIXES = ("KUBE-SRC-", "KUBE-DST-")


def log_path(paths: LabPaths, node: str) -> Path:
    return paths.logs / f"kube-router-{node}.log"


def argv(node: LabNode, kubeconfig: Path) -> list[str]:
    return [
        str(components.path_of(BINARY)),
        "--run-firewall=true",
        "--run-router=false",
        "--run-service-proxy=false",
        f"--kubeconfig={kubeconfig}",
        f"--hostname-override={node.name}",
        f"--service-cluster-ip-range={SERVICE_NETWORK}",
        f"--health-port={HEALTH_PORT}",
    ]


def pids(node: LabNode) -> list[int]:
    return nodehost.procs_in(node.netns, BINARY)


def start(paths: LabPaths, node: LabNode, runner: NodeRunner, kubeconfig: Path) -> None:
    """Start the node's kube-router (detached, inside the node) unless it runs already."""
    if pids(node):
        return
    log = log_path(paths, node.name)
    runner.shell(f"(export NODE_NAME={shlex.quote(node.name)}; "
                 f"exec -a {shlex.quote(ARGV0)} {shlex.join(argv(node, kubeconfig))}) "
                 f"</dev/null >>{shlex.quote(str(log))} 2>&1 &")
    nodehost.wait_started(node.netns, BINARY)


def stop(node: LabNode) -> None:
    nodehost.kill(pids(node))


def filter_rules(runner: NodeRunner) -> list[str]:
    """The node's filter table as iptables-save prints it (no counters)."""
    return runner.run(["iptables-save", "-t", "filter"], check=False).stdout.splitlines()


def ipsets(runner: NodeRunner) -> list[str]:
    """The names of the node's ipsets (kube-router's are KUBE-SRC-*, KUBE-DST-*, ...)."""
    out = runner.run(["ipset", "list", "-n"], check=False).stdout
    return sorted(line for line in out.splitlines() if line)


def programmed(rules: Sequence[str]) -> bool:
    """kube-router's controller has done a full sync: FORWARD, INPUT and OUTPUT jump to its
    chains."""
    return all(any(line.startswith(f"-A {builtin} ") and f"-j {chain}" in line
                   for line in rules)
               for builtin, chain in zip(("FORWARD", "INPUT", "OUTPUT"), TOP_CHAINS, strict=True))


def policy_lines(rules: Sequence[str], namespace: str, name: str) -> list[str]:
    """The rules kube-router wrote for one NetworkPolicy: the jump from a selected pod's
    KUBE-POD-FW-* chain ("run through nw policy <name>"), and its KUBE-NWPLCY-* chain's
    rules, commented "... selected by policy name[:] <name> namespace <namespace>"."""
    return [line for line in rules
            if f'run through nw policy {name}"' in line
            or f"policy name {name} namespace {namespace}" in line
            or f"policy name: {name} namespace {namespace}" in line]


def policy_ipsets(runner: NodeRunner) -> list[str]:
    return [name for name in ipsets(runner) if name.startswith(IPSET_PREFIXES)]


def wait_programmed(paths: LabPaths, nodes: Sequence[LabNode],
                    runner_of: Callable[[LabNode], NodeRunner],
                    timeout: float = START_TIMEOUT) -> None:
    nodehost.wait_nodes(BINARY, "program its chains", nodes,
                        lambda node: programmed(filter_rules(runner_of(node))),
                        lambda name: log_path(paths, name), timeout)


def wait_policies(paths: LabPaths, nodes: Sequence[LabNode],
                  runner_of: Callable[[LabNode], NodeRunner],
                  done: Callable[[LabNode, list[str]], bool],
                  timeout: float = SYNC_TIMEOUT) -> None:
    """Wait until done(node, its filter rules) holds on every node."""
    nodehost.wait_nodes(BINARY, "sync the NetworkPolicies", nodes,
                        lambda node: done(node, filter_rules(runner_of(node))),
                        lambda name: log_path(paths, name), timeout)


def refuse_reason(mode: str) -> str | None:
    """Why `lab up --network-policy MODE` cannot run here, or None."""
    if mode not in MODES:
        return f"unknown network policy mode {mode!r}; one of {', '.join(MODES)}"
    if mode == "none":
        return None
    missing = components.missing((BINARY,))
    if missing:
        return missing
    return None


def require(mode: str) -> None:
    reason = refuse_reason(mode)
    if reason:
        raise LabError(reason)
