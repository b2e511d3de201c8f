"""The pod network between nodes, as each CNI mode programs it.

- flannel-vxlan: a `flannel.1` VXLAN device (VNI 1, UDP 8472, nolearning, MTU 1450) with the
  static entries flanneld writes for every peer: FDB (peer VTEP MAC -> peer underlay IP), ARP
  (peer flannel.1 address -> VTEP MAC) and an onlink route to the peer's pod /24.
- flannel-host-gw: a route to each peer's pod /24 via the peer's underlay address.
- calico-bgp: bird2 on every node, a full iBGP mesh over TCP 179; each node exports its pod /24
  and installs its peers' as `proto bird` routes. Nothing is programmed by the lab directly.

Everything here runs inside lab namespaces (`ip -n`, `bridge -n`, or inside the node's init
through its runner). Functions take the topology, a node, and what they need of the running
lab (a runner, the node's files, the port a fault may have changed), never the Lab itself.
"""

from __future__ import annotations

import json
import time
from ipaddress import IPv4Network
from typing import Protocol

from kubenetdiag_lab import nodehost
from kubenetdiag_lab.netns import LabError, ip_batch, run
from kubenetdiag_lab.nodehost import NodeFiles
from kubenetdiag_lab.runner import NodeCommandRunner
from kubenetdiag_lab.topology import LabNode, Topology

VXLAN_PORT = 8472
VXLAN_VNI = 1
VXLAN_MTU = 1450  # 1500 underlay minus the 50 bytes VXLAN adds, as flanneld computes
BGP_AS = 64512  # calico's default private AS
VXLAN_DEV = "flannel.1"


class CniShaped(Protocol):
    """What restoring a route needs to know of a cluster: a Topology, or a Lab carrying one."""

    @property
    def cni(self) -> str: ...


def pod_mtu(cni: str) -> int:
    return VXLAN_MTU if cni == "flannel-vxlan" else 1500


def vtep_address(node: LabNode) -> str:
    # flanneld gives flannel.1 the network address of the node's pod /24 (10.244.<i>.0/32).
    return str(IPv4Network(node.pod_cidr).network_address)


def vtep_mac(node: LabNode) -> str:
    # Stable per node (flanneld's are random): peers can be programmed without asking.
    return f"0e:6b:6e:64:{node.index >> 8:02x}:{node.index & 0xFF:02x}"


def subnet_env(topology: Topology, node: LabNode) -> str:
    gateway = node.pod_gateway
    prefixlen = IPv4Network(node.pod_cidr).prefixlen
    return (f"FLANNEL_NETWORK={topology.pod_network}\nFLANNEL_SUBNET={gateway}/{prefixlen}\n"
            f"FLANNEL_MTU={pod_mtu(topology.cni)}\nFLANNEL_IPMASQ=true\n")


def vxlan_device_lines(node: LabNode, port: int, mtu: int = VXLAN_MTU) -> list[str]:
    return [
        f"link add {VXLAN_DEV} type vxlan id {VXLAN_VNI} local {node.address} dev eth0 "
        f"dstport {port} nolearning",
        f"link set {VXLAN_DEV} address {vtep_mac(node)} mtu {mtu}",
        f"addr add {vtep_address(node)}/32 dev {VXLAN_DEV}",
        f"link set {VXLAN_DEV} up",
    ]


def device_lines(topology: Topology, node: LabNode, vxlan_port: int = VXLAN_PORT) -> list[str]:
    """ip-batch lines creating the node's CNI devices (after eth0 has its address)."""
    if topology.cni == "flannel-vxlan":
        return vxlan_device_lines(node, vxlan_port)
    return []


def peer_lines(cni: str, peer: LabNode) -> tuple[list[str], list[str]]:
    """(ip-batch lines, bridge-batch lines) that make peer's pods reachable from a node."""
    if cni == "flannel-vxlan":
        vtep = vtep_address(peer)
        return ([f"neigh replace {vtep} lladdr {vtep_mac(peer)} dev {VXLAN_DEV} nud permanent",
                 f"route replace {peer.pod_cidr} via {vtep} dev {VXLAN_DEV} onlink"],
                [f"fdb replace {vtep_mac(peer)} dev {VXLAN_DEV} dst {peer.address} self permanent"])
    if cni == "flannel-host-gw":
        return [f"route replace {peer.pod_cidr} via {peer.address} dev eth0"], []
    return [], []


def _bridge_batch(netns: str, lines: list[str]) -> None:
    run(["bridge", "-n", netns, "-batch", "-"], input="\n".join(lines) + "\n")


def program_peers(topology: Topology, node: LabNode) -> None:
    ip_lines: list[str] = []
    fdb_lines: list[str] = []
    for peer in topology.peers(node):
        peer_ip, peer_fdb = peer_lines(topology.cni, peer)
        ip_lines += peer_ip
        fdb_lines += peer_fdb
    if ip_lines:
        ip_batch(node.netns, ip_lines)
    if fdb_lines:
        _bridge_batch(node.netns, fdb_lines)


def rebuild_vxlan(topology: Topology, node: LabNode, port: int) -> None:
    """Recreate the node's flannel.1 on another UDP port, as a flanneld with a different
    config would; deleting the device drops its FDB, ARP and routes, so they are re-added."""
    # Like flanneld, derive the MTU from the underlay's (which a fault may have lowered).
    link = json.loads(run(["ip", "-n", node.netns, "-j", "link", "show", "eth0"]).stdout)
    mtu = min(VXLAN_MTU, int(link[0]["mtu"]) - 50)
    ip_batch(node.netns, [f"link del {VXLAN_DEV}", *vxlan_device_lines(node, port, mtu)])
    program_peers(topology, node)


def restore_peer_route(cluster: CniShaped, node: LabNode, peer: LabNode) -> None:
    """Put back the node's route (and VXLAN neighbour entries) to the peer's pod CIDR."""
    if cluster.cni == "calico-bgp":
        # bird re-installs it on its next kernel scan; a reload forces that now.
        ip_batch(node.netns, [f"route replace {peer.pod_cidr} via {peer.address} dev eth0 "
                              f"proto bird"])
        return
    ip_lines, fdb_lines = peer_lines(cluster.cni, peer)
    ip_batch(node.netns, ip_lines)
    if fdb_lines:
        _bridge_batch(node.netns, fdb_lines)


# ---- calico-bgp: bird2 -----------------------------------------------------------------------


def bird_config(topology: Topology, node: LabNode, files: NodeFiles) -> str:
    peers = "\n".join(
        f"protocol bgp Mesh_{peer.address.replace('.', '_')} from bgp_template {{\n"
        f"  neighbor {peer.address} as {BGP_AS};\n}}"
        for peer in topology.peers(node))
    # Short timers: a stopped or blocked peer is noticed in seconds, so tests stay fast.
    return f"""# generated by kubenetdiag_lab for {node.name}
log "{files.dir / 'bird.log'}" all;
router id {node.address};

protocol device {{ scan time 10; }}

protocol kernel {{
  ipv4 {{ import none; export where source = RTS_BGP; }};
  scan time 10;
}}

protocol static {{
  ipv4;
  route {node.pod_cidr} blackhole;
}}

template bgp bgp_template {{
  local {node.address} as {BGP_AS};
  direct;
  hold time 9;
  keepalive time 3;
  connect retry time 2;
  error wait time 1, 4;
  ipv4 {{ import all; export where source = RTS_STATIC; next hop self; }};
}}

{peers}
"""


def bird_socket(files: NodeFiles) -> str:
    # Inside the node this is /run/bird/bird.ctl, birdc's default, so a probe needs no -s.
    return str(files.run_dir / "bird" / "bird.ctl")


def start_bird(topology: Topology, node: LabNode, runner: NodeCommandRunner,
               files: NodeFiles) -> None:
    conf = files.dir / "bird.conf"
    conf.write_text(bird_config(topology, node, files))
    # bird daemonizes; its parent exits once the config is loaded, so a bad config fails here.
    runner.shell(f"bird -c {conf} -s /run/bird/bird.ctl "
                 f"-P /run/bird/bird.pid </dev/null >/dev/null 2>&1")


def stop_bird(node: LabNode, runner: NodeCommandRunner) -> None:
    # `birdc down` makes bird withdraw its routes and tell its peers (Cease), as a clean
    # calico-node shutdown does; kill is the fallback for a wedged daemon.
    runner.shell("birdc -s /run/bird/bird.ctl down >/dev/null 2>&1", check=False)
    deadline = time.monotonic() + 5
    while bird_running(node) and time.monotonic() < deadline:
        time.sleep(0.05)
    nodehost.kill(nodehost.procs_in(node.netns, "bird"))


def bird_running(node: LabNode) -> bool:
    return bool(nodehost.procs_in(node.netns, "bird"))


def bgp_routes(node: LabNode) -> set[str]:
    out = run(["ip", "-n", node.netns, "route", "show", "proto", "bird"]).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def wait_converged(topology: Topology, timeout: float = 30.0) -> None:
    """Wait until every node with a running bird has a bird route to every peer's pod /24."""
    deadline = time.monotonic() + timeout
    while True:
        missing = []
        for node in topology.nodes:
            if not bird_running(node):
                continue
            want = {peer.pod_cidr for peer in topology.peers(node) if bird_running(peer)}
            if not want <= bgp_routes(node):
                missing.append(node.name)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise LabError(f"BGP mesh did not converge within {timeout:.0f}s on "
                           f"{', '.join(missing)}")
        time.sleep(0.1)
