"""Fault injectors: each breaks the lab the way a real incident would, and heals it.

The injected state is exactly what an operator or a buggy component would leave behind (no lab
markers such as iptables comments), so the diagnoser cannot tell a lab fault from a real one.
Every heal is idempotent: healing a healthy node is a no-op, so `heal()` can be called blindly
from a test's finally block. The lab records each active fault with its parameters in lab.json
before injecting, so heal (possibly from another process) undoes exactly what was done.

Add a fault by writing its inject and heal, functions of (FaultContext, node, params), and
calling `register` below. An injector gets the topology, runners for commands in nodes and
pods, the lab's files and the active faults (FaultContext); it never sees the Lab itself.

A fault code is a class; most classes can be made more than one way (another tool, kernel
interface or level of configuration, a process hung instead of dead). Each way is a value of
the fault's `via` parameter, declared in `Fault.mechanisms` with the CNI modes it applies to,
and the heal undoes every way, so that healing with the defaults (from another process, after
the parameters were lost) still restores the node exactly as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from ipaddress import IPv4Address, IPv4Network, ip_interface
from pathlib import Path
from typing import Any

import yaml

from kubenetdiag_lab import (
    cni,
    coredns,
    flannel,
    ipvs_shadow,
    k8s_objects,
    kubeproxy,
    kuberouter,
    nodehost,
    sandbox,
    services,
    sshd,
)
from kubenetdiag_lab.controlplane import CP_ADDRESS, ControlPlane
from kubenetdiag_lab.netns import LabError, cmdline, exec_argv, pids_in_netns, proc_state, run
from kubenetdiag_lab.paths import LabPaths
from kubenetdiag_lab.runner import NetnsRunner, NodeRunner, Runners
from kubenetdiag_lab.topology import (
    CLIENT_ADDRESS,
    OUTSIDE_DNS,
    OUTSIDE_HOST,
    OUTSIDE_NETWORK,
    OUTSIDE_PORT,
    OUTSIDE_UNDERLAY,
    RETIRED_NODE_ADDRESS,
    SERVICE_NETWORK,
    WEB_PORT,
    LabNode,
    LabPod,
    Service,
    ServicePort,
    Topology,
    cluster_services,
    pod_labels,
)

Params = dict[str, str]
CRASH_RESTARTS = 4  # a crash-looping container's restart count, as the API then shows it


@dataclass
class ActiveFaults:
    """The faults in force, as lab.json records them: [{fault, node, params}]. Some of the
    lab's shape depends on them (a node's VXLAN port, which services have endpoints), and on
    what the lab's readiness probes found at the last sync (Lab._probe_readiness), as the
    kubelet's probes would: pods not Ready, and nodes whose CNI pod is not Ready."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    probed_unready_pods: set[str] = field(default_factory=set)
    probed_unready_cni: set[str] = field(default_factory=set)

    def params(self, fault: str, node: str | None = None) -> list[Params]:
        return [entry["params"] for entry in self.entries
                if entry["fault"] == fault and (node is None or entry["node"] == node)]

    def nodes_with(self, fault: str) -> set[str]:
        return {entry["node"] for entry in self.entries if entry["fault"] == fault}

    def vxlan_port(self, node: str) -> int:
        for params in self.params("vxlan_port_mismatch", node):
            return _mismatch_port(params)
        return flannel.VXLAN_PORT

    def cni_pod_unready(self) -> set[str]:
        """Nodes whose CNI pod is not Ready: its agent killed (cni_pod_not_running via=kill,
        crash-looping), or its readiness probe failing."""
        killed = {entry["node"] for entry in self.entries
                  if entry["fault"] == "cni_pod_not_running"
                  and entry["params"].get("via", "kill") == "kill"}
        return killed | self.probed_unready_cni

    def unready_pods(self, topology: Topology) -> dict[str, int]:
        """{pod name: restarts} of the pods a fault made not Ready, as the kubelet would
        report them: a service_no_endpoints service's pods fail their readiness probe
        (via=unready: still running, no restart; via=selector leaves them Ready); a stopped
        CoreDNS (coredns_unreachable via=stop, or via=loop) crash-loops; a pod whose
        readiness probe the lab found failing (a hung CoreDNS) is not Ready without restarts
        (the lab models readiness, not liveness: a liveness restart would end the hang)."""
        out: dict[str, int] = {}
        services = {svc.name: svc for svc in cluster_services(topology)}
        for params in self.params("service_no_endpoints"):
            if params.get("via", "unready") != "unready":
                continue
            svc = services.get(params["service"])
            out.update(dict.fromkeys(svc.endpoints if svc else (), 0))
        out.update(dict.fromkeys(self.frozen_endpoints(topology), 0))
        if any(params["via"] in ("stop", "loop")
               for params in self.params("coredns_unreachable")):
            out[topology.pod_for_app("coredns").name] = CRASH_RESTARTS
        for pod in self.probed_unready_pods:
            out.setdefault(pod, 0)
        return out

    def frozen_endpoints(self, topology: Topology) -> set[str]:
        """Pods that turned not Ready after kube-controller-manager stopped
        (endpoints_controller_lagging): the API says so, their Service's EndpointSlices, and
        so every kube-proxy, still list them as ready."""
        services = {svc.name: svc for svc in cluster_services(topology)}
        return {pod for params in self.params("endpoints_controller_lagging")
                for pod in getattr(services.get(params["service"]), "endpoints", ())}

    def services(self, topology: Topology) -> list[Service]:
        """The Services as the faults in force leave them: without the endpoints of pods not
        Ready, and with the selector a service_no_endpoints via=selector gave them. What
        lab.json lists and what every kube-proxy must have programmed."""
        selectors = {params["service"]: _broken_selector(topology, params["service"])
                     for params in self.params("service_no_endpoints")
                     if params.get("via") == "selector"}
        renamed = {params["service"] for params in self.params("service_no_endpoints")
                   if params.get("via") == "port"}
        frozen = self.frozen_endpoints(topology)
        unready = {pod: n for pod, n in self.unready_pods(topology).items() if pod not in frozen}
        out = cluster_services(topology, unready, selectors, renamed)
        if self.params("cross_zone_latency"):
            out.append(spread_service(topology, unready))
        for params in self.params("kube_proxy_out_of_sync"):
            port = _canary_port(params)
            if port is not None:
                out.append(canary_service(topology, port, unready))
        if self.params("nodeport_no_local_endpoint"):
            out.append(local_service(topology, unready))
        for name in sorted({entry["fault"] for entry in self.entries}):
            spec = FAULTS.get(name)
            if spec is not None and spec.adds_services is not None:
                out.extend(spec.adds_services(topology))
        return out

    def network_policies(self) -> list[dict[str, Any]]:
        """The NetworkPolicies the faults in force wrote (network_policy_denies), as
        lab.json's ``network_policies`` lists them: {name, namespace, spec}."""
        return [denying_policy(params["via"])
                for params in self.params("network_policy_denies")]


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
    # Save lab.json and bring the apiserver's objects in line with it now: for a fault that
    # needs the API in one state before it acts and in another after (kube_proxy_out_of_sync).
    sync_api: Callable[[], None] = lambda: None
    # The control plane, for a fault of its own processes (endpoints_controller_lagging)
    controlplane: ControlPlane | None = None

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
    # The ways of making the fault (its param "via", whose default is one of them), each with
    # the CNI modes it applies to (empty: every mode the fault applies to). A heal undoes every
    # way, so a blind heal (params lost) still restores the node.
    mechanisms: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # kube-proxy modes it applies to (empty: every mode): a fault made of, or read from,
    # one mode's rules has nothing to break, or nothing to show, in another.
    proxy_modes: tuple[str, ...] = ()
    # The nodes a diagnosis should name for it, when not only the node it is placed on: a
    # cluster-wide change (a NetworkPolicy) breaks flows on the nodes of the pods it selects.
    blamed_nodes: Callable[[Topology, str, Params], list[str]] | None = None
    # A condition healthy clusters have that looks like a fault (a distribution's default, a
    # tool installed beside Kubernetes): it breaks nothing, and a diagnosis that names it
    # blames a healthy component. Injected and healed like a fault; expected: no finding.
    benign: bool = False
    # Services the fault or condition adds to the cluster while in force (lab.json lists them,
    # the API holds them, every kube-proxy programs them)
    adds_services: Callable[[Topology], list[Service]] | None = None

    def __post_init__(self) -> None:
        if self.mechanisms and self.params.get("via") not in self.mechanisms:
            raise ValueError(f"{self.name}: the default via must be one of its mechanisms")

    def applies(self, mode: str) -> bool:
        return not self.fixture_only and (not self.modes or mode in self.modes)

    def vias(self, mode: str) -> list[str]:
        """The mechanisms that make this fault in CNI mode `mode` ([""] when the fault has
        one way only)."""
        if not self.applies(mode):
            return []
        if not self.mechanisms:
            return [""]
        return [via for via, modes in self.mechanisms.items() if not modes or mode in modes]

    def check_params(self, mode: str, params: Params) -> None:
        """Refuse a via this fault does not know, or one that does not apply in `mode`."""
        if not self.mechanisms:
            return
        via = params.get("via", "")
        if via not in self.mechanisms:
            raise LabError(f"{self.name}: via must be one of {', '.join(self.mechanisms)}, "
                           f"not {via!r}")
        modes = self.mechanisms[via]
        if modes and mode not in modes:
            raise LabError(f"{self.name} via={via} needs CNI mode {' or '.join(modes)}; "
                           f"this lab runs {mode}")


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


def _delete_every(runner: NetnsRunner, chain: str, spec: list[str], table: str = "filter",
                  binary: str = "iptables") -> bool:
    """Delete every copy of the rule, not just one (a test may have injected twice); whether
    there was one. Bounded so a misbehaving iptables cannot loop forever."""
    for deleted in range(100):
        cp = runner.run([binary, "-t", table, "-D", chain, *spec], check=False)
        if cp.returncode != 0:
            return deleted > 0
    return True


def _ipt_delete(ctx: FaultContext, node: LabNode, chain: str, spec: list[str],
                table: str = "filter") -> bool:
    return _delete_every(ctx.node(node), chain, spec, table)


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


def _procs_matching(node: LabNode, needle: str) -> list[int]:
    return [pid for pid in pids_in_netns([node.netns]).get(node.netns, [])
            if needle in cmdline(pid)]


def _kill_matching_in(netns: list[str], *needles: str) -> None:
    """End the processes of these namespaces (pods, the outside host) whose command line
    holds a needle: the clients and servers a fault started there."""
    nodehost.kill([pid for pids in pids_in_netns(netns).values() for pid in pids
                   if any(needle in cmdline(pid) for needle in needles)])


def _stop_matching(ctx: FaultContext, node: LabNode, *needles: str) -> None:
    """End the node's processes whose command line holds a needle, hung ones too."""
    for needle in needles:
        pids = _procs_matching(node, needle)
        _signal(pids, signal.SIGCONT)
        nodehost.kill(pids)


def _netprog(ctx: FaultContext, pod: str, *args: str) -> None:
    """One of netprog.py's client programs in a pod; its exit code is not the fault's concern."""
    ctx.runners.pod(pod).run(services.netprog_argv(*args), check=False, timeout=30.0)


def _start_bird(ctx: FaultContext, node: LabNode) -> None:
    cni.start_bird(ctx.topology, node, ctx.node(node), ctx.paths.node_files(node.name))


def _sysctl_dev(dev: str) -> str:
    """A device name as a sysctl key part: sysctl(8) writes a dot in it as a slash."""
    return dev.replace(".", "/")


def _sysctl_lines(runner: NodeRunner) -> dict[str, str]:
    """{key: value} of every sysctl the node's `sysctl -a` prints."""
    out = {}
    for line in runner.run(["sysctl", "-a"], check=False).stdout.splitlines():
        key, sep, value = line.partition(" = ")
        if sep:
            out[key] = value.strip()
    return out


def _sysctl_values(ctx: FaultContext, node: LabNode, suffix: str) -> dict[str, str]:
    """{key: value} of the node's net.ipv4.conf.<dev>.<suffix> for every device."""
    return {key: value for key, value in _sysctl_lines(ctx.node(node)).items()
            if key.startswith("net.ipv4.conf.") and key.endswith("." + suffix)}


def _nft(ctx: FaultContext, node: LabNode, text: str) -> None:
    ctx.node(node).run(["nft", "-f", "-"], input=text)


def _nft_delete_table(ctx: FaultContext, node: LabNode, family: str, table: str) -> None:
    ctx.node(node).run(["nft", "delete", "table", family, table], check=False)


def _nft_json(ctx: FaultContext, node: LabNode, *what: str) -> list[dict[str, Any]]:
    cp = ctx.node(node).run(["nft", "-j", "list", *what], check=False)
    if cp.returncode != 0:
        return []
    return [item for item in json.loads(cp.stdout or "{}").get("nftables", [])
            if "metainfo" not in item]


def _ipt_tidy(ctx: FaultContext, node: LabNode, table: str, chains: list[str]) -> None:
    """Remove what iptables-nft leaves behind once a fault's rules are gone: it creates a
    built-in chain (and its table) on first use and never deletes them, so `nft list ruleset`
    would still show an empty `table ip raw` or mangle FORWARD chain after the heal. Only
    empty base chains with policy accept go (they do nothing), and the table once it has no
    chain left."""
    for chain in chains:
        items = _nft_json(ctx, node, "chain", "ip", table, chain)
        base = [i["chain"] for i in items if "chain" in i and "hook" in i["chain"]]
        rules = [i for i in items if "rule" in i]
        if base and not rules and base[0].get("policy", "accept") == "accept":
            ctx.node(node).run(["nft", "delete", "chain", "ip", table, chain], check=False)
    if not [i for i in _nft_json(ctx, node, "table", "ip", table) if "chain" in i]:
        _nft_delete_table(ctx, node, "ip", table)


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _freeze(pids: list[int], what: str) -> None:
    """SIGSTOP: the process stays, holds its sockets and answers nothing, as a hung one."""
    if not pids:
        raise LabError(f"{what} is not running: nothing to hang")
    _signal(pids, signal.SIGSTOP)


def _thaw(pids: list[int]) -> bool:
    """SIGCONT; whether any of them was stopped (a hung process that held its sockets)."""
    frozen = any(proc_state(pid) == "T" for pid in pids)
    _signal(pids, signal.SIGCONT)
    return frozen


# ---- kernel / sysctl --------------------------------------------------------------------------

HARDENING_FILE = "99-security-hardening.conf"  # sorts after 99-kubernetes-cri.conf: it wins


def _sysctl_file(ctx: FaultContext, node: LabNode, name: str, setting: str) -> None:
    """A file in the node's /etc/sysctl.d (sorting after 99-kubernetes-cri.conf, so it wins
    at the next boot too) with one setting, applied as `sysctl -p` would."""
    (ctx.paths.node_files(node.name).sysctl_d / name).write_text(setting + "\n")
    ctx.node(node).shell(f"sysctl -q -p /etc/sysctl.d/{name}")


# What a virtualisation host's setup drops in /etc/sysctl.d so its VM bridges skip iptables
LIBVIRT_BRIDGE_CONF = "99-libvirt-bridge.conf"


def _sysctl_fault(key: str, bad: Callable[[Params], str], good: str, file: str
                  ) -> tuple[Action, Action]:
    """inject and heal of a fault that is one sysctl: set at run time (via=sysctl) or by a
    file in /etc/sysctl.d, applied (via=file)."""
    def inject(ctx: FaultContext, node: LabNode, params: Params) -> None:
        if params["via"] == "sysctl":
            _sysctl(ctx, node, f"{key}={bad(params)}")
        elif params["via"] == "file":
            _sysctl_file(ctx, node, file, f"{key} = {bad(params)}")
        else:
            raise LabError(f"{key}: via must be sysctl or file")

    def heal(ctx: FaultContext, node: LabNode, params: Params) -> None:
        (ctx.paths.node_files(node.name).sysctl_d / file).unlink(missing_ok=True)
        _sysctl(ctx, node, f"{key}={good}")

    return inject, heal


def _pod_facing(ctx: FaultContext, node: LabNode) -> list[str]:
    """The node's devices its pods' traffic enters by: cni0 (flannel's bridge plugin), or
    one cali* veth per pod (calico)."""
    if ctx.topology.cni == "calico-bgp":
        return [cni.calico_veth(pod) for pod in ctx.topology.pods_on(node.name)]
    return ["cni0"]


def _ip_forward_off(ctx: FaultContext, node: LabNode, params: Params) -> None:
    if params["via"] == "file":
        # A hardening baseline dropped into /etc/sysctl.d and applied, as a CIS script does.
        path = ctx.paths.node_files(node.name).sysctl_d / HARDENING_FILE
        path.write_text("# security baseline\nnet.ipv4.ip_forward = 0\n")
        ctx.node(node).shell(f"sysctl -q -p /etc/sysctl.d/{HARDENING_FILE}")
    elif params["via"] == "sysctl":
        _sysctl(ctx, node, "net.ipv4.ip_forward=0")
    elif params["via"] == "interface":
        # Per device: the kernel forwards a packet only when the device it came in on has
        # forwarding on; net.ipv4.ip_forward (= conf.all) stays 1.
        devs = [params["dev"]] if params["dev"] else _pod_facing(ctx, node)
        _sysctl(ctx, node, *(f"net.ipv4.conf.{_sysctl_dev(dev)}.forwarding=0" for dev in devs))
    else:
        raise LabError("ip_forward_disabled: via must be sysctl, file or interface")


def _ip_forward_on(ctx: FaultContext, node: LabNode, params: Params) -> None:
    (ctx.paths.node_files(node.name).sysctl_d / HARDENING_FILE).unlink(missing_ok=True)
    _sysctl(ctx, node, "net.ipv4.ip_forward=1")
    # Writing ip_forward resets every device only when its value changes: a device turned
    # off on its own stays off unless set back itself.
    off = [key for key, value in _sysctl_values(ctx, node, "forwarding").items()
           if value == "0"]
    if off:
        _sysctl(ctx, node, *(f"{key}=1" for key in off))


register(Fault(
    "ip_forward_disabled",
    "the node stops routing pod traffic: net.ipv4.ip_forward=0 (via=sysctl), set by a file "
    "in the node's /etc/sysctl.d and applied (via=file), or forwarding off on the devices the "
    "pods' traffic comes in by only (via=interface: conf.<dev>.forwarding=0, param dev, "
    "default cni0 or the pods' cali* veths) while net.ipv4.ip_forward stays 1",
    _ip_forward_off, _ip_forward_on, {"via": "sysctl", "dev": ""},
    mechanisms={"sysctl": (), "file": (), "interface": ()},
))
register(Fault(
    "bridge_nf_call_iptables_disabled",
    "net.bridge.bridge-nf-call-iptables=0: bridged pod traffic skips iptables, so a pod's "
    "reply from a same-node service endpoint is not un-DNATed; set at run time (via=sysctl) "
    "or by /etc/sysctl.d/99-libvirt-bridge.conf, applied (via=file, as a virtualisation "
    "host's setup leaves it). Only where pods hang off a bridge: calico's routed pods never "
    "cross one (benign_bridge_nf_off_routed_pods)",
    *_sysctl_fault("net.bridge.bridge-nf-call-iptables", lambda params: "0", "1",
                   LIBVIRT_BRIDGE_CONF),
    {"via": "sysctl"}, mechanisms={"sysctl": (), "file": ()},
    modes=("flannel-vxlan", "flannel-host-gw"),
))


def _asymmetric(ctx: FaultContext, node: LabNode, peer: LabNode) -> bool:
    """The node's route to the peer's pods goes out by the underlay (unencapsulated, to the
    peer's address) while the peer's pod traffic comes in by flannel.1."""
    route = ctx.node(node).run(["ip", "route", "show", peer.pod_cidr], check=False).stdout
    return f"via {peer.address} dev eth0" in route


def _rp_strict(ctx: FaultContext, node: LabNode, params: Params) -> None:
    # Strict mode alone drops nothing while every path is symmetric (several distributions
    # ship it): the fault is strict mode meeting an asymmetric path. Here a half-done move from
    # vxlan to direct routing, as flannel's DirectRouting turned on for one node only leaves it:
    # the route back to one peer's pods leaves by eth0 while they arrive on flannel.1, harmless
    # with rp_filter off or loose.
    if params["via"] not in ("sysctl", "interface"):
        raise LabError("rp_filter_strict: via must be sysctl or interface")
    peer = _peer(ctx, node, params)
    ctx.node(node).run(["ip", "route", "replace", peer.pod_cidr, "via", peer.address,
                        "dev", "eth0"])
    if params["via"] == "sysctl":
        _sysctl(ctx, node, "net.ipv4.conf.all.rp_filter=1", "net.ipv4.conf.default.rp_filter=1")
    else:
        _sysctl(ctx, node, f"net.ipv4.conf.{_sysctl_dev(flannel.VXLAN_DEV)}.rp_filter=1")


def _rp_loose(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _sysctl(ctx, node, "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
    if not ctx.topology.cni.startswith("flannel"):
        return  # calico's own cali* veths carry rp_filter=1 (felix sets it)
    strict = [key for key, value in _sysctl_values(ctx, node, "rp_filter").items()
              if value != "0"]
    if strict:
        _sysctl(ctx, node, *(f"{key}=0" for key in strict))
    if ctx.topology.cni == "flannel-vxlan" and any(
            _asymmetric(ctx, node, peer) for peer in ctx.topology.peers(node)):
        # flanneld (vxlan) puts its own route back when it starts
        flannel.restart(ctx.topology, ctx.paths, node, ctx.node(node))


register(Fault(
    "rp_filter_strict",
    "strict reverse-path filtering on an asymmetric path: the route back to one peer's pods "
    "(param peer, default the first other node) leaves by eth0 while they arrive on flannel.1, "
    "as flannel's DirectRouting turned on for this node alone leaves it, and the kernel drops "
    "what they send: strict for every interface, net.ipv4.conf.{all,default}.rp_filter=1 "
    "(via=sysctl), or for flannel.1 alone, net.ipv4.conf.flannel/1.rp_filter=1 while all "
    "stays 0 (via=interface). Strict mode on symmetric paths breaks nothing: "
    "benign_rp_filter_strict",
    _rp_strict, _rp_loose, {"via": "sysctl", "peer": ""},
    modes=("flannel-vxlan",),
    mechanisms={"sysctl": (), "interface": ()},
))
_somaxconn_set, _somaxconn_reset = _sysctl_fault(
    "net.core.somaxconn", lambda params: str(int(params["value"])), "4096", "99-tuning.conf")
DEEP_BACKLOG = "4096"  # what a server configured for bursts asks listen() for (nginx, a JVM's)


def _somaxconn_low(ctx: FaultContext, node: LabNode, params: Params) -> None:
    # A low cap alone drops nothing while queues stay short (kernels before 5.4 shipped 128):
    # the fault is a burst meeting it. The cap is taken at listen(), so it is lowered first;
    # then an app that asks for a deep queue gets somaxconn's, stalls (SIGSTOP, as a long GC
    # pause or every worker waiting on its database), and a burst from a pod overflows the
    # short queue where the deep one it asked for would have held every connection.
    _somaxconn_set(ctx, node, params)
    _stalled_app(ctx, node, params["port"], DEEP_BACKLOG)
    _burst(ctx, node, params["port"], int(params["value"]) + int(params["count"]))


def _somaxconn_back(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _stop_matching(ctx, node, f"serve-banner {params['port']} ")
    _somaxconn_reset(ctx, node, params)


register(Fault(
    "somaxconn_low",
    "net.core.somaxconn lowered (param value, default 64) under a burst: an app on the node "
    "(port 30086) asks listen() for a queue of 4096 and gets somaxconn's, stalls (SIGSTOP, "
    "as a long GC pause), and a burst of value + count connects from a pod overflows the "
    "short queue; set at run time (via=sysctl) or by /etc/sysctl.d/99-tuning.conf, applied "
    "(via=file). A low value under queues that stay short drops nothing: "
    "benign_somaxconn_old_default",
    _somaxconn_low, _somaxconn_back,
    {"via": "sysctl", "value": "64", "port": "30086", "count": "32"},
    mechanisms={"sysctl": (), "file": ()},
))
register(Fault(
    "tcp_window_scaling_disabled",
    "net.ipv4.tcp_window_scaling turned off, as tuning copied from old workarounds for "
    "routers that mangled the option does: no TCP window to or from the node grows past 64 KiB; "
    "set at run time (via=sysctl) or by /etc/sysctl.d/99-hardening-tcp.conf, applied "
    "(via=file)",
    *_sysctl_fault("net.ipv4.tcp_window_scaling", lambda params: "0", "1",
                   "99-hardening-tcp.conf"),
    {"via": "sysctl"}, mechanisms={"sysctl": (), "file": ()},
))

# ---- firewall -------------------------------------------------------------------------------

REJECT_ALL = ["-j", "REJECT"]
# The nftables service's own configuration (/etc/nftables.conf as distributions ship it: one
# inet table with empty input, forward and output chains), with a reject added to forward.
NFT_FILTER_TABLE = "filter"
NFT_FILTER_REJECT = """table inet filter {
	chain input {
		type filter hook input priority filter; policy accept;
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		reject with icmpx admin-prohibited
	}
	chain output {
		type filter hook output priority filter; policy accept;
	}
}
"""
FWD_POLICY_CHAIN = "FWD-POLICY"  # an operator's own chain, jumped to from FORWARD


def _forward_reject(ctx: FaultContext, node: LabNode, params: Params) -> None:
    if params["via"] == "iptables":
        _ipt_insert(ctx, node, "FORWARD", REJECT_ALL)
    elif params["via"] == "nft":
        _nft(ctx, node, NFT_FILTER_REJECT)
    elif params["via"] == "userchain":
        # Flows already established come back (RETURN); every new one is refused.
        _restore(ctx, node, f"*filter\n:{FWD_POLICY_CHAIN} - [0:0]\n"
                 f"-A {FWD_POLICY_CHAIN} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n"
                 f"-A {FWD_POLICY_CHAIN} -j REJECT\n"
                 f"-I FORWARD 1 -j {FWD_POLICY_CHAIN}\nCOMMIT\n")
    else:
        raise LabError("forward_chain_reject: via must be iptables, nft or userchain")


def _forward_accept(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _ipt_delete(ctx, node, "FORWARD", REJECT_ALL)
    _ipt_delete(ctx, node, "FORWARD", ["-j", FWD_POLICY_CHAIN])
    _drop_chains(ctx, node, [FWD_POLICY_CHAIN])
    _nft_delete_table(ctx, node, "inet", NFT_FILTER_TABLE)


register(Fault(
    "forward_chain_reject",
    "forwarded pod traffic is refused with ICMP errors: iptables -I FORWARD 1 -j REJECT "
    "(via=iptables); a reject in the forward chain of the nftables service's own `table inet "
    "filter` (via=nft); a jump from FORWARD to an operator's chain FWD-POLICY that returns "
    "established flows and REJECTs the rest (via=userchain)",
    _forward_reject, _forward_accept, {"via": "iptables"},
    mechanisms={"iptables": (), "nft": (), "userchain": ()},
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


DENY_CHAIN = "LOCAL-DENY"  # an operator's own chain of DROPs
# An egress address no lab node holds (TEST-NET-2, routed nowhere in the lab): an SNAT of pod
# traffic to it, as a copied "egress IP" rule leaves, sends every reply there.
SNAT_AWAY = "198.51.100.7"


def _snat_spec(ctx: FaultContext, node: LabNode) -> list[str]:
    return ["-s", node.pod_cidr, "-d", ctx.topology.pod_network, "-j", "SNAT",
            "--to-source", SNAT_AWAY]


# What `ebtables -A OUTPUT -p IPv4 --ip-src ! <pod range> --ip-dst <pod range> -j DROP` leaves
# with ebtables-nft: a rule in the bridge family's own filter table, which iptables never shows.
BRIDGE_DROP = """table bridge filter {{
  chain OUTPUT {{
    type filter hook output priority filter; policy accept;
    meta protocol ip ip saddr != {cidr} ip daddr {cidr} counter drop
  }}
}}
"""


def _drop_on(ctx: FaultContext, node: LabNode, params: Params) -> None:
    if params["via"] in ("peer_in", "peer_out"):
        _ipt_insert(ctx, node, *_peer_drop_spec(ctx, node, params))
        return
    if params["via"] == "bridge":
        ctx.node(node).run(["nft", "-f", "-"], input=BRIDGE_DROP.format(cidr=node.pod_cidr))
        return
    if params["via"] == "arp":
        peer = _entry_peer(ctx, node, params)
        ctx.node(node).run(["arptables", "-A", "INPUT", "-s", peer.address, "-j", "DROP"])
        # as if it had been there for a while: both ends' entries for each other expired
        ctx.node(node).run(["ip", "neigh", "flush", "to", peer.address, "dev", "eth0"])
        ctx.node(peer).run(["ip", "neigh", "flush", "to", node.address, "dev", "eth0"])
        return
    if params["via"] == "snat":
        _ipt_insert(ctx, node, "POSTROUTING", _snat_spec(ctx, node), table="nat")
        return
    chain, spec = _drop_spec(ctx, node, params)
    if params["via"] == "filter":
        _ipt_insert(ctx, node, chain, spec)
    elif params["via"] == "mangle":
        _ipt_insert(ctx, node, chain, spec, table="mangle")
    elif params["via"] == "legacy":
        ctx.node(node).run(["iptables-legacy", "-I", chain, "1", *spec])
    elif params["via"] == "userchain":
        _restore(ctx, node, f"*filter\n:{DENY_CHAIN} - [0:0]\n"
                 f"-A {DENY_CHAIN} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n"
                 f"-A {DENY_CHAIN} {shlex.join(spec)}\n"
                 f"-I {chain} 1 -j {DENY_CHAIN}\nCOMMIT\n")
    else:
        raise LabError("iptables_drop_rule: via must be filter, mangle, legacy, userchain, "
                       "peer_in, peer_out, arp, bridge or snat")


def _arp_table_tidy(ctx: FaultContext, node: LabNode) -> None:
    """arptables-nft leaves its table behind once its last rule is deleted: the node had
    none before."""
    arp_table = ctx.node(node).run(["nft", "list", "table", "arp", "filter"], check=False)
    if arp_table.returncode == 0 and not [
            line for line in arp_table.stdout.splitlines()
            if line.strip() and line.split()[0] not in ("table", "chain", "type", "}")]:
        ctx.node(node).run(["nft", "delete", "table", "arp", "filter"])


def _drop_off(ctx: FaultContext, node: LabNode, params: Params) -> None:
    ctx.node(node).run(["nft", "delete", "table", "bridge", "filter"], check=False)
    _ipt_delete(ctx, node, "POSTROUTING", _snat_spec(ctx, node), table="nat")
    blocked = False
    for peer in ctx.topology.peers(node):  # blind: whichever peer it named
        for via in ("peer_in", "peer_out"):
            spec = _peer_drop_spec(ctx, node, {"via": via, "peer": peer.name})
            blocked = _ipt_delete(ctx, node, *spec) or blocked
    for peer in ctx.topology.peers(node):
        arp = ["-s", peer.address, "-j", "DROP"]
        while ctx.node(node).run(["arptables", "-D", "INPUT", *arp], check=False).returncode == 0:
            blocked = True
    _arp_table_tidy(ctx, node)
    if blocked:
        _pair_mended(ctx)
    chain, spec = _drop_spec(ctx, node, params)
    _ipt_delete(ctx, node, chain, spec)
    _ipt_delete(ctx, node, chain, spec, table="mangle")
    # Only where the node has legacy tables: iptables-legacy -D would create its filter
    # table, which the kernel keeps until the namespace goes.
    if ctx.node(node).run(["cat", "/proc/net/ip_tables_names"], check=False).stdout.strip():
        _delete_every(ctx.node(node), chain, spec, binary="iptables-legacy")
    _ipt_tidy(ctx, node, "mangle", ["FORWARD", "INPUT"])
    for base in ("FORWARD", "INPUT"):
        _ipt_delete(ctx, node, base, ["-j", DENY_CHAIN])
    _drop_chains(ctx, node, [DENY_CHAIN])


register(Fault(
    "iptables_drop_rule",
    "a DROP for the node's pod CIDR at the top of FORWARD (param port: only that port; "
    "chain=INPUT: traffic to the node itself): in the filter table (via=filter), in the "
    "mangle table (via=mangle), in the legacy backend's filter table, which the node's "
    "iptables (nf_tables) only warns of, as a tool that ships its own iptables-legacy writes "
    "it (via=legacy; the empty legacy table stays after the heal: the kernel keeps it until "
    "the namespace goes), or in an operator's chain LOCAL-DENY that FORWARD jumps to "
    "first, after a RETURN for established flows (via=userchain); or a DROP of everything "
    "between the node and one peer's node address (param peer, default the first other "
    "node), from it in INPUT (via=peer_in) or to it in OUTPUT (via=peer_out), or of its ARP, "
    "by an arptables rule (the arp family's filter table) as a load balancer's direct-routing "
    "real servers or a hardening script write one (via=arp); or an ebtables "
    "rule, in the bridge family's filter table, that drops what cni0 sends its pods from "
    "outside the node's pod range (via=bridge); or an SNAT of the node's pod traffic to "
    f"other pods to {SNAT_AWAY}, an address no node holds, in nat POSTROUTING: nothing is "
    "dropped there, the replies go to that address and are lost (via=snat)",
    _drop_on, _drop_off,
    {"via": "filter", "chain": "FORWARD", "port": "", "proto": "tcp", "peer": ""},
    mechanisms={"filter": (), "mangle": (), "legacy": (), "userchain": (), "peer_in": (),
                "peer_out": (), "arp": (),
                "bridge": ("flannel-vxlan", "flannel-host-gw"), "snat": ()},
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


# firewalld >= 0.6 with its nftables backend (FirewallBackend=nftables, the default since
# 0.6): no iptables chains at all, its own `table inet firewalld` whose base chains hook in at
# priority filter + 10, after iptables-nft's filter table, so the CNI's and kube-proxy's
# ACCEPTs there do not spare a packet from firewalld's zone chains and final reject. The
# default zone (public) lets in ssh and ICMP only and forwards nothing.
FIREWALLD_NFT_TABLE = "firewalld"
FIREWALLD_NFT = """table inet firewalld {
	chain filter_INPUT {
		type filter hook input priority filter + 10; policy accept;
		ct state { established, related } accept
		ct status dnat accept
		iifname "lo" accept
		ct state invalid drop
		jump filter_INPUT_ZONES
		reject with icmpx admin-prohibited
	}
	chain filter_FORWARD {
		type filter hook forward priority filter + 10; policy accept;
		ct state { established, related } accept
		ct status dnat accept
		iifname "lo" accept
		ct state invalid drop
		jump filter_FORWARD_ZONES
		reject with icmpx admin-prohibited
	}
	chain filter_OUTPUT {
		type filter hook output priority filter + 10; policy accept;
		ct state { established, related } accept
		oifname "lo" accept
	}
	chain filter_INPUT_ZONES {
		iifname "eth0" goto filter_IN_public
		goto filter_IN_public
	}
	chain filter_FORWARD_ZONES {
		iifname "eth0" goto filter_FWD_public
		goto filter_FWD_public
	}
	chain filter_IN_public {
		jump filter_IN_public_pre
		jump filter_IN_public_log
		jump filter_IN_public_deny
		jump filter_IN_public_allow
		jump filter_IN_public_post
		meta l4proto { icmp, ipv6-icmp } accept
	}
	chain filter_IN_public_pre {
	}
	chain filter_IN_public_log {
	}
	chain filter_IN_public_deny {
	}
	chain filter_IN_public_allow {
		tcp dport 22 ct state { new, untracked } accept
	}
	chain filter_IN_public_post {
	}
	chain filter_FWD_public {
		jump filter_FWD_public_pre
		jump filter_FWD_public_log
		jump filter_FWD_public_deny
		jump filter_FWD_public_allow
		jump filter_FWD_public_post
	}
	chain filter_FWD_public_pre {
	}
	chain filter_FWD_public_log {
	}
	chain filter_FWD_public_deny {
	}
	chain filter_FWD_public_allow {
	}
	chain filter_FWD_public_post {
	}
}
"""
# firewalld is a Python program: ps shows `/usr/bin/python3 -s .../firewalld --nofork
# --nopid`, the kernel's comm is the script's name. The lab's stands in and only sleeps.
DAEMON_SCRIPT = "#!{python} -s\nimport signal\n\nwhile True:\n    signal.pause()\n"
FIREWALLS = ("firewalld", "ufw", "firewalld-nft")


def _firewall(via: str) -> tuple[list[str], str, dict[str, list[str]]]:
    if via == "firewalld":
        return FIREWALLD_CHAINS, FIREWALLD_CHAIN_RULES, FIREWALLD_HEAD
    if via == "ufw":
        return UFW_CHAINS, UFW_CHAIN_RULES, UFW_HEAD
    raise LabError(f"host_firewall_active: via must be one of {', '.join(FIREWALLS)}")


def _start_daemon_script(ctx: FaultContext, node: LabNode, name: str, args: list[str]) -> None:
    script = ctx.paths.node_files(node.name).bin / name
    script.write_text(DAEMON_SCRIPT.format(python=nodehost.which("python3")))
    script.chmod(0o755)
    _start_in_node(ctx, node, [str(script), *args])
    if not nodehost.wait_started(node.netns, name):
        raise LabError(f"{node.name}: {name} did not start")


def _firewall_on(ctx: FaultContext, node: LabNode, params: Params) -> None:
    if params["via"] == "firewalld-nft":
        _nft(ctx, node, FIREWALLD_NFT)
        _start_daemon_script(ctx, node, "firewalld", ["--nofork", "--nopid"])
        return
    chains, rules, head = _firewall(params["via"])
    lines = [f":{chain} - [0:0]" for chain in chains] + rules.splitlines()
    for chain, specs in head.items():
        lines += [f"-I {chain} {position} {spec}"
                  for position, spec in enumerate(specs, start=1)]
    if params["via"] == "ufw":
        # ufw's defaults: deny incoming, deny routed; the CNI's FORWARD accepts stay below.
        lines = [":INPUT DROP [0:0]", ":FORWARD DROP [0:0]", *lines]
    _restore(ctx, node, "*filter\n" + "\n".join(lines) + "\nCOMMIT\n")


def _firewall_off(ctx: FaultContext, node: LabNode, params: Params) -> None:
    for via in ("firewalld", "ufw"):
        chains, _rules, head = _firewall(via)
        for chain, specs in head.items():
            for spec in specs:
                _ipt_delete(ctx, node, chain, spec.split())
        _drop_chains(ctx, node, chains)
    policies = ctx.node(node).run(["iptables", "-S"]).stdout.splitlines()
    for chain in ("INPUT", "FORWARD"):
        if f"-P {chain} ACCEPT" not in policies:  # ufw's
            ctx.node(node).run(["iptables", "-P", chain, "ACCEPT"])
    nodehost.kill(nodehost.procs_in(node.netns, "firewalld"))
    _nft_delete_table(ctx, node, "inet", FIREWALLD_NFT_TABLE)


register(Fault(
    "host_firewall_active",
    "a host firewall's default policy in force above the CNI's rules: the iptables chains "
    "firewalld's iptables backend leaves (INPUT_ZONES, FORWARD_IN_ZONES, ... and a catch-all "
    "REJECT icmp-host-prohibited; via=firewalld); ufw's chains with policy DROP, SSH alone "
    "allowed (via=ufw: VXLAN refused, or BGP and the pods' forwarding, which calico accepts "
    "nowhere else; under host-gw flannel's FORWARD accepts carry the pods and nothing the "
    "cluster sends meets the policy); firewalld's nftables backend: its own `table inet "
    "firewalld` at priority filter + 10 and a running firewalld process, nothing in "
    "iptables (via=firewalld-nft)",
    _firewall_on, _firewall_off, {"via": "firewalld"},
    mechanisms={"firewalld": (), "ufw": ("flannel-vxlan", "calico-bgp"), "firewalld-nft": ()},
))

SECURITY_TABLE = "wsssr_filter"
SECURITY_CHAIN = "WSSSR-FWD"


def _security_on(ctx: FaultContext, node: LabNode, params: Params) -> None:
    name = params["name"]
    link = ctx.paths.node_files(node.name).bin / name
    if not link.is_symlink():
        link.symlink_to(nodehost.which("sleep"))
    _start_in_node(ctx, node, [str(link), "infinity"], name=f"/usr/local/{name}/bin/{name}")
    if params["blocks"] != "1":
        return
    if params["via"] == "nft":
        # Such agents hook netfilter themselves (not via iptables), so iptables-save shows
        # nothing: only `nft list ruleset` or the process list gives them away.
        _nft(ctx, node, f"table inet {SECURITY_TABLE} {{\n  chain forward {{\n"
                        "    type filter hook forward priority -5; policy drop;\n  }\n}\n")
    elif params["via"] == "iptables":
        # An older agent: its own chain, jumped to first from FORWARD, dropping everything.
        _restore(ctx, node, f"*filter\n:{SECURITY_CHAIN} - [0:0]\n"
                 f"-A {SECURITY_CHAIN} -j DROP\n-I FORWARD 1 -j {SECURITY_CHAIN}\nCOMMIT\n")
    else:
        raise LabError("security_software_present: via must be nft or iptables")


def _security_off(ctx: FaultContext, node: LabNode, params: Params) -> None:
    nodehost.kill(nodehost.procs_in(node.netns, params["name"]))
    _nft_delete_table(ctx, node, "inet", SECURITY_TABLE)
    _ipt_delete(ctx, node, "FORWARD", ["-j", SECURITY_CHAIN])
    _drop_chains(ctx, node, [SECURITY_CHAIN])


register(Fault(
    "security_software_present",
    "a host security agent (process wsssr_defence_daemon, param name) that drops forwarded "
    "traffic through its own nftables hook (via=nft) or its own iptables chain WSSSR-FWD "
    "jumped to first from FORWARD (via=iptables); blocks=0: the process only",
    _security_on, _security_off, {"via": "nft", "name": "wsssr_defence_daemon", "blocks": "1"},
    mechanisms={"nft": (), "iptables": ()},
))

# ---- overlay / routing --------------------------------------------------------------------


def _vxlan_drop(ctx: FaultContext, node: LabNode) -> list[str]:
    port = str(ctx.active.vxlan_port(node.name))
    return ["-p", "udp", "-m", "udp", "--dport", port, "-j", "DROP"]


def _switch_table(node: LabNode, what: str) -> str:
    return f"knd{what}_{node.name}"


def _switch_block(ctx: FaultContext, node: LabNode, what: str, match: str,
                  both_ways: bool = False) -> None:
    """Drop what `match` matches on the switch port towards the node, like a cloud security
    group: the node never sees it arrive (its own capture neither). `both_ways`: what the
    node sends through the port too."""
    ports = ["oifname"] + (["iifname"] if both_ways else [])
    rules = (f"table bridge {_switch_table(node, what)} {{\n chain block {{\n"
             "  type filter hook forward priority 0; policy accept;\n"
             + "".join(f'  {way} "swp{node.index}" {match} drop\n' for way in ports)
             + " }\n}\n")
    ctx.runners.switch.run(["nft", "-f", "-"], input=rules)


def _switch_unblock(ctx: FaultContext, node: LabNode, what: str) -> None:
    ctx.runners.switch.run(["nft", "delete", "table", "bridge", _switch_table(node, what)],
                           check=False)


VXLAN_GUARD_TABLE = "guard"  # a hardening tool's own nftables table


def _tc_drop_udp(port: int) -> str:
    """`tc ... bpf da bytecode` text: a classic BPF program for an ingress filter in
    direct-action mode that returns TC_ACT_SHOT for IPv4 UDP to `port` and TC_ACT_UNSPEC
    (on to the next filter: none, so the packet passes) for anything else. The lab kernel has
    cls_bpf and cls_u32 but no gact or flower, so `u32 ... action drop` is not available;
    at ingress the program sees the frame from its Ethernet header."""
    prog = [
        (0x28, 0, 0, 12),          # ldh [12]: EtherType
        (0x15, 0, 6, 0x0800),      # IPv4, else pass
        (0x30, 0, 0, 23),          # ldb [23]: IP protocol
        (0x15, 0, 4, 17),          # UDP, else pass
        (0xB1, 0, 0, 14),          # ldxb 4*([14]&0xf): IP header length
        (0x48, 0, 0, 16),          # ldh [x+16]: UDP destination port
        (0x15, 0, 1, port),        # the port, else pass
        (0x06, 0, 0, 2),           # ret TC_ACT_SHOT
        (0x06, 0, 0, 0xFFFFFFFF),  # ret TC_ACT_UNSPEC
    ]
    return f"{len(prog)}," + ",".join(f"{code} {jt} {jf} {k}" for code, jt, jf, k in prog)


def _vxlan_block(ctx: FaultContext, node: LabNode, params: Params) -> None:
    port = ctx.active.vxlan_port(node.name)
    if params["via"] == "input":
        _ipt_insert(ctx, node, "INPUT", _vxlan_drop(ctx, node))
    elif params["via"] == "switch":
        # a node-local INPUT DROP would still show them in the node's capture, which happens
        # before netfilter; this one does not
        _switch_block(ctx, node, "vx", f"udp dport {port}")
    elif params["via"] == "nft":
        # nothing in iptables-save: a native table of its own, hooked at input
        _nft(ctx, node, f"table inet {VXLAN_GUARD_TABLE} {{\n\tchain input {{\n"
                        "\t\ttype filter hook input priority filter; policy accept;\n"
                        f"\t\tudp dport {port} drop\n\t}}\n}}\n")
    elif params["via"] == "prerouting":
        # before routing and conntrack: the raw table's PREROUTING
        _ipt_insert(ctx, node, "PREROUTING", _vxlan_drop(ctx, node), table="raw")
    elif params["via"] == "egress":
        # on the way out, in the node's own nftables: a netdev table on eth0's egress hook,
        # which runs after postrouting and before tcpdump taps the packet (Linux 5.16+)
        _nft(ctx, node, f"table netdev {VXLAN_GUARD_TABLE} {{\n\tchain out {{\n"
                        "\t\ttype filter hook egress device \"eth0\" priority filter; "
                        f"policy accept;\n\t\tudp dport {port} drop\n\t}}\n}}\n")
    elif params["via"] in ("tc", "tc_egress"):
        # below netfilter: a tc filter on eth0 (clsact), seen by neither iptables nor nft; on
        # the way out (tc_egress) the node's own VXLAN never leaves, and no capture on the
        # node sees it try
        runner = ctx.node(node)
        runner.run(["tc", "qdisc", "add", "dev", "eth0", "clsact"])
        runner.run(["tc", "filter", "add", "dev", "eth0",
                    "ingress" if params["via"] == "tc" else "egress", "bpf", "da", "bytecode",
                    _tc_drop_udp(port)])
    else:
        raise LabError("vxlan_udp_blocked: via must be input, switch, nft, prerouting, egress, "
                       "tc or tc_egress")


def _vxlan_unblock(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _ipt_delete(ctx, node, "INPUT", _vxlan_drop(ctx, node))
    _switch_unblock(ctx, node, "vx")
    _nft_delete_table(ctx, node, "inet", VXLAN_GUARD_TABLE)
    _nft_delete_table(ctx, node, "netdev", VXLAN_GUARD_TABLE)
    _ipt_delete(ctx, node, "PREROUTING", _vxlan_drop(ctx, node), table="raw")
    _ipt_tidy(ctx, node, "raw", ["PREROUTING"])
    qdiscs = ctx.node(node).run(["tc", "qdisc", "show", "dev", "eth0"], check=False).stdout
    if "clsact" in qdiscs:
        ctx.node(node).run(["tc", "qdisc", "del", "dev", "eth0", "clsact"])


NODEPORT_RANGE = "30000-32767"  # kube-apiserver's default --service-node-port-range


def _nodeports_filtered(ctx: FaultContext, node: LabNode, params: Params) -> None:
    if params["via"] != "switch":
        raise LabError("nodeport_fails_from_peers: via must be switch")
    # A security group never opened for the NodePort range; the node's own connects to its
    # NodePorts never leave it. Only the SYNs that open a connection are dropped, as a
    # stateful security group does: kube-proxy masquerades with --random-fully, so the reply
    # to the node's own connect to a remote endpoint may come back to a port in the range
    # (one connect in twenty or so), and a stateless drop made that connect fail too.
    _switch_block(ctx, node, "np", f"ip daddr {node.address} tcp dport {NODEPORT_RANGE} "
                                   "tcp flags & (syn | ack) == syn")


def _nodeports_unfiltered(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _switch_unblock(ctx, node, "np")


register(Fault(
    "nodeport_fails_from_peers",
    f"new TCP connections to the NodePort range ({NODEPORT_RANGE}) dropped (their SYN) on "
    "the switch port towards the node, like a cloud security group never opened for it, "
    "which lets replies through (via=switch): the node's own "
    "connects to its NodePorts work, its peers' time out, and nothing on the node shows why",
    _nodeports_filtered, _nodeports_unfiltered, {"via": "switch"},
    mechanisms={"switch": ()},
))


def _lossy_port(ctx: FaultContext, node: LabNode, params: Params) -> None:
    pct = params["pct"]
    if not pct.isdigit() or not 0 < int(pct) < 100:
        raise LabError(f"underlay_packet_loss: pct must be a whole number from 1 to 99, "
                       f"not {pct!r}")
    if params["via"] == "statistic":
        # a chaos experiment's leftover: its tool stopped before it removed its rules
        drop = ["-m", "statistic", "--mode", "random", "--probability",
                f"{int(pct) / 100:.2f}", "-j", "DROP"]
        for chain in ("INPUT", "OUTPUT"):
            _ipt_insert(ctx, node, chain, drop)
        return
    if params["via"] != "switch":
        raise LabError("underlay_packet_loss: via must be switch or statistic")
    # A failing cable or transceiver on the switch port: frames lost at random both ways, the
    # rest delivered; the node's own counters show none of it. The kernel has no netem, and
    # nft's random number generator in the bridge's forward hook does the same per frame.
    _switch_block(ctx, node, "loss", f"numgen random mod 100 < {pct}", both_ways=True)


def _lossless_port(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _switch_unblock(ctx, node, "loss")
    # whatever share it was made with: a blind heal knows only the default
    for chain in ("INPUT", "OUTPUT"):
        for line in ctx.node(node).run(["iptables", "-S", chain]).stdout.splitlines():
            spec = line.split()[2:]
            if line.startswith(f"-A {chain} -m statistic --mode random") and \
                    spec[-2:] == ["-j", "DROP"]:
                ctx.node(node).run(["iptables", "-D", chain, *spec], check=False)


register(Fault(
    "underlay_packet_loss",
    "the node's link onto the node network loses a share of its frames at random, both ways "
    "(param pct, default 10 in each direction), and delivers the rest, as a failing cable, "
    "transceiver or switch port does: dropped on the switch port towards the node "
    "(via=switch), where nothing on the node counts them; or by the node's own packet filter, "
    "an iptables statistic match in random mode at the top of INPUT and OUTPUT, as a chaos "
    "experiment whose tool stopped before it cleaned up leaves it (via=statistic). Every call "
    "across the link fails now and then, each time another one",
    _lossy_port, _lossless_port, {"via": "switch", "pct": "10"},
    mechanisms={"switch": (), "statistic": ()},
))


VXLAN_BLOCKS = ("input", "switch", "nft", "prerouting", "egress", "tc", "tc_egress")
register(Fault(
    "vxlan_udp_blocked",
    "inbound UDP 8472 dropped, so VXLAN from peers never arrives while the node's own VXLAN "
    "still goes out: on the node's INPUT chain (via=input); on the switch port towards the "
    "node like a cloud security group (via=switch); by a native nftables table of its own, "
    "`table inet guard` at the input hook (via=nft); in the raw table's PREROUTING "
    "(via=prerouting); by a tc ingress filter on eth0 (via=tc, classic BPF in direct-action "
    "mode). Or outbound, by the node itself: its VXLAN to every peer dropped at eth0's "
    "egress hook by `table netdev guard` (via=egress), after postrouting and before a capture "
    "could show it leave, or by the same tc program on eth0's egress (via=tc_egress)",
    _vxlan_block, _vxlan_unblock, {"via": "input"},
    modes=("flannel-vxlan",), mechanisms=dict.fromkeys(VXLAN_BLOCKS, ()),
))


# ---- one rule of an operator's, in iptables or in a native nftables table -------------------


@dataclass(frozen=True)
class OwnRule:
    """A fault that is one rule an operator adds: with iptables (via=iptables, `spec` inserted
    at the top of `chain` in `table`) or in a native nftables table of its own (via=nft:
    `family name`, one base chain at `hook` and `priority` holding `statement`)."""

    table: str
    chain: str
    spec: tuple[str, ...]
    nft_table: str
    hook: str
    priority: str
    statement: str

    def add(self, ctx: FaultContext, node: LabNode, params: Params) -> None:
        if params["via"] == "iptables":
            _ipt_insert(ctx, node, self.chain, list(self.spec), table=self.table)
        else:
            _nft(ctx, node, f"table {self.nft_table} {{\n\tchain {self.hook} {{\n"
                            f"\t\ttype filter hook {self.hook} priority {self.priority}; "
                            f"policy accept;\n\t\t{self.statement}\n\t}}\n}}\n")

    def remove(self, ctx: FaultContext, node: LabNode, params: Params) -> None:
        _ipt_delete(ctx, node, self.chain, list(self.spec), table=self.table)
        if self.table != "filter":  # the filter table's chains exist before any fault
            _ipt_tidy(ctx, node, self.table, [self.chain])
        _nft_delete_table(ctx, node, *self.nft_table.split(" ", 1))


ECHO_DROP = OwnRule("filter", "INPUT", ("-p", "icmp", "--icmp-type", "echo-request", "-j", "DROP"),
                    "inet hardening", "input", "filter", "icmp type echo-request drop")
ECHO_FILE = "99-no-ping.conf"  # sorts after 99-kubernetes-cri.conf


def _echo_off(ctx: FaultContext, node: LabNode, params: Params) -> None:
    if params["via"] == "file":
        _sysctl_file(ctx, node, ECHO_FILE, "net.ipv4.icmp_echo_ignore_all = 1")
    else:
        ECHO_DROP.add(ctx, node, params)


def _echo_on(ctx: FaultContext, node: LabNode, params: Params) -> None:
    ECHO_DROP.remove(ctx, node, params)
    (ctx.paths.node_files(node.name).sysctl_d / ECHO_FILE).unlink(missing_ok=True)
    _sysctl(ctx, node, "net.ipv4.icmp_echo_ignore_all=0")


register(Fault(
    "icmp_echo_blocked",
    "pings to the node dropped, as a hardening script or firewall profile does, while its "
    "TCP and UDP pass: an ICMP echo-request DROP at the top of INPUT (via=iptables), or in "
    "the input chain of a native nftables table of its own (via=nft), or the kernel told to "
    f"answer none (net.ipv4.icmp_echo_ignore_all = 1 in /etc/sysctl.d/{ECHO_FILE}, applied; "
    "via=file), which no rule listing shows. Nothing Kubernetes needs breaks; every ping of "
    "the node fails, the connectivity matrix's included",
    _echo_off, _echo_on, {"via": "iptables"},
    mechanisms={"iptables": (), "nft": (), "file": ()},
))

DNS_NOTRACK = OwnRule("raw", "PREROUTING", ("-p", "udp", "--dport", "53", "-j", "NOTRACK"),
                      "ip dns_notrack", "prerouting", "raw", "udp dport 53 notrack")
register(Fault(
    "notrack_rule",
    "DNS exempted from connection tracking ahead of kube-proxy, as advice against conntrack "
    "races on DNS has it, so the nat table never translates it and the node's pods lose DNS "
    "through the cluster DNS Service (its VIP), while DNS to CoreDNS pods still works: every "
    "UDP packet to port 53 untracked in raw PREROUTING (via=iptables), or by a native "
    "nftables table of its own at priority raw (via=nft)",
    DNS_NOTRACK.add, DNS_NOTRACK.remove, {"via": "iptables"},
    mechanisms={"iptables": (), "nft": ()},
))


MISMATCH_PORTS = {"netconf": 8475, "link": 4789}  # via=link: the IANA port, typed by hand


def _mismatch_port(params: Params) -> int:
    return int(params["port"]) if params.get("port") else MISMATCH_PORTS[params["via"]]


def _vxlan_device(runner: NodeRunner) -> dict[str, Any]:
    """Everything flannel.1 holds that a by-hand recreation must put back: the link's own
    settings (index, MAC, MTU, VXLAN attributes), its addresses, FDB entries, neighbours,
    routes and its sysctls."""
    link = json.loads(runner.run(["ip", "-j", "-d", "link", "show", flannel.VXLAN_DEV]
                                 ).stdout)[0]
    dev = flannel.VXLAN_DEV
    return {
        "link": link,
        "addrs": runner.run(["ip", "-4", "-o", "addr", "show", "dev", dev]).stdout,
        "fdb": runner.run(["bridge", "fdb", "show", "dev", dev]).stdout,
        "neigh": runner.run(["ip", "-4", "neigh", "show", "dev", dev, "nud", "permanent"]
                            ).stdout,
        "routes": runner.run(["ip", "-4", "route", "show", "table", "main", "dev", dev]).stdout,
        "sysctls": {key: value for key, value in _sysctl_lines(runner).items()
                    if key.startswith((f"net.ipv4.conf.{_sysctl_dev(dev)}.",
                                       f"net.ipv6.conf.{_sysctl_dev(dev)}."))},
    }


VXLAN_OLD = "flannel.old"


def _recreate_vxlan(ctx: FaultContext, node: LabNode, port: int, vni: int | None = None
                    ) -> None:
    """Delete flannel.1 and create it again by hand on UDP `port` (and VNI `vni`, else its
    own), as an SRE would with `ip link add ... type vxlan id ... dstport`, then put back
    what flanneld had programmed on it (flanneld does not notice: it programs a peer's
    entries only when its lease changes, and it watches only for flannel.1 being deleted).
    Same index, MAC, MTU, local address and flags, so nothing but the port or VNI differs."""
    runner = ctx.node(node)
    was = _vxlan_device(runner)
    link, info = was["link"], was["link"]["linkinfo"]["info_data"]
    dev = flannel.VXLAN_DEV
    # Renamed away before it is deleted: flanneld (v0.27+) watches for flannel.1 being
    # deleted and creates its own again at once; a deleted device by another name it ignores.
    runner.run(["ip", "link", "set", dev, "down"])
    runner.run(["ip", "link", "set", dev, "name", VXLAN_OLD])
    runner.run(["ip", "link", "del", VXLAN_OLD])
    add = ["ip", "link", "add", dev, "index", str(link["ifindex"]), "address", link["address"],
           "mtu", str(link["mtu"]), "txqueuelen", str(link.get("txqlen", 0)),
           "type", "vxlan", "id", str(info["id"] if vni is None else vni),
           "local", info["local"], "dev", info["link"], "dstport", str(port),
           "learning" if info.get("learning") else "nolearning",
           "ageing", str(info.get("ageing", 300)),
           "udpcsum" if info.get("udp_csum") else "noudpcsum"]
    if info.get("ttl"):
        add += ["ttl", str(info["ttl"])]
    for _ in range(50):  # bounded: the old index is free once the kernel has let go of it
        cp = runner.run(add, check=False)
        if cp.returncode == 0:
            break
        run(["sleep", "0.02"])
    else:
        raise LabError(f"{node.name}: could not create {dev} again: {cp.stderr.strip()}")
    now = _sysctl_lines(runner)
    changed = [f"{key}={value}" for key, value in was["sysctls"].items()
               if now.get(key) != value]
    if changed:
        _sysctl(ctx, node, *changed)
    for line in was["addrs"].splitlines():  # "6: flannel.1    inet 10.244.2.0/32 scope global"
        words = line.split()
        runner.run(["ip", "addr", "add", words[words.index("inet") + 1], "dev", dev,
                    *words[words.index("scope"):words.index("scope") + 2]])
    if "UP" in link.get("flags", []):
        runner.run(["ip", "link", "set", dev, "up"])
    for line in was["fdb"].splitlines():  # "<mac> dst <ip> self permanent"
        words = line.split()
        if "dst" in words and "permanent" in words:
            runner.run(["bridge", "fdb", "append", words[0], "dev", dev,
                        "dst", words[words.index("dst") + 1], "self", "permanent"])
    _reprogram_vxlan(runner, was)


def _reprogram_vxlan(runner: NodeRunner, was: dict[str, Any]) -> None:
    """Put back flanneld's neighbours and routes on flannel.1 (the kernel flushes both when
    the device goes down; the FDB entries stay)."""
    dev = flannel.VXLAN_DEV
    for line in was["neigh"].splitlines():  # "<ip> lladdr <mac> PERMANENT"
        words = line.split()
        if "lladdr" in words:
            runner.run(["ip", "neigh", "replace", words[0], "lladdr",
                        words[words.index("lladdr") + 1], "dev", dev, "nud", "permanent"])
    for line in was["routes"].splitlines():  # "10.244.1.0/24 via 10.244.1.0 onlink"
        words = line.split()
        if words and words[0] not in ("local", "broadcast"):
            runner.run(["ip", "route", "replace", *words, "dev", dev])


def _vxlan_port_set(ctx: FaultContext, node: LabNode, params: Params) -> None:
    port = _mismatch_port(params)
    if params["via"] == "netconf":
        # The way a node ends up on another port through its configuration: its flanneld
        # (re)started with another net-conf.json than its peers'; flanneld then recreates
        # flannel.1 on that port.
        flannel.set_port(ctx.topology, ctx.paths, node, port)
        flannel.restart(ctx.topology, ctx.paths, node, ctx.node(node))
    elif params["via"] == "link":
        # By hand under a running flanneld, whose configuration still says 8472: flannel.1
        # deleted and created again with another dstport (the IANA 4789, as `ip link add`
        # examples have it), flanneld's entries put back.
        _recreate_vxlan(ctx, node, port)
    else:
        raise LabError("vxlan_port_mismatch: via must be netconf or link")
    if flannel.vxlan_port(ctx.node(node)) != port:
        raise LabError(f"vxlan_port_mismatch: flannel.1 on {node.name} is not on port {port}")


def _vxlan_port_heal(ctx: FaultContext, node: LabNode, params: Params) -> None:
    configured = flannel.configured_port(ctx.paths, node)
    flannel.set_port(ctx.topology, ctx.paths, node, None)
    ctx.node(node).run(["ip", "link", "del", VXLAN_OLD], check=False)  # an inject cut short
    if flannel.vxlan_port(ctx.node(node)) in (flannel.VXLAN_PORT, None):
        return
    if configured is None:
        # via=link: flanneld runs with the cluster's configuration and does not know its
        # device changed; the device goes back exactly as it was (flanneld not restarted)
        _recreate_vxlan(ctx, node, flannel.VXLAN_PORT)
    else:
        # via=netconf: flanneld cannot compare a port it was not given, so it keeps a device
        # on another one; deleting it first makes it create flannel.1 on the default again
        flannel.restart(ctx.topology, ctx.paths, node, ctx.node(node), recreate_device=True)


register(Fault(
    "vxlan_port_mismatch",
    "the node's flannel.1 on another VXLAN port than its peers' 8472 (param port): its "
    "flanneld restarted with a net-conf.json that sets the port, so flanneld moves flannel.1 "
    "there (via=netconf, default 8475); or flannel.1 replaced by hand with one on `dstport "
    "4789` (via=link, default 4789) under a running flanneld whose configuration still says "
    "8472, its FDB entries, neighbours and routes put back",
    _vxlan_port_set, _vxlan_port_heal, {"via": "netconf", "port": ""}, modes=("flannel-vxlan",),
    mechanisms={"netconf": (), "link": ()},
))


# ---- the VXLAN network number ---------------------------------------------------------------

OTHER_VNI = 2  # what via=link gives flannel.1 by default: flannel's default is 1


def _vni_set(ctx: FaultContext, node: LabNode, params: Params) -> None:
    vni = int(params["vni"] or OTHER_VNI)
    if vni == flannel.VXLAN_VNI or not 0 < vni < 1 << 24:
        raise LabError(f"vxlan_vni_mismatch: vni must be 1 to 16777215 and not "
                       f"{flannel.VXLAN_VNI}, got {vni}")
    if params["via"] == "link":
        # flannel.1 replaced by hand with another `id` under a running flanneld whose
        # configuration still says VNI 1, its FDB entries, neighbours and routes put back
        _recreate_vxlan(ctx, node, ctx.active.vxlan_port(node.name), vni)
        dev = flannel.VXLAN_DEV
    elif params["via"] == "netconf":
        # The node's flanneld restarted with a net-conf.json that sets Backend.VNI, as after
        # the kube-flannel-cfg ConfigMap was edited and only this node's pod restarted:
        # flanneld makes a device named after the VNI, flannel.<VNI>, and moves its routes
        # there; flannel.1 stays, up, with nothing routed through it.
        flannel.set_vni(ctx.topology, ctx.paths, node, vni)
        flannel.restart(ctx.topology, ctx.paths, node, ctx.node(node))
        dev = flannel.device(ctx.paths, node)
    else:
        raise LabError("vxlan_vni_mismatch: via must be link or netconf")
    if flannel.vxlan_vni(ctx.node(node), dev) != vni:
        raise LabError(f"vxlan_vni_mismatch: {dev} on {node.name} is not on VNI {vni}")


def _vni_heal(ctx: FaultContext, node: LabNode, params: Params) -> None:
    runner = ctx.node(node)
    runner.run(["ip", "link", "del", VXLAN_OLD], check=False)  # an inject cut short
    configured = flannel.configured_vni(ctx.paths, node)
    if configured is not None:
        # via=netconf: the cluster's configuration back, the device of the other VNI gone;
        # flanneld takes flannel.1, still there on VNI 1, and routes through it again
        other = flannel.device(ctx.paths, node)
        flannel.set_vni(ctx.topology, ctx.paths, node, None)
        flannel.restart(ctx.topology, ctx.paths, node, runner, delete=(other,))
    if flannel.vxlan_vni(runner) not in (flannel.VXLAN_VNI, None):
        _recreate_vxlan(ctx, node, ctx.active.vxlan_port(node.name), flannel.VXLAN_VNI)


register(Fault(
    "vxlan_vni_mismatch",
    "the node's VXLAN device on another network number than its peers' 1 (param vni, "
    "default 2): flannel.1 replaced by hand with that `id` under a running flanneld whose "
    "configuration still says 1, its FDB entries, neighbours and routes put back (via=link); "
    "or its flanneld restarted with a net-conf.json that sets Backend.VNI, as after the "
    "ConfigMap was edited and only this node's pod restarted, so flanneld makes flannel.2 "
    "and routes through it, flannel.1 left up beside it with no route (via=netconf). The "
    "port is right, and every frame between the node and its peers is dropped on arrival",
    _vni_set, _vni_heal, {"via": "link", "vni": ""}, modes=("flannel-vxlan",),
    mechanisms={"link": (), "netconf": ()},
))


# ---- the VXLAN port held by another program -------------------------------------------------

VXLAN_SAVED = "flannel.1-saved.json"  # flannel.1's routes and neighbours while the fault holds


def _vxlan_saved(ctx: FaultContext, node: LabNode) -> Path:
    return ctx.paths.node_files(node.name).dir / VXLAN_SAVED


def _hold_port(ctx: FaultContext, node: LabNode, params: Params) -> None:
    """Another program takes the VXLAN port while flannel.1 is down for a moment (a flanneld
    restart, an interface bounce): the kernel cannot open the device's socket again, so
    `ip link set flannel.1 up` fails with EADDRINUSE and the device stays down."""
    port = str(ctx.active.vxlan_port(node.name))
    if params["via"] == "wildcard":
        bind = "0.0.0.0"
    elif params["via"] == "address":
        bind = node.address  # the node's own address: a wildcard bind then collides too
    else:
        raise LabError("vxlan_port_in_use: via must be wildcard or address")
    runner = ctx.node(node)
    saved = _vxlan_saved(ctx, node)
    saved.write_text(json.dumps(_vxlan_device(runner)))
    runner.run(["ip", "link", "set", flannel.VXLAN_DEV, "down"])
    _start_in_node(ctx, node, services.netprog_argv("udp-stuck", port, "212992", "--bind",
                                                    bind))
    _wait_listen(ctx, node, int(port), "udp")
    cp = runner.run(["ip", "link", "set", flannel.VXLAN_DEV, "up"], check=False)
    if cp.returncode == 0 or "in use" not in cp.stderr:
        raise LabError(f"vxlan_port_in_use: flannel.1 on {node.name} came up: {cp.stderr}")


def _release_port(ctx: FaultContext, node: LabNode, params: Params) -> None:
    port = str(ctx.active.vxlan_port(node.name))
    _stop_matching(ctx, node, f"udp-stuck {port} ")
    saved = _vxlan_saved(ctx, node)
    if not saved.exists():
        return
    runner = ctx.node(node)
    runner.run(["ip", "link", "set", flannel.VXLAN_DEV, "up"])
    _reprogram_vxlan(runner, json.loads(saved.read_text()))
    saved.unlink()


register(Fault(
    "vxlan_port_in_use",
    "another program holds the node's VXLAN UDP port (8472) while flannel.1 is bounced, so "
    "the device cannot open its socket and stays down: bound to 0.0.0.0 (via=wildcard) or "
    "to the node's own address (via=address)",
    _hold_port, _release_port, {"via": "wildcard"}, modes=("flannel-vxlan",),
    mechanisms={"wildcard": (), "address": ()},
))

# ---- the VXLAN device switched off ----------------------------------------------------------


def _vxlan_off(ctx: FaultContext, node: LabNode, params: Params) -> None:
    """flannel.1 set down by hand (or by a script, an ifdown, a network manager that claims
    it), with no program on its port and its NIC up. The kernel deletes the device's routes
    and neighbours as it goes down; flanneld notices none of it."""
    if params["via"] != "link":
        raise LabError("overlay_device_down: via must be link")
    runner = ctx.node(node)
    saved = _vxlan_saved(ctx, node)
    saved.write_text(json.dumps(_vxlan_device(runner)))
    runner.run(["ip", "link", "set", flannel.VXLAN_DEV, "down"])


def _vxlan_on(ctx: FaultContext, node: LabNode, params: Params) -> None:
    runner = ctx.node(node)
    runner.run(["ip", "link", "set", flannel.VXLAN_DEV, "up"])
    saved = _vxlan_saved(ctx, node)
    if saved.exists():  # what flanneld had written, put back as it was
        _reprogram_vxlan(runner, json.loads(saved.read_text()))
        saved.unlink()
    if not all(_route_ok(ctx, node, peer) for peer in ctx.topology.peers(node)):
        # healed blind: flanneld programs every peer's route and neighbour when it starts
        flannel.restart(ctx.topology, ctx.paths, node, runner)


register(Fault(
    "overlay_device_down",
    "the node's flannel.1 switched off (`ip link set flannel.1 down`, as by hand, a cleanup "
    "script or a network manager that claims it; via=link) while its port is free and its "
    "NIC up: the kernel deletes its routes and neighbours, so the node's pods reach no pod "
    "on another node (heal brings it up and puts back what flanneld had written)",
    _vxlan_off, _vxlan_on, {"via": "link"}, modes=("flannel-vxlan",),
    mechanisms={"link": ()},
))


def _link_mac(ctx: FaultContext, node: LabNode, dev: str) -> str:
    link = json.loads(ctx.node(node).run(["ip", "-j", "link", "show", dev]).stdout)[0]
    return str(link["address"])


def _vtep_mac(ctx: FaultContext, node: LabNode) -> str:
    """The MAC of the node's flannel.1: its VTEP MAC, as flanneld announces it."""
    return _link_mac(ctx, node, flannel.VXLAN_DEV)


def _peer_entries(ctx: FaultContext, node: LabNode, peer: LabNode) -> tuple[str, str, str]:
    """(VTEP address, VTEP MAC, underlay address) flanneld programs on `node` for `peer`:
    the peer's pod range's network address, its flannel.1 MAC, its node address."""
    return peer.pod_cidr.split("/")[0], _vtep_mac(ctx, peer), peer.address


def _entry_peer(ctx: FaultContext, node: LabNode, params: Params) -> LabNode:
    if params.get("peer"):
        return ctx.topology.node(params["peer"])
    return next(n for n in ctx.topology.nodes if n.name != node.name)


def _entry_drop(ctx: FaultContext, node: LabNode, params: Params) -> None:
    """One peer's entry on flannel.1 deleted by hand (a cleanup script, a `ip neigh flush`
    aimed at something else): the route to the peer's pods stays, the packets have no MAC or
    no underlay address to go to. flanneld writes the entries only when the peer's lease
    changes, so it does not put them back."""
    vtep, mac, address = _peer_entries(ctx, node, _entry_peer(ctx, node, params))
    runner = ctx.node(node)
    if params["via"] == "fdb":
        runner.run(["bridge", "fdb", "del", mac, "dev", flannel.VXLAN_DEV, "dst", address,
                    "self"])
    elif params["via"] == "neigh":
        runner.run(["ip", "neigh", "del", vtep, "dev", flannel.VXLAN_DEV])
    else:
        raise LabError("vxlan_peer_entry_missing: via must be fdb or neigh")


def _entry_fresh(ctx: FaultContext, node: LabNode, params: Params) -> None:
    # every peer's entries as flanneld writes them, each replaced in place (or made): a blind
    # heal does not know which peer, and an FDB entry appended beside a stale one keeps both
    runner = ctx.node(node)
    for peer in ctx.topology.nodes:
        if peer.name == node.name:
            continue
        vtep, mac, address = _peer_entries(ctx, node, peer)
        runner.run(["bridge", "fdb", "replace", mac, "dev", flannel.VXLAN_DEV, "dst", address,
                    "self", "permanent"])
        runner.run(["ip", "neigh", "replace", vtep, "lladdr", mac, "dev", flannel.VXLAN_DEV,
                    "nud", "permanent"])


register(Fault(
    "vxlan_peer_entry_missing",
    "on the node's flannel.1, the entries flanneld wrote for one peer (param peer, default "
    "the first other node) deleted while its route stays: the FDB entry that maps the peer's "
    "VTEP MAC to its node address (via=fdb), or the permanent neighbour entry that gives the "
    "peer's VTEP address its MAC (via=neigh)",
    _entry_drop, _entry_fresh, {"via": "fdb", "peer": ""}, modes=("flannel-vxlan",),
    mechanisms={"fdb": (), "neigh": ()},
))


def _stale_mac(peer: LabNode) -> str:
    """The MAC a peer's flannel.1 had before it was re-created: a locally administered one,
    fixed per peer so that tests can look for it."""
    return f"02:00:5e:10:{peer.index % 256:02x}:01"


def _entry_stale(ctx: FaultContext, node: LabNode, params: Params) -> None:
    """One peer's entries on flannel.1 left as they were before the peer changed, as after the
    node's flanneld missed the peer's new announcement: the neighbour entry with the MAC the
    peer's device had before it was re-created (via=mac), or the FDB entry sending the peer's
    MAC to the address it had before it was renumbered (via=dst)."""
    peer = _entry_peer(ctx, node, params)
    vtep, mac, _ = _peer_entries(ctx, node, peer)
    runner = ctx.node(node)
    if params["via"] == "mac":
        runner.run(["ip", "neigh", "replace", vtep, "lladdr", _stale_mac(peer), "dev",
                    flannel.VXLAN_DEV, "nud", "permanent"])
    elif params["via"] == "dst":
        runner.run(["bridge", "fdb", "replace", mac, "dev", flannel.VXLAN_DEV, "dst",
                    RETIRED_NODE_ADDRESS, "self", "permanent"])
    else:
        raise LabError("vxlan_peer_entry_stale: via must be mac or dst")


register(Fault(
    "vxlan_peer_entry_stale",
    "on the node's flannel.1, the entries for one peer (param peer, default the first other "
    "node) left from before the peer changed, while its route stays: the neighbour entry "
    "still gives the MAC its flannel.1 had before it was re-created (via=mac), or the FDB "
    "entry still sends its MAC to the address it had before it was renumbered, "
    f"{RETIRED_NODE_ADDRESS} (via=dst)",
    _entry_stale, _entry_fresh, {"via": "mac", "peer": ""}, modes=("flannel-vxlan",),
    mechanisms={"mac": (), "dst": ()},
))


# ---- two nodes' VXLAN devices with one MAC -----------------------------------------------------

VTEP_MAC_SAVED = "vtep-mac-own"  # the node's own flannel.1 MAC, kept while a peer's is on it
VTEP_ANNOUNCED_S = 20.0  # peers' flanneld follow a node's new VtepMAC within a few seconds


def _mac_saved(ctx: FaultContext, node: LabNode, name: str = VTEP_MAC_SAVED) -> Path:
    """Where a MAC the lab changed on the node is kept until its heal."""
    return ctx.paths.node_files(node.name).dir / name


def _vtep_announced(ctx: FaultContext, node: LabNode, mac: str) -> None:
    """Wait until every other node's flanneld has the node's VTEP at `mac` (its neighbour
    entry), as it programs it from the node's announcement in the API."""
    vtep = node.pod_cidr.split("/")[0]
    deadline = time.monotonic() + VTEP_ANNOUNCED_S
    for other in ctx.topology.peers(node):
        while f"lladdr {mac} " not in ctx.node(other).run(
                ["ip", "neigh", "show", vtep, "dev", flannel.VXLAN_DEV]).stdout + " ":
            if time.monotonic() > deadline:
                raise LabError(f"vxlan_mac_duplicate: {other.name} did not take {node.name}'s "
                               f"VTEP MAC {mac} within {VTEP_ANNOUNCED_S:.0f} s")
            time.sleep(0.2)


def _vtep_mac_set(ctx: FaultContext, node: LabNode, mac: str) -> None:
    """flannel.1 given `mac` under a stopped flanneld, which keeps the device when it starts
    again and announces the device's MAC as its VtepMAC."""
    flannel.stop(node)
    ctx.node(node).run(["ip", "link", "set", flannel.VXLAN_DEV, "address", mac])
    since = flannel.start(ctx.paths, node, ctx.node(node))
    flannel.wait_programmed(ctx.topology, ctx.paths, [node], ctx.node, since)
    _vtep_announced(ctx, node, mac)


def _mac_cloned(ctx: FaultContext, node: LabNode, params: Params) -> None:
    """The node's flannel.1 with a peer's MAC, as systemd-udevd's MACAddressPolicy=persistent
    gives clones of one image with the same /etc/machine-id (the MAC is derived from it and
    the device's name). Every other node's FDB then sends that MAC to whichever announced it
    last, and a VXLAN device drops frames that arrive with its own MAC as their source."""
    if params["via"] != "clone":
        raise LabError("vxlan_mac_duplicate: via must be clone")
    saved = _mac_saved(ctx, node)
    if not saved.exists():
        saved.write_text(_vtep_mac(ctx, node))
    _vtep_mac_set(ctx, node, _vtep_mac(ctx, _entry_peer(ctx, node, params)))


def _mac_own(ctx: FaultContext, node: LabNode, params: Params) -> None:
    saved = _mac_saved(ctx, node)
    if saved.exists():
        _vtep_mac_set(ctx, node, saved.read_text().strip())
        saved.unlink()
    elif any(_vtep_mac(ctx, node) == _vtep_mac(ctx, peer)
             for peer in ctx.topology.peers(node)):
        # its own MAC not kept (healed blind): a new one, locally administered. A new device
        # would not do: flanneld makes it with the MAC its node's annotation stores
        _vtep_mac_set(ctx, node, _random_mac())
    for each in ctx.topology.nodes:
        # the FDB entry a shared MAC left pointing at the wrong node is flanneld's to write
        # only when that MAC's owner announces again: rewritten here as flanneld writes it,
        # and the entry for the node's own MAC (taken for a peer's) deleted
        _entry_fresh(ctx, each, {})
        own = _vtep_mac(ctx, each)
        for dst in _fdb_dsts(ctx, each, own):
            ctx.node(each).run(["bridge", "fdb", "del", own, "dev", flannel.VXLAN_DEV,
                                "dst", dst, "self"])


def _fdb_dsts(ctx: FaultContext, node: LabNode, mac: str) -> list[str]:
    """Where the node's flannel.1 FDB sends the frames for `mac`, in the order listed."""
    out = []
    for line in ctx.node(node).run(["bridge", "fdb", "show", "dev", flannel.VXLAN_DEV]
                                   ).stdout.splitlines():
        words = line.split()
        if words[:1] == [mac] and "dst" in words[:-1]:
            out.append(words[words.index("dst") + 1])
    return out


def _mac_sharers(topology: Topology, node: str, params: Params) -> list[str]:
    """Both nodes that hold the MAC: which one's is the copy, no reading of either can tell."""
    peer = params.get("peer") or next(n.name for n in topology.nodes if n.name != node)
    return sorted({node, peer})


register(Fault(
    "vxlan_mac_duplicate",
    "the node's flannel.1 with the same MAC as a peer's (param peer, default the first other "
    "node), as clones of one image with the same /etc/machine-id get from udev: given the "
    "peer's MAC and its flanneld restarted, which keeps the device and announces that MAC "
    "(via=clone). Every other node's FDB sends the MAC to this node, and the two drop each "
    "other's frames (their own MAC as source); both nodes are to be named",
    _mac_cloned, _mac_own, {"via": "clone", "peer": ""}, modes=("flannel-vxlan",),
    mechanisms={"clone": ()}, blamed_nodes=_mac_sharers,
))


UNDERLAY_MAC_SAVED = "underlay-mac"  # the node's own eth0 MAC while it wears a peer's


def _underlay_mac_cloned(ctx: FaultContext, node: LabNode, params: Params) -> None:
    """The node's eth0 with a peer's MAC, as a virtual machine cloned with its MAC kept has
    it. The switch then sends that MAC's frames to whichever of the two sent last."""
    if params["via"] != "clone":
        raise LabError("underlay_mac_duplicate: via must be clone")
    peer = _peer(ctx, node, params)
    saved = _mac_saved(ctx, node, UNDERLAY_MAC_SAVED)
    if not saved.exists():
        saved.write_text(_eth0_mac(ctx, node))
    # announced, as a clone announces itself at boot (a DHCP client's or a network manager's
    # ARP): peers resolve the node's address to the shared MAC as they would, not to a MAC
    # nobody has any more
    _set_eth0_mac(ctx, node, _eth0_mac(ctx, peer))


def _underlay_mac_own(ctx: FaultContext, node: LabNode, params: Params) -> None:
    saved = _mac_saved(ctx, node, UNDERLAY_MAC_SAVED)
    if saved.exists():
        _set_eth0_mac(ctx, node, saved.read_text().strip())
        saved.unlink()
    elif any(_eth0_mac(ctx, node) == _eth0_mac(ctx, peer) for peer in ctx.topology.peers(node)):
        # its own MAC not kept (healed blind): a new one
        _set_eth0_mac(ctx, node, _random_mac())
    _underlay_resolved_again(ctx)


def _random_mac() -> str:
    """A unicast MAC, locally administered."""
    return "02:" + ":".join(f"{b:02x}" for b in os.urandom(5))


def _underlay_resolved_again(ctx: FaultContext) -> None:
    """After a clone's fault: every machine on the underlay maps a node's address to whichever
    MAC answered for it last, and would find out only after its probes failed, so they all
    resolve again now; and the switch learns each MAC's port from a frame of each node (its
    ARP for the client), not from whatever it sends next."""
    for runner in (*(ctx.node(n) for n in ctx.topology.nodes), ctx.runners.client,
                   ctx.runners.outside, NetnsRunner(ctx.topology.cp_netns)):
        runner.run(["ip", "neigh", "flush", "dev", "eth0"], check=False)
    for each in ctx.topology.nodes:
        ctx.node(each).run(["ping", "-c", "1", "-W", "1", CLIENT_ADDRESS], check=False)


register(Fault(
    "underlay_mac_duplicate",
    "the node's eth0 with the same MAC as a peer's (param peer, default the first other "
    "node), as a virtual machine cloned with its MAC kept has it (via=clone): the switch "
    "hands the frames for that MAC to whichever of the two sent last, so each loses part of "
    "its traffic to the other; both nodes are to be named",
    _underlay_mac_cloned, _underlay_mac_own, {"via": "clone", "peer": ""},
    mechanisms={"clone": ()}, blamed_nodes=_mac_sharers,
))


# vxlan_wrong_underlay via=iface: docker's default bridge, which flanneld's --iface names
DOCKER_BRIDGE = ("docker0", "172.17.0.1/16")


def _flanneld_on(ctx: FaultContext, node: LabNode, iface: str) -> None:
    """The node's flanneld started again on `iface` (it makes flannel.1 anew on that
    interface's address and announces it), and every peer's FDB following it."""
    flannel.restart(ctx.topology, ctx.paths, node, ctx.node(node), iface=iface)
    want = (DOCKER_BRIDGE[1].split("/")[0] if iface == DOCKER_BRIDGE[0]
            else str(node.address))
    mac = _vtep_mac(ctx, node)
    nodehost.wait_nodes("flanneld", f"send {node.name}'s VXLAN frames to {want}",
                        ctx.topology.peers(node),
                        lambda peer: _fdb_dsts(ctx, peer, mac)[:1] == [want],
                        lambda name: flannel.log_path(ctx.paths, name), 15)


def _vxlan_iface_wrong(ctx: FaultContext, node: LabNode, params: Params) -> None:
    if params["via"] != "iface":
        raise LabError("vxlan_wrong_underlay: via must be iface")
    name, address = DOCKER_BRIDGE
    ctx.node(node).shell(f"ip link add {name} type bridge && ip address add {address} "
                         f"dev {name} && ip link set {name} up")
    _flanneld_on(ctx, node, name)


def _vxlan_iface_right(ctx: FaultContext, node: LabNode, params: Params) -> None:
    name, address = DOCKER_BRIDGE
    if flannel.iface(node) == name:
        _flanneld_on(ctx, node, "eth0")
    # the bridge this fault made (its address says so), not one another fault made
    ctx.node(node).shell(f"ip -br address show dev {name} 2>/dev/null | grep -qF {address} "
                         f"&& ip link del {name}", check=False)


register(Fault(
    "vxlan_wrong_underlay",
    "the node's flanneld started with --iface naming the wrong interface, docker's default "
    f"bridge {DOCKER_BRIDGE[0]} ({DOCKER_BRIDGE[1]}, the same on every docker host), as a "
    "DaemonSet's --iface or --iface-regex that matched the wrong NIC leaves it (via=iface): "
    "flannel.1 is made anew on that address and every peer's FDB sends the node's VXLAN "
    "frames there, where they never reach it; the node's own address and links are fine",
    _vxlan_iface_wrong, _vxlan_iface_right, {"via": "iface"}, modes=("flannel-vxlan",),
    mechanisms={"iface": ()},
))


BGP_PASSWORD = "mesh-secret"  # bgp_session_down via=password: set on one node only


def _tcp_ext(ctx: FaultContext, node: LabNode, counter: str) -> int:
    """One TcpExt counter of the node's namespace (/proc/net/netstat: names, then values)."""
    rows = [line.split() for line in ctx.node(node).run(["cat", "/proc/net/netstat"]
                                                        ).stdout.splitlines()
            if line.startswith("TcpExt:")]
    return int(dict(zip(rows[0], rows[1], strict=True)).get(counter, 0))
BGP_BLOCK = [["-p", "tcp", "-m", "tcp", "--dport", "179", "-j", "DROP"],
             ["-p", "tcp", "-m", "tcp", "--sport", "179", "-j", "DROP"]]


def _bird_pids(node: LabNode) -> list[int]:
    return nodehost.procs_in(node.netns, "bird")


def _bgp_down(ctx: FaultContext, node: LabNode, params: Params) -> None:
    if params["via"] == "stop":
        cni.stop_bird(node, ctx.node(node), ctx.paths.node_files(node.name))
    elif params["via"] == "block":
        for spec in BGP_BLOCK:
            _ipt_insert(ctx, node, "INPUT", spec)
    elif params["via"] == "hang":
        _freeze(_bird_pids(node), f"bird on {node.name}")
    elif params["via"] == "config":
        # the peer's session gone from the node's bird.conf (a BGPPeer or node-to-node mesh
        # setting changed, a template rendered without it): the node closes the session and
        # refuses the peer's attempts, the peer keeps trying; each loses the other's routes
        peer = _peer(ctx, node, params)
        cni.reconfigure_bird(ctx.topology, node, ctx.node(node),
                             ctx.paths.node_files(node.name), without=peer.name)
        nodehost.wait_nodes("bird", "withdraw the peer's routes", [node],
                            lambda _node: peer.pod_cidr not in cni.bgp_routes(node),
                            lambda name: ctx.paths.node_files(name).dir / "bird.log", 10)
    elif params["via"] == "password":
        # a BGP password on this node only (a nodeMeshPassword or BGPPeer whose Secret only
        # its calico-node read): the kernel signs its segments and drops its peers' unsigned
        # ones, the peers drop its signed ones, so every session of the node goes down
        cni.reconfigure_bird(ctx.topology, node, ctx.node(node),
                             ctx.paths.node_files(node.name), password=BGP_PASSWORD)
        nodehost.wait_nodes("bird", "lose every peer's routes", [node],
                            lambda _node: not any(p.pod_cidr in cni.bgp_routes(node)
                                                  for p in ctx.topology.peers(node)),
                            lambda name: ctx.paths.node_files(name).dir / "bird.log", 20)
        # and until both sides' kernels have dropped a segment for its signature, as they do
        # at each connect retry from then on
        peer = _peer(ctx, node, params)
        nodehost.wait_nodes("bird", "have its segments' signatures dropped", [node],
                            lambda _node: _tcp_ext(ctx, node, "TCPMD5NotFound") > 0
                            and _tcp_ext(ctx, peer, "TCPMD5Unexpected") > 0,
                            lambda name: ctx.paths.node_files(name).dir / "bird.log", 20)
    else:
        raise LabError("bgp_session_down: via must be stop, block, hang, config or password")


def _bgp_up(ctx: FaultContext, node: LabNode, params: Params) -> None:
    blocked = [_ipt_delete(ctx, node, "INPUT", spec) for spec in BGP_BLOCK]
    frozen = False
    if not ctx.active.params("cni_pod_not_running", node.name):
        frozen = _thaw(_bird_pids(node))
        if not cni.bird_running(node):
            _start_bird(ctx, node)
        else:
            cni.reconfigure_bird(ctx.topology, node, ctx.node(node),
                                 ctx.paths.node_files(node.name))
    _wait_bgp_settled(ctx, stale=any(blocked) or frozen)


def _wait_bgp_settled(ctx: FaultContext, stale: bool) -> None:
    """Sessions whose keepalives were dropped (block) or not sent (hang) may still read as up
    on the peers and expire up to a hold time later, withdrawing routes in the middle of what
    the lab does next: those are waited out. A bird that was stopped closed its sessions at
    once, so its peers only need to have its routes again."""
    cni.wait_converged(ctx.topology, stable=cni.HOLD_TIME + 1 if stale else 0.0)


register(Fault(
    "bgp_session_down",
    "the node's BGP sessions go down and its peers withdraw its pod CIDR: bird stopped "
    "(via=stop), TCP 179 dropped (via=block) or bird hung, stopped with SIGSTOP (via=hang; "
    "both noticed after the 6 s hold time), or a peer's session left out of the node's "
    "bird.conf and bird told to read it (via=config, param peer, default the first other "
    "node: that pair only, the node refusing the peer that still tries), or a BGP password "
    "(TCP MD5) in the node's bird.conf that its peers do not have (via=password: the kernels "
    "on both sides drop each other's segments before BIRD sees them)",
    _bgp_down, _bgp_up, {"via": "stop", "peer": ""}, modes=("calico-bgp",),
    mechanisms={"stop": (), "block": (), "hang": (), "config": (), "password": ()},
))


def _exports_off(ctx: FaultContext, node: LabNode, params: Params) -> None:
    """The node's BIRD told to advertise nothing (an export filter that rejects its block, as
    a Calico BGPFilter can write one): its sessions stay Established, and every peer drops
    the route to its pods."""
    if params["via"] != "filter":
        raise LabError("bgp_routes_not_advertised: via must be filter")
    cni.reconfigure_bird(ctx.topology, node, ctx.node(node), ctx.paths.node_files(node.name),
                         exports=False)
    peers = ctx.topology.peers(node)
    nodehost.wait_nodes("bird", "withdraw the node's pod CIDR", peers,
                        lambda peer: node.pod_cidr not in cni.bgp_routes(peer),
                        lambda name: ctx.paths.node_files(name).dir / "bird.log", 10)


def _exports_on(ctx: FaultContext, node: LabNode, params: Params) -> None:
    # a bird another fault stopped or hangs is that fault's to bring back
    if not ctx.active.params("cni_pod_not_running", node.name) and cni.bird_running(node) \
            and not ctx.active.params("bgp_session_down", node.name):
        cni.reconfigure_bird(ctx.topology, node, ctx.node(node),
                             ctx.paths.node_files(node.name))
        _wait_bgp_settled(ctx, stale=False)


register(Fault(
    "bgp_routes_not_advertised",
    "the node's BGP sessions stay Established and it advertises none of its routes, its pod "
    "CIDR included: its bird.conf's export filter rejects everything, as a Calico BGPFilter "
    "that rejects the node's block renders one, and bird told to read it (via=filter). Every "
    "peer drops its route to the node's pods; the node still has theirs",
    _exports_off, _exports_on, {"via": "filter"}, modes=("calico-bgp",),
    mechanisms={"filter": ()},
))


def _peer(ctx: FaultContext, node: LabNode, params: Params) -> LabNode:
    if params.get("peer"):
        if params["peer"] == node.name:
            raise LabError(f"the peer must be another node than {node.name}")
        return ctx.topology.node(params["peer"])
    others = ctx.topology.peers(node)
    if not others:
        raise LabError("this fault needs at least two nodes (a peer)")
    return others[0]


def _route_ok(ctx: FaultContext, node: LabNode, peer: LabNode) -> bool:
    """The node's route to the peer's pod CIDR is the one flanneld programs."""
    route = ctx.node(node).run(["ip", "route", "show", peer.pod_cidr], check=False).stdout
    if ctx.topology.cni == "flannel-vxlan":
        return f"dev {flannel.VXLAN_DEV}" in route
    return f"via {peer.address} dev eth0" in route


def _route_drop(ctx: FaultContext, node: LabNode, params: Params) -> None:
    cidr = _peer(ctx, node, params).pod_cidr
    if params["via"] == "delete":
        ctx.node(node).run(["ip", "route", "del", cidr])
    elif params["via"] == "device":
        # flannel.1 deleted (a cleanup script, a network reset by hand): the kernel drops
        # its routes, neighbours and FDB with it; flanneld sees the device go and makes it
        # again at once, with its published MAC, but writes no peer's route back
        runner = ctx.node(node)
        runner.run(["ip", "link", "del", flannel.VXLAN_DEV])
        nodehost.wait_nodes(flannel.BINARY, "make flannel.1 again", [node],
                            lambda _node: flannel.vxlan_port(runner) is not None,
                            lambda name: flannel.log_path(ctx.paths, name), 10)
        if _route_ok(ctx, node, _peer(ctx, node, params)):
            raise LabError(f"pod_cidr_route_missing: flannel.1 on {node.name} came back "
                           f"with its route to {cidr}")
    elif params["via"] == "blackhole":
        # What a null-routing script leaves: a blackhole for the prefix at metric 0. It
        # replaces flanneld's route (metric 0 too); beside BIRD's (metric 32) it wins.
        ctx.node(node).run(["ip", "route", "replace", "blackhole", cidr])
    else:
        raise LabError("pod_cidr_route_missing: via must be delete, device or blackhole")


def _route_back(ctx: FaultContext, node: LabNode, params: Params) -> None:
    runner = ctx.node(node)
    for peer in ctx.topology.peers(node):  # never the node's own block: calico's blackhole
        for _ in range(10):  # bounded
            if runner.run(["ip", "route", "del", "blackhole", peer.pod_cidr],
                          check=False).returncode:
                break
    if ctx.topology.cni.startswith("flannel") and not all(
            _route_ok(ctx, node, peer) for peer in ctx.topology.peers(node)):
        # flanneld programs every peer's route when it starts
        flannel.restart(ctx.topology, ctx.paths, node, ctx.node(node))


# A deleted route: flanneld's host-gw backend checks its routes every 10 s and re-adds it
# (route_network.go; test_lab_flannel proves it), and calico's BIRD puts its own back within
# 2 s (measured), so there it does not last; flanneld's vxlan backend programs a lease's
# route once, so it stays gone until flanneld restarts. A blackhole lasts everywhere: host-gw's
# re-add fails on the existing prefix, and BIRD's route is still there, only outranked.
# A deleted flannel.1: flanneld v0.28 watches its device and makes it again (vxlan_network.go,
# "vxlan device missing, attempting to recreate"), with the MAC its node's annotation gives,
# so the peers' entries for the node stay right; its own routes to every peer are gone.
register(Fault(
    "pod_cidr_route_missing",
    "the node has no working route to a peer's pod CIDR (param peer, default the first other "
    "node): the route deleted (via=delete, vxlan: flanneld does not put it back until it "
    "restarts), or flannel.1 deleted, which flanneld makes again at once without a route to "
    "any peer (via=device, vxlan: every peer's route is gone), or a blackhole route for it in "
    "the main table (via=blackhole: flanneld's route replaced, BIRD's outranked at metric 0)",
    _route_drop, _route_back, {"via": "delete", "peer": ""},
    mechanisms={"delete": ("flannel-vxlan",), "device": ("flannel-vxlan",), "blackhole": ()},
))

POLICY_RULE_PREF = "100"  # via=rule: a rule ahead of the main table
POLICY_TABLE_PREF = "1000"  # via=table
POLICY_TABLE = "100"


def _policy_on(ctx: FaultContext, node: LabNode, params: Params) -> None:
    peer = _peer(ctx, node, params)
    runner = ctx.node(node)
    if params["via"] == "rule":
        # the rule itself discards: a silent drop, before the main table is looked at
        runner.run(["ip", "rule", "add", "to", peer.pod_cidr, "blackhole",
                    "pref", POLICY_RULE_PREF])
    elif params["via"] == "table":
        # a rule for the whole pod network sends lookups to a table of its own, which holds
        # an unreachable route for the peer's block (others fall through to main): ICMP net
        # unreachable
        runner.run(["ip", "route", "add", "unreachable", peer.pod_cidr,
                    "table", POLICY_TABLE])
        runner.run(["ip", "rule", "add", "to", ctx.topology.pod_network,
                    "lookup", POLICY_TABLE, "pref", POLICY_TABLE_PREF])
    else:
        raise LabError("policy_route_blackhole: via must be rule or table")


def _policy_off(ctx: FaultContext, node: LabNode, params: Params) -> None:
    runner = ctx.node(node)
    for pref in (POLICY_RULE_PREF, POLICY_TABLE_PREF):
        for _ in range(100):  # every copy, bounded
            if runner.run(["ip", "rule", "del", "pref", pref], check=False).returncode:
                break
    runner.run(["ip", "route", "flush", "table", POLICY_TABLE], check=False)


register(Fault(
    "policy_route_blackhole",
    "a policy routing rule takes the node's traffic to a peer's pod CIDR (param peer, default "
    "the first other node) away from the CNI's route in the main table: `ip rule ... "
    "blackhole` (via=rule), or a rule for the pod network that looks up table 100, which "
    "holds an unreachable route for the peer's block (via=table)",
    _policy_on, _policy_off, {"via": "rule", "peer": ""},
    mechanisms={"rule": (), "table": ()},
))


def _xfrm_selectors(node: LabNode, peer: LabNode) -> dict[str, list[str]]:
    """Each way's block policy, as `ip xfrm policy` takes its direction and selector: out, the
    node's traffic to the peer's pods (sent and forwarded); fwd, the peer's pods' traffic
    forwarded to the node's pods; in, everything the peer node sends to the node's address
    (its VXLAN, pings, BGP), dropped before delivery."""
    return {
        "out": ["dir", "out", "src", "0.0.0.0/0", "dst", peer.pod_cidr],
        "fwd": ["dir", "fwd", "src", peer.pod_cidr, "dst", "0.0.0.0/0"],
        "in": ["dir", "in", "src", f"{peer.address}/32", "dst", f"{node.address}/32"],
    }


def _xfrm_block(ctx: FaultContext, node: LabNode, params: Params) -> None:
    selector = _xfrm_selectors(node, _peer(ctx, node, params))[params["via"]]
    ctx.node(node).run(["ip", "xfrm", "policy", "add", *selector, "action", "block"])


def _xfrm_delete_toward_peers(ctx: FaultContext, node: LabNode,
                              selectors: Callable[[LabNode, LabNode], Iterable[list[str]]]
                              ) -> None:
    """Delete each way's policy (`selectors`: direction and selector words) toward every peer:
    a heal whose record of the peer was lost undoes it too."""
    for peer in ctx.topology.peers(node):
        for selector in selectors(node, peer):
            ctx.node(node).run(["ip", "xfrm", "policy", "delete", *selector], check=False)
    if ctx.topology.cni == "calico-bgp":
        # a policy on the node's traffic with a peer address dropped BGP keepalives: the
        # session may still read as up and expire a hold time later, withdrawing routes in
        # the middle of what comes next
        _wait_bgp_settled(ctx, stale=True)


def _xfrm_unblock(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _xfrm_delete_toward_peers(ctx, node, lambda n, p: _xfrm_selectors(n, p).values())


register(Fault(
    "xfrm_policy_blocks",
    "an IPsec (xfrm) policy with action block, as a half-removed VPN or an IPsec backend's "
    "leftovers leave one, on traffic with a peer (param peer, default the first other node), "
    "where no packet filter or route shows it: the node's traffic to the peer's pods "
    "(via=out), the peer's pods' traffic forwarded to the node's (via=fwd), or everything the "
    "peer node sends to the node's address, its VXLAN and BGP included (via=in)",
    _xfrm_block, _xfrm_unblock, {"via": "out", "peer": ""},
    mechanisms={"out": (), "fwd": (), "in": ()},
))


SA_REQID = 4242  # names the lab's policies among any others, for a heal that finds its own
# Cilium's encrypt mark and mask: what its eBPF sets on what it encrypts, clear of kube-proxy's
# 0x4000 and 0x8000
SA_MARK = ("0xe00", "0xf00")


def _sa_policies(node: LabNode, peer: LabNode) -> dict[str, list[str]]:
    """Each way's policy, whose template asks for an SA the node will never get (no key
    manager runs in the lab, and this kernel cannot even hold an ESP SA). Going out: pod, the
    node's traffic to the peer's pods through a tunnel to the peer, as an IPsec mode between
    nodes sets one up; node, everything the node sends to the peer's address (its VXLAN,
    pings, BGP) in transport mode, as a host-to-host setup does. Coming in, the same two
    from the peer's side, which the node takes only decrypted: fwd, the peer's pods' traffic
    forwarded to the node's pods; in, everything the peer sends to the node's address."""
    tunnel_out = ["tmpl", "src", node.address, "dst", peer.address]
    tunnel_in = ["tmpl", "src", peer.address, "dst", node.address]
    tail = ["proto", "esp", "reqid", str(SA_REQID), "mode"]
    return {
        "pod": ["dir", "out", "src", "0.0.0.0/0", "dst", peer.pod_cidr, *tunnel_out, *tail,
                "tunnel"],
        "node": ["dir", "out", "src", f"{node.address}/32", "dst", f"{peer.address}/32",
                 "tmpl", *tail, "transport"],
        "fwd": ["dir", "fwd", "src", peer.pod_cidr, "dst", "0.0.0.0/0", *tunnel_in, *tail,
                "tunnel"],
        "in": ["dir", "in", "src", f"{peer.address}/32", "dst", f"{node.address}/32",
               "tmpl", *tail, "transport"],
        "mark": ["dir", "out", "src", "0.0.0.0/0", "dst", peer.pod_cidr, "mark", SA_MARK[0],
                 "mask", SA_MARK[1], *tunnel_out, *tail, "tunnel"],
    }


def _sa_marking(node: LabNode, peer: LabNode) -> list[str]:
    """via=mark: the mark Cilium's eBPF puts on what it encrypts, set here by a mangle rule on
    the node's pods' traffic to the peer's pods (PREROUTING: before the routing decision and
    the policy lookup that reads it)."""
    return ["-s", node.pod_cidr, "-d", peer.pod_cidr, "-j", "MARK", "--set-xmark",
            "/".join(SA_MARK)]


# via=ike: strongSwan's IKE daemon as a distribution packages it (charon-systemd, configured
# through swanctl), run inside the node with its configuration in the lab's work dir
CHARON = "/usr/sbin/charon-systemd"
SWANCTL = "swanctl"
IKE_PSK = "kubenetdiag-lab-only"
IKE_START_S = 10.0


def _ike_dir(ctx: FaultContext, node: LabNode) -> Path:
    return ctx.paths.node_files(node.name).dir / "ike"


def _ike_config(node: LabNode, peer: LabNode, directory: Path) -> tuple[str, str]:
    """(strongswan.conf, swanctl.conf): one connection to the peer whose child SA covers the
    node's pods and the peer's, installed as a trap (`start_action = trap`): policies at once,
    the SA negotiated when the first packet needs it. Routes and virtual IPs stay the CNI's:
    charon would otherwise add its own routing table."""
    conf = f"""charon-systemd {{
  load_modular = yes
  install_routes = no
  install_virtual_ip = no
  plugins {{
    include /etc/strongswan.d/charon/*.conf
    vici {{ socket = unix://{directory}/vici }}
  }}
  journal {{ default = -1 }}
}}
"""
    swanctl = f"""connections {{
  peer {{
    local_addrs = {node.address}
    remote_addrs = {peer.address}
    local {{ auth = psk
            id = {node.name} }}
    remote {{ auth = psk
             id = {peer.name} }}
    children {{
      pods {{ local_ts = {node.pod_cidr}
             remote_ts = {peer.pod_cidr}
             mode = tunnel
             start_action = trap }}
    }}
  }}
}}
secrets {{ ike-peer {{ id-1 = {node.name}
  id-2 = {peer.name}
  secret = {IKE_PSK} }} }}
"""
    return conf, swanctl


def _ike_start(ctx: FaultContext, node: LabNode, peer: LabNode) -> None:
    """charon in the node with a trap toward the peer, where no IKE daemon answers (and this
    kernel could not hold the ESP SA if one did): the first packet to the peer's pods makes
    the kernel ask charon, which cannot deliver; until then the tunnel looks idle."""
    if not Path(CHARON).exists() or not shutil.which(SWANCTL):
        raise LabError("xfrm_sa_missing via=ike needs strongSwan: apt-get install -y "
                       "charon-systemd strongswan-swanctl")
    directory = _ike_dir(ctx, node)
    directory.mkdir(parents=True, exist_ok=True)
    conf, swanctl = _ike_config(node, peer, directory)
    (directory / "strongswan.conf").write_text(conf)
    (directory / "swanctl.conf").write_text(swanctl)
    with contextlib.suppress(FileNotFoundError):  # a socket a killed charon left
        (directory / "vici").unlink()
    _start_in_node(ctx, node, ["env", f"STRONGSWAN_CONF={directory / 'strongswan.conf'}",
                               CHARON])
    deadline = time.monotonic() + IKE_START_S
    while not (directory / "vici").exists():
        if time.monotonic() > deadline:
            raise LabError(f"{node.name}: charon did not open its vici socket in "
                           f"{IKE_START_S:.0f} s (log: {ctx.paths.logs / 'faults.log'})")
        time.sleep(0.1)
    ctx.node(node).run([SWANCTL, "--load-all", "--file", str(directory / "swanctl.conf"),
                        "--uri", f"unix://{directory / 'vici'}"])


def _ike_stop(ctx: FaultContext, node: LabNode) -> None:
    """End charon (it takes its policies with it; any left are deleted by the caller) and the
    kernel's larval entries its requests left."""
    _stop_matching(ctx, node, CHARON)
    ctx.node(node).run(["ip", "xfrm", "state", "flush"], check=False)
    shutil.rmtree(_ike_dir(ctx, node), ignore_errors=True)


def _ike_selectors(node: LabNode, peer: LabNode) -> list[list[str]]:
    """The policies charon's trap installs, by direction and selector."""
    return [["dir", "out", "src", node.pod_cidr, "dst", peer.pod_cidr],
            ["dir", "fwd", "src", peer.pod_cidr, "dst", node.pod_cidr],
            ["dir", "in", "src", peer.pod_cidr, "dst", node.pod_cidr]]


def _sa_require(ctx: FaultContext, node: LabNode, params: Params) -> None:
    peer = _peer(ctx, node, params)
    if params["via"] == "ike":
        _ike_start(ctx, node, peer)
        return
    if params["via"] == "mark":
        _ipt_insert(ctx, node, "PREROUTING", _sa_marking(node, peer), table="mangle")
    ctx.node(node).run(["ip", "xfrm", "policy", "add", *_sa_policies(node, peer)[params["via"]]])


def _sa_unrequire(ctx: FaultContext, node: LabNode, params: Params) -> None:
    for peer in ctx.topology.peers(node):
        _ipt_delete(ctx, node, "PREROUTING", _sa_marking(node, peer), table="mangle")
    _ipt_tidy(ctx, node, "mangle", ["PREROUTING"])
    _ike_stop(ctx, node)
    # a policy is deleted by its direction and selector: the words before its template
    _xfrm_delete_toward_peers(ctx, node, lambda n, p: [
        *(policy[:policy.index("tmpl")] for policy in _sa_policies(n, p).values()),
        *_ike_selectors(n, p)])


register(Fault(
    "xfrm_sa_missing",
    "an IPsec (xfrm) policy whose template requires a security association the node does "
    "not have, as when the IKE daemon or the CNI agent that keys IPsec is down or lost its "
    "key, toward a peer (param peer, default the first other node). Going out, the kernel "
    "drops what it covers (XfrmOutNoStates): the node's traffic to the peer's pods in tunnel "
    "mode (via=pod), or everything the node sends to the peer's address, its VXLAN and BGP "
    "included, in transport mode (via=node). Coming in, it drops what arrives plain "
    "(XfrmInTmplMismatch): the peer's pods' traffic forwarded to the node's (via=fwd), or "
    "everything the peer sends to the node's address (via=in). Or as Cilium's IPsec mode "
    "writes it: a policy for the peer's pods limited to the mark its eBPF puts on what it "
    "encrypts (0xe00/0xf00, set here by a mangle rule on the node's pods' traffic to the "
    "peer's), which the path walk cannot follow (via=mark). Or with a real IKE daemon: "
    "strongSwan's charon on the node with a trap (on-demand) tunnel for the node's pods and "
    "the peer's, which the peer does not answer: idle it looks healthy, and each packet "
    "that needs the SA makes the kernel ask charon for one that never comes (via=ike)",
    _sa_require, _sa_unrequire, {"via": "pod", "peer": ""},
    mechanisms={"pod": (), "node": (), "fwd": (), "in": (), "mark": (), "ike": ()},
))


OVERLAP_DEV = "docker0"  # what usually brings the address: docker's default bridge


def _overlap_address(ctx: FaultContext, node: LabNode, params: Params) -> str:
    """The address docker0 gets: in the first half of the peer's pod range (via=pod: its
    route is one bit more specific than the CNI's), or in the smallest network around the
    peer's node address that leaves out the node's own and has a host no lab machine uses
    (via=node), as a `bip` chosen without looking at the cluster's ranges lands."""
    peer = _peer(ctx, node, params)
    if params["via"] == "pod":
        half = next(IPv4Network(peer.pod_cidr).subnets(prefixlen_diff=1))
        return f"{half.network_address + 1}/{half.prefixlen}"
    if params["via"] != "node":
        raise LabError("interface_address_overlap: via must be pod or node")
    taken = {n.address for n in ctx.topology.nodes} | {
        CLIENT_ADDRESS, CP_ADDRESS, OUTSIDE_UNDERLAY, RETIRED_NODE_ADDRESS}
    for plen in range(30, 23, -1):
        net = IPv4Network(f"{peer.address}/{plen}", strict=False)
        if IPv4Address(node.address) in net:
            break
        free = [h for h in net.hosts() if str(h) not in taken]
        if free:
            return f"{free[0]}/{plen}"
    raise LabError(f"interface_address_overlap via=node: no network around {peer.address} "
                   f"leaves out {node.address} and has a free address; pick another peer")


def _overlap_on(ctx: FaultContext, node: LabNode, params: Params) -> None:
    address = _overlap_address(ctx, node, params)
    runner = ctx.node(node)
    runner.run(["ip", "link", "add", OVERLAP_DEV, "type", "bridge"])
    runner.run(["ip", "address", "add", address, "dev", OVERLAP_DEV])
    # docker brings its bridge up with no container on it: no carrier, the route still wins
    runner.run(["ip", "link", "set", OVERLAP_DEV, "up"])


def _overlap_off(ctx: FaultContext, node: LabNode, params: Params) -> None:
    # the lab has no docker0 of its own: deleting it takes the address and its route
    ctx.node(node).run(["ip", "link", "del", OVERLAP_DEV], check=False)
    if ctx.topology.cni == "calico-bgp":
        # BGP sessions to the peers behind the address went down: their routes come back
        # a moment after the sessions do
        cni.wait_converged(ctx.topology)


register(Fault(
    "interface_address_overlap",
    f"an address on a bridge {OVERLAP_DEV} (docker's, with a `bip` that lands in the "
    "cluster's ranges) whose connected route takes traffic the CNI routes elsewhere: one "
    "bit more specific than a peer's pod range (via=pod, param peer, default the first other "
    "node), or a small network around the peer's node address (via=node: the node's own "
    "traffic to that peer, its pings, the tunnel and BGP, leaves by the bridge)",
    _overlap_on, _overlap_off, {"via": "pod", "peer": ""},
    mechanisms={"pod": (), "node": ()},
))


# Where a peer's own address lands on a node: on its underlay interface with the network's
# length, as a configuration cloned from the peer or typed on the wrong node leaves it
# (via=underlay), or as a /32 on lo, as a load balancer's VIP or an anycast address set to a
# node's address is (via=lo). Either way the local table takes everything sent to the peer.
_DUPLICATE_DEVS = {"underlay": "eth0", "lo": "lo"}


def _duplicate_on(ctx: FaultContext, node: LabNode, params: Params) -> None:
    dev = _DUPLICATE_DEVS.get(params["via"])
    if dev is None:
        raise LabError("node_address_duplicate: via must be underlay or lo")
    peer = _peer(ctx, node, params)
    plen = IPv4Network(ctx.topology.underlay).prefixlen if dev == "eth0" else 32
    ctx.node(node).run(["ip", "address", "add", f"{peer.address}/{plen}", "dev", dev])


def _addresses_held(ctx: FaultContext, node: LabNode, *dev: str) -> list[tuple[str, str]]:
    """(device, address/length) of each IPv4 address the node holds (on `dev` only, given)."""
    held = ctx.node(node).run(["ip", "-4", "-o", "address", "show", *(("dev", *dev) if dev
                                                                       else ())]).stdout
    return [(words[1], words[3]) for words in map(str.split, held.splitlines())
            if len(words) > 3 and words[2] == "inet"]


def _duplicate_off(ctx: FaultContext, node: LabNode, params: Params) -> None:
    # whichever way and for whichever peer it was made: a heal without its parameters finds it
    mine = {f"{p.address}/" for p in ctx.topology.nodes if p.name != node.name}
    for dev, held in _addresses_held(ctx, node):
        if dev in _DUPLICATE_DEVS.values() and any(held.startswith(a) for a in mine):
            ctx.node(node).run(["ip", "address", "del", held, "dev", dev])
    # while it held the address it answered ARP for it too
    _underlay_resolved_again(ctx)


register(Fault(
    "node_address_duplicate",
    "another node's address held by the node as well: on eth0 with the underlay's length, "
    "as a configuration cloned from the peer leaves it (via=underlay), or as a /32 on lo, as "
    "a VIP set to a node's address (via=lo); param peer, default the first other node. The "
    "local table delivers everything the node sends to the peer to itself",
    _duplicate_on, _duplicate_off, {"via": "underlay", "peer": ""},
    mechanisms={"underlay": (), "lo": ()},
))


def _narrowed(ctx: FaultContext, node: LabNode, params: Params) -> str:
    """The node's address with the narrower prefix param `prefix` asks for, refused where it
    would cut the node off from the collector or the API server (nothing could be diagnosed
    on it) or would cut off nothing (no fault)."""
    try:
        plen = int(params["prefix"])
        iface = ip_interface(f"{node.address}/{plen}")
    except ValueError as e:
        raise LabError(f"node_address_prefix_wrong: prefix {params['prefix']!r}: {e}") from None
    if plen <= IPv4Network(ctx.topology.underlay).prefixlen:
        raise LabError(f"node_address_prefix_wrong: prefix {plen} is not narrower than the "
                       f"underlay's {ctx.topology.underlay}")
    lost = [a for a in (CLIENT_ADDRESS, CP_ADDRESS) if IPv4Address(a) not in iface.network]
    if lost:
        raise LabError(f"node_address_prefix_wrong: {iface} leaves {', '.join(lost)} (the "
                       "collector, the API server) off the node's link; pick a shorter prefix")
    if IPv4Address(OUTSIDE_UNDERLAY) in iface.network:
        raise LabError(f"node_address_prefix_wrong: {iface} still holds the gateway "
                       f"{OUTSIDE_UNDERLAY}: nothing would be cut off")
    return str(iface)


def _prefix_narrowed(ctx: FaultContext, node: LabNode, params: Params) -> None:
    if params["via"] not in ("netmask", "live"):
        raise LabError("node_address_prefix_wrong: via must be netmask or live")
    narrow = _narrowed(ctx, node, params)
    runner = ctx.node(node)
    restarted = params["via"] == "netmask"
    if restarted:
        # as the node's networking comes up again from a configuration with the wrong
        # netmask: the address with its new prefix, then its routes as configured; the
        # kernel refuses the one through the gateway that is now off the node's link
        runner.run(["ip", "route", "del", *OUTSIDE_ROUTE], check=False)
    runner.run(["ip", "address", "add", narrow, "dev", "eth0"])
    plen = IPv4Network(ctx.topology.underlay).prefixlen
    runner.run(["ip", "address", "del", f"{node.address}/{plen}", "dev", "eth0"])
    if restarted and runner.run(["ip", "route", "add", *OUTSIDE_ROUTE],
                                check=False).returncode == 0:
        raise LabError(f"node_address_prefix_wrong: the kernel took a route through "
                       f"{OUTSIDE_UNDERLAY} off the link of {narrow}")


def _prefix_right(ctx: FaultContext, node: LabNode, params: Params) -> None:
    right = f"{node.address}/{IPv4Network(ctx.topology.underlay).prefixlen}"
    runner = ctx.node(node)
    runner.run(["ip", "address", "replace", right, "dev", "eth0"])
    # whatever prefix it was given: a heal without its parameters finds it
    for _, held in _addresses_held(ctx, node, "eth0"):
        if held.startswith(f"{node.address}/") and held != right:
            runner.run(["ip", "address", "del", held, "dev", "eth0"])
    runner.run(["ip", "route", "replace", *OUTSIDE_ROUTE])


register(Fault(
    "node_address_prefix_wrong",
    "the node's own address on eth0 with a longer prefix than the underlay's (param prefix, "
    "default 28), as a netmask typed wrong in its network configuration leaves it after its "
    f"networking restarts (via=netmask): the outside's gateway {OUTSIDE_UNDERLAY} is off its "
    "link, so the kernel refuses its route to the middleware's network through it, while the "
    "collector and the API server stay on its link; or changed by hand on the running node "
    "(via=live: `ip address add` of the new, `del` of the old), which keeps that route "
    "working until the next restart",
    _prefix_narrowed, _prefix_right, {"via": "netmask", "prefix": "28"},
    mechanisms={"netmask": (), "live": ()},
))


def _healthy_mtu(cni_mode: str, dev: str) -> int:
    return {"eth0": 1500, flannel.VXLAN_DEV: cni.VXLAN_MTU}.get(dev, cni.pod_mtu(cni_mode))


_VETH_CUT = 50  # how far below the pod's MTU via=veth sets the node's end of its veth


def _raised_pod_mtu(cni_mode: str) -> int:
    # vxlan: the underlay's MTU, as if VXLAN's 50 bytes were forgotten; direct routing:
    # jumbo frames the underlay does not carry
    return 1500 if cni_mode == "flannel-vxlan" else 9000


def _mtu_on(ctx: FaultContext, node: LabNode, params: Params) -> None:
    if params["via"] == "underlay":
        ctx.node(node).run(["ip", "link", "set", params["dev"], "mtu", params["mtu"]])
    elif params["via"] == "pod":
        mtu = str(_raised_pod_mtu(ctx.topology.cni))
        for pod in ctx.topology.pods_on(node.name):
            ctx.runners.pod(pod.name).run(["ip", "link", "set", "eth0", "mtu", mtu])
    elif params["via"] == "veth":
        # the node's end of each pod's veth lowered, the pod's own eth0 left alone: the veth
        # drops what the pod sends bigger than its far end takes, and a bridge (cni0) follows
        # its smallest port down, so what peers send to the node's pods is cut too
        mtu = str(cni.pod_mtu(ctx.topology.cni) - _VETH_CUT)
        for pod in ctx.topology.pods_on(node.name):
            ctx.node(node).run(["ip", "link", "set", _host_veth(ctx, pod), "mtu", mtu])
    else:
        raise LabError("mtu_mismatch: via must be underlay, pod or veth")


def _mtu_heal(ctx: FaultContext, node: LabNode, params: Params) -> None:
    devs = [params["dev"]]
    if ctx.topology.cni == "flannel-vxlan" and params["dev"] == "eth0":
        devs.append(flannel.VXLAN_DEV)  # recreated under the fault, it took the lowered MTU
    for dev in devs:
        healthy = _healthy_mtu(ctx.topology.cni, dev)
        ctx.node(node).run(["ip", "link", "set", dev, "mtu", str(healthy)])
    healthy = str(cni.pod_mtu(ctx.topology.cni))
    for pod in ctx.topology.pods_on(node.name):
        ctx.runners.pod(pod.name).run(["ip", "link", "set", "eth0", "mtu", healthy])
        # the bridge follows its ports back up: an MTU set on it by hand would stop that
        ctx.node(node).run(["ip", "link", "set", _host_veth(ctx, pod), "mtu", healthy])


register(Fault(
    "mtu_mismatch",
    "an MTU on the node's path bigger than the next link carries, so small packets pass and "
    "big ones are dropped silently: the underlay eth0 lowered (via=underlay, params dev, mtu, "
    "default 1400: full-size encapsulated or DF packets from peers are dropped), or its pods' "
    "own eth0 raised above the node's side of the pod network (via=pod: 1500 on vxlan, "
    "forgetting VXLAN's 50 bytes, 9000 with direct routing: what the pods send bigger than "
    "their veth's MTU, fragments included, is dropped), or the node's end of its pods' veths "
    "lowered 50 bytes below the pods' own (via=veth: what the pods send at full size is "
    "dropped by the veth, and the pod bridge follows its ports down)",
    _mtu_on, _mtu_heal, {"via": "underlay", "dev": "eth0", "mtu": "1400"},
    mechanisms={"underlay": (), "pod": (), "veth": ()},
))


def _cni_agent(cni_mode: str) -> str:
    return "calico-node" if cni_mode == "calico-bgp" else "flanneld"


def _cni_pids(ctx: FaultContext, node: LabNode) -> list[int]:
    """The node's CNI pod's processes: flanneld, or calico-node and its bird."""
    pids = nodehost.procs_in(node.netns, _cni_agent(ctx.topology.cni))
    return pids + (_bird_pids(node) if ctx.topology.cni == "calico-bgp" else [])


def _cni_pod_down(ctx: FaultContext, node: LabNode, params: Params) -> None:
    if params["via"] == "hang":
        _freeze(_cni_pids(ctx, node), f"the CNI agent on {node.name}")
        return
    if params["via"] != "kill":
        raise LabError("cni_pod_not_running: via must be kill or hang")
    nodehost.kill(nodehost.procs_in(node.netns, _cni_agent(ctx.topology.cni)))
    if ctx.topology.cni == "calico-bgp":
        # bird lives in the calico-node pod
        cni.stop_bird(node, ctx.node(node), ctx.paths.node_files(node.name))


def _cni_pod_up(ctx: FaultContext, node: LabNode, params: Params) -> None:
    frozen = _thaw(_cni_pids(ctx, node))
    if ctx.topology.cni.startswith("flannel"):
        since = flannel.start(ctx.paths, node, ctx.node(node))
        flannel.wait_programmed(ctx.topology, ctx.paths, [node], ctx.node, since)
        return
    agent = _cni_agent(ctx.topology.cni)
    if not nodehost.procs_in(node.netns, agent):
        ctx.node(node).shell(nodehost.agent_command(ctx.paths.node_files(node.name), agent))
    if ctx.topology.cni == "calico-bgp" and not cni.bird_running(node):
        _start_bird(ctx, node)
    _wait_bgp_settled(ctx, stale=frozen)


register(Fault(
    "cni_pod_not_running",
    "the node's CNI agent (flanneld, or calico-node with its bird) is not doing its work: "
    "killed, its pod in CrashLoopBackOff (via=kill), or hung, stopped with SIGSTOP (via=hang: "
    "the pod's readiness is what its probe finds: calico-node's asks BIRD, which does not "
    "answer; kube-flannel's DaemonSet has no probe, so flannel's pod stays Ready)",
    _cni_pod_down, _cni_pod_up, {"via": "kill"},
    mechanisms={"kill": (), "hang": ()},
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


# via=dnat: DNS "interception" (a rule meant to force every query through a site resolver)
# sending the queries that reach the node to an address of the outside network where no
# resolver runs
DNS_INTERCEPT = f"{OUTSIDE_NETWORK.network_address + 53}"


def _dns_intercepts() -> list[list[str]]:
    return [["-p", proto, "-m", proto, "--dport", "53", "-j", "DNAT", "--to-destination",
             DNS_INTERCEPT] for proto in ("udp", "tcp")]


# via=loop: the node's resolver becomes a local stub listener on loopback, as
# systemd-resolved's is (127.0.0.53, forwarding to the site's resolver), and the coredns
# ConfigMap forwards to /etc/resolv.conf, as kubeadm's does. The CoreDNS pod, started again
# (a rollout, a node drain), gets the node's file: its upstream is 127.0.0.53, which in its
# own network namespace is CoreDNS itself.
STUB_RESOLVER = "127.0.0.53"
STUB_SAVED = "resolv-before-stub.conf"  # the node's resolv.conf before the stub
STUB_PID = "stub-resolver.pid"  # in the node's own /run


def _stub_resolver_on(ctx: FaultContext, node: LabNode) -> None:
    files = ctx.paths.node_files(node.name)
    saved = files.dir / STUB_SAVED
    if not saved.exists():
        saved.write_text(files.resolv_conf.read_text())
    # dnsmasq stands in for the stub listener: the node itself still resolves, through it
    ctx.node(node).shell(
        f"[ -s /run/{STUB_PID} ] && kill -0 \"$(cat /run/{STUB_PID})\" 2>/dev/null || "
        "dnsmasq --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces "
        f"--listen-address={STUB_RESOLVER} --server={OUTSIDE_DNS} --user=root "
        f"--pid-file=/run/{STUB_PID}")
    # written in place: the node's /etc/resolv.conf is a bind mount of this very file
    files.resolv_conf.write_text(
        "# the local stub resolver; the site's servers are configured behind it\n"
        f"nameserver {STUB_RESOLVER}\noptions edns0 trust-ad\nsearch .\n")


def _stub_resolver_off(ctx: FaultContext, node: LabNode) -> None:
    files = ctx.paths.node_files(node.name)
    ctx.node(node).shell(f"[ -s /run/{STUB_PID} ] && kill \"$(cat /run/{STUB_PID})\"; "
                         f"rm -f /run/{STUB_PID}", check=False)
    saved = files.dir / STUB_SAVED
    if saved.exists():
        files.resolv_conf.write_text(saved.read_text())
        saved.unlink()


def _coredns_init(ctx: FaultContext) -> int:
    return ctx.node(ctx.topology.node(_coredns_node(ctx.topology))).init_pid()


def _coredns_down(ctx: FaultContext, node: LabNode, params: Params) -> None:
    if params["via"] == "loop":
        if node.name != _coredns_node(ctx.topology):
            raise LabError("coredns_unreachable via=loop: CoreDNS runs on "
                           f"{_coredns_node(ctx.topology)}, not {node.name}")
        # the node changed, then CoreDNS's pod is started again: settle writes the
        # ConfigMap's Corefile and starts it (its loop plugin then ends it)
        _stub_resolver_on(ctx, node)
        coredns.stop(ctx.topology)
    elif params["via"] == "stop":
        # As a crash would (or a scale to zero): the process is gone, and the pod is not
        # Ready in the API (ActiveFaults.unready_pods), so kube-dns loses its endpoint.
        coredns.stop(ctx.topology)
    elif params["via"] == "drop":
        for spec in _dns_drops(ctx.topology):
            _ipt_insert(ctx, node, "FORWARD", spec)
    elif params["via"] == "dnat":
        for spec in _dns_intercepts():
            _ipt_insert(ctx, node, "PREROUTING", spec, table="nat")
    elif params["via"] == "hang":
        # Still running, its sockets open, answering nothing. The lab's readiness probe
        # (Lab._probe_readiness, as the kubelet's) then finds the pod not Ready.
        _freeze(coredns.pids(ctx.topology), "coredns")
    else:
        raise LabError("coredns_unreachable: via must be stop, drop, dnat, hang or loop")


def _coredns_up(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _stub_resolver_off(ctx, node)
    for spec in _dns_drops(ctx.topology):
        _ipt_delete(ctx, node, "FORWARD", spec)
    for spec in _dns_intercepts():
        _ipt_delete(ctx, node, "PREROUTING", spec, table="nat")
    _thaw(coredns.pids(ctx.topology))
    # the ConfigMap as the heal leaves it (the state is saved after this), not the Corefile
    # a via=loop left
    state = json.loads(ctx.paths.state.read_text())
    state["faults"] = [f for f in state.get("faults") or []
                       if f.get("fault") != "coredns_unreachable"]
    if not coredns.pids(ctx.topology):
        coredns.write_corefile(ctx.paths, k8s_objects.corefile(state))
    coredns.wait_ready(ctx.topology, ctx.paths,
                       coredns.start(ctx.topology, ctx.paths, _coredns_init(ctx)))


def _coredns_settled(ctx: FaultContext, node: LabNode, params: Params) -> None:
    """CoreDNS runs the ConfigMap's Corefile as the state now has it (a via=loop changes it),
    started again when it changed: under via=loop its loop plugin ends it at once, healed it
    is ready. Then every kube-proxy has its endpoints (none while CoreDNS is not Ready)."""
    text = _corefile_changed(ctx)
    if text is not None:
        coredns.stop(ctx.topology)
        coredns.write_corefile(ctx.paths, text)
        log = coredns.log_path(ctx.paths)
        since = log.stat().st_size if log.exists() else 0
        proc = coredns.start(ctx.topology, ctx.paths, _coredns_init(ctx))
        if any(p["via"] == "loop" for p in ctx.active.params("coredns_unreachable")):
            coredns.wait_looped(ctx.paths, proc, since)
        else:
            coredns.wait_ready(ctx.topology, ctx.paths, proc)
    _kube_proxies_synced(ctx, node, params)


register(Fault(
    "coredns_unreachable",
    "CoreDNS does not answer: the real coredns stopped, its pod not Ready and kube-dns without "
    "endpoints (via=stop); DNS to its pod dropped in the node's FORWARD chain (via=drop); "
    "DNS arriving at the node sent elsewhere by a DNAT at the top of nat PREROUTING, to "
    f"{DNS_INTERCEPT}, where no resolver runs (via=dnat); or coredns hung, stopped with "
    "SIGSTOP, so its readiness probe times out and the pod is not Ready, without restarts "
    "(via=hang); or the node's resolv.conf pointed at a local stub resolver on "
    f"{STUB_RESOLVER}, as systemd-resolved's, while the coredns ConfigMap forwards to "
    "/etc/resolv.conf, as kubeadm's does: CoreDNS, started again, forwards to its own "
    "loopback, its loop plugin finds its probe coming back and it exits, crash-looping "
    "(via=loop)",
    _coredns_down, _coredns_up, {"via": "stop"}, default_node=_coredns_node,
    mechanisms={"stop": (), "drop": (), "dnat": (), "hang": (), "loop": ()},
    # its pod's readiness reaches kube-proxy (via=stop, loop); _kube_proxies_synced is
    # defined below
    settle=lambda ctx, node, params: _coredns_settled(ctx, node, params),
))


# The site's resolver drops DNS queries from this address: CoreDNS's, masqueraded to its node's.
def _resolver_block_spec(address: str, proto: str) -> list[str]:
    return ["-s", f"{address}/32", "-p", proto, "-m", proto, "--dport", "53", "-j", "DROP"]


def _upstream_cut(ctx: FaultContext, node: LabNode, params: Params) -> None:
    if node.name != _coredns_node(ctx.topology):
        raise LabError("coredns_upstream_unreachable: CoreDNS runs on "
                       f"{_coredns_node(ctx.topology)}, not {node.name}")
    if params["via"] == "firewall":
        # the site's DNS server, in the outside namespace, never on a node
        for proto in ("udp", "tcp"):
            ctx.runners.outside.run(["iptables", "-I", "INPUT", "1",
                                     *_resolver_block_spec(str(node.address), proto)])
    elif params["via"] != "config":
        # via=config is an API change: the coredns ConfigMap's Corefile, written when the
        # state is saved (k8s_objects.corefile); the running CoreDNS picks it up in settle
        raise LabError("coredns_upstream_unreachable: via must be config or firewall")


def _upstream_back(ctx: FaultContext, node: LabNode, params: Params) -> None:
    for proto in ("udp", "tcp"):
        _delete_every(ctx.runners.outside, "INPUT", _resolver_block_spec(str(node.address), proto))


def _corefile_changed(ctx: FaultContext) -> str | None:
    """The ConfigMap's Corefile as the state now has it, when CoreDNS's file differs."""
    text = k8s_objects.corefile(json.loads(ctx.paths.state.read_text()))
    return None if coredns.corefile_path(ctx.paths).read_text() == text else text


def _corefile_reloaded(ctx: FaultContext) -> bool:
    """CoreDNS given the ConfigMap's Corefile as the state now has it, reloaded on SIGUSR1 as
    its reload plugin would after the kubelet synced the mounted file; whether it changed."""
    text = _corefile_changed(ctx)
    if text is not None:
        coredns.write_corefile(ctx.paths, text)
        for pid in coredns.pids(ctx.topology):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR1)
    return text is not None


def _upstream_settled(ctx: FaultContext, node: LabNode, params: Params) -> None:
    """CoreDNS runs the ConfigMap's Corefile, and a name only the upstream can answer gets
    the answer the state says: NXDOMAIN when healthy, none under the fault."""
    changed = _corefile_reloaded(ctx)
    coredns.wait_upstream(ctx.topology,
                          answering=not ctx.active.nodes_with("coredns_upstream_unreachable"))
    if changed:
        # a reload re-syncs the kubernetes plugin: not ready for a moment, as the lab's next
        # readiness probe (the state saved after a heal) would record
        coredns.wait_ready(ctx.topology, ctx.paths)


def _zone_written(ctx: FaultContext, node: LabNode, params: Params) -> None:
    # an API change, the coredns ConfigMap's Corefile, written when the state is saved
    # (k8s_objects.corefile); the running CoreDNS reloads it in settle
    if params["via"] != "config":
        raise LabError("coredns_zone_mismatch: via must be config")
    if node.name != _coredns_node(ctx.topology):
        raise LabError(f"coredns_zone_mismatch: CoreDNS runs on {_coredns_node(ctx.topology)}, "
                       f"not {node.name}")


def _zone_settled(ctx: FaultContext, node: LabNode, params: Params) -> None:
    """CoreDNS serves the zone the state says, and only that one, asked from its node."""
    changed = _corefile_reloaded(ctx)
    state = json.loads(ctx.paths.state.read_text())
    mismatched = bool(ctx.active.params("coredns_zone_mismatch"))
    served = k8s_objects.OTHER_ZONE if mismatched else k8s_objects.cluster_domain(state)
    other = k8s_objects.cluster_domain(state) if mismatched else k8s_objects.OTHER_ZONE
    coredns.wait_zone(ctx.topology, served, other)
    if changed:
        coredns.wait_ready(ctx.topology, ctx.paths)


register(Fault(
    "coredns_zone_mismatch",
    "CoreDNS serves another cluster domain than the one every kubelet gives its pods: the "
    f"coredns ConfigMap's kubernetes plugin set to {k8s_objects.OTHER_ZONE}, as a Corefile "
    "restored from another cluster's backup has it, and reloaded as its reload plugin would "
    "(via=config). CoreDNS answers, the node's names under its own zone resolve, and every "
    "pod's cluster names (completed with the kubelets' cluster.local) get no address",
    _zone_written, _noop, {"via": "config"}, default_node=_coredns_node, scope="cluster",
    settle=_zone_settled, mechanisms={"config": ()},
))


register(Fault(
    "coredns_upstream_unreachable",
    "CoreDNS answers the cluster's names but no other: its way to the site's resolver it "
    "forwards to is gone, so names outside the cluster fail from every pod. The coredns "
    "ConfigMap edited to forward to a resolver that was retired (via=config, reloaded as its "
    "reload plugin would), or the site's resolver dropping DNS from the CoreDNS node's "
    "address, where CoreDNS's queries leave masqueraded (via=firewall)",
    _upstream_cut, _upstream_back, {"via": "config"}, default_node=_coredns_node,
    scope="cluster", settle=_upstream_settled,
    mechanisms={"config": (), "firewall": ()},
))


# What a kubelet set up wrong writes into the resolv.conf of every pod it creates: an address
# in the Service range that no Service holds (a clusterDNS left from an older range, or a
# typo), NodeLocal DNSCache's link-local address on a node that runs no node-local-dns, or
# another cluster domain than the one CoreDNS serves (its clusterDomain).
STALE_CLUSTER_DNS = "10.96.0.11"
NODELOCAL_DNS = "169.254.20.10"
OTHER_CLUSTER_DOMAIN = "cluster.example"


def _pod_dns_wrong(ctx: FaultContext, node: LabNode, params: Params) -> None:
    via = params["via"]
    files = ctx.paths.node_files(node.name)
    if via == "domain":
        sandbox.rewrite(ctx.topology, node, files, domain=OTHER_CLUSTER_DOMAIN)
    else:
        sandbox.rewrite(ctx.topology, node, files, nameserver={
            "cluster_dns": STALE_CLUSTER_DNS, "nodelocal": NODELOCAL_DNS}[via])


def _pod_dns_right(ctx: FaultContext, node: LabNode, params: Params) -> None:
    sandbox.rewrite(ctx.topology, node, ctx.paths.node_files(node.name))


register(Fault(
    "pod_dns_misconfigured",
    "the node's pods were given a resolv.conf that cannot resolve cluster names, as a kubelet "
    "set up wrong writes one into every pod it creates, while the cluster DNS answers the node: "
    f"a nameserver no Service holds, {STALE_CLUSTER_DNS} (via=cluster_dns, a stale "
    f"clusterDNS); NodeLocal DNSCache's {NODELOCAL_DNS} where no node-local-dns runs "
    f"(via=nodelocal); or a search list under {OTHER_CLUSTER_DOMAIN}, not the cluster's "
    "domain (via=domain, its clusterDomain)",
    _pod_dns_wrong, _pod_dns_right, {"via": "cluster_dns"},
    mechanisms={"cluster_dns": (), "nodelocal": (), "domain": ()},
))


def _broken_selector(topology: Topology, service: str) -> dict[str, str]:
    """The selector a Service ends up with when it was re-applied for a release its pods never
    got (their labels still the old ones): every value of its app's labels with -v2."""
    apps = {svc.name: svc.app for svc in cluster_services(topology)}
    return {key: f"{value}-v2" for key, value in pod_labels(apps[service]).items()}


def _known_service(ctx: FaultContext, node: LabNode, params: Params) -> None:
    # The fault itself is an API change, made when the state is saved: via=unready, the
    # service's pods are not Ready (apisync writes their status as the kubelet would) and
    # kube-controller-manager marks their endpoints not ready; via=selector, the Service is
    # replaced in the apiserver with a selector that matches no pod, so the controller
    # empties its slices while the pods stay Ready; via=port, its ports target a container
    # port by a name its pods do not declare (a port renamed on one side only), which the
    # controller resolves on none of them. A heal is the state saved without it.
    if params["service"] not in {svc.name for svc in cluster_services(ctx.topology)}:
        raise LabError(f"service_no_endpoints: no lab service {params['service']!r}")
    if params["via"] not in ("unready", "selector", "port"):
        raise LabError("service_no_endpoints: via must be unready, selector or port")


def _kube_proxies_synced(ctx: FaultContext, node: LabNode, params: Params) -> None:
    """Every node's real kube-proxy has turned the API's endpoints into rules (its REJECT for
    an endpointless Service, its KUBE-SVC/KUBE-SEP chains again once healed)."""
    kubeproxy.wait_synced(ctx.topology, ctx.paths, list(ctx.topology.nodes), ctx.node,
                          ctx.active.services(ctx.topology))


register(Fault(
    "service_no_endpoints",
    "a Service (param service, default web) has no ready endpoints, so the nodes' kube-proxy "
    "REJECTs its VIP and lab.json lists no endpoints: its pods fail their readiness probe (not "
    "Ready in the API), kube-controller-manager marks their endpoints not ready (via=unready); "
    "or the Service replaced in the apiserver with a selector its pods' labels do not match "
    "(app: web-v2), the pods Ready, its EndpointSlice empty (via=selector; heal puts the "
    "selector back); or its targetPort replaced by a name its pods declare no port by "
    "(http-alt, where the web pods name theirs http), as when a port is renamed in the pod "
    "template or the Service only: the controller resolves it on no pod (via=port)",
    _known_service, _noop, {"via": "unready", "service": "web"}, scope="cluster",
    default_node=_web_node, settle=_kube_proxies_synced,
    mechanisms={"unready": (), "selector": (), "port": ()},
))


# ---- the EndpointSlice controller -----------------------------------------------------------

# How long past its lease's expiry kube-controller-manager must have been gone before the
# diagnosis runs: the rule's 10 s, and two more for the diagnoser's own API reads.
LEASE_EXPIRED_S = 12
# A controller that leads and holds pod changes back (via=batch): its batching period, the
# runbook's quarter of an hour, and how old the pods' change is when inject returns (the rule's
# 60 s, and two more).
BATCH_PERIOD = "15m"
BEHIND_S = 62


def _controller_manager_stops(ctx: FaultContext, node: LabNode, params: Params) -> None:
    if params["service"] not in {svc.name for svc in cluster_services(ctx.topology)}:
        raise LabError(f"endpoints_controller_lagging: no lab service {params['service']!r}")
    if ctx.controlplane is None:
        raise LabError("endpoints_controller_lagging needs the lab's control plane")
    if params["via"] == "batch":
        # leading and healthy, every pod change queued for a quarter of an hour, as a
        # batching period raised to spare the API server a large cluster's churn does
        ctx.controlplane.restart_controller_manager(
            [f"--endpointslice-updates-batch-period={BATCH_PERIOD}"])
        _initial_sync_done(ctx.controlplane)
        return
    pid = ctx.controlplane.recorded_pid("kube-controller-manager")
    if pid is None:
        raise LabError("kube-controller-manager is not running")
    if params["via"] == "hang":
        _signal([pid], signal.SIGSTOP)  # alive, its lease no longer renewed
    elif params["via"] == "stop":
        _signal([pid], signal.SIGTERM)  # gone, as a crashed static pod the kubelet lost
    else:
        raise LabError("endpoints_controller_lagging: via must be hang, stop or batch")
    # The service's pods turn not Ready when the state is saved (ActiveFaults.unready_pods):
    # a readiness probe failing after the controller stopped, which no slice follows.


def _initial_sync_done(controlplane: ControlPlane) -> None:
    """Wait until a newly started EndpointSlice controller has made its first pass over every
    Service: that pass is not held back by the batching period, so a pod change made before
    it would reach the slices at once. Its log says when its caches are synced (the pass
    follows within milliseconds; a second is left for a loaded machine)."""
    log = controlplane.files.log("kube-controller-manager")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        started = text.find("Starting endpoint slice controller")
        if started >= 0 and "Caches are synced" in text[started:]:
            time.sleep(1)
            return
        time.sleep(0.1)
    raise LabError(f"the EndpointSlice controller did not sync its caches; see {log}")


def _age(stamp: str | None) -> float | None:
    if not stamp:
        return None
    return time.time() - datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _controller_settled(ctx: FaultContext, node: LabNode, params: Params) -> None:
    """Injected: the lease expired LEASE_EXPIRED_S ago (hang, stop), or the pods' change is
    BEHIND_S old and still not in their slices (batch). Healed: a controller holds the lease."""
    assert ctx.controlplane is not None
    active = params in ctx.active.params("endpoints_controller_lagging")
    deadline = time.monotonic() + 45 + (BEHIND_S if active else 0)
    while time.monotonic() < deadline:
        spec = ctx.controlplane.controller_manager_lease().get("spec") or {}
        age = _age(spec.get("renewTime") or spec.get("acquireTime"))
        expired = None if age is None else age - int(spec.get("leaseDurationSeconds") or 0)
        if not active:
            if expired is not None and expired < 0 and spec.get("holderIdentity"):
                _kube_proxies_synced(ctx, node, params)
                return
        elif params["via"] != "batch":
            if expired is not None and expired >= LEASE_EXPIRED_S:
                return
        else:
            pods = ctx.active.frozen_endpoints(ctx.topology)
            ages = [_age(_ready_since(ctx, ctx.topology.pod(pod))) for pod in pods]
            if ages and all(a is not None and a >= BEHIND_S for a in ages):
                return
        time.sleep(0.5)
    raise LabError("endpoints_controller_lagging: the controller did not reach the state the "
                   "fault needs")


def _ready_since(ctx: FaultContext, pod: LabPod) -> str | None:
    assert ctx.controlplane is not None
    found = ctx.controlplane.admin().get(f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}")
    for condition in (found.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("status") == "False":
            return condition.get("lastTransitionTime")
    return None


def _controller_manager_back(ctx: FaultContext, node: LabNode, params: Params) -> None:
    # A controller as the lab runs it first (a batching one would hold the pods' return back
    # for a quarter of an hour), then the pods Ready again, which the sync waits to see in
    # the slices; the settle then waits for every kube-proxy.
    if ctx.controlplane is not None:
        ctx.controlplane.restart_controller_manager()
    ctx.sync_api()


register(Fault(
    "endpoints_controller_lagging",
    "the EndpointSlice controller stops following the pods, then the pods of a Service (param "
    "service, default web) fail their readiness probe: the API has them not Ready, their "
    "EndpointSlice (and every kube-proxy) still lists them as ready. kube-controller-manager "
    "SIGSTOPped (via=hang) or terminated (via=stop), its lease kube-system/"
    f"kube-controller-manager no longer renewed (inject waits until it expired {LEASE_EXPIRED_S}"
    " s ago); or restarted leading, with --endpointslice-updates-batch-period="
    f"{BATCH_PERIOD}, so it holds every pod change back (via=batch; inject waits until the "
    f"change is {BEHIND_S} s old). Heal makes the pods Ready, then starts a new "
    "kube-controller-manager as the lab runs it and waits until it holds the lease",
    _controller_manager_stops, _controller_manager_back, {"via": "hang", "service": "web"},
    scope="cluster", default_node=_web_node, settle=_controller_settled,
    mechanisms={"hang": (), "stop": (), "batch": ()},
))


# kube-proxy's jumps, as it writes them: into its Service rules from PREROUTING and OUTPUT,
# into its masquerade from POSTROUTING
KUBE_JUMPS = {
    "PREROUTING": ("kubernetes service portals", "KUBE-SERVICES"),
    "OUTPUT": ("kubernetes service portals", "KUBE-SERVICES"),
    "POSTROUTING": ("kubernetes postrouting rules", "KUBE-POSTROUTING"),
}


def _kube_jump(chain: str) -> str:
    comment, target = KUBE_JUMPS[chain]
    return f'-A {chain} -m comment --comment "{comment}" -j {target}'


# via=nodeports: kube-proxy's nodePortAddresses, a subnet none of the node's addresses is in
# (one the nodes left, a typo): it programs every NodePort and sends nothing to them
NODEPORT_CIDR = "198.18.8.0/24"


def _node_port_addresses(ctx: FaultContext, node: LabNode, cidrs: list[str] | None) -> None:
    """kube-proxy's configuration file with nodePortAddresses set to `cidrs`, or without it."""
    path = kubeproxy.config_dir(ctx.paths, node.name) / "config.yaml"
    config = yaml.safe_load(path.read_text())
    if cidrs:
        config["nodePortAddresses"] = cidrs
    else:
        config.pop("nodePortAddresses", None)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def _kube_proxy_rules_off(ctx: FaultContext, node: LabNode, params: Params) -> None:
    if params["via"] == "nodeports":
        # restarted with the setting, as a rollout of its ConfigMap would: its first sync
        # writes every Service's rules and no jump to KUBE-NODEPORTS
        _node_port_addresses(ctx, node, [NODEPORT_CIDR])
        kubeproxy.stop(node)
        kubeproxy.start(ctx.paths, node, ctx.node(node))
        # the old rules stay until the new kube-proxy's first sync replaces them
        nodehost.wait_nodes(kubeproxy.BINARY, "drop its jump to KUBE-NODEPORTS", [node],
                            lambda n: "-j KUBE-NODEPORTS" not in ctx.node(n).run(
                                ["iptables", "-t", "nat", "-S", "KUBE-SERVICES"]).stdout,
                            lambda name: kubeproxy.log_path(ctx.paths, name), 10)
        kubeproxy.wait_synced(ctx.topology, ctx.paths, [node], ctx.node,
                              ctx.active.services(ctx.topology))
        return
    if params["via"] in ("prerouting", "output", "postrouting"):
        # Only a full resync writes the jumps again, and a partial sync (every change, every
        # 30 s) is not one: the chain stays full and unreachable under a running kube-proxy.
        chain = params["via"].upper()
        _ipt_delete(ctx, node, chain, shlex.split(_kube_jump(chain))[2:], table="nat")
        return
    # A running kube-proxy would notice a flushed chain (its KUBE-PROXY-CANARY stays) only at
    # its next periodic sync, but it would notice: the state an SRE finds is a dead (or hung)
    # kube-proxy and a flushed chain.
    if params["via"] == "kill":
        kubeproxy.stop(node)
    elif params["via"] == "hang":
        # kubeadm's kube-proxy DaemonSet has no probe: its pod stays Ready and running
        _freeze(kubeproxy.pids(node), f"kube-proxy on {node.name}")
    else:
        raise LabError("kube_proxy_rules_missing: via must be kill, hang, prerouting, output, "
                       "postrouting or nodeports")
    ctx.node(node).run(["iptables", "-t", "nat", "-F", "KUBE-SERVICES"])


def _kube_proxy_restarted(ctx: FaultContext, node: LabNode, params: Params) -> None:
    # a resumed kube-proxy would repair the chain only at its next periodic sync (30 s): it is
    # restarted instead, as deleting its pod would
    _thaw(kubeproxy.pids(node))
    _node_port_addresses(ctx, node, None)
    kubeproxy.stop(node)
    kubeproxy.start(ctx.paths, node, ctx.node(node))
    kubeproxy.wait_synced(ctx.topology, ctx.paths, [node], ctx.node,
                          ctx.active.services(ctx.topology))
    # the Service rules may never have gone (via=prerouting, output): the jumps its first full
    # sync writes are what says it has run
    for _ in range(200):  # bounded: 10 s
        nat = ctx.node(node).run(["iptables", "-t", "nat", "-S"]).stdout
        if all(_kube_jump(c) in nat for c in KUBE_JUMPS) and "-j KUBE-NODEPORTS" in nat:
            return
        run(["sleep", "0.05"])
    raise LabError(f"{node.name}: kube-proxy did not write its jumps to KUBE-SERVICES again")


register(Fault(
    "kube_proxy_rules_missing",
    "the node's nat KUBE-SERVICES chain flushed under a kube-proxy that is not running, its "
    "pod crash-looping (via=kill), or hung, stopped with SIGSTOP, its pod Ready (via=hang): "
    "service VIPs stop working from the node and its pods (heal restarts kube-proxy, which "
    "re-syncs); or, under a kube-proxy that runs, its jump to KUBE-SERVICES deleted from nat "
    "PREROUTING (via=prerouting: the pods' Service traffic and NodePorts from outside) or "
    "OUTPUT (via=output: the node's own), or its jump to KUBE-POSTROUTING from POSTROUTING "
    "(via=postrouting: NodePort connects sent on to another node's endpoint are not "
    "masqueraded), as a firewall reload that restores an old file does; or kube-proxy "
    f"restarted with nodePortAddresses [{NODEPORT_CIDR}], a subnet none of the node's "
    "addresses is in: every Service's rules are there and KUBE-SERVICES has no jump to "
    "KUBE-NODEPORTS, so the node's NodePorts refuse everyone, itself included (via=nodeports)",
    _kube_proxy_rules_off, _kube_proxy_restarted, {"via": "kill"},
    mechanisms={"kill": (), "hang": (), "prerouting": (), "output": (), "postrouting": (),
                "nodeports": ()},
    # nftables mode's table has no KUBE-SERVICES chain, and no rule reads that table's
    proxy_modes=("iptables",),
))

# A Service only this fault uses, so the change a stale kube-proxy misses breaks nothing the
# other checks look at: its VIP is in no declared endpoint and no probe connects to it.
CANARY_SERVICE = "web-canary"
CANARY_VIP = "10.96.0.21"
CANARY_COMMENT = f"default/{CANARY_SERVICE}:http"


def canary_service(topology: Topology, target_port: int, unready: Collection[str] = ()
                   ) -> Service:
    pods = tuple(pod.name for pod in topology.pods if pod.app == "web" and pod.name not in unready)
    return Service(CANARY_SERVICE, "default", CANARY_VIP,
                   (ServicePort("http", 80, "TCP", target_port),), "web", pods)


def _canary_port(params: Params) -> int | None:
    """The targetPort of the canary Service (it selects the web pod) while the fault is in
    force, or None when there is no canary: created after the freeze (new); its targetPort
    moved from 8080 to 8081 after it, as a rollout that changes the app's port does (moved);
    deleted after it (deleted). `phase: before` is the state the API holds while the fault
    is being made, before kube-proxy is frozen."""
    if params.get("phase") == "before":
        return WEB_PORT
    return {"new": WEB_PORT, "moved": WEB_PORT + 1}.get(params["via"])


def _canary_endpoints(ctx: FaultContext, port: int | None) -> set[str] | None:
    if port is None:
        return None
    return {f"{pod.ip}:{port}" for pod in ctx.topology.pods if pod.app == "web"}


def _wait_canary(ctx: FaultContext, nodes: list[LabNode], want: set[str] | None) -> None:
    """Until every node's kube-proxy DNATs the canary's VIP to exactly `want` (None: has no
    rule for it at all), in its iptables chains or its nftables table (kubeproxy.programmed),
    and its IPVS shadow, where one runs, programs the same (a freeze must not catch it a sync
    behind)."""

    def done(node: LabNode) -> bool:
        have = kubeproxy.programmed(ctx.node(node), ctx.topology.proxy_mode)
        if want is None:
            return CANARY_COMMENT not in have
        return have.get(CANARY_COMMENT) == want

    nodehost.wait_nodes(kubeproxy.BINARY, "follow the canary Service", nodes, done,
                        lambda name: kubeproxy.log_path(ctx.paths, name), kubeproxy.SYNC_TIMEOUT)
    shadowed = [n for n in nodes if ipvs_shadow.ran(ctx.paths, n.name)]
    if shadowed:
        ipvs_shadow.wait_agree(ctx.paths, shadowed, ctx.node)


def _kube_proxy_left_behind(ctx: FaultContext, node: LabNode, params: Params) -> None:
    # The API changes after the node's kube-proxy stopped: the lab saves the state with this
    # fault in force once this returns. For moved and deleted the canary must first be
    # programmed everywhere, this node included, so it is created before the freeze.
    if params["via"] not in ("new", "moved", "deleted"):
        raise LabError("kube_proxy_out_of_sync: via must be new, moved or deleted")
    if params["via"] != "new":
        params["phase"] = "before"
        ctx.sync_api()
        _wait_canary(ctx, list(ctx.topology.nodes), _canary_endpoints(ctx, WEB_PORT))
    _freeze(kubeproxy.pids(node), f"kube-proxy on {node.name}")
    params.pop("phase", None)


# kubenetdiag counts a Service whose endpoints changed less than 15 s before it read the API
# as still settling, not as a node left behind (facts/services.py, SETTLE_S); one more second
# covers its rounding down.
DIAGNOSER_SETTLE_S = 16


def _others_follow(ctx: FaultContext, node: LabNode, params: Params) -> None:
    """The other nodes' kube-proxy programmed the change the frozen one missed, and it is old
    enough that a diagnoser no longer takes it for one still spreading (after a heal, which
    waited for every node itself, there is nothing left to wait for)."""
    if params not in ctx.active.params("kube_proxy_out_of_sync", node.name):
        return
    # The canary was created or changed before this runs: waiting from now is the safe side.
    since = time.monotonic()
    others = [n for n in ctx.topology.nodes if n.name != node.name]
    port = _canary_port(params)
    _wait_canary(ctx, others, _canary_endpoints(ctx, port))
    if port is not None:  # a deleted Service is stale at once: there is no age to wait out
        time.sleep(max(0.0, since + DIAGNOSER_SETTLE_S - time.monotonic()))


def _kube_proxy_resynced(ctx: FaultContext, node: LabNode, params: Params) -> None:
    # As deleting its pod would: a restarted kube-proxy lists everything afresh. The canary
    # is gone from the API first (the fault is no longer recorded), so every node drops it.
    _thaw(kubeproxy.pids(node))
    kubeproxy.stop(node)
    ctx.sync_api()
    kubeproxy.start(ctx.paths, node, ctx.node(node))
    kubeproxy.wait_synced(ctx.topology, ctx.paths, list(ctx.topology.nodes), ctx.node,
                          ctx.active.services(ctx.topology))
    _wait_canary(ctx, list(ctx.topology.nodes), None)


register(Fault(
    "kube_proxy_out_of_sync",
    "the node's kube-proxy hung (SIGSTOP, its pod still Ready) and the API changed after it: "
    f"a Service {CANARY_SERVICE} ({CANARY_VIP}:80, the web pod) created since (via=new), its "
    "targetPort moved from 8080 to 8081 as a rollout that changes the app's port would "
    "(via=moved), or the Service deleted (via=deleted); the other nodes follow the API, this "
    "one keeps its old rules (heal restarts it, as deleting its pod would)",
    _kube_proxy_left_behind, _kube_proxy_resynced, {"via": "moved"},
    settle=_others_follow, mechanisms={"new": (), "moved": (), "deleted": ()},
))

# ---- NetworkPolicies ---------------------------------------------------------------------------


def denying_policy(via: str) -> dict[str, Any]:
    """The NetworkPolicy network_policy_denies writes ({name, namespace, spec}), each what a
    real change leaves: `ingress` the web app scoped to a frontend that does not exist (only
    pods labelled app=frontend may connect to it on 8080); `default-deny` the namespace's
    default-deny-ingress, as its own docs give it; `dns` the client pods' egress limited to the
    web app, with no rule for DNS to kube-system (a classic omission); `namespace` the same
    with a rule for DNS to kube-system by a label the namespace does not carry (another)."""
    web_port = [{"protocol": "TCP", "port": WEB_PORT}]
    if via == "ingress":
        return {"name": "web-allow-frontend", "namespace": "default", "spec": {
            "podSelector": {"matchLabels": pod_labels("web")},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "frontend"}}}],
                         "ports": web_port}]}}
    if via == "default-deny":
        return {"name": "default-deny-ingress", "namespace": "default", "spec": {
            "podSelector": {}, "policyTypes": ["Ingress"]}}
    if via == "dns":
        return {"name": "client-egress-web-only", "namespace": "default", "spec": {
            "podSelector": {"matchLabels": pod_labels("client")},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {"matchLabels": pod_labels("web")}}],
                        "ports": web_port}]}}
    if via == "namespace":
        # DNS allowed to kube-system by a label guides used before Kubernetes labelled every
        # namespace itself (kubernetes.io/metadata.name): nobody put `name` on kube-system
        dns_ports = [{"protocol": proto, "port": 53} for proto in ("UDP", "TCP")]
        return {"name": "client-egress-web-and-dns", "namespace": "default", "spec": {
            "podSelector": {"matchLabels": pod_labels("client")},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {"matchLabels": pod_labels("web")}}],
                        "ports": web_port},
                       {"to": [{"namespaceSelector": {"matchLabels": {"name": "kube-system"}}}],
                        "ports": dns_ports}]}}
    raise LabError("network_policy_denies: via must be ingress, default-deny, dns or namespace")


def _policy_targets(topology: Topology, via: str) -> list[str]:
    """The nodes whose kube-router enforces the policy: those running a pod it selects."""
    apps = {"ingress": {"web"}, "default-deny": {"web", "client"}, "dns": {"client"},
            "namespace": {"client"}}[via]
    return sorted({pod.node for pod in topology.pods if pod.app in apps})


def _policy_written(ctx: FaultContext, node: LabNode, params: Params) -> None:
    # The fault is an API change made when the state is saved (the NetworkPolicy object);
    # with enforced=yes, the nodes' kube-router turn it into rules (settle waits for them).
    denying_policy(params["via"])  # refuses an unknown via before anything is written
    if params["enforced"] not in ("yes", "no"):
        raise LabError("network_policy_denies: enforced must be yes or no")
    if params["enforced"] == "yes" and ctx.topology.network_policy != kuberouter.MODE:
        raise LabError(
            "network_policy_denies enforced=yes needs a lab with a NetworkPolicy enforcer "
            f"(`lab up --network-policy {kuberouter.MODE}`; this lab runs "
            f"{ctx.topology.network_policy}); --param enforced=no writes the policy only")


def _policy_enforced(ctx: FaultContext, node: LabNode, params: Params) -> None:
    """After inject, every node running a selected pod has kube-router's rules for the
    policy; after heal, no node has any (kube-router runs in every node, whatever the
    fault's `enforced`: a policy object is enforced wherever an enforcer runs)."""
    if ctx.topology.network_policy != kuberouter.MODE:
        return
    active = params in ctx.active.params("network_policy_denies")
    targets = set(_policy_targets(ctx.topology, params["via"])) if active else set()
    # healed: no node keeps rules for any of the fault's policies (a blind heal, its
    # parameters lost, does not know which one was written)
    vias = [params["via"]] if active else ["ingress", "default-deny", "dns", "namespace"]
    written = [denying_policy(via) for via in vias]

    def done(lab_node: LabNode, rules: list[str]) -> bool:
        mine = [line for policy in written
                for line in kuberouter.policy_lines(rules, policy["namespace"], policy["name"])]
        if bool(mine) != (lab_node.name in targets):
            return False
        # healed: its ipsets gone too (kube-router deletes them after the rules, in the same
        # sync; the lab has no other policy, so there are none left at all)
        return active or not kuberouter.policy_ipsets(ctx.node(lab_node))

    kuberouter.wait_policies(ctx.paths, list(ctx.topology.nodes), ctx.node, done)


def _policy_blamed(topology: Topology, node: str, params: Params) -> list[str]:
    """Where the flows the checks send are denied: the web pod's node for the ingress
    policies (the only pod anything connects to that they select: nothing connects to a
    client pod), the client pods' nodes for their egress without DNS."""
    if params["via"] in ("dns", "namespace"):
        return _policy_targets(topology, params["via"])
    return [_web_node(topology)]


register(Fault(
    "network_policy_denies",
    "a NetworkPolicy written to the API denies a flow the app needs: via=ingress the web pod "
    "admits only pods labelled app=frontend (none exist), so the client pods can no longer "
    "reach it (VIP or pod address); via=default-deny the namespace default's "
    "default-deny-ingress; via=dns the client pods' egress allows only the web app on 8080, "
    "no DNS to kube-system; via=namespace the same egress with DNS allowed to namespaces "
    "labelled name=kube-system, a label kube-system does not carry. enforced=yes (a lab up "
    "with --network-policy kube-router) waits until every node's kube-router enforces it (its "
    "REJECT); enforced=no writes the object only, for a lab without an enforcer. Heal deletes "
    "the policy and waits until kube-router "
    "removed its rules",
    _policy_written, _noop, {"via": "ingress", "enforced": "yes"}, scope="cluster",
    default_node=_web_node, settle=_policy_enforced, blamed_nodes=_policy_blamed,
    mechanisms={"ingress": (), "default-deny": (), "dns": (), "namespace": ()},
))

# ---- zones -----------------------------------------------------------------------------------

# A Service whose endpoints are the client pods, one or more on every node, so in every zone
# (topology.py puts odd nodes in zone-a, even ones in zone-b), without topology-aware routing.
SPREAD_SERVICE = "client"
SPREAD_VIP = "10.96.0.30"
BULK_PORT = 30090
# The path between the zones as a thin interconnect: rate-limited, with a queue that holds
# LINK_QUEUE worth of traffic at that rate. A bulk transfer across it keeps the queue full, so
# whatever else crosses waits about that long: the runbook's peak-hour story (latency up,
# throughput down). It is also the only way to add delay here: the lab kernel has no netem.
LINK_RATE = "8mbit"
LINK_QUEUE = "60ms"
TBF = ["tbf", "rate", LINK_RATE, "burst", "8kb", "latency", LINK_QUEUE]


def spread_service(topology: Topology, unready: Collection[str] = ()) -> Service:
    pods = tuple(pod.name for pod in topology.pods if pod.app == "client"
                 and pod.name not in unready)
    return Service(SPREAD_SERVICE, "default", SPREAD_VIP,
                   (ServicePort("bulk", BULK_PORT, "TCP", BULK_PORT),), "client", pods)


def _other_zone(ctx: FaultContext, node: LabNode) -> LabNode:
    for peer in ctx.topology.peers(node):
        if peer.zone != node.zone:
            return peer
    raise LabError("cross_zone_latency needs nodes in two zones (a lab of two nodes or more)")


def _lone_zone_node(topology: Topology) -> str:
    """A node alone in its zone (node2 of three): every path to it crosses zones, and the
    other zone keeps a same-zone pair to compare with."""
    for node in topology.nodes:
        if sum(other.zone == node.zone for other in topology.nodes) == 1:
            return node.name
    return _last_node(topology)


def _start_in(ctx: FaultContext, netns: str, argv: list[str]) -> None:
    """Start a program that outlives the call in a lab namespace, its output in faults.log."""
    log = open(ctx.paths.logs / "faults.log", "ab")  # noqa: SIM115
    with log:
        subprocess.Popen(exec_argv(netns, argv), stdin=subprocess.DEVNULL, stdout=log,
                         stderr=subprocess.STDOUT, start_new_session=True)


def _start_in_pod(ctx: FaultContext, pod: str, argv: list[str]) -> None:
    _start_in(ctx, ctx.topology.pod(pod).netns, argv)


def _wait_pod_listen(ctx: FaultContext, pod: str, port: int, proto: str = "tcp") -> None:
    _wait_listening(ctx.runners.pod(pod), port, f"the server in {pod}", proto)


def _wait_ss(runner: NetnsRunner, args: list[str], ready: Callable[[str], bool],
             failure: str) -> None:
    """Until `ss -H ARGS`'s output is `ready`; bounded: 5 s, then LabError(failure)."""
    for _ in range(100):
        if ready(runner.run(["ss", "-H", *args], check=False).stdout):
            return
        time.sleep(0.05)
    raise LabError(failure)


def _wait_listening(runner: NetnsRunner, port: int, where: str, proto: str = "tcp") -> None:
    _wait_ss(runner, ["-lnu" if proto == "udp" else "-lnt", f"sport = :{port}"],
             lambda out: bool(out.strip()), f"{where}: nothing listens on {port}/{proto}")


def _bulk(ctx: FaultContext, source: LabPod, sink: LabPod, port: int = BULK_PORT) -> None:
    """A bulk transfer from pod `source` to pod `sink`, running until healed."""
    _start_in_pod(ctx, sink.name, services.netprog_argv("bulk-sink", str(port)))
    _wait_pod_listen(ctx, sink.name, port)
    _start_in_pod(ctx, source.name, services.netprog_argv(
        "bulk-send", sink.ip, str(port), "1800"))
    run(["sleep", "2"])  # TCP's slow start fills the queue within a second at this rate


def _shape(runner: NetnsRunner, dev: str) -> None:
    runner.run(["tc", "qdisc", "replace", "dev", dev, "root", *TBF])


def _unshape(runner: NetnsRunner, dev: str) -> None:
    """Take a tbf _shape put on `dev` off again, if it is there (heals are idempotent)."""
    if "tbf" in runner.run(["tc", "qdisc", "show", "dev", dev], check=False).stdout:
        runner.run(["tc", "qdisc", "del", "dev", dev, "root"])


def _stop_bulk(ctx: FaultContext, port: int) -> None:
    """End the transfers to `port` (`bulk-send HOST PORT SECONDS`) and their sink."""
    _kill_matching_in([pod.netns for pod in ctx.topology.pods], f" {port} 1800",
                      f"bulk-sink {port}")


def _zone_link_slow(ctx: FaultContext, node: LabNode, params: Params) -> None:
    if params["via"] != "switch":
        raise LabError("cross_zone_latency: via must be switch (a node's own full uplink is "
                       "link_saturated via=uplink)")
    peer = _other_zone(ctx, node)
    # the switch port towards the node: what comes to it from the other zone queues there
    _shape(ctx.runners.switch, f"swp{node.index}")
    _bulk(ctx, ctx.topology.pods_on(peer.name)[0], ctx.topology.pods_on(node.name)[0])


def _zone_link_heal(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _stop_bulk(ctx, BULK_PORT)
    _unshape(ctx.runners.switch, f"swp{node.index}")


register(Fault(
    "cross_zone_latency",
    "a Service (client, 10.96.0.30) whose endpoints are the client pods of every node, so in "
    "both zones, without topology-aware routing, while the path to the node's zone is slow: "
    "rate-limited to 8 Mbit/s with a 60 ms queue that a bulk TCP transfer from a pod of the "
    "other zone keeps full, on the switch port towards the node (via=switch: the interconnect, "
    "which no node's own counters show). Default node: one alone in its zone, so the other "
    "zone keeps a same-zone pair to compare with (three nodes or more)",
    _zone_link_slow, _zone_link_heal, {"via": "switch"}, scope="cluster",
    default_node=_lone_zone_node, settle=lambda ctx, node, params: _kube_proxies_synced(
        ctx, node, params),
    mechanisms={"switch": ()},
))

# ---- a link at capacity ----------------------------------------------------------------------

# Its own port, so that healing it never stops another fault's transfer.
SATURATING_PORT = 30091


def _app_pod(ctx: FaultContext, node: LabNode) -> LabPod:
    """The node's last pod that is not CoreDNS: a fault on it (a shaped link, a stuck
    server) leaves the cluster's DNS alone."""
    pods = [pod for pod in ctx.topology.pods_on(node.name) if pod.app != "coredns"]
    return pods[-1]


def _peer_client(ctx: FaultContext, node: LabNode) -> LabPod:
    """A pod of another node, to play the clients of a server in the node's pod: a
    Service's clients are anywhere in the cluster."""
    return ctx.topology.pods_on(ctx.topology.peers(node)[0].name)[0]


def _link_full(ctx: FaultContext, node: LabNode, params: Params) -> None:
    peer = ctx.topology.peers(node)[0]
    if params["via"] == "uplink":
        # the node's own uplink, shaped, and a pod of the node sending as fast as it takes
        _shape(ctx.node(node), "eth0")
        _bulk(ctx, ctx.topology.pods_on(node.name)[0], ctx.topology.pods_on(peer.name)[0],
              SATURATING_PORT)
    elif params["via"] == "pod":
        # a pod's veth shaped as the CNI bandwidth plugin does for its ingress-bandwidth
        # (a tbf on the host side), and a pod of a peer sending to it as fast as it takes
        pod = _app_pod(ctx, node)
        _shape(ctx.node(node), _host_veth(ctx, pod))
        _bulk(ctx, ctx.topology.pods_on(peer.name)[0], pod, SATURATING_PORT)
    else:
        raise LabError("link_saturated: via must be uplink or pod")


def _link_free(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _stop_bulk(ctx, SATURATING_PORT)
    for dev in ("eth0", _host_veth(ctx, _app_pod(ctx, node))):
        _unshape(ctx.node(node), dev)


register(Fault(
    "link_saturated",
    "a link of the node carrying all it can: shaped to 8 Mbit/s with a 60 ms queue (a tbf) "
    "while a bulk TCP transfer keeps it full. via=uplink: the node's eth0, the transfer "
    "leaving from its first pod to a peer's; via=pod: the host side of the veth of one of its "
    "pods (its last that is not CoreDNS), as the CNI bandwidth plugin shapes a pod's "
    "ingress-bandwidth, the transfer coming from a peer's pod. Everything else through that "
    "link waits in the queue",
    _link_full, _link_free, {"via": "uplink"},
    mechanisms={"uplink": (), "pod": ()},
))

# ---- connections unanswered ----------------------------------------------------------------

# The middleware host answers on its declared port (3306) and not on a second one its clients
# also use, so the diagnoser's own check of the address passes and only the workload's
# traffic, seen in the node's connection-tracking table, shows the problem.
CACHE_PORT = 6379
RETRY_CLIENTS = "16"  # connects in flight: ~8 new attempts a second, 2 s each
CACHE_DROP = ["-p", "tcp", "-m", "tcp", "--dport", str(CACHE_PORT), "-j", "DROP"]


def _unanswered_on(ctx: FaultContext, node: LabNode, params: Params) -> None:
    outside = ctx.runners.outside
    if params["via"] == "filtered":
        # the middleware host's own firewall drops the port silently
        outside.run(["iptables", "-I", "INPUT", "1", *CACHE_DROP])
    elif params["via"] == "stuck":
        # a server on the port that stopped accepting: once its backlog of one is full, the
        # kernel drops every further SYN without an answer
        _start_in(ctx, ctx.topology.outside_netns,
                  services.netprog_argv("listen-stuck", str(CACHE_PORT), "1"))
        for _ in range(100):  # bounded: 5 s
            if outside.run(["ss", "-Hlnt", f"sport = :{CACHE_PORT}"]).stdout:
                break
            run(["sleep", "0.05"])
        else:
            raise LabError(f"nothing listens on {CACHE_PORT} in the outside namespace")
    else:
        raise LabError("connections_unanswered: via must be filtered or stuck")
    pod = ctx.topology.pods_on(node.name)[0]
    _start_in_pod(ctx, pod.name, services.netprog_argv(
        "connect-retry", OUTSIDE_HOST, str(CACHE_PORT), RETRY_CLIENTS, "1800"))
    run(["sleep", "5"])  # forty unanswered attempts in the node's table, and more coming


def _pool_gone(ctx: FaultContext, node: LabNode, port: int) -> None:
    """End the client pool a fault started in the node's pods towards the middleware's port,
    and delete the node's conntrack entries for that port: the kernel keeps them up to 120 s,
    and the next diagnosis must not see the connections of a fault that is gone."""
    _kill_matching_in([pod.netns for pod in ctx.topology.pods],
                      f"connect-retry {OUTSIDE_HOST} {port} ")
    ctx.node(node).run(["conntrack", "-D", "-d", OUTSIDE_HOST, "-p", "tcp", "--dport",
                        str(port)], check=False)


def _unanswered_heal(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _pool_gone(ctx, node, CACHE_PORT)
    _kill_matching_in([ctx.topology.outside_netns], f"listen-stuck {CACHE_PORT} ")
    _delete_every(ctx.runners.outside, "INPUT", CACHE_DROP)


register(Fault(
    "connections_unanswered",
    "a client in one of the node's pods keeps 16 connects in flight to port 6379 of the "
    "middleware host (203.0.113.10), which answers on its declared 3306 but not there: its "
    "firewall drops the port (via=filtered), or a server there stopped accepting and its "
    "full backlog makes the kernel drop every new SYN (via=stuck); the node's conntrack "
    "table fills with unanswered SYN_SENT entries (heal deletes them)",
    _unanswered_on, _unanswered_heal, {"via": "filtered"},
    mechanisms={"filtered": (), "stuck": ()},
))

# ---- conntrack insert failures --------------------------------------------------------------

NAT_CLIENTS = "16"  # a pool's connects in flight to the middleware, each given up after 2 s


def _narrow_masquerade(node: LabNode, params: Params) -> list[str]:
    return ["-s", node.pod_cidr, "-d", f"{OUTSIDE_HOST}/32", "-p", "tcp", "-j", "MASQUERADE",
            "--to-ports", params["ports"]]


def _insert_failed_on(ctx: FaultContext, node: LabNode, params: Params) -> None:
    if params["via"] != "snat_ports":
        raise LabError("conntrack_insert_failed: via must be snat_ports")
    # An operator's masquerade for the pods' traffic to the middleware, limited to a port
    # range (a firewall pinhole opened for a few ports), ahead of the CNI's own. Each
    # connection keeps its port for as long as conntrack keeps its entry (TIME_WAIT: 120 s),
    # so a pool that opens connections faster than that finds none free: the kernel's entry
    # for the next one clashes, the insert fails and the SYN is dropped.
    _ipt_insert(ctx, node, "POSTROUTING", _narrow_masquerade(node, params), table="nat")
    pod = ctx.topology.pods_on(node.name)[0]
    _start_in_pod(ctx, pod.name, services.netprog_argv(
        "connect-retry", OUTSIDE_HOST, str(OUTSIDE_PORT), NAT_CLIENTS, "1800"))
    for _ in range(100):  # bounded: 10 s
        stats = ctx.node(node).run(["conntrack", "-S"], check=False).stdout
        if any(word.startswith("insert_failed=") and word != "insert_failed=0"
               for word in stats.split()):
            return
        run(["sleep", "0.1"])
    raise LabError("conntrack_insert_failed: no insert failed within 10 s")


def _insert_failed_heal(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _ipt_delete(ctx, node, "POSTROUTING", _narrow_masquerade(node, params), table="nat")
    _pool_gone(ctx, node, OUTSIDE_PORT)  # its entries hold the range's ports


register(Fault(
    "conntrack_insert_failed",
    "conntrack inserts failing on the node as its NAT runs out of source ports: a MASQUERADE "
    "of its pods' TCP to the middleware (203.0.113.10) limited to a port range (param ports, "
    "default 61000-61001), in nat POSTROUTING ahead of the CNI's, while a pool in one of its "
    "pods keeps 16 connects in flight to 203.0.113.10:3306; each closed connection holds its "
    "port for conntrack's TIME_WAIT, so every further SYN clashes and is dropped "
    "(via=snat_ports; heal deletes the held entries)",
    _insert_failed_on, _insert_failed_heal, {"via": "snat_ports", "ports": "61000-61001"},
    mechanisms={"snat_ports": ()},
))

# ---- sockets --------------------------------------------------------------------------------

APP_BACKLOG = "128"  # a listening app's own backlog, as most servers ask for


def _listen_overflow(ctx: FaultContext, node: LabNode, params: Params) -> None:
    port = params["port"]
    count = int(params["count"])
    if params["via"] == "stuck":
        _start_in_node(ctx, node, services.netprog_argv("listen-stuck", port, params["backlog"]))
        _wait_listen(ctx, node, int(port), "tcp")
    elif params["via"] == "hang":
        # An app that accepts as it should, with an ordinary backlog, hangs (SIGSTOP): its
        # accept queue fills, and the burst beyond the backlog overflows it.
        _stalled_app(ctx, node, port, APP_BACKLOG)
        count += int(APP_BACKLOG)
    elif params["via"] == "pod":
        # The same stuck server in one of the node's pods, as most servers run: its overflows
        # are counted in the pod's network namespace, not the node's.
        pod = _app_pod(ctx, node)
        _start_in_pod(ctx, pod.name, services.netprog_argv("listen-stuck", port,
                                                           params["backlog"]))
        _wait_pod_listen(ctx, pod.name, int(port))
        client = _peer_client(ctx, node)
        _netprog(ctx, client.name, "connect-burst", pod.ip, port, str(count),
                 "--hold", "2")
        return
    else:
        raise LabError("listen_queue_overflow: via must be stuck, hang or pod")
    _burst(ctx, node, port, count)


def _stalled_app(ctx: FaultContext, node: LabNode, port: str, backlog: str) -> None:
    """An app on the node that accepts as it should, asking listen() for `backlog`, then
    hung (SIGSTOP): nothing leaves its accept queue."""
    _start_in_node(ctx, node, services.netprog_argv(
        "serve-banner", port, "lab-app ready", "--backlog", backlog))
    _wait_listen(ctx, node, int(port), "tcp")
    _freeze(_procs_matching(node, f"serve-banner {port} "), f"the app on {node.name}")


def _burst(ctx: FaultContext, node: LabNode, port: str, count: int) -> None:
    """`count` connects at once from the node's first pod to its address, kept 2 s."""
    pod = ctx.topology.pods_on(node.name)[0]
    _netprog(ctx, pod.name, "connect-burst", node.address, port, str(count), "--hold", "2")


def _listen_overflow_heal(ctx: FaultContext, node: LabNode, params: Params) -> None:
    port = params["port"]
    _stop_matching(ctx, node, f"listen-stuck {port} ", f"serve-banner {port} ")
    _kill_matching_in([_app_pod(ctx, node).netns], f"listen-stuck {port} ")


def _wait_listen(ctx: FaultContext, node: LabNode, port: int, proto: str) -> None:
    _wait_listening(ctx.node(node), port, node.name, proto)


register(Fault(
    "listen_queue_overflow",
    "a listener on the node whose accept queue overflows under a bounded burst of connects "
    "from a pod, so ListenOverflows rises: one with backlog 1 that never accepts (via=stuck), "
    "or an app that accepts normally with backlog 128, hung with SIGSTOP before a burst of "
    "128 + count (via=hang); or the listener that never accepts in one of the node's pods "
    "(its last that is not CoreDNS), the burst from a pod of another node, so the overflows "
    "are counted in the pod's network namespace and none in the node's (via=pod)",
    _listen_overflow, _listen_overflow_heal,
    {"via": "stuck", "port": "30080", "backlog": "1", "count": "64"},
    mechanisms={"stuck": (), "hang": (), "pod": ()},
))


def _fd_limit(ctx: FaultContext, node: LabNode, params: Params) -> None:
    port, files = params["port"], params["files"]
    if params["via"] not in ("connections", "leak"):
        raise LabError("fd_limit_reached: via must be connections or leak")
    leak = ["--leak"] if params["via"] == "leak" else []
    _start_in_node(ctx, node, services.netprog_argv("serve-limited", port, files, *leak))
    _wait_listen(ctx, node, int(port), "tcp")
    # The server's own descriptors (stdio, the listener, the interpreter's) leave it fewer
    # than `files` for connections: `files` connects run it out, the accept queue's 128 fill
    # behind it, and the last 32 overflow the queue.
    pod = ctx.topology.pods_on(node.name)[0]
    count = str(int(files) + int(APP_BACKLOG) + 32)
    if leak:
        # the leaked files hold the descriptors: the clients may come and go
        _netprog(ctx, pod.name, "connect-burst", node.address, port, count, "--hold", "2")
        return
    # long-lived clients (streams, websockets) that keep their connections open until healed
    _start_in_pod(ctx, pod.name, services.netprog_argv(
        "connect-keep", node.address, port, count, "1800", "--burst"))
    for _ in range(200):  # bounded: 10 s
        line = ctx.node(node).run(["ss", "-Hlnt", f"sport = :{port}"]).stdout.split()
        if len(line) > 2 and int(line[1]) > int(line[2]):
            return
        run(["sleep", "0.05"])
    raise LabError(f"{node.name}: the accept queue of {port} did not fill")


def _fd_limit_heal(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _stop_matching(ctx, node, f"serve-limited {params['port']} ")
    _kill_matching_in([pod.netns for pod in ctx.topology.pods_on(node.name)],
                      f"connect-keep {node.address} {params['port']} ")


register(Fault(
    "fd_limit_reached",
    "a server on the node whose open-file limit (param files, default 64, as ulimit -n or "
    "systemd's LimitNOFILE sets it) runs out under a bounded burst of connects from a pod: "
    "long-lived clients that keep their connections open until healed (via=connections), or "
    "clients that come and go while the server answers and closes each connection and leaks a "
    "file for it (via=leak); accept() then fails with EMFILE and the connections behind it "
    "fill its accept queue and overflow it",
    _fd_limit, _fd_limit_heal, {"via": "connections", "port": "30082", "files": "64"},
    mechanisms={"connections": (), "leak": ()},
))


def _wait_sockets(ctx: FaultContext, node: LabNode, state: str, count: int) -> None:
    """Until the node holds `count` TCP sockets in `state` (an ss state name)."""
    for _ in range(200):  # bounded: 10 s
        held = ctx.node(node).run(["ss", "-Htn", "state", state]).stdout.splitlines()
        if len(held) >= count:
            return
        run(["sleep", "0.05"])
    raise LabError(f"{node.name}: {len(held)} sockets in {state.upper()}, {count} wanted")


def _close_wait(ctx: FaultContext, node: LabNode, params: Params) -> None:
    count = params["count"]
    if params["via"] == "server":
        # a server that keeps every connection and never reads: the clients' close leaves
        # each one in CLOSE-WAIT on the node
        port = params["port"]
        _start_in_node(ctx, node, services.netprog_argv("tcp-receiver", port))
        _wait_listen(ctx, node, int(port), "tcp")
        pod = ctx.topology.pods_on(node.name)[0]
        _netprog(ctx, pod.name, "connect-keep", node.address, port, count, "10", "--close")
    elif params["via"] == "pool":
        # a client pool on the node holding connections to the middleware, which greets and
        # closes each one: the pool never notices, the node keeps them in CLOSE-WAIT
        _start_in_node(ctx, node, services.netprog_argv(
            "connect-keep", OUTSIDE_HOST, str(OUTSIDE_PORT), count, "1800"))
    else:
        raise LabError("close_wait_leak: via must be server or pool")
    _wait_sockets(ctx, node, "close-wait", int(count))


def _close_wait_heal(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _stop_matching(ctx, node, f"tcp-receiver {params['port']}",
                   f"connect-keep {OUTSIDE_HOST} {OUTSIDE_PORT} ")


register(Fault(
    "close_wait_leak",
    "a process on the node that keeps connections its peers have closed (param count, default "
    "300), each in CLOSE-WAIT: a server that keeps every connection it accepts and never "
    "reads, closed by a pod's clients (via=server, port 30083), or a client pool on the node "
    "holding connections to the middleware (203.0.113.10:3306), which greets and closes each "
    "one (via=pool)",
    _close_wait, _close_wait_heal, {"via": "server", "port": "30083", "count": "300"},
    mechanisms={"server": (), "pool": ()},
))


DEFAULT_FIN_TIMEOUT = "60"  # what a new network namespace starts with, as a host does


def _fin_wait2(ctx: FaultContext, node: LabNode, params: Params) -> None:
    count, port = params["count"], params["port"]
    # a server in a pod on the node that keeps every connection and never closes one: each
    # connection the node's client closes waits in FIN-WAIT-2 for the server's FIN
    server = ctx.topology.pods_on(node.name)[0]
    _start_in_pod(ctx, server.name, services.netprog_argv("tcp-receiver", port))
    _wait_pod_listen(ctx, server.name, int(port))
    if params["via"] == "timeout":
        # closed at once, so the kernel owns them (orphans) for tcp_fin_timeout, raised on the
        # node as a tuning meant for slow peers would: the pile-up stays past the run
        _sysctl(ctx, node, f"net.ipv4.tcp_fin_timeout={params['timeout']}")
        ctx.node(node).run(services.netprog_argv(
            "connect-keep", server.ip, port, count, "10", "--close"), timeout=30.0)
    elif params["via"] == "halfclose":
        # a client on the node that shuts its sending side and keeps the sockets, waiting for
        # an answer that never ends: held by a process, they wait for ever
        _start_in_node(ctx, node, services.netprog_argv(
            "connect-keep", server.ip, port, count, "1800", "--half-close"))
    else:
        raise LabError("fin_wait2_pileup: via must be timeout or halfclose")
    _wait_sockets(ctx, node, "fin-wait-2", int(count))


def _fin_wait2_heal(ctx: FaultContext, node: LabNode, params: Params) -> None:
    port = params["port"]
    server = ctx.topology.pods_on(node.name)[0]
    _stop_matching(ctx, node, f"connect-keep {server.ip} {port} ")
    _kill_matching_in([server.netns], f"tcp-receiver {port}")
    _sysctl(ctx, node, f"net.ipv4.tcp_fin_timeout={DEFAULT_FIN_TIMEOUT}")
    # the node's side of those connections, in whatever state the server's end left them
    # (FIN-WAIT-2, TIME_WAIT once its FIN came): removed, not waited for
    ctx.node(node).run(["ss", "-K", "-Htn", f"dst {server.ip} and dport = :{port}"],
                       check=False)


register(Fault(
    "fin_wait2_pileup",
    "connections the node closed toward a server that never closes its end (param count, "
    "default 1200; a server in a pod on the node, port 30084), each left in FIN-WAIT-2 on the "
    "node: closed at once by a client on the node with net.ipv4.tcp_fin_timeout raised to "
    "param timeout (default 600), so the kernel keeps the orphans (via=timeout), or shut down "
    "for sending and kept by the client, which waits for ever (via=halfclose)",
    _fin_wait2, _fin_wait2_heal,
    {"via": "timeout", "port": "30084", "count": "1200", "timeout": "600"},
    mechanisms={"timeout": (), "halfclose": ()},
))


def _udp_errors(ctx: FaultContext, node: LabNode, params: Params) -> None:
    port = params["port"]
    if params["via"] == "stuck":
        _start_in_node(ctx, node, services.netprog_argv("udp-stuck", port, params["rcvbuf"]))
        _wait_listen(ctx, node, int(port), "udp")
    elif params["via"] == "hang":
        # A receiver with the kernel's default buffer that reads as it should, hung
        # (SIGSTOP): the flood is bigger than the default buffer holds.
        _start_in_node(ctx, node, services.netprog_argv("udp-sink", port))
        _wait_listen(ctx, node, int(port), "udp")
        _freeze(_procs_matching(node, f"udp-sink {port}"), f"the receiver on {node.name}")
    elif params["via"] == "pod":
        # The stuck socket in one of the node's pods (a metrics or log collector there), the
        # flood from a pod of another node: the pod counts the drops, the node does not.
        pod = _app_pod(ctx, node)
        _start_in_pod(ctx, pod.name, services.netprog_argv("udp-stuck", port, params["rcvbuf"]))
        _wait_pod_listen(ctx, pod.name, int(port), "udp")
        client = _peer_client(ctx, node)
        _netprog(ctx, client.name, "udp-flood", pod.ip, port, params["count"])
        return
    else:
        raise LabError("udp_buffer_errors: via must be stuck, hang or pod")
    pod = ctx.topology.pods_on(node.name)[0]
    _netprog(ctx, pod.name, "udp-flood", node.address, port, params["count"])


def _udp_errors_heal(ctx: FaultContext, node: LabNode, params: Params) -> None:
    port = params["port"]
    _stop_matching(ctx, node, f"udp-stuck {port} ", f"udp-sink {port}")
    _kill_matching_in([_app_pod(ctx, node).netns], f"udp-stuck {port} ")


register(Fault(
    "udp_buffer_errors",
    "a UDP socket on the node flooded briefly from a pod until its buffer is full: "
    "UdpRcvbufErrors rises; the socket has a tiny SO_RCVBUF and is never read (via=stuck), or "
    "its receiver reads with the default buffer and hangs, stopped with SIGSTOP, before a "
    "flood bigger than that buffer (via=hang); or the stuck socket in one of the node's pods "
    "(its last that is not CoreDNS), flooded from a pod of another node, so the pod counts "
    "the drops and the node does not (via=pod)",
    _udp_errors, _udp_errors_heal,
    {"via": "stuck", "port": "30053", "rcvbuf": "2048", "count": "2000"},
    mechanisms={"stuck": (), "hang": (), "pod": ()},
))


def _wait_queue(ctx: FaultContext, node: LabNode, port: str, at_least: int = 65536) -> None:
    """Until an established socket on `port` (the server's side) holds `at_least` bytes in its
    Recv-Q; bounded: 5 s."""
    _wait_ss(ctx.node(node), ["-tn", "state", "established", f"sport = :{port}"],
             lambda out: max((int(line.split()[0]) for line in out.splitlines()
                              if line.split()), default=0) >= at_least,
             f"{node.name}: no receive queue built up on port {port}")


def _recvq_on(ctx: FaultContext, node: LabNode, params: Params) -> None:
    """A server on the node that accepted a connection and does not read it, while its client
    (a local program, over loopback) has sent a megabyte: the bytes wait in the server's
    receive queue until its window closes."""
    port = params["port"]
    push = services.netprog_argv("tcp-push", "127.0.0.1", port, "1048576")
    if params["via"] == "noread":
        _start_in_node(ctx, node, services.netprog_argv("tcp-receiver", port))
        _wait_listen(ctx, node, int(port), "tcp")
        _start_in_node(ctx, node, push)
    elif params["via"] == "hang":
        # a reader that works: it accepts and reads the first bytes, then hangs (SIGSTOP)
        # while the rest arrives
        _start_in_node(ctx, node, services.netprog_argv("tcp-receiver", port, "--read"))
        _wait_listen(ctx, node, int(port), "tcp")
        _start_in_node(ctx, node, [*push, "--pause", "2"])
        run(["sleep", "1"])
        _freeze(_procs_matching(node, f"tcp-receiver {port}"), f"the receiver on {node.name}")
    else:
        raise LabError("socket_recv_queue_backlog: via must be noread or hang")
    _wait_queue(ctx, node, port)


def _recvq_off(ctx: FaultContext, node: LabNode, params: Params) -> None:
    port = params["port"]
    _stop_matching(ctx, node, f"tcp-push 127.0.0.1 {port} ", f"tcp-receiver {port}")


register(Fault(
    "socket_recv_queue_backlog",
    "an established connection on the node whose receive queue fills with unread bytes: its "
    "server accepts and never reads (via=noread), or reads normally and is hung with SIGSTOP "
    "before its client, a local program, sends a megabyte over loopback (via=hang)",
    _recvq_on, _recvq_off, {"via": "noread", "port": "30070"},
    mechanisms={"noread": (), "hang": ()},
))

PORT_OWNERS = ("node_exporter", "legacy-exporter")  # two programs that both want the port


def _port_conflict_on(ctx: FaultContext, node: LabNode, params: Params) -> None:
    """Two programs listen on one TCP port, both with SO_REUSEPORT: on the wildcard address
    both (via=reuseport: the kernel spreads connections between them), or the second on the
    node's own address (via=address: it takes every connection to that address)."""
    port = params["port"]
    if params["via"] == "reuseport":
        second = "0.0.0.0"
    elif params["via"] == "address":
        second = node.address
    else:
        raise LabError("listen_port_conflict: via must be reuseport or address")
    first, other = PORT_OWNERS
    _start_in_node(ctx, node, services.netprog_argv("listen-named", port, first))
    _wait_listen(ctx, node, int(port), "tcp")
    _start_in_node(ctx, node, services.netprog_argv("listen-named", port, other, "--bind",
                                                    second))
    for _ in range(100):  # bounded: 5 s
        out = ctx.node(node).run(["ss", "-Hltn", f"sport = :{port}"]).stdout
        if len(out.strip().splitlines()) >= 2:
            return
        run(["sleep", "0.05"])
    raise LabError(f"{node.name}: the second listener on {port} did not start")


def _port_conflict_off(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _stop_matching(ctx, node, f"listen-named {params['port']} ")


register(Fault(
    "listen_port_conflict",
    "two programs (node_exporter and legacy-exporter) listen on TCP port 9100 of the node, "
    "both with SO_REUSEPORT: both on 0.0.0.0 (via=reuseport) or the second on the node's own "
    "address (via=address)",
    _port_conflict_on, _port_conflict_off, {"via": "reuseport", "port": "9100"},
    mechanisms={"reuseport": (), "address": ()},
))

SYN_FILE = "60-network-performance.conf"  # a tuning guide's file that turns SYN cookies off
SYN_SAVED = "syn-backlog-saved.json"
SYN_KEYS = ("net.ipv4.tcp_syncookies", "net.ipv4.tcp_max_syn_backlog")


def _syn_low(ctx: FaultContext, node: LabNode, params: Params) -> None:
    saved = ctx.paths.node_files(node.name).dir / SYN_SAVED
    if not saved.exists():
        now = _sysctl_lines(ctx.node(node))
        saved.write_text(json.dumps({key: now[key] for key in SYN_KEYS}))
    bad = {"net.ipv4.tcp_syncookies": "0", "net.ipv4.tcp_max_syn_backlog": params["value"]}
    if params["via"] == "sysctl":
        _sysctl(ctx, node, *(f"{key}={value}" for key, value in bad.items()))
    elif params["via"] == "file":
        _sysctl_file(ctx, node, SYN_FILE, "\n".join(f"{k} = {v}" for k, v in bad.items()))
    else:
        raise LabError("syn_backlog_low: via must be sysctl or file")


def _syn_heal(ctx: FaultContext, node: LabNode, params: Params) -> None:
    (ctx.paths.node_files(node.name).sysctl_d / SYN_FILE).unlink(missing_ok=True)
    saved = ctx.paths.node_files(node.name).dir / SYN_SAVED
    if saved.exists():
        _sysctl(ctx, node, *(f"{k}={v}" for k, v in json.loads(saved.read_text()).items()))
        saved.unlink()


register(Fault(
    "syn_backlog_low",
    "SYN cookies off and net.ipv4.tcp_max_syn_backlog lowered (param value, default 128) "
    "below somaxconn, so bursts of handshakes are dropped before the accept queue fills: set "
    "at run time (via=sysctl) or by /etc/sysctl.d/60-network-performance.conf, applied "
    "(via=file)",
    _syn_low, _syn_heal, {"via": "sysctl", "value": "128"},
    mechanisms={"sysctl": (), "file": ()},
))


# The middleware host's metrics exporter (mysqld_exporter's port), which a monitoring agent
# on the node scrapes without keep-alive; a stand-in that reads each connection to its end
EXPORTER_PORT = "9104"
EXPORTER_SINK = f"bulk-sink {EXPORTER_PORT}"


def _tw_pileup(ctx: FaultContext, node: LabNode, params: Params) -> None:
    # Only a client's TIME_WAITs cost anything: each holds a local port toward one peer (a
    # server's, one per client port, are the benign_server_time_wait condition).
    if params["via"] == "client":
        made = ctx.node(node).run(services.netprog_argv("tw-burst", params["count"]),
                                  timeout=60).stdout
    elif params["via"] == "remote":
        _start_in(ctx, ctx.topology.outside_netns, services.netprog_argv(
            "bulk-sink", EXPORTER_PORT))
        _wait_listening(ctx.runners.outside, int(EXPORTER_PORT), "the middleware host")
        made = ctx.node(node).run(services.netprog_argv(
            "tw-burst", params["count"], "--to", OUTSIDE_HOST, EXPORTER_PORT), timeout=60).stdout
    elif params["via"] == "pod":
        # the same scraper in one of the node's pods: the TIME_WAITs are the pod's, in its
        # own namespace, and the node forwards the connections without holding any
        _start_in(ctx, ctx.topology.outside_netns, services.netprog_argv(
            "bulk-sink", EXPORTER_PORT))
        _wait_listening(ctx.runners.outside, int(EXPORTER_PORT), "the middleware host")
        made = ctx.runners.pod(_app_pod(ctx, node).name).run(services.netprog_argv(
            "tw-burst", params["count"], "--to", OUTSIDE_HOST, EXPORTER_PORT), timeout=60).stdout
    else:
        raise LabError("time_wait_pileup: via must be client, remote or pod")
    # a burst cut short by its time cap is a smaller fault than the one asked for
    if int(made.split()[0]) < int(params["count"]):
        raise LabError(f"time_wait_pileup: the burst ended early: {made.strip()}")


def _tw_heal(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _kill_matching_in([ctx.topology.outside_netns], EXPORTER_SINK)
    # The kernel keeps TIME_WAIT sockets 60 s; the heal removes the ones the fault made
    # (SOCK_DESTROY, `ss -K`), so the node is as before at once: loopback connections to
    # the burst's own listener (via=client), those to the exporter (via=remote).
    ctx.node(node).run(["ss", "-K", "-Htn", "state", "time-wait",
                        f"( dst 127.0.0.1 or dst {OUTSIDE_HOST}:{EXPORTER_PORT} )"],
                       check=False)
    ctx.runners.pod(_app_pod(ctx, node).name).run(  # via=pod's, in the pod
        ["ss", "-K", "-Htn", "state", "time-wait", f"dst {OUTSIDE_HOST}:{EXPORTER_PORT}"],
        check=False)


register(Fault(
    "time_wait_pileup",
    "a bounded burst of short connections from one client on the node to one server, each "
    "closed first by the client, so TIME_WAIT sockets pile up on the node toward that one "
    "peer, each holding a local port: loopback connections to its own listener (via=client), "
    f"or a monitoring agent scraping the middleware's exporter ({OUTSIDE_HOST}:"
    f"{EXPORTER_PORT}) without keep-alive (via=remote), or that scraper in one of the node's "
    "pods (its last that is not CoreDNS), whose namespace holds the TIME_WAITs while the node "
    "holds none (via=pod); heal removes those sockets (`ss -K`) "
    "instead of waiting the kernel's 60 s. A server's own TIME_WAITs cost no port: "
    "benign_server_time_wait",
    _tw_pileup, _tw_heal, {"via": "client", "count": "3000"},
    mechanisms={"client": (), "remote": (), "pod": ()},
))


def _web_rebound(ctx: FaultContext, node: LabNode, params: Params) -> None:
    services.stop_app(ctx.topology, ctx.paths, "web")
    if params["via"] == "loopback":
        # restarted with a configuration that binds it to 127.0.0.1: it listens, but not on
        # the pod's address, so every connection to the pod IP or the Service is refused
        services.start_apps(ctx.topology, ctx.paths, ["web"], bind="127.0.0.1")
    elif params["via"] != "stop":
        raise LabError("port_not_listening: via must be stop or loopback")


def _web_restored(ctx: FaultContext, node: LabNode, params: Params) -> None:
    pod = ctx.topology.pod_for_app("web")
    listening = ctx.runners.pod(pod.name).run(["ss", "-Hlnt", f"sport = :{WEB_PORT}"]).stdout
    # "LISTEN 0 5 127.0.0.1:8080 0.0.0.0:*": the local address is the fourth column
    if any(line.split()[3] != f"0.0.0.0:{WEB_PORT}" for line in listening.splitlines()
           if len(line.split()) > 3):
        services.stop_app(ctx.topology, ctx.paths, "web")
    services.start_apps(ctx.topology, ctx.paths, ["web"])


register(Fault(
    "port_not_listening",
    "the web app does not listen on its pod's address, so its Service and pod port refuse "
    "connections: its server stopped (via=stop), or restarted bound to 127.0.0.1 only "
    "(via=loopback: it listens, on the pod's loopback)",
    _web_rebound, _web_restored, {"via": "stop"},
    scope="cluster", default_node=_web_node, mechanisms={"stop": (), "loopback": ()},
))

def _hairpin(on: bool) -> Action:
    def act(ctx: FaultContext, node: LabNode, params: Params) -> None:
        # The web pod's own port on its node's cni0: only that pod's calls to itself break
        web = ctx.topology.pod_for_app("web")
        ctx.node(ctx.topology.node(web.node)).run(
            ["ip", "link", "set", _host_veth(ctx, web), "type", "bridge_slave", "hairpin",
             "on" if on else "off"])
    return act


register(Fault(
    "hairpin_disabled",
    "hairpin mode off on the web pod's port of cni0 (as a bridge CNI without hairpinMode, or "
    "kubelet's --hairpin-mode=none, leaves it): the web pod calling its own Service times "
    "out, since kube-proxy's DNAT on the bridge sends the frame back to the port it came in on",
    _hairpin(False), _hairpin(True), {"via": "veth"},
    modes=("flannel-vxlan", "flannel-host-gw"), scope="cluster", default_node=_web_node,
    mechanisms={"veth": ()},
))

# ---- NodePort with externalTrafficPolicy Local ----------------------------------------------

# A NodePort Service over the web pod that keeps the client's address (externalTrafficPolicy
# Local): a node without a web pod has no local endpoint and kube-proxy drops what reaches its
# NodePort, which a load balancer that health-checks the Service's healthCheckNodePort never
# sends there.
LOCAL_SERVICE = "web-local"
LOCAL_VIP = "10.96.0.22"
LOCAL_NODE_PORT = 30080
LOCAL_DROP_COMMENT = f"default/{LOCAL_SERVICE}:http has no local endpoints"
LOCAL_CLIENTS = "4"


def local_service(topology: Topology, unready: Collection[str] = ()) -> Service:
    pods = tuple(pod.name for pod in topology.pods if pod.app == "web" and pod.name not in unready)
    return Service(LOCAL_SERVICE, "default", LOCAL_VIP,
                   (ServicePort("http", 80, "TCP", WEB_PORT, LOCAL_NODE_PORT),), "web", pods,
                   external_traffic_policy="Local")


def _node_without_web(topology: Topology) -> str:
    web = _web_node(topology)
    return next(n.name for n in topology.nodes if n.name != web)


def _local_drops(ctx: FaultContext, node: LabNode) -> int | None:
    """Packets kube-proxy's "no local endpoints" rule for the Service dropped on the node;
    None while the rule is not there."""
    saved = ctx.node(node).run(["iptables-save", "-c", "-t", "filter"], check=False).stdout
    for line in saved.splitlines():
        if LOCAL_DROP_COMMENT in line and line.startswith("["):
            return int(line[1:].split(":", 1)[0])
    return None


def _wait_local_rules(ctx: FaultContext, nodes: list[LabNode], present: bool) -> None:
    """Until kube-proxy on each of `nodes` has the Local Service's drop rule (or none)."""
    nodehost.wait_nodes(kubeproxy.BINARY, "program the NodePort Service" if present
                        else "drop the NodePort Service", nodes,
                        lambda n: (_local_drops(ctx, n) is not None) == present,
                        lambda name: kubeproxy.log_path(ctx.paths, name), kubeproxy.SYNC_TIMEOUT)


def _nodeport_clients(node: LabNode) -> str:
    return f"connect-retry {node.address} {LOCAL_NODE_PORT}"


def _nodeport_check(ctx: FaultContext, node: LabNode, params: Params) -> None:
    if node.name == _web_node(ctx.topology):
        raise LabError("nodeport_no_local_endpoint: the node must be one without the web pod "
                       f"(not {node.name})")


def _nodeport_stop_clients(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _kill_matching_in([ctx.topology.outside_netns], _nodeport_clients(node))


def _nodeport_traffic(ctx: FaultContext, node: LabNode, params: Params) -> None:
    """Once kube-proxy has the Service, clients outside (a load balancer that does not
    health-check it) keep connecting to this node's NodePort, and its drops count up; after a
    heal, until no node has the Service's rules any more."""
    if params not in ctx.active.params("nodeport_no_local_endpoint", node.name):
        _wait_local_rules(ctx, list(ctx.topology.nodes), False)
        return
    _wait_local_rules(ctx, [node], True)
    _start_in(ctx, ctx.topology.outside_netns, services.netprog_argv(
        "connect-retry", node.address, str(LOCAL_NODE_PORT), LOCAL_CLIENTS, "1800"))
    deadline = time.monotonic() + 5
    while not _local_drops(ctx, node) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not _local_drops(ctx, node):
        raise LabError(f"nodeport_no_local_endpoint: no connect to {node.address}:"
                       f"{LOCAL_NODE_PORT} reached kube-proxy's drop rule on {node.name}")


register(Fault(
    "nodeport_no_local_endpoint",
    f"a NodePort Service {LOCAL_SERVICE} ({LOCAL_VIP}:80, nodePort {LOCAL_NODE_PORT}, the web "
    "pod) with externalTrafficPolicy Local, and clients outside connecting to the NodePort of "
    "a node without the web pod (as a load balancer that ignores the healthCheckNodePort "
    "does): kube-proxy drops them there (via=traffic; heal stops the clients and deletes the "
    "Service)",
    _nodeport_check, _nodeport_stop_clients, {"via": "traffic"},
    scope="cluster", default_node=_node_without_web, settle=_nodeport_traffic,
    mechanisms={"traffic": ()},
    # the drop counted, and the rule that reads it, are kube-proxy's iptables rule
    proxy_modes=("iptables",),
))

# ---- host -----------------------------------------------------------------------------------

def _sshd_listeners(ctx: FaultContext, node: LabNode) -> list[int]:
    """The node's listening sshd (not the nsenter that started it)."""
    return nodehost.procs_named(sshd.find_pids(ctx.paths.sshd_files(node.name)), "sshd")


LOCKDOWN_CHAIN = "INPUT-LOCKDOWN"  # a hardening profile's own input chain


def _node_unreachable_on(ctx: FaultContext, node: LabNode, params: Params) -> None:
    if params["via"] == "stop":
        ctx.stop_sshd(node.name)
    elif params["via"] == "hang":
        # The kernel still completes the TCP handshake into the listen backlog; the SSH
        # banner never comes, so a client waits for its own timeout instead of being refused.
        _freeze(_sshd_listeners(ctx, node), f"sshd on {node.name}")
    elif params["via"] == "arp":
        # The NIC stops taking part in ARP, as a driver or firmware fault leaves it: it answers
        # no request and resolves no neighbour, so the whole node drops off the node network,
        # SSH and the API included. The entries learnt before are forgotten at once on every
        # side, instead of after the kernel's own reachability timers.
        ctx.node(node).run(["ip", "link", "set", "eth0", "arp", "off"])
        _forget_neighbour(ctx, node)
    elif params["via"] == "reject":
        # A hardening profile's input policy that forgot SSH: replies to the node's own
        # connections still come in, anything new is refused the way firewalld's catch-all
        # refuses it, so the node answers every ping with "host prohibited" from its own
        # address and every SSH connect fails at once ("No route to host").
        _restore(ctx, node, f"*filter\n:{LOCKDOWN_CHAIN} - [0:0]\n"
                 f"-A {LOCKDOWN_CHAIN} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n"
                 f"-A {LOCKDOWN_CHAIN} -i lo -j RETURN\n"
                 f"-A {LOCKDOWN_CHAIN} -j REJECT --reject-with icmp-host-prohibited\n"
                 f"-I INPUT 1 -j {LOCKDOWN_CHAIN}\nCOMMIT\n")
    else:
        raise LabError("node_unreachable: via must be stop, hang, arp or reject")


def _forget_neighbour(ctx: FaultContext, node: LabNode) -> None:
    ctx.node(node).run(["ip", "neigh", "flush", "dev", "eth0"])
    for runner in [ctx.node(p) for p in ctx.topology.peers(node)] + [ctx.runners.client]:
        runner.run(["ip", "neigh", "flush", "to", node.address], check=False)


def _node_unreachable_off(ctx: FaultContext, node: LabNode, params: Params) -> None:
    if "NOARP" in ctx.node(node).run(["ip", "link", "show", "eth0"]).stdout:
        ctx.node(node).run(["ip", "link", "set", "eth0", "arp", "on"])
        _forget_neighbour(ctx, node)
        _pair_mended(ctx)
    if _ipt_delete(ctx, node, "INPUT", ["-j", LOCKDOWN_CHAIN]):
        _pair_mended(ctx)
    _drop_chains(ctx, node, [LOCKDOWN_CHAIN])
    _thaw(_sshd_listeners(ctx, node))
    ctx.start_sshd(node.name)


register(Fault(
    "node_unreachable",
    "the node cannot be logged in to: its network stays healthy and sshd is stopped, ssh "
    "refused (via=stop), or sshd hung, stopped with SIGSTOP: connections are accepted and then "
    "hang without an SSH banner until the client gives up (via=hang); or the node itself drops "
    "off the node network, its NIC answering and sending no ARP (ip link set eth0 arp off, "
    "via=arp); or the node up with an input policy that refuses everything new, SSH "
    "included, with icmp-host-prohibited (a chain INPUT-LOCKDOWN that INPUT jumps to first, "
    "which lets only replies and loopback through, via=reject)",
    _node_unreachable_on, _node_unreachable_off, {"via": "stop"},
    mechanisms={"stop": (), "hang": (), "arp": (), "reject": ()},
))

# ---- the node network between two nodes ------------------------------------------------------

# Locally administered, and no lab interface has it: where frames for it go, nobody answers.
STRAY_MAC = "02:00:5e:00:53:01"
NIC_SAVED = "eth0-mac.json"  # a node's own eth0 MAC, kept while underlay_neighbor_wrong changes it


def _eth0_mac(ctx: FaultContext, node: LabNode) -> str:
    return _link_mac(ctx, node, "eth0")


def _set_eth0_mac(ctx: FaultContext, node: LabNode, mac: str) -> None:
    """eth0's MAC changed as a replaced NIC or a migrated VM's would be: with arp_notify on for
    the moment, the kernel announces the new address (gratuitous ARP), so every cache that is
    not pinned follows at once."""
    runner = ctx.node(node)
    key = "net.ipv4.conf.eth0.arp_notify"
    before = runner.run(["sysctl", "-n", key]).stdout.strip()
    runner.run(["sysctl", "-q", "-w", f"{key}=1"])
    try:
        runner.run(["ip", "link", "set", "eth0", "address", mac])
    finally:
        runner.run(["sysctl", "-q", "-w", f"{key}={before}"])


def _pair_mended(ctx: FaultContext) -> None:
    """The node network between two nodes works again. Under calico-bgp their session went
    down with it and comes back by itself, but not before what the lab does next: the routes
    it carries are waited for, as after bgp_session_down."""
    if ctx.topology.cni == "calico-bgp":
        _wait_bgp_settled(ctx, stale=True)


def _neigh_wrong(ctx: FaultContext, node: LabNode, params: Params) -> None:
    peer = _entry_peer(ctx, node, params)
    runner = ctx.node(node)
    if params["via"] == "neigh":
        # a static entry typed wrong, or copied from another machine's /etc/ethers
        runner.run(["ip", "neigh", "replace", peer.address, "lladdr", STRAY_MAC, "dev", "eth0",
                    "nud", "permanent"])
    elif params["via"] == "mac":
        # the node pinned the peer's MAC (a static ARP table, right when written), then the
        # peer's NIC changed: every other machine learns the new MAC, this node cannot
        runner.run(["ip", "neigh", "replace", peer.address, "lladdr", _eth0_mac(ctx, peer),
                    "dev", "eth0", "nud", "permanent"])
        saved = _mac_saved(ctx, peer, NIC_SAVED)
        if not saved.exists():
            saved.write_text(json.dumps({"mac": _eth0_mac(ctx, peer)}))
        _set_eth0_mac(ctx, peer, STRAY_MAC)
    elif params["via"] == "gateway":
        # the outside's gateway pinned against ARP spoofing when a router since replaced
        # held its address: the entry still names that router's MAC
        runner.run(["ip", "neigh", "replace", OUTSIDE_UNDERLAY, "lladdr", STRAY_MAC, "dev",
                    "eth0", "nud", "permanent"])
    else:
        raise LabError("underlay_neighbor_wrong: via must be neigh, mac or gateway")


def _neigh_right(ctx: FaultContext, node: LabNode, params: Params) -> None:
    # every peer, as a blind heal does not know which one: their own MACs back, and no
    # permanent entry left on this node for their addresses (the lab writes none)
    runner = ctx.node(node)
    pinned = {e.get("dst") for e in json.loads(
        runner.run(["ip", "-j", "neigh", "show", "nud", "permanent", "dev", "eth0"]).stdout
        or "[]")}
    for peer in ctx.topology.peers(node):
        saved = _mac_saved(ctx, peer, NIC_SAVED)
        if saved.exists():
            _set_eth0_mac(ctx, peer, json.loads(saved.read_text())["mac"])
            saved.unlink()
        if peer.address in pinned:
            runner.run(["ip", "neigh", "del", peer.address, "dev", "eth0"])
    if OUTSIDE_UNDERLAY in pinned:
        runner.run(["ip", "neigh", "del", OUTSIDE_UNDERLAY, "dev", "eth0"])
    _pair_mended(ctx)


register(Fault(
    "underlay_neighbor_wrong",
    "the node holds a permanent neighbour (ARP) entry for a peer's node address (param peer, "
    "default the first other node) with a MAC the peer does not have, so nothing it sends to "
    "the peer arrives while the peer's own traffic still does: typed wrong by hand "
    "(via=neigh), or pinned right and then the peer's NIC changed, as a replaced NIC or a "
    "migrated VM's does, announced to every other machine (via=mac: the change is made on "
    "the peer, the fault is this node's entry); or for the gateway of the outside's network "
    f"({OUTSIDE_UNDERLAY}), pinned while a router since replaced held its address "
    "(via=gateway: the node and its pods lose the middleware, the peers do not)",
    _neigh_wrong, _neigh_right, {"via": "neigh", "peer": ""},
    mechanisms={"neigh": (), "mac": (), "gateway": ()},
))


def _route_peer_off(ctx: FaultContext, node: LabNode, params: Params) -> None:
    peer = _entry_peer(ctx, node, params)
    if params["via"] == "gateway":
        # a host route through a router since retired: nothing answers its ARP any more
        ctx.node(node).run(["ip", "route", "replace", f"{peer.address}/32",
                            "via", RETIRED_NODE_ADDRESS, "dev", "eth0"])
        return
    if params["via"] not in ("blackhole", "unreachable"):
        raise LabError("underlay_route_broken: via must be blackhole, unreachable or gateway")
    # a host route to "block" a machine, or one left from an old address plan
    ctx.node(node).run(["ip", "route", "replace", params["via"], f"{peer.address}/32"])


def _route_peer_on(ctx: FaultContext, node: LabNode, params: Params) -> None:
    runner = ctx.node(node)
    for peer in ctx.topology.peers(node):
        for kind in ("blackhole", "unreachable"):
            runner.run(["ip", "route", "del", kind, f"{peer.address}/32"], check=False)
        runner.run(["ip", "route", "del", f"{peer.address}/32", "via", RETIRED_NODE_ADDRESS],
                   check=False)
    # the entry the unanswered ARP left, which would otherwise stay until it ages out
    runner.run(["ip", "neigh", "del", RETIRED_NODE_ADDRESS, "dev", "eth0"], check=False)
    _pair_mended(ctx)


register(Fault(
    "underlay_route_broken",
    "the node's routing table stops what it sends to a peer's node address (param peer, "
    "default the first other node) with a host route in the main table: a blackhole "
    "(via=blackhole: dropped) or an unreachable route (via=unreachable: refused with an ICMP "
    "error) or a route through a gateway that no longer answers ARP (via=gateway: a retired "
    "router's address); the peer's own traffic still arrives",
    _route_peer_off, _route_peer_on, {"via": "blackhole", "peer": ""},
    mechanisms={"blackhole": (), "unreachable": (), "gateway": ()},
))


def _peer_drop_spec(ctx: FaultContext, node: LabNode, params: Params) -> tuple[str, list[str]]:
    """iptables_drop_rule via=peer_in / peer_out: a hand-made block of one machine."""
    peer = _entry_peer(ctx, node, params)
    return ("INPUT", ["-s", f"{peer.address}/32", "-j", "DROP"]) if params["via"] == "peer_in" \
        else ("OUTPUT", ["-d", f"{peer.address}/32", "-j", "DROP"])


# ---- middleware outside the cluster: a connect that times out --------------------------------


def _egress_drop_spec(node: LabNode) -> list[str]:
    # What a hand-written "keep the pods off the database" rule looks like: the node's pods,
    # the middleware's address and port; the node's own connections are not forwarded.
    return ["-s", node.pod_cidr, "-d", f"{OUTSIDE_HOST}/32", "-p", "tcp", "-m", "tcp",
            "--dport", str(OUTSIDE_PORT), "-j", "DROP"]


def _no_masq_spec(node: LabNode) -> list[str]:
    # A "do not masquerade" exception for the middleware's network written above the CNI's
    # masquerade (what ip-masq-agent's nonMasqueradeCIDRs does): the pods' connections leave
    # with their pod address, which the middleware has no route back to.
    return ["-s", node.pod_cidr, "-d", str(OUTSIDE_NETWORK), "-j", "RETURN"]


# flanneld's masquerade taken away: the jump nat POSTROUTING has to its chain, then the chain
FLANNEL_MASQ_GONE = ("iptables -t nat -D POSTROUTING -m comment --comment 'flanneld masq' "
                     "-j FLANNEL-POSTRTG; iptables -t nat -F FLANNEL-POSTRTG; "
                     "iptables -t nat -X FLANNEL-POSTRTG")


def _flanneld_masquerading(ctx: FaultContext, node: LabNode, on: bool) -> None:
    """flanneld restarted with (on) or without --ip-masq. Without it, flanneld neither writes
    its masquerade nor removes one left from before: the rules go as on a node that never had
    them. With it, flanneld writes them at its start."""
    flannel.restart(ctx.topology, ctx.paths, node, ctx.node(node), ip_masq=on)
    if not on:
        ctx.node(node).shell(FLANNEL_MASQ_GONE, check=False)
        return
    nodehost.wait_nodes("flanneld", "write its masquerade", [node],
                        lambda n: "FLANNEL-POSTRTG" in ctx.node(n).run(
                            ["iptables", "-t", "nat", "-S", "POSTROUTING"]).stdout,
                        lambda name: flannel.log_path(ctx.paths, name), 10)


def _pod_egress_off(ctx: FaultContext, node: LabNode, params: Params) -> None:
    if params["via"] == "drop":
        _ipt_insert(ctx, node, "FORWARD", _egress_drop_spec(node))
    elif params["via"] == "masquerade":
        _ipt_insert(ctx, node, "POSTROUTING", _no_masq_spec(node), table="nat")
    elif params["via"] == "ipmasq":
        _flanneld_masquerading(ctx, node, on=False)
    else:
        raise LabError("pod_egress_broken: via must be drop, masquerade or ipmasq")


def _pod_egress_on(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _ipt_delete(ctx, node, "FORWARD", _egress_drop_spec(node))
    _ipt_delete(ctx, node, "POSTROUTING", _no_masq_spec(node), table="nat")
    # a running flanneld without --ip-masq (one stopped or hung is another fault's)
    if ctx.topology.cni.startswith("flannel") and flannel.pids(node) \
            and not flannel.masquerades(node):
        _flanneld_masquerading(ctx, node, on=True)


register(Fault(
    "pod_egress_broken",
    "the node's pods time out connecting to the middleware outside the cluster while the node "
    "itself connects: a DROP of its pods' traffic to the middleware at the top of FORWARD "
    "(via=drop), or an exception above the CNI's masquerade that lets that traffic leave with "
    "the pod's address, which the middleware has no route back to (via=masquerade), or no "
    "masquerade at all: the node's flanneld restarted without --ip-masq, as a node set up "
    "by hand or by an older install script runs it, and its masquerade rules gone (via=ipmasq)",
    _pod_egress_off, _pod_egress_on, {"via": "drop"},
    mechanisms={"drop": (), "masquerade": (), "ipmasq": ("flannel-vxlan", "flannel-host-gw")},
))


def _allowlist_spec(address: str) -> list[str]:
    return ["-s", f"{address}/32", "-p", "tcp", "-m", "tcp", "--dport", str(OUTSIDE_PORT),
            "-j", "DROP"]


OUTSIDE_ROUTE = [str(OUTSIDE_NETWORK), "via", OUTSIDE_UNDERLAY, "dev", "eth0"]


def _endpoint_cut(ctx: FaultContext, node: LabNode, params: Params) -> None:
    if params["via"] == "route":
        ctx.node(node).run(["ip", "route", "del", *OUTSIDE_ROUTE])
    elif params["via"] == "allowlist":
        # The middleware host's own firewall drops this node's address (an allow-list that
        # missed a node added later); it acts in the outside namespace, never on a node.
        ctx.runners.outside.run(["iptables", "-I", "INPUT", "1",
                                 *_allowlist_spec(str(node.address))])
    else:
        raise LabError("endpoint_unreachable: via must be route or allowlist")


def _endpoint_back(ctx: FaultContext, node: LabNode, params: Params) -> None:
    ctx.node(node).run(["ip", "route", "replace", *OUTSIDE_ROUTE])
    _delete_every(ctx.runners.outside, "INPUT", _allowlist_spec(str(node.address)))


register(Fault(
    "endpoint_unreachable",
    "the node and its pods time out connecting to the middleware outside the cluster while "
    "the other nodes connect: the node's route to the middleware's network deleted "
    "(via=route), or the middleware host's own firewall dropping the node's address "
    "(via=allowlist; the pods' connections leave masqueraded to that address too)",
    _endpoint_cut, _endpoint_back, {"via": "allowlist"},
    mechanisms={"allowlist": (), "route": ()},
))


# ---- a node and its own pods -------------------------------------------------------------------


def _first_pod(ctx: FaultContext, node: LabNode) -> LabPod:
    # The node's first pod: the one whose namespace the active checks enter (cni-client-...
    # sorts first among /run/netns/cni-*), as the pod that stopped serving.
    return min(ctx.topology.pods_on(node.name), key=lambda pod: pod.slot)


def _host_veth(ctx: FaultContext, pod: LabPod) -> str:
    return cni.host_veth(ctx.topology, ctx.runners.node(pod.node), pod, ctx.runners.pod(pod.name))


def _pod_isolate_spec(pod: LabPod) -> list[str]:
    return ["-s", f"{pod.ip}/32", "-j", "DROP"]


def _pod_link_cut(ctx: FaultContext, node: LabNode, params: Params) -> None:
    pod = _first_pod(ctx, node)
    if params["via"] == "veth":
        # the host side of the pod's veth taken down (by hand, or a network manager that
        # claimed it): the pod is cut off from its node and from everything behind it
        ctx.node(node).run(["ip", "link", "set", _host_veth(ctx, pod), "down"])
    elif params["via"] == "nomaster":
        # the host side taken out of the bridge (a CNI DEL run for the wrong container, a
        # network manager that claimed it): up, but bridged to nothing
        ctx.node(node).run(["ip", "link", "set", _host_veth(ctx, pod), "nomaster"])
    elif params["via"] == "filter":
        # a host rule dropping what the pod sends to the node itself: its pings and the
        # node's replies from it; forwarded traffic does not cross INPUT
        _ipt_insert(ctx, node, "INPUT", _pod_isolate_spec(pod))
    elif params["via"] == "port":
        # the host side up and in cni0, its bridge port set disabled: `ip link` shows all
        # up, and the bridge passes nothing through the port
        ctx.node(node).run(["bridge", "link", "set", "dev", _host_veth(ctx, pod),
                            "state", "0"])
    elif params["via"] == "delete":
        # the host side deleted (a script cleaning up veths, a network manager, by hand):
        # the pod's end goes with it, and the kubelet does not set a running pod up again
        ctx.node(node).run(["ip", "link", "del", _host_veth(ctx, pod)])
    elif params["via"] == "proxy_arp":
        # calico: the node stops answering the pod's ARP for its gateway 169.254.1.1; the
        # pod's entry for it is flushed, as it expires within a minute on its own
        _sysctl(ctx, node, f"net.ipv4.conf.{_host_veth(ctx, pod)}.proxy_arp=0")
        ctx.runners.pod(pod.name).run(["ip", "neigh", "flush", "dev", "eth0"])
    elif params["via"] == "noarp":
        # ARP switched off where the pod's gateway answers (cni0 for every pod of the node,
        # the first pod's cali veth on calico): by hand, or a network manager's profile. The
        # entries cached before are flushed, as they expire within a minute on their own.
        dev = "cni0" if ctx.topology.cni != "calico-bgp" else _host_veth(ctx, pod)
        ctx.node(node).run(["ip", "link", "set", dev, "arp", "off"])
        ctx.node(node).run(["ip", "neigh", "flush", "dev", dev])
        for each in ctx.topology.pods_on(node.name):
            ctx.runners.pod(each.name).run(["ip", "neigh", "flush", "dev", "eth0"])
    elif params["via"] == "route":
        # calico: the pod's host route deleted (by hand, a cleanup script) with felix not
        # there to write it back: BIRD's blackhole for the node's block takes its traffic
        ctx.node(node).run(["ip", "route", "del", f"{pod.ip}/32", "dev", _host_veth(ctx, pod)])
    elif params["via"] == "gateway":
        # the node's conflist replaced by a copy whose delegate lacks isDefaultGateway, and
        # the pod made again with it (a restart, a new sandbox): the real flannel and bridge
        # plugins give it flannel's route for the pod network and no default route
        _write_cni_config(ctx, node, k8s_objects.flannel_cni_conf(default_gateway=False))
        cni.reattach_pod(node, ctx.node(node), pod)
    else:
        raise LabError("node_pod_link_broken: via must be veth, nomaster, delete, filter, "
                       "port, proxy_arp, noarp, route or gateway")


def _pod_link_back(ctx: FaultContext, node: LabNode, params: Params) -> None:
    pod = _first_pod(ctx, node)
    if ctx.topology.cni.startswith("flannel") and (ctx.runners.pod(pod.name).run(
            ["ip", "link", "show", "eth0"], check=False).returncode != 0
            or not ctx.runners.pod(pod.name).run(["ip", "-4", "route", "show", "default"])
            .stdout.strip()):
        # via=delete: its veth is gone; via=gateway: made without a default route
        _write_cni_config(ctx, node, k8s_objects.flannel_cni_conf())
        cni.reattach_pod(node, ctx.node(node), pod)
    veth = _host_veth(ctx, pod)
    ctx.node(node).run(["ip", "link", "set", veth, "up", "arp", "on"])
    if ctx.topology.cni != "calico-bgp":
        ctx.node(node).run(["ip", "link", "set", "cni0", "arp", "on"])
        # back in the bridge, with the hairpin mode the bridge resets when a port joins
        ctx.node(node).run(["ip", "link", "set", veth, "master", "cni0"])
        ctx.node(node).run(["bridge", "link", "set", "dev", veth, "hairpin", "on"])
        # a port that stayed in the bridge keeps a state set by hand (3: forwarding)
        ctx.node(node).run(["bridge", "link", "set", "dev", veth, "state", "3"])
    else:
        # the kernel dropped the pod's /32 when its veth went down; felix writes it back
        ctx.node(node).run(["ip", "route", "replace", f"{pod.ip}/32", "dev", veth,
                            "scope", "link"])
        _sysctl(ctx, node, f"net.ipv4.conf.{veth}.proxy_arp=1")
    _ipt_delete(ctx, node, "INPUT", _pod_isolate_spec(pod))


register(Fault(
    "node_pod_link_broken",
    "the node and its first pod cannot reach each other: the host side of the pod's veth set "
    "down (via=veth: the pod reaches nothing at all), or taken out of the bridge cni0 "
    "(via=nomaster: up, bridged to nothing), or deleted with the pod's end (via=delete: the "
    "pod keeps running with no interface but lo), or a DROP in the node's INPUT for the pod's "
    "address (via=filter: the node and the pod cannot ping each other, forwarded traffic "
    "still passes), or its port of cni0 set disabled while its link stays up (via=port: "
    "`bridge link set dev <veth> state 0`), or proxy ARP switched off on its calico veth "
    "(via=proxy_arp: the pod's ARP for its gateway 169.254.1.1 goes unanswered), or its "
    "host route deleted on calico (via=route: BIRD's blackhole for the block takes it), or "
    "ARP switched off where the pods' gateway answers (via=noarp: cni0, so every pod of the "
    "node, or the first pod's cali veth on calico), or the pod made again under a copy of "
    "flannel's conflist without isDefaultGateway (via=gateway: it gets flannel's route for "
    "the pod network and no default route, so its node, Services and the outside are "
    "unreachable from it)",
    _pod_link_cut, _pod_link_back, {"via": "veth"},
    mechanisms={"veth": (), "nomaster": ("flannel-vxlan", "flannel-host-gw"),
                "delete": ("flannel-vxlan", "flannel-host-gw"), "filter": (),
                "port": ("flannel-vxlan", "flannel-host-gw"), "proxy_arp": ("calico-bgp",),
                "route": ("calico-bgp",), "noarp": (),
                "gateway": ("flannel-vxlan", "flannel-host-gw")},
))


def _bridge_off(ctx: FaultContext, node: LabNode, params: Params) -> None:
    """cni0 set down (by hand on the way to deleting it, a cleanup script, a network manager
    that claims it): the kernel deletes the routes through it, the pod range's among them."""
    if params["via"] != "link":
        raise LabError("pod_bridge_down: via must be link")
    ctx.node(node).run(["ip", "link", "set", "cni0", "down"])


def _bridge_on(ctx: FaultContext, node: LabNode, params: Params) -> None:
    runner = ctx.node(node)
    runner.run(["ip", "link", "set", "cni0", "up"])  # the pod range's route comes back with it
    _service_route_back(runner)


def _service_route_back(runner: NodeRunner) -> None:
    """The lab's own route for ClusterIPs from the node (a real node's default route), through
    cni0: the kernel drops it with the bridge's state or address and never puts it back."""
    runner.run(["ip", "route", "replace", str(SERVICE_NETWORK), "dev", "cni0"])


register(Fault(
    "pod_bridge_down",
    "the node's pod bridge cni0 switched off (`ip link set cni0 down`, as by hand on the way "
    "to deleting it, a cleanup script or a network manager that claims it; via=link): the "
    "node and its pods cannot reach each other, and its pods reach nothing",
    _bridge_off, _bridge_on, {"via": "link"}, modes=("flannel-vxlan", "flannel-host-gw"),
    mechanisms={"link": ()},
))


def _bridge_address_gone(ctx: FaultContext, node: LabNode, params: Params) -> None:
    """cni0 loses the pods' gateway address while it stays up with every port: the kernel
    deletes the route to the node's pod range that it derived from that address."""
    runner = ctx.node(node)
    runner.run(["ip", "-4", "addr", "flush", "dev", "cni0"])
    if params["via"] == "stale":
        # the gateway of a range no node of this cluster holds now, as a node that left the
        # cluster and came back with a new spec.podCIDR keeps on cni0 (the bridge plugin then
        # refuses new pods: "cni0 already has an IP address different from ...")
        stale = max(n.index for n in ctx.topology.nodes) + 1
        base = IPv4Network(node.pod_cidr)
        gateway = base.network_address + ((stale - node.index) << 8) + 1
        runner.run(["ip", "addr", "add", f"{gateway}/{base.prefixlen}", "dev", "cni0"])
    elif params["via"] != "flush":
        raise LabError("pod_bridge_address_wrong: via must be stale or flush")


def _bridge_address_back(ctx: FaultContext, node: LabNode, params: Params) -> None:
    runner = ctx.node(node)
    runner.run(["ip", "-4", "addr", "flush", "dev", "cni0"])
    prefixlen = IPv4Network(node.pod_cidr).prefixlen
    runner.run(["ip", "addr", "add", f"{node.pod_gateway}/{prefixlen}", "dev", "cni0"])
    _service_route_back(runner)


register(Fault(
    "pod_bridge_address_wrong",
    "the node's pod bridge cni0 no longer holds its pods' gateway address, so the kernel's "
    "route to the node's pod range is gone while the bridge and every pod port stay up: the "
    "address of another pod range in its place, as a node re-joined with a new spec.podCIDR "
    "keeps (via=stale), or no address at all, as a network manager that takes the device over "
    "leaves it (via=flush)",
    _bridge_address_gone, _bridge_address_back, {"via": "stale"},
    modes=("flannel-vxlan", "flannel-host-gw"), mechanisms={"stale": (), "flush": ()},
))


CNI_CONFIG = f"/etc/cni/net.d/{cni.CNI_CONFLIST}"  # the node's, as install-cni writes it


def _cni_config_gone(ctx: FaultContext, node: LabNode, params: Params) -> None:
    # The kubelet's reaction (the Node's Ready condition) follows lab.json's record of this
    # fault (k8s_objects); the pods already attached keep their network, as on a real node.
    conf = shlex.quote(CNI_CONFIG)
    if params["via"] == "moved":
        # set aside by hand (a backup before an edit that never came back, a cleanup script)
        ctx.node(node).shell(f"mv {conf} {conf}.bak")
    elif params["via"] == "deleted":
        ctx.node(node).shell(f"rm {conf}")
    elif params["via"] == "truncated":
        # a write cut short (disk full, an editor killed): the first lines, no closing brace
        ctx.node(node).shell(f"truncate -s 120 {conf}")
    else:
        raise LabError("cni_config_missing: via must be moved, deleted or truncated")


def _write_cni_config(ctx: FaultContext, node: LabNode, text: str) -> None:
    conf = shlex.quote(CNI_CONFIG)
    ctx.node(node).shell(f"rm -f {conf}.bak; printf %s {shlex.quote(text)} > {conf}")


def _cni_config_back(ctx: FaultContext, node: LabNode, params: Params) -> None:
    # what flannel's install-cni container writes when its pod starts again
    _write_cni_config(ctx, node, k8s_objects.flannel_cni_conf())


register(Fault(
    "cni_config_missing",
    "the node's CNI configuration (/etc/cni/net.d/10-flannel.conflist, which flannel's "
    "install-cni container writes) is gone or unusable: set aside as .bak (via=moved), "
    "removed (via=deleted), or cut short mid-file so that it no longer parses "
    "(via=truncated). The kubelet then reports the node not Ready (NetworkReady=false: cni "
    "plugin not initialized); running pods keep their network",
    _cni_config_gone, _cni_config_back, {"via": "moved"},
    modes=("flannel-vxlan", "flannel-host-gw"),
    mechanisms={"moved": (), "deleted": (), "truncated": ()},
))


# Files that sort before flannel's 10-flannel.conflist, so the runtime takes them first: the
# bridge network a containerd setup guide has one write, and the config of a CNI the cluster
# used before flannel (its install-cni container never removed it).
SHADOWING_CNI = {
    "containerd": ("10-containerd-net.conflist", {
        "cniVersion": "1.0.0", "name": "containerd-net",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}}]}),
    "leftover": ("10-calico.conflist", {
        "cniVersion": "0.3.1", "name": "k8s-pod-network",
        "plugins": [
            {"type": "calico", "datastore_type": "kubernetes",
             "ipam": {"type": "calico-ipam"}, "policy": {"type": "k8s"}},
            {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}}]}),
}


def _cni_shadowed(ctx: FaultContext, node: LabNode, params: Params) -> None:
    if params["via"] not in SHADOWING_CNI:
        raise LabError("cni_config_shadowed: via must be containerd or leftover")
    name, conf = SHADOWING_CNI[params["via"]]
    path = shlex.quote(f"/etc/cni/net.d/{name}")
    text = shlex.quote(json.dumps(conf, indent=2) + "\n")
    ctx.node(node).shell(f"printf %s {text} > {path}")


def _cni_unshadowed(ctx: FaultContext, node: LabNode, params: Params) -> None:
    names = " ".join(shlex.quote(f"/etc/cni/net.d/{n}") for n, _ in SHADOWING_CNI.values())
    ctx.node(node).shell(f"rm -f {names}")


register(Fault(
    "cni_config_shadowed",
    "a valid CNI configuration that sorts before flannel's 10-flannel.conflist in the node's "
    "/etc/cni/net.d, so the runtime would give new pods their network from it: the bridge "
    "network of containerd's setup guide, 10-containerd-net.conflist (bridge cni0, "
    "10.88.0.0/16, via=containerd), or the 10-calico.conflist of a CNI the cluster used "
    "before (via=leftover). Running pods keep their network; the lab creates no new pod",
    _cni_shadowed, _cni_unshadowed, {"via": "containerd"},
    modes=("flannel-vxlan", "flannel-host-gw"),
    mechanisms={"containerd": (), "leftover": ()},
))


RESOLV_SAVED = "resolv-saved.conf"  # the node's resolv.conf before the fault
# Servers a VPN client and DHCP on a second interface append after the site's resolver: lab
# underlay addresses nobody holds, so a query sent there never leaves the lab.
EXTRA_NAMESERVERS = ("198.18.0.251", "198.18.0.252", "198.18.0.253")


def _resolv_crowded(ctx: FaultContext, node: LabNode, params: Params) -> None:
    if params["via"] != "appended":
        raise LabError("resolv_conf_nameserver_limit: via must be appended")
    files = ctx.paths.node_files(node.name)
    saved = files.dir / RESOLV_SAVED
    if not saved.exists():
        saved.write_text(files.resolv_conf.read_text())
    # written in place: the node's /etc/resolv.conf is a bind mount of this very file
    files.resolv_conf.write_text(saved.read_text() + "# added by the VPN client and DHCP\n" +
                                 "".join(f"nameserver {a}\n" for a in EXTRA_NAMESERVERS))


def _resolv_restored(ctx: FaultContext, node: LabNode, params: Params) -> None:
    files = ctx.paths.node_files(node.name)
    saved = files.dir / RESOLV_SAVED
    if saved.exists():
        files.resolv_conf.write_text(saved.read_text())
        saved.unlink()


register(Fault(
    "resolv_conf_nameserver_limit",
    "the node's /etc/resolv.conf lists four nameservers, the site's resolver first and three "
    "more a VPN client and DHCP on a second interface appended (via=appended): the node "
    "itself still resolves through the first, pods given the node's file (dnsPolicy Default) "
    "would get only three, and a kubelet would warn of it for each such pod",
    _resolv_crowded, _resolv_restored, {"via": "appended"},
    mechanisms={"appended": ()},
))


# ---- the API's view of a node ----------------------------------------------------------------


def _kubelet_down(ctx: FaultContext, node: LabNode, params: Params) -> None:
    # The Node's Ready condition follows from lab.json's record of this fault (k8s_objects):
    # Unknown, as the node lifecycle controller marks a node whose kubelet stopped posting.
    pids = nodehost.procs_in(node.netns, "kubelet")
    if params["via"] == "hang":
        _freeze(pids, f"the kubelet on {node.name}")
    elif params["via"] == "kill":
        nodehost.kill(pids)
    else:
        raise LabError("node_not_ready: via must be kill or hang")


def _kubelet_up(ctx: FaultContext, node: LabNode, params: Params) -> None:
    pids = nodehost.procs_in(node.netns, "kubelet")
    _thaw(pids)
    if not pids:
        ctx.node(node).shell(nodehost.agent_command(ctx.paths.node_files(node.name), "kubelet"))
        nodehost.wait_started(node.netns, "kubelet")


register(Fault(
    "node_not_ready",
    "the node's kubelet stops posting its status, so the API marks the node's Ready condition "
    "Unknown while the node itself runs and answers SSH: the kubelet killed (via=kill) or hung, "
    "stopped with SIGSTOP (via=hang)",
    _kubelet_down, _kubelet_up, {"via": "kill"},
    mechanisms={"kill": (), "hang": ()},
))


def _network_back(ctx: FaultContext, node: LabNode, params: Params) -> None:
    # The condition follows lab.json's record (k8s_objects). flanneld clears it only when it
    # starts, and the lab never writes flannel's condition for it: restarted, it does.
    if ctx.topology.cni.startswith("flannel"):
        flannel.restart(ctx.topology, ctx.paths, node, ctx.node(node))


register(Fault(
    "node_network_unavailable",
    "the API reports the node's NetworkUnavailable condition True while its network and CNI "
    "agent run: written by the cloud's route controller when it could not create the node's "
    "route (via=route, reason NoRouteCreated), or left by calico-node going down on the node "
    "(via=cni, reason CalicoIsDown; calico-bgp)",
    _noop, _network_back, {"via": "route"},
    mechanisms={"route": (), "cni": ("calico-bgp",)},
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


# The benign conditions register themselves beside the faults (kubenetdiag_lab/benign.py); at
# the end, since they are made from this module's helpers.
from kubenetdiag_lab import benign as _benign  # noqa: E402,F401
