"""The pod network between nodes, as each CNI mode programs it.

- flannel-vxlan: a `flannel.1` VXLAN device (VNI 1, UDP 8472, nolearning, MTU 1450) with the
  static entries flanneld writes for every peer: FDB (peer VTEP MAC -> peer underlay IP), ARP
  (peer flannel.1 address -> VTEP MAC) and an onlink route to the peer's pod /24.
- flannel-host-gw: a route to each peer's pod /24 via the peer's underlay address.
- calico-bgp: bird2 on every node, a full iBGP mesh over TCP 179; each node exports its pod /24
  and installs its peers' as `proto bird` routes. Nothing is programmed by the lab directly.

Everything here runs inside lab namespaces (`ip -n`, `bridge -n`, or inside the node's init).
"""

from __future__ import annotations

import json
import time
from ipaddress import IPv4Network
from typing import TYPE_CHECKING

from kubenetdiag_lab import nodehost
from kubenetdiag_lab.netns import LabError, ip_batch, run

if TYPE_CHECKING:
    from kubenetdiag_lab.lab import Lab, LabNode

CNI_MODES = ("flannel-vxlan", "flannel-host-gw", "calico-bgp")
DEFAULT_CNI = "flannel-vxlan"
VXLAN_PORT = 8472
VXLAN_VNI = 1
VXLAN_MTU = 1450  # 1500 underlay minus the 50 bytes VXLAN adds, as flanneld computes
BGP_AS = 64512  # calico's default private AS
VXLAN_DEV = "flannel.1"


def pod_mtu(cni: str) -> int:
    return VXLAN_MTU if cni == "flannel-vxlan" else 1500


def vtep_address(node: LabNode) -> str:
    # flanneld gives flannel.1 the network address of the node's pod /24 (10.244.<i>.0/32).
    return str(IPv4Network(node.pod_cidr).network_address)


def vtep_mac(node: LabNode) -> str:
    # Stable per node (flanneld's are random): peers can be programmed without asking.
    return f"0e:6b:6e:64:{node.index >> 8:02x}:{node.index & 0xFF:02x}"


def subnet_env(lab: Lab, node: LabNode) -> str:
    gw = node.pod_gateway
    plen = IPv4Network(node.pod_cidr).prefixlen
    return (f"FLANNEL_NETWORK={lab.pod_network}\nFLANNEL_SUBNET={gw}/{plen}\n"
            f"FLANNEL_MTU={pod_mtu(lab.cni)}\nFLANNEL_IPMASQ=true\n")


def vxlan_device_lines(node: LabNode, port: int, mtu: int = VXLAN_MTU) -> list[str]:
    return [
        f"link add {VXLAN_DEV} type vxlan id {VXLAN_VNI} local {node.address} dev eth0 "
        f"dstport {port} nolearning",
        f"link set {VXLAN_DEV} address {vtep_mac(node)} mtu {mtu}",
        f"addr add {vtep_address(node)}/32 dev {VXLAN_DEV}",
        f"link set {VXLAN_DEV} up",
    ]


def device_lines(lab: Lab, node: LabNode) -> list[str]:
    """ip-batch lines creating the node's CNI devices (after eth0 has its address)."""
    if lab.cni == "flannel-vxlan":
        return vxlan_device_lines(node, lab.node_vxlan_port(node.name))
    return []


def peer_lines(lab: Lab, node: LabNode, peer: LabNode) -> tuple[list[str], list[str]]:
    """(ip-batch lines, bridge-batch lines) that make peer's pods reachable from node."""
    if lab.cni == "flannel-vxlan":
        vtep = vtep_address(peer)
        return ([f"neigh replace {vtep} lladdr {vtep_mac(peer)} dev {VXLAN_DEV} nud permanent",
                 f"route replace {peer.pod_cidr} via {vtep} dev {VXLAN_DEV} onlink"],
                [f"fdb replace {vtep_mac(peer)} dev {VXLAN_DEV} dst {peer.address} self permanent"])
    if lab.cni == "flannel-host-gw":
        return [f"route replace {peer.pod_cidr} via {peer.address} dev eth0"], []
    return [], []


def program_peers(lab: Lab, node: LabNode) -> None:
    ip_lines: list[str] = []
    fdb_lines: list[str] = []
    for peer in lab.nodes:
        if peer is not node:
            a, b = peer_lines(lab, node, peer)
            ip_lines += a
            fdb_lines += b
    if ip_lines:
        ip_batch(node.netns, ip_lines)
    if fdb_lines:
        run(["bridge", "-n", node.netns, "-batch", "-"], input="\n".join(fdb_lines) + "\n")


def rebuild_vxlan(lab: Lab, node: LabNode, port: int) -> None:
    """Recreate the node's flannel.1 on another UDP port, as a flanneld with a different
    config would; deleting the device drops its FDB, ARP and routes, so they are re-added."""
    # Like flanneld, derive the MTU from the underlay's (which a fault may have lowered).
    link = json.loads(run(["ip", "-n", node.netns, "-j", "link", "show", "eth0"]).stdout)
    mtu = min(VXLAN_MTU, int(link[0]["mtu"]) - 50)
    ip_batch(node.netns, [f"link del {VXLAN_DEV}", *vxlan_device_lines(node, port, mtu)])
    program_peers(lab, node)


def restore_peer_route(lab: Lab, node: LabNode, peer: LabNode) -> None:
    if lab.cni == "calico-bgp":
        # bird re-installs it on its next kernel scan; a reload forces that now.
        ip_batch(node.netns, [f"route replace {peer.pod_cidr} via {peer.address} dev eth0 "
                              f"proto bird"])
        return
    ip_lines, fdb_lines = peer_lines(lab, node, peer)
    ip_batch(node.netns, ip_lines)
    if fdb_lines:
        run(["bridge", "-n", node.netns, "-batch", "-"], input="\n".join(fdb_lines) + "\n")


# ---- calico-bgp: bird2 -----------------------------------------------------------------------


def bird_config(lab: Lab, node: LabNode) -> str:
    files = lab.node_files(node)
    peers = "\n".join(
        f"protocol bgp Mesh_{p.address.replace('.', '_')} from bgp_template {{\n"
        f"  neighbor {p.address} as {BGP_AS};\n}}"
        for p in lab.nodes if p is not node)
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


def bird_socket(lab: Lab, node: LabNode) -> str:
    # Inside the node this is /run/bird/bird.ctl, birdc's default, so a probe needs no -s.
    return str(lab.node_files(node).run_dir / "bird" / "bird.ctl")


def start_bird(lab: Lab, node: LabNode) -> None:
    files = lab.node_files(node)
    conf = files.dir / "bird.conf"
    conf.write_text(bird_config(lab, node))
    # bird daemonizes; its parent exits once the config is loaded, so a bad config fails here.
    nodehost.node_sh(lab.init_pid(node), f"bird -c {conf} -s /run/bird/bird.ctl "
                                          f"-P /run/bird/bird.pid </dev/null >/dev/null 2>&1")


def stop_bird(lab: Lab, node: LabNode) -> None:
    # `birdc down` makes bird withdraw its routes and tell its peers (Cease), as a clean
    # calico-node shutdown does; kill is the fallback for a wedged daemon.
    init = lab.init_pid(node)
    nodehost.node_sh(init, "birdc -s /run/bird/bird.ctl down >/dev/null 2>&1", check=False)
    deadline = time.monotonic() + 5
    while bird_running(lab, node) and time.monotonic() < deadline:
        time.sleep(0.05)
    nodehost.kill(lab.node_procs(node, "bird"))


def bird_running(lab: Lab, node: LabNode) -> bool:
    return bool(lab.node_procs(node, "bird"))


def bgp_routes(lab: Lab, node: LabNode) -> set[str]:
    out = run(["ip", "-n", node.netns, "route", "show", "proto", "bird"]).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def wait_converged(lab: Lab, timeout: float = 30.0) -> None:
    """Wait until every node with a running bird has a bird route to every peer's pod /24."""
    deadline = time.monotonic() + timeout
    while True:
        missing = []
        for node in lab.nodes:
            if not bird_running(lab, node):
                continue
            want = {p.pod_cidr for p in lab.nodes if p is not node and bird_running(lab, p)}
            if not want <= bgp_routes(lab, node):
                missing.append(node.name)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise LabError(f"BGP mesh did not converge within {timeout:.0f}s on "
                           f"{', '.join(missing)}")
        time.sleep(0.1)
