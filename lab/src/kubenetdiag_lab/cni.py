"""The pods' own network, and the pod network between nodes where the lab itself programs it.

- flannel-vxlan and flannel-host-gw: the real flanneld does the network between nodes
  (flannel.py), and the real CNI plugins attach each pod, as a kubelet's container runtime has
  them do through libcni (here cnitool, libcni's command line): the flannel plugin reads
  flanneld's subnet.env and delegates to the bridge plugin (cni0, the pod's veth, hairpin on)
  with host-local IPAM, then portmap. Each node has its own /etc/cni/net.d/10-flannel.conflist
  (kube-flannel-cfg's cni-conf.json) and /var/lib/cni (IPAM leases, libcni's cached results).
  Light nodes have no flanneld: their pods are wired here as the bridge plugin would.
- calico-bgp: the pods' side as Calico's CNI plugin and felix make it (cali* veths, /32
  routes, proxy ARP for 169.254.1.1; felix itself is not served by the module proxy), and
  bird2 on every node, a full iBGP mesh over TCP 179, as calico-node's BIRD: each node's IPAM
  block (its /24) is a blackhole route and its peers' blocks are `proto bird` routes.

Everything here runs inside lab namespaces (`ip -n`, or inside the node's init through its
runner). Functions take the topology, a node, and what they need of the running lab (a runner,
the node's files), never the Lab itself.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path

from kubenetdiag_lab import components, k8s_objects, nodehost
from kubenetdiag_lab.netns import LabError, run
from kubenetdiag_lab.nodehost import NodeFiles
from kubenetdiag_lab.runner import CommandRunner, NodeCommandRunner
from kubenetdiag_lab.topology import SERVICE_NETWORK, LabNode, LabPod, Topology

VXLAN_MTU = 1450  # 1500 underlay minus the 50 bytes VXLAN adds, as flanneld computes it
BGP_AS = 64512  # calico's default private AS
# seconds: a dead peer noticed quickly, and what a heal waits out (wait_converged); BGP's
# smallest hold time is 3, and a third of it between keepalives leaves two to be lost
HOLD_TIME = 6
KEEPALIVE = HOLD_TIME // 3


def pod_mtu(cni: str) -> int:
    return VXLAN_MTU if cni == "flannel-vxlan" else 1500


@dataclass(frozen=True)
class PodWiring:
    """What a CNI plugin sets up for a node's pods: ip-batch lines for the node and for each
    pod's namespace, and sysctl assignments on the node."""

    node: list[str]
    pods: dict[str, list[str]]
    sysctls: list[str]


def calico_veth(pod: LabPod) -> str:
    # Calico names the host side cali + the first 11 hex digits of a hash of the workload
    return "cali" + hashlib.sha1(f"{pod.namespace}.{pod.name}".encode()).hexdigest()[:11]


def pod_wiring(topology: Topology, node: LabNode, pods: Sequence[LabPod]) -> PodWiring:
    if topology.cni == "calico-bgp":
        return _calico_wiring(node, pods)
    if topology.light:
        return _bridge_wiring(topology, node, pods)
    # flannel: the CNI plugins attach the pods once flanneld is up (attach_pods); the runtime
    # brings up a sandbox's loopback itself
    return PodWiring([], {pod.netns: ["link set lo up"] for pod in pods}, [])


CNI_NETWORK = "cbr0"  # the network of kube-flannel's cni-conf.json
CNI_CONFLIST = "10-flannel.conflist"  # the name its install-cni container gives the file


def sandbox_netns(pod: LabPod) -> str:
    """The pod's network namespace as its node shows it (/run/netns/<this>), named as
    containerd names a sandbox's."""
    return f"cni-{pod.name}"


def write_cni_config(files: NodeFiles) -> None:
    """What flannel's install-cni container leaves on a node, before the node's init starts
    (the file lands in the node's own /etc, nodehost.OWN_DIRS)."""
    files.cni_net_d.mkdir(parents=True, exist_ok=True)
    (files.cni_net_d / CNI_CONFLIST).write_text(k8s_objects.flannel_cni_conf())


def cni_args(pod: LabPod) -> str:
    """CNI_ARGS as the kubelet's runtime passes them: the pod's namespace, name, sandbox id
    and uid; IgnoreUnknown=1 so plugins that know none of them accept them."""
    sandbox = hashlib.sha256(f"sandbox/{pod.namespace}/{pod.name}".encode()).hexdigest()
    return ";".join(["IgnoreUnknown=1", f"K8S_POD_NAMESPACE={pod.namespace}",
                     f"K8S_POD_NAME={pod.name}", f"K8S_POD_INFRA_CONTAINER_ID={sandbox}",
                     f"K8S_POD_UID={k8s_objects.pod_uid(pod.namespace, pod.name)}"])


def _cnitool(node: LabNode, runner: NodeCommandRunner, pod: LabPod, command: str,
             args: str = "") -> None:
    env = {"CNI_PATH": components.cni_path(), "NETCONFPATH": "/etc/cni/net.d",
           "CNI_ARGS": cni_args(pod) + args}
    argv = [str(components.path_of("cnitool")), command, CNI_NETWORK,
            f"/run/netns/{sandbox_netns(pod)}"]
    done = runner.shell(" ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
                        + " " + shlex.join(argv), check=False)
    what = f"{node.name}: CNI {command.upper()} of pod {pod.namespace}/{pod.name}"
    if done.returncode != 0:
        raise LabError(f"{what} failed: {(done.stderr or done.stdout).strip()[-2000:]}")
    if command != "add":
        return
    try:
        result = json.loads(done.stdout)
        got = [ip.get("address") for ip in result.get("ips") or []]
    except (ValueError, AttributeError) as exc:
        raise LabError(f"{what}: cnitool printed no result: {done.stdout[-500:]!r}") from exc
    if got != [f"{pod.ip}/{IPv4Network(node.pod_cidr).prefixlen}"]:
        raise LabError(f"{what}: host-local gave {got}, the lab's topology says {pod.ip} "
                       f"(was /var/lib/cni left from another run?)")


def reattach_pod(node: LabNode, runner: NodeCommandRunner, pod: LabPod) -> None:
    """CNI DEL, then ADD again, of a pod whose veth is gone: what a new sandbox for it would
    get, at the address the lab's topology gave it (host-local's IP= argument; a new sandbox
    would take the range's next address)."""
    _cnitool(node, runner, pod, "del")
    _cnitool(node, runner, pod, "add", f";IP={pod.ip}")


def attach_pods(node: LabNode, runner: NodeCommandRunner, pods: Sequence[LabPod]) -> None:
    """CNI ADD of each pod on a flannel node, inside the node (its /etc/cni/net.d, /var/lib/cni
    and /run/flannel/subnet.env); flanneld must have written subnet.env. host-local hands out
    the range's addresses in order, which gives each pod the address its slot was given
    (topology.make_pods): a pod that got another one is an error, not a lab to run."""
    for pod in sorted(pods, key=lambda p: p.slot):
        _cnitool(node, runner, pod, "add")
    # ClusterIPs from the node: see _bridge_wiring (cni0 exists once a pod is attached)
    runner.run(["ip", "route", "replace", str(SERVICE_NETWORK),
                "dev", "cni0" if pods else "eth0"])


def host_veth(topology: Topology, node: CommandRunner, pod: LabPod,
              pod_runner: CommandRunner) -> str:
    """The host side of the pod's veth. The bridge plugin names it veth<8 random hex digits>:
    it is the node's link whose index the pod's eth0 holds as its peer's."""
    if topology.cni == "calico-bgp":
        return calico_veth(pod)
    if topology.light:
        return f"veth-pod{pod.slot}"
    try:
        eth0 = json.loads(pod_runner.run(["ip", "-j", "link", "show", "eth0"]).stdout)[0]
        links = json.loads(node.run(["ip", "-j", "link", "show"]).stdout)
    except (ValueError, IndexError) as exc:
        raise LabError(f"pod {pod.name}: cannot read its eth0 or its node's links") from exc
    for link in links:
        if link.get("ifindex") == eth0.get("link_index"):
            return str(link["ifname"])
    raise LabError(f"pod {pod.name}: the host side of its veth is gone from {pod.node}")


def _bridge_wiring(topology: Topology, node: LabNode, pods: Sequence[LabPod]) -> PodWiring:
    """What the bridge plugin makes, for light nodes (no flanneld, no plugins): cni0 holds the
    gateway, each pod a veth on it with the subnet.env MTU, hairpin on."""
    prefixlen = IPv4Network(node.pod_cidr).prefixlen
    mtu = pod_mtu(topology.cni)
    lines = [
        f"link add cni0 mtu {mtu} type bridge",
        f"addr add {node.pod_gateway}/{prefixlen} dev cni0",
        "link set cni0 up",
        # A real node reaches ClusterIPs from the host (OUTPUT DNAT) via its default route;
        # lab nodes have none, so the service range alone gets a route that stays in the lab.
        f"route add {SERVICE_NETWORK} dev cni0",
    ]
    pod_lines = {}
    for pod in pods:
        lines += [f"link add veth-pod{pod.slot} mtu {mtu} type veth peer name eth0 "
                  f"netns {pod.netns}",
                  f"link set veth-pod{pod.slot} master cni0 up",
                  # kubelet's hairpin-veth: a pod can reach itself through its own VIP
                  f"link set veth-pod{pod.slot} type bridge_slave hairpin on"]
        pod_lines[pod.netns] = ["link set lo up", f"addr add {pod.ip}/{prefixlen} dev eth0",
                                f"link set eth0 mtu {mtu} up",
                                f"route add default via {node.pod_gateway} dev eth0"]
    return PodWiring(lines, pod_lines, [])


def _calico_wiring(node: LabNode, pods: Sequence[LabPod]) -> PodWiring:
    """Calico's CNI plugin and felix: no bridge and no gateway address. Each pod has its /32
    on eth0 and routes everything via 169.254.1.1; the host side, cali<hash> with MAC
    ee:ee:ee:ee:ee:ee, answers that ARP by proxy, and the node routes to the pod by a /32 on
    the veth. felix sets strict rp_filter on workload interfaces (no spoofed sources)."""
    lines = [
        # Proxy ARP only answers for an address the node routes out of another interface: a
        # real node's default route covers 169.254.1.1. Lab nodes have none; the zeroconf
        # route RHEL-family hosts carry does the same job and stays on the lab's switch.
        "route add 169.254.0.0/16 dev eth0 scope link metric 1002",
        f"route add {SERVICE_NETWORK} dev eth0",  # see _bridge_wiring: ClusterIPs from the node
    ]
    pod_lines = {}
    sysctls = []
    for pod in pods:
        veth = calico_veth(pod)
        lines += [f"link add {veth} type veth peer name eth0 netns {pod.netns}",
                  f"link set {veth} address ee:ee:ee:ee:ee:ee up",
                  f"route add {pod.ip}/32 dev {veth} scope link"]
        sysctls += [f"net.ipv4.conf.{veth}.proxy_arp=1", f"net.ipv4.neigh.{veth}.proxy_delay=0",
                    f"net.ipv4.conf.{veth}.rp_filter=1"]
        pod_lines[pod.netns] = ["link set lo up", f"addr add {pod.ip}/32 dev eth0",
                                "link set eth0 up",
                                f"route add {node.pod_gateway} dev eth0 scope link",
                                f"route add default via {node.pod_gateway} dev eth0"]
    return PodWiring(lines, pod_lines, sysctls)


# ---- calico-bgp: bird2 -----------------------------------------------------------------------


def bird_config(topology: Topology, node: LabNode, files: NodeFiles,
                without: str | None = None, password: str | None = None,
                exports: bool = True) -> str:
    """The node's bird.conf: a session with every peer but `without` (a node name), which a
    configuration that lost a peer leaves out; with `password`, every session signed with it
    (TCP MD5), as calico-node renders a BGP password; without `exports`, sessions that
    advertise nothing, as an export filter that rejects the node's block leaves them."""
    peers = "\n".join(
        f"protocol bgp Mesh_{peer.address.replace('.', '_')} from bgp_template {{\n"
        f"  neighbor {peer.address} as {BGP_AS};\n}}"
        for peer in topology.peers(node) if peer.name != without)
    # BIRD's own quoting rules are not shell's: the lab's password is a plain word
    signed = f'\n  password "{password}";' if password else ""
    export = "where source = RTS_STATIC" if exports else "none"
    # Short timers: a stopped or blocked peer is noticed in seconds, so tests stay fast.
    return f"""# generated by kubenetdiag_lab for {node.name}
log "{files.dir / 'bird.log'}" all;
router id {node.address};

protocol device {{ scan time 10; }}

# as calico-node's BIRD: the node's own block goes to the kernel as a blackhole, the peers'
# blocks as routes via them, all `proto bird`
protocol kernel {{
  ipv4 {{ import none; export where source ~ [ RTS_BGP, RTS_STATIC ]; }};
  scan time 10;
}}

protocol static {{
  ipv4;
  route {node.pod_cidr} blackhole;
}}

template bgp bgp_template {{
  local {node.address} as {BGP_AS};
  direct;
  hold time {HOLD_TIME};
  keepalive time {KEEPALIVE};
  connect retry time 2;
  error wait time 1, 4;{signed}
  ipv4 {{ import all; export {export}; next hop self; }};
}}

{peers}
"""


BIRD_SOCKET = "/var/run/calico/bird.ctl"  # calico-node's, on a hostPath the host sees too


def bird_socket(files: NodeFiles) -> str:
    """Where the node's BIRD socket is in the lab's files (the node's /run is files.run_dir)."""
    return str(files.run_dir / "calico" / "bird.ctl")


def container_only() -> list[str]:
    """BIRD's programs, which a calico node has only inside its calico-node container: the
    lab hides them from the node's host (nodehost.init_script) and bird's own mount namespace
    shows them again, so the diagnoser must reach BIRD the way an SRE does on a real node."""
    return [f"{d}/{name}" for name in ("bird", "birdc", "birdcl")
            for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
            if Path(f"{d}/{name}").is_file() and not Path(d).is_symlink()]


def start_bird(topology: Topology, node: LabNode, runner: NodeCommandRunner,
               files: NodeFiles) -> None:
    conf = files.dir / "bird.conf"
    conf.write_text(bird_config(topology, node, files))
    # The calico-node "container": a mount namespace of its own in which BIRD's programs are
    # visible again. bird daemonizes; its parent exits once the config is loaded, so a bad
    # config fails here.
    reveal = " ".join(f"umount {shlex.quote(path)} 2>/dev/null;" for path in container_only())
    start = (f"{reveal} exec bird -c {shlex.quote(str(conf))} -s {BIRD_SOCKET} "
             f"-P /var/run/calico/bird.pid")
    runner.shell(f"unshare --mount --propagation private sh -c {shlex.quote(start)} "
                 f"</dev/null >/dev/null 2>&1")


def reconfigure_bird(topology: Topology, node: LabNode, runner: NodeCommandRunner,
                     files: NodeFiles, without: str | None = None,
                     password: str | None = None, exports: bool = True) -> bool:
    """Write the node's bird.conf again (leaving out the peer `without`, signing with
    `password`, advertising nothing without `exports`) and have the running bird read it, as
    `birdc configure` after an edit does. False when it already said that."""
    conf = files.dir / "bird.conf"
    text = bird_config(topology, node, files, without, password, exports)
    if conf.read_text() == text:
        return False
    conf.write_text(text)
    cp = runner.run(["birdc", "-s", bird_socket(files), "configure"], check=False)
    if cp.returncode != 0 or "Reconfigur" not in cp.stdout:
        raise LabError(f"{node.name}: bird did not take its configuration: "
                       f"{(cp.stdout + cp.stderr).strip()}")
    return True


def stop_bird(node: LabNode, runner: NodeCommandRunner, files: NodeFiles) -> None:
    # `birdc down` makes bird withdraw its routes and tell its peers (Cease), as a clean
    # calico-node shutdown does; kill is the fallback for a wedged daemon. birdc runs from the
    # machine (the node's host has none), on the socket's path in the lab's files.
    runner.run(["birdc", "-s", bird_socket(files), "down"], check=False)
    deadline = time.monotonic() + 5
    while bird_running(node) and time.monotonic() < deadline:
        time.sleep(0.05)
    nodehost.kill(nodehost.procs_in(node.netns, "bird"))


def bird_answers(files: NodeFiles, timeout: float = 1.0) -> bool:
    """BIRD greets a client on its control socket within `timeout`: the first thing
    calico-node's readiness probe (`calico-node -bird-ready`) needs. A stopped BIRD refuses
    the connection; a hung one accepts it (the kernel does) and never greets."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(bird_socket(files))
            return sock.recv(64).startswith(b"0001 ")
        except OSError:  # refused, missing socket, timed out
            return False


def bird_running(node: LabNode) -> bool:
    return bool(nodehost.procs_in(node.netns, "bird"))


def bgp_routes(node: LabNode) -> set[str]:
    out = run(["ip", "-n", node.netns, "route", "show", "proto", "bird"]).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def wait_converged(topology: Topology, timeout: float = 30.0, stable: float = 0.0) -> None:
    """Wait until every node with a running bird has a bird route to every peer's pod /24,
    and has kept them for `stable` seconds.

    A heal passes `stable`: sessions whose keepalives were dropped or frozen for a while may
    still read as up and expire a few seconds later (the hold time), withdrawing routes in
    the middle of whatever the lab does next."""
    deadline = time.monotonic() + timeout + stable
    since: float | None = None
    while True:
        missing = []
        for node in topology.nodes:
            if not bird_running(node):
                continue
            want = {peer.pod_cidr for peer in topology.peers(node) if bird_running(peer)}
            if not want <= bgp_routes(node):
                missing.append(node.name)
        now = time.monotonic()
        if missing:
            since = None
        else:
            since = now if since is None else since
            if now - since >= stable:
                return
        if now > deadline:
            raise LabError(f"BGP mesh did not converge within {timeout + stable:.0f}s on "
                           f"{', '.join(missing) or 'every node (routes came and went)'}")
        time.sleep(0.1)
