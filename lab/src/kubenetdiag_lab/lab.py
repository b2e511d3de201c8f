"""A small Kubernetes-shaped network built from network namespaces on one machine.

Layout (prefix "knd", 2 nodes)::

    knd-client  (198.18.0.2)   ──┐
    knd-outside (198.18.0.250) ──┼── knd-sw: bridge br0, underlay 198.18.0.0/24
    knd-node1   (198.18.0.11)  ──┤     outside also holds 203.0.113.10 (TCP 3306) and
                                 │     runs the site's DNS resolver on 198.18.0.250:53
    knd-node2   (198.18.0.12)  ──┘
      each node<i>: its own netns + mount + PID namespace (nodehost.py), sshd on eth0,
        its pods' netns visible inside it as /run/netns/cni-<pod name> (as containerd does),
        cni0 10.244.<i>.1/24 and the pods' veths (the real flannel, bridge and host-local
        CNI plugins, run through libcni's cnitool: cni.py), the pod network by the
        real flanneld (flannel.py; calico-bgp: bird, cni.py, and felix's rules, services.py),
        the real kube-proxy (kubeproxy.py, iptables or nftables mode, watching the API),
        route 203.0.113.0/24 via 198.18.0.250, fake agent processes (kubelet, containerd, ...)
      ├─ knd-node<i>-pod1: eth0 10.244.<i>.2/24, default via 10.244.<i>.1 (app "client")
      └─ knd-node<i>-pod2: 10.244.<i>.3 (node1: coredns, the real CoreDNS (coredns.py);
                             node2: web; others: "client")

CNI modes: flannel-vxlan (default), flannel-host-gw (flannel.py), calico-bgp (cni.py).
NetworkPolicy enforcement: none (default), or kube-router's policy controller in every node
(kuberouter.py; flannel modes only).

The shape above is data (topology.py); this module owns the lifecycle: it builds that shape,
records it in lab.json, tears it down, and dispatches fault injection and healing. cni.py,
services.py and faults.py are functions over the topology, a runner for commands in a node or
pod (runner.py), the lab's files (paths.py) and the active faults; they never see this class.

Kubernetes API: the real etcd + kube-apiserver + kube-controller-manager (controlplane.py) in
`<prefix>-cp` (198.18.0.3, on the switch), reached from the client namespace at
https://198.18.0.3:6443. kube-controller-manager runs the EndpointSlice controllers only: the
slices are its own, following the pods' Ready condition. The lab has no kubelet and no other
controller, so it writes the objects they would (apisync.py), built from lab.json by
k8s_objects.py, and syncs them after every change of lab.json (a fault that changes what the
API says, e.g. a CNI pod not Ready, shows there at once; a pod not Ready reaches its Services'
slices through the controller, which the sync waits for).

lab.json (`<workdir>/lab.json`, schema "kubenetdiag/lab/v1") is the contract apisync and
`lab status` read; it is rewritten atomically on every change:

    prefix, workdir, cni, network_policy ("none" | "kube-router": what enforces NetworkPolicies,
    kuberouter.py), vxlan_port (cluster-wide flannel port), cluster_domain ("cluster.local"),
    pod_network ("10.244.0.0/16"), service_network ("10.96.0.0/12"),
    kube_proxy_mode ("iptables", or "nftables" from `up --proxy-mode nftables`),
    login ("node": logins run the node's own shell start-up files; "machine": this machine's),
    underlay ("198.18.0.0/24"; "198.18.0.0/22" above 200 nodes, whose pod_network is then
    "10.244.0.0/14"), light (true: nodes without flanneld and kube-proxy, `up --light`),
    namespaces [all lab netns], switch_netns,
    client {netns, address}, outside {netns, address, network,
                                      hosts: [{address, port, name, fqdn (the site's DNS name)}]},
    nodes [{name, index, netns, address, pod_cidr, pod_gateway, pod_netns, pod_address, zone
            ("zone-a" odd / "zone-b" even index), vxlan_port (this node's, differs under
            vxlan_port_mismatch), cni_pod_ready (false under cni_pod_not_running via=kill,
            and with calico when its readiness probe finds BIRD not answering),
            etc_dir (its /etc/sysctl.conf + sysctl.d), subnet_env, bird_socket (calico-bgp)}],
    pods [{name, namespace, node, ip, netns, app, ready, restarts, ports}]
          app: coredns | web | client
          ready: false for the pods of a service_no_endpoints via=unready service (failing
          readiness, restarts 0), CoreDNS's under coredns_unreachable via=stop (crash-looping), and
          CoreDNS's whenever the lab's own readiness probe of it fails (e.g. hung)
          ports: the container ports it declares, [{name, containerPort, protocol}]: each one
          its app's Services send to, named as the Service port
    services [{name, namespace, cluster_ip, ports [{name, port, protocol, target_port (a name,
                                                 <port>-alt, under service_no_endpoints
                                                 via=port), node_port (NodePort Services
                                                 only)}], app,
               endpoints [its Ready pods' names, as kube-controller-manager lists them ready:
                          [] under service_no_endpoints; kube-dns's [] under
                          coredns_unreachable via=stop],
               selector (only when a fault replaced the app's: service_no_endpoints
                         via=selector; {label: value}, matching no pod)}]
    network_policies [{name, namespace, spec}]: the NetworkPolicies faults wrote
                     (network_policy_denies), [] without one
    coredns {corefile (the file the real CoreDNS runs, = the coredns ConfigMap's Corefile),
             kubeconfig (its credentials, user system:serviceaccount:kube-system:coredns),
             upstream (the resolver `forward` sends to: the outside's 198.18.0.250),
             version (of the coredns binary; the pod's image tag)}
    faults [{fault, node, params}], bird_sockets {node: path} (calico-bgp only),
    sshd_pids {node: pid}, init_pids {node: pid of the node's PID 1, root-namespace view},
    inventory, kubeconfig (the read-only `kubenetdiag` user's, from the control plane),
    known_hosts, key

Invariants the code keeps (the tests check them):
  * nothing is created or changed in the root namespace: every link is created inside a lab
    namespace, veth peers are created directly in their target namespace;
  * no lab namespace routes outside the lab: only pods have a default route, to their own node;
    NAT only rewrites to pod addresses (DNAT) or to the node's own address (MASQUERADE);
  * `down` finds everything from the prefix alone, so it also cleans after a crashed run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import yaml

from kubenetdiag_lab import (
    apisync,
    cni,
    components,
    coredns,
    flannel,
    icmp,
    k8s_objects,
    kubeproxy,
    kuberouter,
    neighbours,
    nodehost,
    sandbox,
    services,
    sshd,
)
from kubenetdiag_lab import controlplane as cpm
from kubenetdiag_lab.faults import FAULTS, ActiveFaults, Fault, FaultContext
from kubenetdiag_lab.netns import (
    LabError,
    add_netns,
    delete_netns,
    ip_batch,
    lab_namespaces,
    pids_in_netns,
    terminate,
)
from kubenetdiag_lab.paths import LabPaths
from kubenetdiag_lab.pki import write_private
from kubenetdiag_lab.preflight import check_root_namespace
from kubenetdiag_lab.runner import Runners
from kubenetdiag_lab.topology import (
    CLUSTER_DOMAIN,
    DEFAULT_CNI,
    DEFAULT_PROXY_MODE,
    OUTSIDE_DNS,
    OUTSIDE_HOST,
    OUTSIDE_HOST_NAME,
    OUTSIDE_NETWORK,
    OUTSIDE_PORT,
    OUTSIDE_UNDERLAY,
    SERVICE_NETWORK,
    WEB_PORT,
    LabNode,
    LabPod,
    Topology,
    build,
    container_ports,
)

STATE_SCHEMA = "kubenetdiag/lab/v1"
REQUIRED_TOOLS = ("ip", "bridge", "iptables", "iptables-restore", "sysctl", "ssh", "ssh-keygen",
                  "nsenter", "unshare", "ss", "dnsmasq", sshd.SSHD)

# What a kubeadm-prepared node carries; faults add files beside these.
NODE_SYSCTL_CONF = "# /etc/sysctl.conf - see sysctl.conf(5)\n#net.ipv4.ip_forward=1\n"
# A node's own resolver is the site's (the outside namespace's dnsmasq), never this machine's:
# the node resolves the middleware's name as a real node would, and no lab query is aimed at
# an address outside the lab.
NODE_RESOLV_CONF = f"# the site's resolver\nnameserver {OUTSIDE_DNS}\n"
NODE_SYSCTL_D = {
    "99-kubernetes-cri.conf": "net.bridge.bridge-nf-call-iptables  = 1\n"
                              "net.ipv4.ip_forward                 = 1\n"
                              "net.bridge.bridge-nf-call-ip6tables = 1\n",
}


class Lab:
    """Build, inspect, break and tear down the lab. See the module docstring for the layout."""

    def __init__(self, workdir: Path, nodes: int = 2, prefix: str = "knd",
                 cni_mode: str = DEFAULT_CNI, *, proxy_mode: str = DEFAULT_PROXY_MODE,
                 topology: Topology | None = None, network_policy: str = "none",
                 login: str = "node", light: bool = False) -> None:
        self.topology = topology or build(prefix, nodes, cni_mode, proxy_mode, network_policy,
                                          login, light)
        shape = self.topology
        self.workdir = Path(workdir).resolve()
        self.paths = LabPaths(self.workdir)
        # The shape's parts as plain attributes: what callers of the Lab have always read.
        self.prefix = shape.prefix
        self.cni = shape.cni
        self.proxy_mode = shape.proxy_mode
        self.network_policy = shape.network_policy
        self.pod_network = shape.pod_network
        self.switch_netns = shape.switch_netns
        self.client_netns = shape.client_netns
        self.outside_netns = shape.outside_netns
        self.client_address = shape.client_address
        self.nodes: list[LabNode] = list(shape.nodes)
        self.pods: list[LabPod] = list(shape.pods)
        self.inventory_path = self.paths.inventory
        self.kubeconfig_path = self.paths.kubeconfig
        self.known_hosts_path = self.paths.known_hosts
        self.key_path = self.paths.key
        self.authorized_keys_path = self.paths.authorized_keys
        self.state_path = self.paths.state
        self.active = ActiveFaults()
        self.timings: dict[str, float] = {}
        self._sshd_pids: dict[str, int] = {}
        self._sshd_procs: dict[str, subprocess.Popen[bytes]] = {}
        self._init_pids: dict[str, int] = {}
        self._flannel_since = 0.0  # when `up` started the flanneld's (time.time())
        self._kube_router_since = 0.0  # when `up` started the kube-routers (time.monotonic())
        # Runners read _init_pids at call time, so it is only ever changed in place.
        self.runners = Runners(shape, self._init_pids)
        self.controlplane = cpm.ControlPlane(self.workdir, shape.cp_netns)

    # ---- lookup ---------------------------------------------------------------------------

    @classmethod
    def load(cls, workdir: Path) -> Lab:
        """Reattach to a lab that `up` built, possibly in another process."""
        path = Path(workdir).resolve() / "lab.json"
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise LabError(f"{path}: no lab state (was `up` run with this work dir?)") from exc
        if state.get("schema") != STATE_SCHEMA:
            raise LabError(f"{path}: not a {STATE_SCHEMA} state file")
        lab = cls(Path(state["workdir"]), topology=Topology.from_dict(state))
        lab._sshd_pids.update({name: int(pid) for name, pid in state.get("sshd_pids", {}).items()})
        lab._init_pids.update({name: int(pid) for name, pid in state.get("init_pids", {}).items()})
        lab.faults = list(state.get("faults", []))
        return lab

    @property
    def faults(self) -> list[dict[str, Any]]:
        """The active faults as lab.json records them: [{fault, node, params}]."""
        return self.active.entries

    @faults.setter
    def faults(self, entries: list[dict[str, Any]]) -> None:
        self.active.entries[:] = entries

    @property
    def namespaces(self) -> list[str]:
        return self.topology.namespaces

    def node(self, name: str) -> LabNode:
        return self.topology.node(name)

    def pod(self, name: str) -> LabPod:
        return self.topology.pod(name)

    def pods_on(self, node: str) -> list[LabPod]:
        return self.topology.pods_on(node)

    def pod_for_app(self, app: str) -> LabPod:
        return self.topology.pod_for_app(app)

    @property
    def sshd_pids(self) -> dict[str, int]:
        return dict(self._sshd_pids)

    def init_pid(self, node: LabNode) -> int:
        """The node's PID 1 (root-namespace view): nsenter -t it to be inside the node."""
        return self.runners.node(node).init_pid()

    def _fault_context(self) -> FaultContext:
        return FaultContext(self.topology, self.paths, self.runners, self.active,
                            stop_sshd=self.stop_sshd, start_sshd=self.start_sshd,
                            sync_api=self._save_state_if_up, controlplane=self.controlplane)

    # ---- lifecycle ------------------------------------------------------------------------

    def up(self) -> None:
        """Build the lab; on any failure tear down whatever was built, then re-raise."""
        started = time.monotonic()
        _require_root_and_tools(self.cni, self.proxy_mode, self.network_policy)
        # The underlay holds every lab address on the switch, the control plane's 198.18.0.3 too
        check_root_namespace([ip_network(self.topology.underlay),
                              ip_network(self.pod_network), SERVICE_NETWORK, OUTSIDE_NETWORK])
        leftovers = lab_namespaces(self.prefix)
        if leftovers:
            raise LabError(
                f"namespaces of lab prefix {self.prefix!r} already exist: {', '.join(leftovers)}\n"
                f"  a lab with this prefix is running or an earlier run crashed; remove it with "
                f"`python -m kubenetdiag_lab down --prefix {self.prefix} --workdir {self.workdir}`"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.paths.logs.mkdir(exist_ok=True)
        cp_start: _Background | None = None
        try:
            # Keys and files first: they touch no system state, so failing there costs nothing.
            self._write_ssh_material()
            self._write_node_files()
            add_netns([name for name in self.namespaces if name != self.topology.cp_netns])
            self._write_state()
            self._wire_switch_client_outside()
            cpm.add_cp_netns(self.prefix, self.switch_netns,
                             prefixlen=self.topology.underlay_prefixlen)
            # The apiserver takes seconds to become ready; it does so while the nodes are built.
            cp_start = _Background(self.controlplane.start)
            for node in self.nodes:
                self._wire_node(node)
            self._start_inits()
            self._start_sshds(self.nodes)
            for node in self.nodes:  # each pod's sandbox, holding the pod's resolv.conf
                sandbox.start(self.topology, node, self.runners.node(node),
                              self.paths.node_files(node.name))
            if self.cni == "calico-bgp":
                for node in self.nodes:
                    cni.start_bird(self.topology, node, self.runners.node(node),
                                   self.paths.node_files(node.name))
                cni.wait_converged(self.topology, timeout=30 + len(self.nodes))
            services.start_apps(self.topology, self.paths, ["web", "outside"])
            cp_start.result()
            write_private(self.kubeconfig_path,
                          self.controlplane.kubeconfig(cpm.READER_USER).read_bytes())
            self._write_state()
            self._sync_api(fresh=True)
            if self.topology.light:
                self.timings["up_s"] = time.monotonic() - started
                return  # no per-node component, no CoreDNS (it needs flannel's masquerade)
            # flanneld takes its Node's podCIDR and kube-proxy its Node object (apisync wrote
            # both); they start together and each is then waited for.
            self._start_flannelds()
            self._start_kube_proxies()
            # kube-router after kube-proxy has synced: each puts its jumps atop INPUT, FORWARD
            # and OUTPUT, kube-proxy only when missing, kube-router back to the top at every
            # sync; started after it, its jumps are first from the start, as on a node where
            # kube-router has run a while, and the order does not move under a fault.
            self._start_kube_routers()
            self._wait_flannelds()
            self._attach_pods()
            self._wait_kube_routers()
            # CoreDNS reaches the API (its kubernetes plugin) from its pod, through the CNI's
            # masquerade, which flanneld writes: it starts once the pod network is up.
            dns_started = time.monotonic()
            coredns.wait_ready(self.topology, self.paths, self._start_coredns())
            self.timings["coredns_ready_s"] = time.monotonic() - dns_started
        except BaseException as exc:
            if cp_start is not None:
                cp_start.wait()  # a start still running would outlive the clean-up
            try:
                self.down()
            except Exception as cleanup_exc:  # keep the original error as the one raised
                exc.add_note(f"cleanup after failed up also failed: {cleanup_exc}")
            raise
        self.timings["up_s"] = time.monotonic() - started

    def down(self) -> None:
        """Stop every process in the lab's namespaces and delete them. Safe to repeat.

        Works from the prefix alone (no state needed), so it also removes namespaces left by
        a crashed run with the same prefix.
        """
        started = time.monotonic()
        problems = []
        try:
            # SIGTERM first, so the apiserver drains; the namespace scan below is the backstop.
            self.controlplane.stop()
            cpm.stop_recorded(self.workdir)
        except (LabError, OSError) as exc:
            problems.append(f"control plane: {exc}")
        names = lab_namespaces(self.prefix)
        victims = {pid for pids in pids_in_netns(names).values() for pid in pids}
        # An sshd whose namespace was already deleted is invisible to the scan above; the
        # recorded pids (verified against their command line) catch it.
        for node in self.nodes:
            files = self.paths.sshd_files(node.name)
            pid = sshd.running_pid(self._sshd_pids.get(node.name), files)
            if pid:
                victims.add(pid)
            victims.update(sshd.find_pids(files))
            init = self._init_pids.get(node.name)
            if nodehost.is_init(init):
                victims.add(int(init or 0))
        try:
            terminate(victims)
        except LabError as exc:  # still delete the namespaces; report at the end
            problems.append(str(exc))
        for proc in self._sshd_procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
        self._sshd_procs.clear()
        self._sshd_pids.clear()
        self._init_pids.clear()
        self.faults.clear()
        # Reverse of build order (pods, nodes and client, switch); the kernel does not need
        # it, but a delete that fails halfway then leaves a lab that still hangs together.
        ordered = sorted(names, key=lambda name: ("-pod" not in name, name.endswith("-sw"), name))
        remaining = delete_netns(ordered)
        self.state_path.unlink(missing_ok=True)
        self.paths.api_objects.unlink(missing_ok=True)
        self.timings["down_s"] = time.monotonic() - started
        if remaining:
            problems.append(f"could not delete namespaces: {', '.join(remaining)}")
        if problems:
            raise LabError("; ".join(problems))

    # ---- building -------------------------------------------------------------------------

    def _write_ssh_material(self) -> None:
        sshd.keygen(self.key_path, f"kubenetdiag-lab-{self.prefix}-client")
        self.authorized_keys_path.write_text(sshd.public_key(self.key_path) + "\n")
        version = sshd.sshd_version()
        known_hosts = []
        for node in self.nodes:
            files = self.paths.sshd_files(node.name)
            files.dir.mkdir(parents=True, exist_ok=True)
            sshd.keygen(files.host_key, f"kubenetdiag-lab-{self.prefix}-{node.name}")
            files.config.write_text(
                sshd.render_config(files, node.address, self.authorized_keys_path, version)
            )
            known_hosts.append(f"{node.address} {sshd.public_key(files.host_key)}\n")
        self.known_hosts_path.write_text("".join(known_hosts))
        inventory = {
            "all": {
                "vars": {
                    "ansible_user": "root",
                    "ansible_ssh_private_key_file": str(self.key_path),
                    "ansible_ssh_common_args": f"-o UserKnownHostsFile={self.known_hosts_path}",
                    # What an SRE declares for the active TCP checks: the middleware outside
                    # the cluster and the app's pod, by address (names would need cluster DNS
                    # on the nodes, which real nodes do not have either).
                    "kubenetdiag_endpoints": [
                        f"{OUTSIDE_HOST}:{OUTSIDE_PORT}",
                        f"{self.pod_for_app('web').ip}:{WEB_PORT}",
                    ],
                },
                "hosts": {node.name: {"ansible_host": node.address} for node in self.nodes},
            }
        }
        self.inventory_path.write_text(yaml.safe_dump(inventory, sort_keys=False))

    def _write_node_files(self) -> None:
        for node in self.nodes:
            files = self.paths.node_files(node.name)
            nodehost.prepare(files, NODE_SYSCTL_CONF, NODE_RESOLV_CONF)
            for old in files.sysctl_d.glob("*.conf"):
                old.unlink()
            for name, text in NODE_SYSCTL_D.items():
                (files.sysctl_d / name).write_text(text)
            if self.cni.startswith("flannel") and not self.topology.light:
                cni.write_cni_config(files)

    def _wire_switch_client_outside(self) -> None:
        # Each veth is created in the switch with its peer born directly in the other
        # namespace, so no interface ever exists in the root namespace, even transiently.
        lines = ["link set lo up", "link add br0 type bridge", "link set br0 up",
                 f"link add swc type veth peer name eth0 netns {self.client_netns}",
                 "link set swc master br0 up",
                 f"link add swo type veth peer name eth0 netns {self.outside_netns}",
                 "link set swo master br0 up"]
        for node in self.nodes:
            lines += [f"link add swp{node.index} type veth peer name eth0 netns {node.netns}",
                      f"link set swp{node.index} master br0 up"]
        ip_batch(self.switch_netns, lines)
        ip_batch(self.client_netns, [
            "link set lo up",
            f"addr add {self.client_address}/{self.topology.underlay_prefixlen} dev eth0",
            "link set eth0 up",
            *(neighbours.client_lines(self.topology) if self.topology.light else []),
        ])
        ip_batch(self.outside_netns, services.wire_outside(self.topology.underlay_prefixlen))

    def _wire_node(self, node: LabNode) -> None:
        wiring = cni.pod_wiring(self.topology, node, self.pods_on(node.name))
        light = self.topology.light
        ip_batch(node.netns, [
            "link set lo up",
            f"addr add {node.address}/{self.topology.underlay_prefixlen} dev eth0",
            "link set eth0 up",
            f"route add {OUTSIDE_NETWORK} via {OUTSIDE_UNDERLAY} dev eth0",
            *wiring.node,
            # a light node has no flanneld: its routes, as flannel's host-gw backend writes
            *(f"route add {peer.pod_cidr} via {peer.address} dev eth0"
              for peer in self.topology.peers(node) if light),
            *(neighbours.node_lines(self.topology, node) if light else []),
        ])
        for pod in self.pods_on(node.name):
            ip_batch(pod.netns, [*wiring.pods[pod.netns],
                                 *(neighbours.pod_lines(node, pod) if light else [])])
        # New namespaces start with forwarding off regardless of the root namespace; -e: a
        # machine without br_netfilter has no net.bridge keys (the lab still works, routed).
        sysctls = " ".join(["net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1",
                            *wiring.sysctls])
        script = f"sysctl -qew {sysctls} >/dev/null && iptables-restore --noflush"
        ruleset = services.node_ruleset(self.topology)
        self.node_exec(node.name, ["sh", "-c", script], input=ruleset)

    def _start_inits(self) -> None:
        agents = nodehost.AGENTS[self.cni]
        hidden = cni.container_only() if self.cni == "calico-bgp" else []
        started = {}
        for node in self.nodes:
            files = self.paths.node_files(node.name)
            pid = nodehost.start_init(node.netns, files, agents, files.dir / "init.log",
                                      hidden, own_login=self.topology.login == "node")
            started[node.name] = (pid, files)
        self._init_pids.update(nodehost.wait_ready(started))
        for node in self.nodes:
            # containerd's naming (cni-<id>), so the active probes find a pod's view the way
            # they would on a real node
            nodehost.expose_netns(self._init_pids[node.name], self.paths.node_files(node.name),
                                  {cni.sandbox_netns(pod): pod.netns
                                   for pod in self.pods_on(node.name)})

    def _start_flannelds(self) -> None:
        if not self.cni.startswith("flannel"):
            return
        kubeconfig = self.controlplane.kubeconfig(cpm.FLANNEL_USER)
        self._flannel_since = time.time()
        for node in self.nodes:
            flannel.write_config(self.topology, self.paths, node, kubeconfig)
            flannel.start(self.paths, node, self.runners.node(node))

    def _attach_pods(self) -> None:
        # kubelet's turn once flannel is up: subnet.env is what the flannel plugin reads
        if self.cni.startswith("flannel"):
            for node in self.nodes:
                cni.attach_pods(node, self.runners.node(node), self.pods_on(node.name))

    def _wait_flannelds(self) -> None:
        if self.cni.startswith("flannel"):
            flannel.wait_programmed(self.topology, self.paths, self.nodes, self.runners.node,
                                    self._flannel_since)

    def _start_coredns(self) -> subprocess.Popen[bytes] | None:
        # The ConfigMap's Corefile, the same function's text (lab.json names the kubeconfig)
        coredns.write_corefile(self.paths, k8s_objects.corefile(self.state()))
        return coredns.start(self.topology, self.paths,
                             self._init_pids[coredns.pod(self.topology).node])

    def _start_kube_proxies(self) -> None:
        kubeconfig = self.controlplane.kubeconfig(cpm.PROXY_USER)
        for node in self.nodes:
            kubeproxy.write_config(self.topology, self.paths, node, kubeconfig)
            kubeproxy.start(self.paths, node, self.runners.node(node))
        kubeproxy.wait_synced(self.topology, self.paths, self.nodes, self.runners.node,
                              self.active.services(self.topology))

    def _start_kube_routers(self) -> None:
        if self.network_policy != kuberouter.MODE:
            return
        admin = self.controlplane.admin()
        for doc in cpm.kube_router_rbac_manifest():
            admin.apply(doc)
        kubeconfig = self.controlplane.kubeconfig(cpm.KUBE_ROUTER_USER)
        self._kube_router_since = time.monotonic()
        for node in self.nodes:
            kuberouter.start(self.paths, node, self.runners.node(node), kubeconfig)

    def _wait_kube_routers(self) -> None:
        if self.network_policy == kuberouter.MODE:
            kuberouter.wait_programmed(self.paths, self.nodes, self.runners.node)
            self.timings["kube_router_programmed_s"] = (time.monotonic()
                                                        - self._kube_router_since)

    def _start_sshds(self, nodes: Sequence[LabNode]) -> None:
        # Start all, then wait for all: startup latency overlaps instead of adding up.
        started = {}
        for node in nodes:
            item = sshd.start(node.netns, self.paths.sshd_files(node.name), node.address,
                              init_pid=self._init_pids.get(node.name))
            self._sshd_procs[node.name] = item.proc
            self._sshd_pids[node.name] = item.proc.pid
            started[node.name] = item
        sshd.wait_listening(started)

    def state(self) -> dict[str, Any]:
        """lab.json's content (see the module docstring)."""
        shape = self.topology.to_dict()
        failing_cni = self.active.cni_pod_unready()
        unready = self.active.unready_pods(self.topology)
        nodes = []
        bird_sockets = {}
        for node, entry in zip(self.nodes, shape["nodes"], strict=True):
            files = self.paths.node_files(node.name)
            entry.update({"vxlan_port": self.active.vxlan_port(node.name),
                          "cni_pod_ready": node.name not in failing_cni,
                          "etc_dir": str(files.etc), "subnet_env": str(files.subnet_env)})
            if self.cni == "calico-bgp":
                entry["bird_socket"] = bird_sockets[node.name] = cni.bird_socket(files)
            nodes.append(entry)
        return {
            "schema": STATE_SCHEMA,
            "prefix": self.prefix,
            "workdir": str(self.workdir),
            "cni": self.cni,
            "network_policy": self.network_policy,
            "login": self.topology.login,
            "vxlan_port": flannel.VXLAN_PORT,
            "cluster_domain": CLUSTER_DOMAIN,
            "pod_network": self.pod_network,
            "service_network": str(SERVICE_NETWORK),
            "kube_proxy_mode": self.proxy_mode,
            "underlay": shape["underlay"],
            "light": shape["light"],
            "namespaces": shape["namespaces"],
            "switch_netns": shape["switch_netns"],
            "client": shape["client"],
            "outside": {"netns": self.outside_netns, "address": OUTSIDE_UNDERLAY,
                        "network": str(OUTSIDE_NETWORK),
                        "hosts": [{"address": OUTSIDE_HOST, "port": OUTSIDE_PORT,
                                   "name": "mysql", "fqdn": OUTSIDE_HOST_NAME}]},
            "nodes": nodes,
            "pods": [{**pod, "ready": pod["name"] not in unready,
                      "restarts": unready.get(pod["name"], 0),
                      "ports": container_ports(self.topology, pod["app"])}
                     for pod in shape["pods"]],
            "services": [svc.to_dict() for svc in self.active.services(self.topology)],
            "network_policies": self.active.network_policies(),
            "coredns": {"corefile": str(coredns.corefile_path(self.paths)),
                        "kubeconfig": str(self.controlplane.kubeconfig(cpm.COREDNS_USER)),
                        "upstream": OUTSIDE_DNS,
                        "version": components.component(coredns.BINARY).version},
            "faults": self.faults,
            "bird_sockets": bird_sockets,
            "sshd_pids": self._sshd_pids,
            "init_pids": self._init_pids,
            "inventory": str(self.inventory_path),
            "kubeconfig": str(self.kubeconfig_path),
            "known_hosts": str(self.known_hosts_path),
            "key": str(self.key_path),
        }

    def _write_state(self) -> None:
        tmp = self.state_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.state(), indent=2) + "\n")
        tmp.replace(self.state_path)  # a reader never sees half a file

    def _save_state_if_up(self) -> None:
        if self.state_path.exists():
            self._probe_readiness()
            self._write_state()
            self._sync_api()

    def _probe_readiness(self) -> None:
        """Run the readiness probes whose failure a fault can cause without the lab saying
        so, as the kubelet would, and keep what they find for lab.json and the API: CoreDNS's
        (GET :8181/ready on its pod IP from its node) and, with calico, each calico-node's
        (BIRD answers on its socket). Run at every sync after `up`; `up` itself starts from
        every pod Ready."""
        dns = self.pod_for_app("coredns")
        self.active.probed_unready_pods = (
            set() if coredns.probe(self.topology) else {dns.name})
        if self.cni == "calico-bgp":
            self.active.probed_unready_cni = {
                node.name for node in self.nodes
                if not cni.bird_answers(self.paths.node_files(node.name))}

    def _sync_api(self, fresh: bool = False) -> None:
        """Make the apiserver's objects match lab.json (apisync.py). fresh: nothing is known
        to be there yet (right after `up`)."""
        if not self.controlplane.tokens:
            if not self.controlplane.files.tokens.exists():
                return  # no control plane (a lab being torn down)
            self.controlplane.attach()  # started by another process (`lab up`)
        applied = None
        if not fresh:
            with contextlib.suppress(OSError, ValueError):
                applied = json.loads(self.paths.api_objects.read_text())
        written = apisync.sync(self.controlplane.admin(), self.state(), applied)
        write_private(self.paths.api_objects, json.dumps(written).encode())

    # ---- running things -------------------------------------------------------------------

    def node_exec(
        self, node: str, argv: Sequence[str], check: bool = True, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run argv in the node's network namespace. kw: input, timeout, env."""
        return self.runners.node(node).run(argv, check=check, **kw)

    def netprog(self, pod: str, *args: str, timeout: float = 30.0
                ) -> subprocess.CompletedProcess[str]:
        """Run one of netprog.py's programs in a pod (see that module for the commands)."""
        return self.runners.pod(pod).run(services.netprog_argv(*args), check=False,
                                         timeout=timeout)

    def client_exec(
        self,
        argv: Sequence[str],
        check: bool = False,
        timeout: float | None = 60.0,
        env: dict[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv in the client namespace, where the diagnoser's network calls belong."""
        return self.runners.client.run(argv, check=check, timeout=timeout, env=env, input=input)

    def ssh_argv(self, node: str, *command: str, connect_timeout: float = 5) -> list[str]:
        """An ssh command line to a node with strict host key checking against the lab keys."""
        return [
            "ssh", "-F", "/dev/null", "-i", str(self.key_path),
            "-o", f"UserKnownHostsFile={self.known_hosts_path}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={connect_timeout:g}",
            f"root@{self.node(node).address}", *command,
        ]

    def ping(self, src_pod: str, dst: str, count: int = 1, timeout: float = 1.0,
             size: int | None = None, df: bool = True) -> subprocess.CompletedProcess[str]:
        """ICMP echo from a pod to an address; returncode 0 if any reply. size: payload bytes,
        sent with DF set, so a too-small MTU on the path drops it instead of fragmenting
        (df=False: fragmented where it does not fit)."""
        # -I: the helper is stdlib-only; isolation keeps the caller's env from changing it.
        argv = [sys.executable, "-I", icmp.__file__, dst, "-c", str(count), "-W", f"{timeout:g}"]
        if size is not None:
            argv += ["-s", str(size)] + ([] if df else ["--no-df"])
        return self.runners.pod(src_pod).run(argv, check=False,
                                             timeout=count * (timeout + 1) + 10)

    def pod_ping(
        self, src_node: str, dst_node: str, count: int = 1, timeout: float = 1.0,
        size: int | None = None, df: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """ICMP echo from src_node's first pod to dst_node's; returncode 0 if any reply."""
        return self.ping(self.node(src_node).pod_netns, self.node(dst_node).pod_address,
                         count=count, timeout=timeout, size=size, df=df)

    # ---- sshd -----------------------------------------------------------------------------

    def stop_sshd(self, node: str) -> None:
        target = self.node(node)
        sshd.stop(self._sshd_pids.pop(target.name, None), self.paths.sshd_files(target.name))
        proc = self._sshd_procs.pop(target.name, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
        self._save_state_if_up()

    def start_sshd(self, node: str) -> None:
        target = self.node(node)
        files = self.paths.sshd_files(target.name)
        if sshd.running_pid(self._sshd_pids.get(target.name), files):
            return
        self._start_sshds([target])
        self._save_state_if_up()

    # ---- faults ---------------------------------------------------------------------------

    def _fault(self, name: str) -> Fault:
        spec = FAULTS.get(name)
        if spec is None:
            raise LabError(f"unknown fault {name!r}; known: {', '.join(sorted(FAULTS))}")
        return spec

    def _default_node(self, spec: Fault) -> LabNode:
        return self.node(spec.default_node(self.topology))

    def inject(self, fault: str, node: str | None = None,
               params: dict[str, str] | None = None) -> None:
        """Break the lab. node defaults to where the fault naturally lives (e.g. the CoreDNS
        node); params override the fault's defaults (`lab inject --list` shows them)."""
        spec = self._fault(fault)
        if spec.fixture_only:
            raise LabError(f"{fault} cannot be reproduced on this kernel ({spec.description}); "
                           "it is covered by recorded-bundle fixtures")
        if spec.modes and self.cni not in spec.modes:
            raise LabError(f"{fault} needs CNI mode {' or '.join(spec.modes)}; "
                           f"this lab runs {self.cni}")
        if spec.proxy_modes and self.proxy_mode not in spec.proxy_modes:
            raise LabError(f"{fault} needs kube-proxy in {' or '.join(spec.proxy_modes)} mode "
                           f"(lab up --proxy-mode {spec.proxy_modes[0]}); this lab runs "
                           f"{self.proxy_mode}")
        unknown = set(params or {}) - set(spec.params)
        if unknown:
            raise LabError(f"{fault} takes no parameter {', '.join(sorted(unknown))}; "
                           f"it takes: {', '.join(sorted(spec.params)) or 'none'}")
        target = self.node(node) if node else self._default_node(spec)
        merged = {**spec.params, **(params or {})}
        spec.check_params(self.cni, merged)
        self._reload_faults()
        if any(entry["fault"] == fault and entry["node"] == target.name
               for entry in self.faults):
            raise LabError(f"{fault} is already active on {target.name}; heal it first")
        # Recorded before acting: state-dependent builders (vxlan port, endpoints) read it.
        self.faults.append({"fault": fault, "node": target.name, "params": merged})
        context = self._fault_context()
        try:
            spec.inject(context, target, merged)
        except BaseException:
            self.faults.pop()
            with contextlib.suppress(Exception):
                spec.heal(context, target, merged)
            raise
        self._save_state_if_up()
        if spec.settle is not None and self.state_path.exists():
            spec.settle(context, target, merged)

    def heal(self, fault: str | None = None, node: str | None = None) -> None:
        """Undo faults. With no fault, every recorded fault (on `node` if given) is healed;
        a named fault is also healed where it is not recorded (heals are idempotent), so
        this restores health after faults injected by a process that lost its state."""
        self._reload_faults()
        targets = [self.node(node)] if node else self.nodes
        names = {target.name for target in targets}
        work: list[tuple[Fault, LabNode, dict[str, str]]] = []
        for entry in list(self.faults):
            if entry["node"] in names and fault in (None, entry["fault"]):
                work.append((self._fault(entry["fault"]), self.node(entry["node"]),
                             entry["params"]))
        if fault is not None:
            spec = self._fault(fault)
            recorded = {target.name for _spec, target, _params in work}
            if not spec.fixture_only and not (spec.modes and self.cni not in spec.modes):
                blind = targets if spec.scope == "node" else [self._default_node(spec)]
                work += [(spec, target, dict(spec.params)) for target in blind
                         if target.name not in recorded and target.name in names]
        context = self._fault_context()
        for spec, target, params in work:
            self.faults = [entry for entry in self.faults
                           if not (entry["fault"] == spec.name and entry["node"] == target.name)]
            spec.heal(context, target, params)
            self._save_state_if_up()
            if spec.settle is not None and self.state_path.exists():
                spec.settle(context, target, params)
        self._save_state_if_up()

    def _reload_faults(self) -> None:
        # Another process (the CLI) may have injected since this object was built.
        with contextlib.suppress(OSError, ValueError, KeyError):
            recorded = json.loads(self.state_path.read_text())["faults"]
            for entry in recorded:
                if entry not in self.faults:
                    self.faults.append(entry)

    @contextlib.contextmanager
    def injected(self, fault: str, node: str | None = None,
                 params: dict[str, str] | None = None) -> Iterator[None]:
        """`with lab.injected(...)`: the fault holds inside the block and is healed after,
        even when the block raises."""
        try:
            self.inject(fault, node, params)
            yield
        finally:
            self.heal(fault, node or self._default_node(self._fault(fault)).name)


def missing_requirements(cni_mode: str | None = None, proxy_mode: str | None = None,
                         network_policy: str | None = None) -> str | None:
    """Why the lab cannot run here, or None. For callers that want to skip, not fail."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, sshd)"
    tools = REQUIRED_TOOLS + (("bird", "birdc") if cni_mode == "calico-bgp" else ())
    if network_policy == kuberouter.MODE:
        tools += ("ipset",)
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        return f"the lab needs these tools: {', '.join(missing)}"
    unbuilt = components.missing(components.for_lab(cni_mode, network_policy))
    if unbuilt:
        return unbuilt
    proxy = kubeproxy.requirements(proxy_mode or DEFAULT_PROXY_MODE)
    if proxy:
        return proxy
    if _root_password_locked():
        return ("root's password is locked ('!' in /etc/shadow); sshd with UsePAM no refuses "
                "key logins for locked accounts")
    return None


def _root_password_locked() -> bool:
    try:
        for line in Path("/etc/shadow").read_text().splitlines():
            if line.startswith("root:"):
                return line.split(":")[1].startswith("!")
    except OSError:
        pass
    return False


def _require_root_and_tools(cni_mode: str, proxy_mode: str,
                            network_policy: str = "none") -> None:
    reason = missing_requirements(cni_mode, proxy_mode, network_policy)
    if reason:
        raise LabError(reason)


class _Background:
    """fn() in a thread; result() waits and re-raises its exception in the caller."""

    def __init__(self, fn: Any) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Any) -> None:
        try:
            fn()
        except BaseException as exc:  # handed to the caller's thread
            self._error = exc

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> None:
        self.wait()
        if self._error is not None:
            raise self._error
