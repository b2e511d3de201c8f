"""Fault injectors: each breaks the lab the way a real incident would, and heals it.

The injected state is exactly what an operator or a buggy component would leave behind (no lab
markers such as iptables comments), so the diagnoser cannot tell a lab fault from a real one.
Every heal is idempotent: healing a healthy node is a no-op, so `heal()` can be called blindly
from a test's finally block. The lab records each active fault with its parameters in lab.json
before injecting, so heal (possibly from another process) undoes exactly what was done.

Add a fault by writing its inject and heal, functions of (FaultContext, node, params), and
calling `register` below. An injector gets the topology, runners for commands in nodes and
pods, the lab's files and the active faults (FaultContext); it never sees the Lab itself.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubenetdiag_lab import cni, coredns, flannel, kubeproxy, nodehost, services
from kubenetdiag_lab.netns import LabError, cmdline, pids_in_netns, run
from kubenetdiag_lab.paths import LabPaths
from kubenetdiag_lab.runner import NodeRunner, Runners
from kubenetdiag_lab.topology import LabNode, Topology, cluster_services

Params = dict[str, str]
CRASH_RESTARTS = 4  # a crash-looping container's restart count, as the API then shows it


@dataclass
class ActiveFaults:
    """The faults in force, as lab.json records them: [{fault, node, params}]. Some of the
    lab's shape depends on them (a node's VXLAN port, which services have endpoints)."""

    entries: list[dict[str, Any]] = field(default_factory=list)

    def params(self, fault: str, node: str | None = None) -> list[Params]:
        return [entry["params"] for entry in self.entries
                if entry["fault"] == fault and (node is None or entry["node"] == node)]

    def nodes_with(self, fault: str) -> set[str]:
        return {entry["node"] for entry in self.entries if entry["fault"] == fault}

    def vxlan_port(self, node: str) -> int:
        for params in self.params("vxlan_port_mismatch", node):
            return int(params["port"])
        return flannel.VXLAN_PORT

    def unready_pods(self, topology: Topology) -> dict[str, int]:
        """{pod name: restarts} of the pods a fault made not Ready, as the kubelet would
        report them: a service_no_endpoints service's pods fail their readiness probe (still
        running, no restart); a stopped CoreDNS (coredns_unreachable via=stop) crash-loops."""
        out: dict[str, int] = {}
        services = {svc.name: svc for svc in cluster_services(topology)}
        for params in self.params("service_no_endpoints"):
            svc = services.get(params["service"])
            out.update(dict.fromkeys(svc.endpoints if svc else (), 0))
        if any(params["via"] == "stop" for params in self.params("coredns_unreachable")):
            out[topology.pod_for_app("coredns").name] = CRASH_RESTARTS
        return out


@dataclass(frozen=True)
class FaultContext:
    """What an injector may touch of a running lab. Stopping and starting a node's sshd is the
    one lifecycle step a fault needs (node_unreachable), so it comes in as two callables."""

    topology: Topology
    paths: LabPaths
    runners: Runners
    active: ActiveFaults
    stop_sshd: Callable[[str], None]
    start_sshd: Callable[[str], None]

    def node(self, node: LabNode) -> NodeRunner:
        return self.runners.node(node)


Action = Callable[[FaultContext, LabNode, Params], None]


def _last_node(topology: Topology) -> str:
    return topology.nodes[-1].name


@dataclass(frozen=True)
class Fault:
    name: str
    description: str
    inject: Action
    heal: Action
    params: Params = field(default_factory=dict)  # accepted parameters and their defaults
    modes: tuple[str, ...] = ()  # CNI modes it applies to; empty: all
    scope: str = "node"  # "cluster": one instance for the whole lab, placed on default_node
    default_node: Callable[[Topology], str] = _last_node
    fixture_only: bool = False
    # Run after inject and after heal, once lab.json is saved and the API synced: waits for the
    # real components to act on the API change the fault made (kube-proxy re-syncing).
    settle: Action | None = None


FAULTS: dict[str, Fault] = {}


def register(fault: Fault) -> Fault:
    FAULTS[fault.name] = fault
    return fault


def _noop(ctx: FaultContext, node: LabNode, params: Params) -> None:
    pass


# ---- helpers --------------------------------------------------------------------------------


def _sysctl(ctx: FaultContext, node: LabNode, *assignments: str) -> None:
    cp = ctx.node(node).run(["sysctl", "-qw", *assignments], check=False)
    if cp.returncode != 0:
        raise LabError(f"sysctl on {node.name} failed: {cp.stderr.strip()}")


def _ipt_insert(ctx: FaultContext, node: LabNode, chain: str, spec: list[str],
                table: str = "filter", position: int = 1) -> None:
    ctx.node(node).run(["iptables", "-t", table, "-I", chain, str(position), *spec])


def _ipt_delete(ctx: FaultContext, node: LabNode, chain: str, spec: list[str],
                table: str = "filter") -> None:
    # Every copy, not just one: a test may have injected twice. Bounded so a misbehaving
    # iptables cannot loop forever.
    for _ in range(100):
        cp = ctx.node(node).run(["iptables", "-t", table, "-D", chain, *spec], check=False)
        if cp.returncode != 0:
            return


def _restore(ctx: FaultContext, node: LabNode, text: str) -> None:
    ctx.node(node).run(["iptables-restore", "--noflush"], input=text)


def _drop_chains(ctx: FaultContext, node: LabNode, chains: list[str]) -> None:
    present = set(ctx.node(node).run(["iptables", "-S"]).stdout.split())
    chains = [chain for chain in chains if chain in present]
    if chains:
        _restore(ctx, node, "*filter\n" + "".join(f":{chain} - [0:0]\n" for chain in chains) +
                 "".join(f"-X {chain}\n" for chain in chains) + "COMMIT\n")


def _start_in_node(ctx: FaultContext, node: LabNode, argv: list[str],
                   name: str | None = None) -> None:
    """Start a long-running process inside the node (its PID namespace), detached."""
    exec_ = f"exec -a {shlex.quote(name)} " if name else "exec "
    log = shlex.quote(str(ctx.paths.logs / "faults.log"))
    ctx.node(node).shell(f"({exec_}{shlex.join(argv)}) </dev/null >>{log} 2>&1 &")


def _kill_matching(ctx: FaultContext, node: LabNode, needle: str) -> None:
    pids = [pid for pid in pids_in_netns([node.netns]).get(node.netns, [])
            if needle in cmdline(pid)]
    nodehost.kill(pids)


def _netprog(ctx: FaultContext, pod: str, *args: str) -> None:
    """One of netprog.py's client programs in a pod; its exit code is not the fault's concern."""
    ctx.runners.pod(pod).run(services.netprog_argv(*args), check=False, timeout=30.0)


def _start_bird(ctx: FaultContext, node: LabNode) -> None:
    cni.start_bird(ctx.topology, node, ctx.node(node), ctx.paths.node_files(node.name))


# ---- kernel / sysctl --------------------------------------------------------------------------

HARDENING_FILE = "99-security-hardening.conf"  # sorts after 99-kubernetes-cri.conf: it wins


def _ip_forward_off(ctx: FaultContext, node: LabNode, params: Params) -> None:
    if params["via"] == "file":
        # A hardening baseline dropped into /etc/sysctl.d and applied, as a CIS script does.
        path = ctx.paths.node_files(node.name).sysctl_d / HARDENING_FILE
        path.write_text("# security baseline\nnet.ipv4.ip_forward = 0\n")
        ctx.node(node).shell(f"sysctl -q -p /etc/sysctl.d/{HARDENING_FILE}")
    elif params["via"] == "sysctl":
        _sysctl(ctx, node, "net.ipv4.ip_forward=0")
    else:
        raise LabError("ip_forward_disabled: via must be sysctl or file")


def _ip_forward_on(ctx: FaultContext, node: LabNode, params: Params) -> None:
    (ctx.paths.node_files(node.name).sysctl_d / HARDENING_FILE).unlink(missing_ok=True)
    _sysctl(ctx, node, "net.ipv4.ip_forward=1")


register(Fault(
    "ip_forward_disabled",
    "net.ipv4.ip_forward=0: the node stops routing pod traffic (via=file: set by a file in "
    "the node's /etc/sysctl.d and applied)",
    _ip_forward_off, _ip_forward_on, {"via": "sysctl"},
))
register(Fault(
    "bridge_nf_call_iptables_disabled",
    "net.bridge.bridge-nf-call-iptables=0: bridged pod traffic skips iptables, so a pod's "
    "reply from a same-node service endpoint is not un-DNATed",
    lambda ctx, node, params: _sysctl(ctx, node, "net.bridge.bridge-nf-call-iptables=0"),
    lambda ctx, node, params: _sysctl(ctx, node, "net.bridge.bridge-nf-call-iptables=1"),
))
register(Fault(
    "rp_filter_strict",
    "net.ipv4.conf.{all,default}.rp_filter=1: packets arriving on an interface other than the "
    "route back to their source (asymmetric paths) are dropped",
    lambda ctx, node, params: _sysctl(ctx, node, "net.ipv4.conf.all.rp_filter=1",
                                 "net.ipv4.conf.default.rp_filter=1"),
    lambda ctx, node, params: _sysctl(ctx, node, "net.ipv4.conf.all.rp_filter=0",
                                 "net.ipv4.conf.default.rp_filter=0"),
))
register(Fault(
    "somaxconn_low",
    "net.core.somaxconn lowered (param value, default 64): every listener's accept queue is "
    "capped at it",
    lambda ctx, node, params: _sysctl(ctx, node, f"net.core.somaxconn={int(params['value'])}"),
    lambda ctx, node, params: _sysctl(ctx, node, "net.core.somaxconn=4096"),
    {"value": "64"},
))

# ---- firewall -------------------------------------------------------------------------------

REJECT_ALL = ["-j", "REJECT"]

register(Fault(
    "forward_chain_reject",
    "iptables -I FORWARD 1 -j REJECT: forwarded pod traffic is refused with ICMP errors",
    lambda ctx, node, params: _ipt_insert(ctx, node, "FORWARD", REJECT_ALL),
    lambda ctx, node, params: _ipt_delete(ctx, node, "FORWARD", REJECT_ALL),
))


def _drop_spec(ctx: FaultContext, node: LabNode, params: Params) -> tuple[str, list[str]]:
    chain = params["chain"].upper()
    port = ["-p", params["proto"], "-m", params["proto"], "--dport", params["port"]] \
        if params["port"] else []
    if chain == "FORWARD":
        return chain, ["-d", node.pod_cidr, *port, "-j", "DROP"]
    if chain == "INPUT":
        return chain, [*(port or ["-s", ctx.topology.pod_network]), "-j", "DROP"]
    raise LabError("iptables_drop_rule: chain must be FORWARD or INPUT")


register(Fault(
    "iptables_drop_rule",
    "a DROP at the top of FORWARD for the node's pod CIDR (param port: only that port; "
    "chain=INPUT: traffic to the node itself)",
    lambda ctx, node, params: _ipt_insert(ctx, node, *_drop_spec(ctx, node, params)),
    lambda ctx, node, params: _ipt_delete(ctx, node, *_drop_spec(ctx, node, params)),
    {"chain": "FORWARD", "port": "", "proto": "tcp"},
))

FIREWALLD_CHAINS = ["INPUT_direct", "INPUT_ZONES", "FORWARD_direct", "FORWARD_IN_ZONES",
                    "FORWARD_OUT_ZONES", "OUTPUT_direct", "IN_public", "IN_public_pre",
                    "IN_public_log", "IN_public_deny", "IN_public_allow", "IN_public_post",
                    "FWDI_public", "FWDO_public"]
FIREWALLD_CHAIN_RULES = """-A INPUT_ZONES -i eth0 -g IN_public
-A INPUT_ZONES -g IN_public
-A IN_public -j IN_public_pre
-A IN_public -j IN_public_log
-A IN_public -j IN_public_deny
-A IN_public -j IN_public_allow
-A IN_public -j IN_public_post
-A IN_public -p icmp -j ACCEPT
-A IN_public_allow -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW,UNTRACKED -j ACCEPT
-A FORWARD_IN_ZONES -i eth0 -g FWDI_public
-A FORWARD_IN_ZONES -g FWDI_public
-A FORWARD_OUT_ZONES -o eth0 -g FWDO_public
-A FORWARD_OUT_ZONES -g FWDO_public
"""
# What firewalld puts at the head of the built-in chains (it reloads after kube-proxy/CNI,
# so their rules end up below its catch-all REJECT).
FIREWALLD_HEAD = {
    "INPUT": [
        "-m conntrack --ctstate RELATED,ESTABLISHED,DNAT -j ACCEPT", "-i lo -j ACCEPT",
        "-j INPUT_direct", "-j INPUT_ZONES", "-m conntrack --ctstate INVALID -j DROP",
        "-j REJECT --reject-with icmp-host-prohibited"],
    "FORWARD": [
        "-m conntrack --ctstate RELATED,ESTABLISHED,DNAT -j ACCEPT", "-i lo -j ACCEPT",
        "-j FORWARD_direct", "-j FORWARD_IN_ZONES", "-j FORWARD_OUT_ZONES",
        "-m conntrack --ctstate INVALID -j DROP", "-j REJECT --reject-with icmp-host-prohibited"],
    "OUTPUT": ["-j OUTPUT_direct"],
}
UFW_CHAINS = ["ufw-before-input", "ufw-before-output", "ufw-before-forward", "ufw-after-input",
              "ufw-after-output", "ufw-after-forward", "ufw-reject-input", "ufw-reject-output",
              "ufw-reject-forward", "ufw-track-input", "ufw-track-output", "ufw-user-input",
              "ufw-user-output", "ufw-user-forward", "ufw-not-local"]
UFW_CHAIN_RULES = """-A ufw-before-input -i lo -j ACCEPT
-A ufw-before-input -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A ufw-before-input -m conntrack --ctstate INVALID -j DROP
-A ufw-before-input -p icmp -m icmp --icmp-type 8 -j ACCEPT
-A ufw-before-input -j ufw-not-local
-A ufw-before-input -j ufw-user-input
-A ufw-before-output -o lo -j ACCEPT
-A ufw-before-output -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A ufw-before-output -j ufw-user-output
-A ufw-before-forward -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A ufw-before-forward -j ufw-user-forward
-A ufw-not-local -m addrtype --dst-type LOCAL -j RETURN
-A ufw-not-local -j DROP
-A ufw-track-output -p tcp -m conntrack --ctstate NEW -j ACCEPT
-A ufw-track-output -p udp -m conntrack --ctstate NEW -j ACCEPT
-A ufw-user-input -p tcp -m tcp --dport 22 -j ACCEPT
"""
UFW_HEAD = {
    "INPUT": ["-j ufw-before-input", "-j ufw-after-input", "-j ufw-reject-input",
              "-j ufw-track-input"],
    "FORWARD": ["-j ufw-before-forward", "-j ufw-after-forward", "-j ufw-reject-forward"],
    "OUTPUT": ["-j ufw-before-output", "-j ufw-after-output", "-j ufw-reject-output",
               "-j ufw-track-output"],
}


def _firewall(params: Params) -> tuple[list[str], str, dict[str, list[str]]]:
    if params["via"] == "firewalld":
        return FIREWALLD_CHAINS, FIREWALLD_CHAIN_RULES, FIREWALLD_HEAD
    if params["via"] == "ufw":
        return UFW_CHAINS, UFW_CHAIN_RULES, UFW_HEAD
    raise LabError("host_firewall_active: via must be firewalld or ufw")


def _firewall_on(ctx: FaultContext, node: LabNode, params: Params) -> None:
    chains, rules, head = _firewall(params)
    lines = [f":{chain} - [0:0]" for chain in chains] + rules.splitlines()
    for chain, specs in head.items():
        lines += [f"-I {chain} {position} {spec}"
                  for position, spec in enumerate(specs, start=1)]
    if params["via"] == "ufw":
        # ufw's defaults: deny incoming, deny routed; the CNI's FORWARD accepts stay below.
        lines = [":INPUT DROP [0:0]", ":FORWARD DROP [0:0]", *lines]
    _restore(ctx, node, "*filter\n" + "\n".join(lines) + "\nCOMMIT\n")


def _firewall_off(ctx: FaultContext, node: LabNode, params: Params) -> None:
    chains, _rules, head = _firewall(params)
    for chain, specs in head.items():
        for spec in specs:
            _ipt_delete(ctx, node, chain, spec.split())
    if params["via"] == "ufw":
        ctx.node(node).run(["iptables", "-P", "INPUT", "ACCEPT"])
        ctx.node(node).run(["iptables", "-P", "FORWARD", "ACCEPT"])
    _drop_chains(ctx, node, chains)


register(Fault(
    "host_firewall_active",
    "the chains firewalld leaves behind (INPUT_ZONES, FORWARD_IN_ZONES, ... and a catch-all "
    "REJECT icmp-host-prohibited) above the CNI's rules; via=ufw: ufw's chains, policy DROP",
    _firewall_on, _firewall_off, {"via": "firewalld"},
))

SECURITY_TABLE = "wsssr_filter"


def _security_on(ctx: FaultContext, node: LabNode, params: Params) -> None:
    name = params["name"]
    link = ctx.paths.node_files(node.name).bin / name
    if not link.is_symlink():
        link.symlink_to(nodehost.which("sleep"))
    _start_in_node(ctx, node, [str(link), "infinity"], name=f"/usr/local/{name}/bin/{name}")
    if params["blocks"] == "1":
        # Such agents hook netfilter themselves (not via iptables), so iptables-save shows
        # nothing: only `nft list ruleset` or the process list gives them away.
        ctx.node(node).run(["nft", "-f", "-"], input=(
            f"table inet {SECURITY_TABLE} {{\n  chain forward {{\n"
            "    type filter hook forward priority -5; policy drop;\n  }\n}\n"))


def _security_off(ctx: FaultContext, node: LabNode, params: Params) -> None:
    nodehost.kill(nodehost.procs_in(node.netns, params["name"]))
    ctx.node(node).run(["nft", "delete", "table", "inet", SECURITY_TABLE], check=False)


register(Fault(
    "security_software_present",
    "a host security agent (process wsssr_defence_daemon, param name) that drops forwarded "
    "traffic through its own nftables hook (blocks=0: the process only)",
    _security_on, _security_off, {"name": "wsssr_defence_daemon", "blocks": "1"},
))

# ---- overlay / routing --------------------------------------------------------------------


def _vxlan_drop(ctx: FaultContext, node: LabNode) -> list[str]:
    port = str(ctx.active.vxlan_port(node.name))
    return ["-p", "udp", "-m", "udp", "--dport", port, "-j", "DROP"]


def _switch_table(node: LabNode) -> str:
    return f"kndvx_{node.name}"


def _vxlan_block(ctx: FaultContext, node: LabNode, params: Params) -> None:
    if params["via"] == "input":
        _ipt_insert(ctx, node, "INPUT", _vxlan_drop(ctx, node))
    elif params["via"] == "switch":
        # Like a cloud security group: the frames are dropped on the switch port towards the
        # node, so its own tcpdump never sees them arrive (a node-local INPUT DROP still
        # shows them, since capture happens before netfilter).
        port = ctx.active.vxlan_port(node.name)
        rules = (f"table bridge {_switch_table(node)} {{\n chain block {{\n"
                 "  type filter hook forward priority 0; policy accept;\n"
                 f'  oifname "swp{node.index}" udp dport {port} drop\n }}\n}}\n')
        ctx.runners.switch.run(["nft", "-f", "-"], input=rules)
    else:
        raise LabError("vxlan_udp_blocked: via must be input or switch")


def _vxlan_unblock(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _ipt_delete(ctx, node, "INPUT", _vxlan_drop(ctx, node))
    ctx.runners.switch.run(["nft", "delete", "table", "bridge", _switch_table(node)],
                           check=False)


register(Fault(
    "vxlan_udp_blocked",
    "inbound UDP 8472 dropped: on the node's INPUT chain (via=input), or on the switch port "
    "towards the node like a cloud security group (via=switch): VXLAN from peers never "
    "arrives, while the node's own VXLAN still goes out",
    _vxlan_block, _vxlan_unblock, {"via": "input"},
    modes=("flannel-vxlan",),
))


def _vxlan_port_set(ctx: FaultContext, node: LabNode, params: Params) -> None:
    # The way a node ends up on another port for real: its flanneld (re)started with another
    # net-conf.json than its peers'; flanneld then recreates flannel.1 on that port.
    port = int(params["port"])
    flannel.set_port(ctx.topology, ctx.paths, node, port)
    flannel.restart(ctx.topology, ctx.paths, node, ctx.node(node))
    if flannel.vxlan_port(ctx.node(node)) != port:
        raise LabError(f"vxlan_port_mismatch: flanneld on {node.name} did not move flannel.1 "
                       f"to port {port}")


def _vxlan_port_heal(ctx: FaultContext, node: LabNode, params: Params) -> None:
    flannel.set_port(ctx.topology, ctx.paths, node, None)
    if flannel.vxlan_port(ctx.node(node)) != flannel.VXLAN_PORT:
        flannel.restart(ctx.topology, ctx.paths, node, ctx.node(node), recreate_device=True)


register(Fault(
    "vxlan_port_mismatch",
    "the node's flanneld restarted with a net-conf.json that sets another VXLAN port (param "
    "port, default 8475): its flannel.1 moves there, its peers stay on 8472",
    _vxlan_port_set, _vxlan_port_heal, {"port": "8475"}, modes=("flannel-vxlan",),
))


BGP_BLOCK = [["-p", "tcp", "-m", "tcp", "--dport", "179", "-j", "DROP"],
             ["-p", "tcp", "-m", "tcp", "--sport", "179", "-j", "DROP"]]


def _bgp_down(ctx: FaultContext, node: LabNode, params: Params) -> None:
    if params["via"] == "stop":
        cni.stop_bird(node, ctx.node(node), ctx.paths.node_files(node.name))
    elif params["via"] == "block":
        for spec in BGP_BLOCK:
            _ipt_insert(ctx, node, "INPUT", spec)
    else:
        raise LabError("bgp_session_down: via must be stop or block")


def _bgp_up(ctx: FaultContext, node: LabNode, params: Params) -> None:
    for spec in BGP_BLOCK:
        _ipt_delete(ctx, node, "INPUT", spec)
    if not cni.bird_running(node) and not ctx.active.params("cni_pod_not_running", node.name):
        _start_bird(ctx, node)
    cni.wait_converged(ctx.topology)


register(Fault(
    "bgp_session_down",
    "the node's BGP sessions go down: bird stopped (via=stop) or TCP 179 dropped (via=block, "
    "noticed after the 9 s hold time); peers withdraw its pod CIDR",
    _bgp_down, _bgp_up, {"via": "stop"}, modes=("calico-bgp",),
))


def _peer(ctx: FaultContext, node: LabNode, params: Params) -> LabNode:
    if params["peer"]:
        return ctx.topology.node(params["peer"])
    others = ctx.topology.peers(node)
    if not others:
        raise LabError("pod_cidr_route_missing needs at least two nodes")
    return others[0]


# vxlan only: flanneld's host-gw backend checks its routes every 10 s and re-adds a deleted
# one (route_network.go), so there the fault does not last (test_lab_flannel proves it); its
# vxlan backend programs a lease's route once, so a deleted one stays gone until a restart.
register(Fault(
    "pod_cidr_route_missing",
    "the node's route to a peer's pod CIDR is gone (param peer, default the first other node); "
    "flanneld (vxlan) does not put it back until it restarts",
    lambda ctx, node, params: ctx.node(node).run(["ip", "route", "del",
                                                  _peer(ctx, node, params).pod_cidr]),
    lambda ctx, node, params: flannel.restart(ctx.topology, ctx.paths, node, ctx.node(node)),
    {"peer": ""}, modes=("flannel-vxlan",),
))


def _healthy_mtu(cni_mode: str, dev: str) -> int:
    return {"eth0": 1500, flannel.VXLAN_DEV: cni.VXLAN_MTU}.get(dev, cni.pod_mtu(cni_mode))


def _mtu_heal(ctx: FaultContext, node: LabNode, params: Params) -> None:
    devs = [params["dev"]]
    if ctx.topology.cni == "flannel-vxlan" and params["dev"] == "eth0":
        devs.append(flannel.VXLAN_DEV)  # recreated under the fault, it took the lowered MTU
    for dev in devs:
        healthy = _healthy_mtu(ctx.topology.cni, dev)
        ctx.node(node).run(["ip", "link", "set", dev, "mtu", str(healthy)])


register(Fault(
    "mtu_mismatch",
    "the node's underlay eth0 MTU lowered to 1400 (params dev, mtu): small packets pass, "
    "full-size encapsulated or DF packets from peers are dropped silently",
    lambda ctx, node, params: ctx.node(node).run(["ip", "link", "set", params["dev"], "mtu",
                                                  params["mtu"]]),
    _mtu_heal, {"dev": "eth0", "mtu": "1400"},
))


def _cni_agent(cni_mode: str) -> str:
    return "calico-node" if cni_mode == "calico-bgp" else "flanneld"


def _cni_pod_down(ctx: FaultContext, node: LabNode, params: Params) -> None:
    nodehost.kill(nodehost.procs_in(node.netns, _cni_agent(ctx.topology.cni)))
    if ctx.topology.cni == "calico-bgp":
        # bird lives in the calico-node pod
        cni.stop_bird(node, ctx.node(node), ctx.paths.node_files(node.name))


def _cni_pod_up(ctx: FaultContext, node: LabNode, params: Params) -> None:
    if ctx.topology.cni.startswith("flannel"):
        since = flannel.start(ctx.paths, node, ctx.node(node))
        flannel.wait_programmed(ctx.topology, ctx.paths, [node], ctx.node, since)
        return
    agent = _cni_agent(ctx.topology.cni)
    if not nodehost.procs_in(node.netns, agent):
        ctx.node(node).shell(nodehost.agent_command(ctx.paths.node_files(node.name), agent))
    if ctx.topology.cni == "calico-bgp" and not cni.bird_running(node):
        _start_bird(ctx, node)
        cni.wait_converged(ctx.topology)


register(Fault(
    "cni_pod_not_running",
    "the node's CNI agent (flanneld, or calico-node with its bird) is not running; lab.json "
    "marks the node's CNI pod not ready",
    _cni_pod_down, _cni_pod_up,
))

# ---- service / DNS --------------------------------------------------------------------------


def _coredns_node(topology: Topology) -> str:
    return topology.pod_for_app("coredns").node


def _web_node(topology: Topology) -> str:
    return topology.pod_for_app("web").node


def _dns_drops(topology: Topology) -> list[list[str]]:
    ip = topology.pod_for_app("coredns").ip
    return [["-d", f"{ip}/32", "-p", proto, "-m", proto, "--dport", "53", "-j", "DROP"]
            for proto in ("udp", "tcp")]


def _coredns_down(ctx: FaultContext, node: LabNode, params: Params) -> None:
    if params["via"] == "stop":
        # As a crash would (or a scale to zero): the process is gone, and the pod is not
        # Ready in the API (ActiveFaults.unready_pods), so kube-dns loses its endpoint.
        coredns.stop(ctx.topology)
    elif params["via"] == "drop":
        for spec in _dns_drops(ctx.topology):
            _ipt_insert(ctx, node, "FORWARD", spec)
    else:
        raise LabError("coredns_unreachable: via must be stop or drop")


def _coredns_up(ctx: FaultContext, node: LabNode, params: Params) -> None:
    for spec in _dns_drops(ctx.topology):
        _ipt_delete(ctx, node, "FORWARD", spec)
    coredns.wait_ready(ctx.topology, ctx.paths, coredns.start(ctx.topology, ctx.paths))


register(Fault(
    "coredns_unreachable",
    "CoreDNS does not answer: the real coredns stopped, its pod not Ready and kube-dns without "
    "endpoints (via=stop), or DNS to its pod dropped in the node's FORWARD chain (via=drop)",
    _coredns_down, _coredns_up, {"via": "stop"}, default_node=_coredns_node,
    # its pod's readiness reaches kube-proxy (via=stop); _kube_proxies_synced is defined below
    settle=lambda ctx, node, params: _kube_proxies_synced(ctx, node, params),
))


def _known_service(ctx: FaultContext, node: LabNode, params: Params) -> None:
    # The fault itself is an API change: the service's pods are not Ready once the state is
    # saved (apisync writes their status as the kubelet would), and kube-controller-manager
    # marks their endpoints not ready.
    if params["service"] not in {svc.name for svc in cluster_services(ctx.topology)}:
        raise LabError(f"service_no_endpoints: no lab service {params['service']!r}")


def _kube_proxies_synced(ctx: FaultContext, node: LabNode, params: Params) -> None:
    """Every node's real kube-proxy has turned the API's endpoints into rules (its REJECT for
    an endpointless Service, its KUBE-SVC/KUBE-SEP chains again once healed)."""
    kubeproxy.wait_synced(ctx.topology, ctx.paths, list(ctx.topology.nodes), ctx.node,
                          ctx.active.unready_pods(ctx.topology))


register(Fault(
    "service_no_endpoints",
    "a Service (param service, default web) has no ready endpoints: its pods fail their "
    "readiness probe (not Ready in the API), kube-controller-manager marks their endpoints not "
    "ready, the nodes' kube-proxy REJECTs its VIP; lab.json lists no endpoints",
    _known_service, _noop, {"service": "web"}, scope="cluster", default_node=_web_node,
    settle=_kube_proxies_synced,
))


def _kube_proxy_dead_and_flushed(ctx: FaultContext, node: LabNode, params: Params) -> None:
    # A running kube-proxy would notice (its KUBE-PROXY-CANARY stays) only at its next periodic
    # sync, but it would notice: the state an SRE finds is a dead kube-proxy and a flushed chain.
    kubeproxy.stop(node)
    ctx.node(node).run(["iptables", "-t", "nat", "-F", "KUBE-SERVICES"])


def _kube_proxy_restarted(ctx: FaultContext, node: LabNode, params: Params) -> None:
    kubeproxy.start(ctx.paths, node, ctx.node(node))
    kubeproxy.wait_synced(ctx.topology, ctx.paths, [node], ctx.node,
                          ctx.active.unready_pods(ctx.topology))


register(Fault(
    "kube_proxy_rules_missing",
    "the node's kube-proxy is stopped and its nat KUBE-SERVICES chain flushed: service VIPs "
    "stop working from the node and its pods (heal starts kube-proxy, which re-syncs)",
    _kube_proxy_dead_and_flushed, _kube_proxy_restarted,
))

# ---- sockets --------------------------------------------------------------------------------


def _listen_overflow(ctx: FaultContext, node: LabNode, params: Params) -> None:
    port = params["port"]
    _start_in_node(ctx, node, services.netprog_argv("listen-stuck", port, params["backlog"]))
    _wait_listen(ctx, node, int(port), "tcp")
    pod = ctx.topology.pods_on(node.name)[0]
    _netprog(ctx, pod.name, "connect-burst", node.address, port, params["count"],
             "--hold", "2")


def _wait_listen(ctx: FaultContext, node: LabNode, port: int, proto: str) -> None:
    flag = "-Hlnu" if proto == "udp" else "-Hlnt"
    for _ in range(100):  # bounded: 5 s
        if ctx.node(node).run(["ss", flag, f"sport = :{port}"]).stdout.strip():
            return
        run(["sleep", "0.05"])
    raise LabError(f"{node.name}: nothing listens on {port}/{proto}")


register(Fault(
    "listen_queue_overflow",
    "a listener on the node with backlog 1 that never accepts, then a bounded burst of "
    "connects from a pod: the accept queue overflows and ListenOverflows rises",
    _listen_overflow,
    lambda ctx, node, params: _kill_matching(ctx, node, f"listen-stuck {params['port']} "),
    {"port": "30080", "backlog": "1", "count": "64"},
))


def _udp_errors(ctx: FaultContext, node: LabNode, params: Params) -> None:
    port = params["port"]
    _start_in_node(ctx, node, services.netprog_argv("udp-stuck", port, params["rcvbuf"]))
    _wait_listen(ctx, node, int(port), "udp")
    pod = ctx.topology.pods_on(node.name)[0]
    _netprog(ctx, pod.name, "udp-flood", node.address, port, params["count"])


register(Fault(
    "udp_buffer_errors",
    "a UDP socket on the node with a tiny SO_RCVBUF that never reads, flooded briefly from a "
    "pod: UdpRcvbufErrors rises",
    _udp_errors,
    lambda ctx, node, params: _kill_matching(ctx, node, f"udp-stuck {params['port']} "),
    {"port": "30053", "rcvbuf": "2048", "count": "2000"},
))
register(Fault(
    "time_wait_pileup",
    "a bounded burst of short connections closed by the node's side: TIME_WAIT sockets pile "
    "up (heal stops nothing: the kernel keeps them 60 s, as on a real node)",
    lambda ctx, node, params: ctx.node(node).run(
        services.netprog_argv("tw-burst", params["count"]), timeout=60),
    _noop, {"count": "3000"},
))
register(Fault(
    "port_not_listening",
    "the web app's server is stopped: its Service and pod port refuse connections",
    lambda ctx, node, params: services.stop_app(ctx.topology, ctx.paths, "web"),
    lambda ctx, node, params: services.start_apps(ctx.topology, ctx.paths, ["web"]),
    scope="cluster", default_node=_web_node,
))

# ---- host -----------------------------------------------------------------------------------

register(Fault(
    "node_unreachable",
    "the node's sshd is stopped: ssh to it is refused, the node's network stays healthy",
    lambda ctx, node, params: ctx.stop_sshd(node.name),
    lambda ctx, node, params: ctx.start_sshd(node.name),
))

# ---- not reproducible here ------------------------------------------------------------------

register(Fault(
    "tw_recycle_with_timestamps",
    "net.ipv4.tcp_tw_recycle was removed in Linux 4.12",
    _noop, _noop, fixture_only=True,
))
register(Fault(
    "conntrack_table_full",
    "net.netfilter.nf_conntrack_max is read-only outside the root namespace",
    _noop, _noop, fixture_only=True,
))
