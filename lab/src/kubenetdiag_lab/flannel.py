"""The real flanneld (`--ip-masq --kube-subnet-mgr`, as kube-flannel.yml runs it) in every node
of a flannel-vxlan or flannel-host-gw lab.

flanneld runs inside the node's own network, mount and PID namespaces (nsenter into the node's
init, like kube-proxy and sshd), as user `system:serviceaccount:kube-flannel:flannel` with the
rights of upstream's ClusterRole (controlplane.component_rbac_manifest). From the Node's
spec.podCIDR (written by apisync) it does all of its own work, as on a real node:

- writes /run/flannel/subnet.env (the node's /run is its own);
- annotates its Node (flannel.alpha.coreos.com/backend-type, backend-data with the VTEP MAC,
  public-ip, kube-subnet-manager) and clears its NetworkUnavailable condition;
- vxlan: creates flannel.1 (VNI 1, the kernel's default UDP port 8472, MTU = eth0's - 50) and
  for every peer's lease the FDB entry, the permanent neighbour and the onlink route;
  host-gw: a route to every peer's pod CIDR via the peer's address, re-added within 10 s
  when deleted (flannel's route check);
- iptables: FLANNEL-POSTRTG (masquerade, --ip-masq) and FLANNEL-FWD (FORWARD accepts),
  checked again every 5 s.

Its net-conf.json is the kube-flannel-cfg ConfigMap's, from the same function
(k8s_objects.flannel_net_conf), kept under the node's files as the pod's mounted ConfigMap
would be. A node can be given another one (vxlan_port_mismatch) and flanneld restarted, which
is how a node ends up with a different port on a real cluster: the ConfigMap it started with.

Logs: `<workdir>/logs/flanneld-<node>.log`.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kubenetdiag_lab import components, k8s_objects, nodehost
from kubenetdiag_lab.errors import LabError
from kubenetdiag_lab.netns import cmdline
from kubenetdiag_lab.paths import LabPaths
from kubenetdiag_lab.pki import write_private
from kubenetdiag_lab.runner import NodeRunner
from kubenetdiag_lab.topology import LabNode, Topology

BINARY = "flanneld"
ARGV0 = "/opt/bin/flanneld"  # the path kube-flannel.yml's container runs
VXLAN_DEV = "flannel.1"
VXLAN_PORT = 8472  # the kernel's default VXLAN port, which flannel uses when none is set
VXLAN_VNI = 1  # flannel's default network number (Backend.VNI)
START_TIMEOUT = 60.0


def config_dir(paths: LabPaths, node: str) -> Path:
    return paths.node_files(node).dir / "flannel"


def log_path(paths: LabPaths, node: str) -> Path:
    return paths.logs / f"flanneld-{node}.log"


def backend(cni: str) -> str:
    return "host-gw" if cni == "flannel-host-gw" else "vxlan"


def write_config(topology: Topology, paths: LabPaths, node: LabNode, kubeconfig: Path) -> None:
    """The node's net-conf.json (the cluster's) and the kubeconfig its flanneld uses."""
    config_dir(paths, node.name).mkdir(parents=True, exist_ok=True)
    _write_net_conf(topology, paths, node, None, None)
    write_private(config_dir(paths, node.name) / "kubeconfig", kubeconfig.read_bytes())


def _write_net_conf(topology: Topology, paths: LabPaths, node: LabNode, port: int | None,
                    vni: int | None) -> None:
    conf = k8s_objects.flannel_net_conf(topology.pod_network, backend(topology.cni), port, vni)
    (config_dir(paths, node.name) / "net-conf.json").write_text(json.dumps(conf, indent=2) + "\n")


def set_port(topology: Topology, paths: LabPaths, node: LabNode, port: int | None) -> None:
    """Give the node's flanneld a net-conf.json with another VXLAN port (None: the
    cluster's), its VNI as it was; it takes effect when flanneld restarts."""
    _write_net_conf(topology, paths, node, port, configured_vni(paths, node))


def set_vni(topology: Topology, paths: LabPaths, node: LabNode, vni: int | None) -> None:
    """The same for the VXLAN network number (Backend.VNI; None: the cluster's). flanneld
    names its device after it: flannel.<VNI>."""
    _write_net_conf(topology, paths, node, configured_port(paths, node), vni)


def _backend_value(paths: LabPaths, node: LabNode, key: str) -> int | None:
    try:
        conf = json.loads((config_dir(paths, node.name) / "net-conf.json").read_text())
    except (OSError, ValueError):
        return None
    value = (conf.get("Backend") or {}).get(key)
    return int(value) if value else None


def configured_port(paths: LabPaths, node: LabNode) -> int | None:
    """The VXLAN port the node's net-conf.json sets (None: none set, the cluster's)."""
    return _backend_value(paths, node, "Port")


def configured_vni(paths: LabPaths, node: LabNode) -> int | None:
    """The VNI the node's net-conf.json sets (None: none set, the cluster's)."""
    return _backend_value(paths, node, "VNI")


def device(paths: LabPaths, node: LabNode) -> str:
    """The VXLAN device the node's flanneld uses: flannel.<VNI>, flannel.1 by default."""
    return f"flannel.{configured_vni(paths, node) or VXLAN_VNI}"


def pids(node: LabNode) -> list[int]:
    return nodehost.procs_in(node.netns, BINARY)


def start(paths: LabPaths, node: LabNode, runner: NodeRunner, ip_masq: bool = True,
          iface: str = "eth0") -> float:
    """Start the node's flanneld (detached, inside the node) unless it runs already; return
    the time from which its work counts (wait_programmed's `since`). `ip_masq=False` leaves
    out --ip-masq, as a node set up by hand or by an older install script may run it;
    `iface` is the interface whose address it takes for the tunnel (--iface)."""
    started = time.time()
    if pids(node):
        return 0.0
    directory = config_dir(paths, node.name)
    if not (directory / "net-conf.json").exists():
        raise LabError(f"{node.name}: no flannel config in {directory}")
    argv = [str(components.path_of(BINARY)), *(["--ip-masq"] if ip_masq else []),
            "--kube-subnet-mgr",
            f"--kubeconfig-file={directory / 'kubeconfig'}",
            f"--net-config-path={directory / 'net-conf.json'}",
            f"--iface={iface}", "--healthz-port=0"]
    log = shlex.quote(str(log_path(paths, node.name)))
    # NODE_NAME is what the DaemonSet sets from spec.nodeName: the Node whose podCIDR it takes
    runner.shell(f"(export NODE_NAME={shlex.quote(node.name)}; "
                 f"exec -a {shlex.quote(ARGV0)} {shlex.join(argv)}) </dev/null >>{log} 2>&1 &")
    nodehost.wait_started(node.netns, BINARY)
    return started


def stop(node: LabNode) -> None:
    nodehost.kill(pids(node))


def iface(node: LabNode) -> str | None:
    """The --iface the node's running flanneld was started with."""
    for pid in pids(node):
        for word in cmdline(pid).split():
            if word.startswith("--iface="):
                return word.split("=", 1)[1]
    return None


def masquerades(node: LabNode) -> bool:
    """Whether the node's running flanneld was started with --ip-masq."""
    return any("--ip-masq" in cmdline(pid).split() for pid in pids(node))


def _routes(runner: NodeRunner) -> list[dict[str, Any]]:
    out = runner.run(["ip", "-j", "route", "show"], check=False).stdout
    try:
        return json.loads(out or "[]")
    except ValueError:
        return []


def programmed(topology: Topology, paths: LabPaths, node: LabNode, runner: NodeRunner,
               since: float = 0.0) -> bool:
    """flanneld on `node` has written subnet.env (at or after `since`, a time.time()) and
    there is a route to every peer's pod CIDR."""
    # the node's /run is this directory, bind-mounted (nodehost.py)
    path = paths.node_files(node.name).subnet_env
    try:
        # a restarted flanneld rewrites the file once its device and rules are set up; the
        # one a previous flanneld left says nothing about the new one
        if path.stat().st_mtime < since:
            return False
        env = path.read_text()
    except OSError:
        return False
    if f"FLANNEL_SUBNET={node.pod_gateway}/" not in env:
        return False
    peers = topology.peers(node)
    dev = device(paths, node) if topology.cni == "flannel-vxlan" else "eth0"
    have = {r.get("dst") for r in _routes(runner) if r.get("dev") == dev}
    return {peer.pod_cidr for peer in peers} <= have


def wait_programmed(topology: Topology, paths: LabPaths, nodes: Sequence[LabNode],
                    runner_of: Callable[[LabNode], NodeRunner], since: float,
                    timeout: float = START_TIMEOUT) -> None:
    """Wait until every node's flanneld has written subnet.env and its routes to every peer
    (a peer whose flanneld is stopped keeps its lease, so its route is made all the same)."""
    nodehost.wait_nodes(BINARY, "program the pod network", nodes,
                        lambda node: programmed(topology, paths, node, runner_of(node), since),
                        lambda name: log_path(paths, name), timeout)


def restart(topology: Topology, paths: LabPaths, node: LabNode, runner: NodeRunner, *,
            recreate_device: bool = False, ip_masq: bool = True, iface: str = "eth0",
            delete: Sequence[str] = ()) -> None:
    """Restart the node's flanneld, as deleting its pod would, and wait until it has
    programmed its peers again. recreate_device: delete flannel.1 first; flanneld keeps an
    existing device whose port it cannot compare (none configured), so going back to the
    default port takes this, as it takes an SRE `ip link del flannel.1` on a real node.
    delete: other devices to delete while it is stopped (one it made on another VNI).
    ip_masq, iface: its flags, as start() takes them."""
    stop(node)
    if topology.cni == "flannel-vxlan":
        for dev in [*delete, *([VXLAN_DEV] if recreate_device else [])]:
            runner.run(["ip", "link", "del", dev], check=False)
    since = start(paths, node, runner, ip_masq=ip_masq, iface=iface)
    wait_programmed(topology, paths, [node], lambda _node: runner, since)


def _vxlan_info(runner: NodeRunner, dev: str = VXLAN_DEV) -> Mapping[str, Any]:
    """The VXLAN attributes of the node's flannel.1 (`ip -d`'s info_data), empty without one."""
    out = runner.run(["ip", "-j", "-d", "link", "show", dev], check=False).stdout
    try:
        return json.loads(out)[0]["linkinfo"]["info_data"]
    except (ValueError, LookupError, TypeError):
        return {}


def vxlan_port(runner: NodeRunner) -> int | None:
    """The UDP port of the node's flannel.1, or None without one."""
    return int(_vxlan_info(runner).get("port", 0)) or None


def vxlan_vni(runner: NodeRunner, dev: str = VXLAN_DEV) -> int | None:
    """The VXLAN network number of the node's flannel.1 (or `dev`), or None without one."""
    return int(_vxlan_info(runner, dev).get("id", 0)) or None
