"""A small Kubernetes-shaped network built from network namespaces on one machine.

Layout (prefix "knd", 2 nodes)::

    knd-client (198.18.0.2)  ──┐
    knd-node1  (198.18.0.11) ──┼── knd-sw: bridge br0, underlay 198.18.0.0/24
    knd-node2  (198.18.0.12) ──┘
      each node<i>: sshd on eth0, cni0 10.244.<i>.1/24, flannel FORWARD rules, ip_forward=1
      └─ knd-node<i>-pod1: eth0 10.244.<i>.2/24, default via 10.244.<i>.1

Nodes route each other's pod /24 via the owning node's underlay address (flannel host-gw), so
cross-node pod traffic exercises real forwarding, sysctls and iptables on both nodes.

Invariants the code keeps (the tests check them):
  * nothing is created or changed in the root namespace: every link is created inside a lab
    namespace, veth peers are created directly in their target namespace;
  * no lab namespace routes outside the lab: only pods have a default route, to their own node;
  * `down` finds everything from the prefix alone, so it also cleans after a crashed run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from ipaddress import IPv4Network, ip_network
from pathlib import Path
from typing import Any

import yaml

from kubenetdiag.lab import icmp, sshd
from kubenetdiag.lab.faults import FAULTS
from kubenetdiag.lab.netns import (
    LabError,
    add_netns,
    delete_netns,
    exec_argv,
    ip_batch,
    lab_namespaces,
    pids_in_netns,
    run,
    terminate,
)
from kubenetdiag.lab.preflight import check_root_namespace

UNDERLAY = ip_network("198.18.0.0/24")  # RFC 2544 benchmarking range: never routed for real
POD_SUPERNET = ip_network("10.244.0.0/16")  # flannel's default cluster CIDR
CLIENT_ADDRESS = "198.18.0.2"
NODE_HOST_OFFSET = 10  # node i is 198.18.0.(10+i)
MAX_NODES = 200  # keeps node addresses inside the /24 and pod /24s inside the /16
STATE_SCHEMA = "kubenetdiag/lab/v1"
REQUIRED_TOOLS = ("ip", "iptables", "iptables-restore", "sysctl", "ssh", "ssh-keygen", sshd.SSHD)
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")

FLANNEL_FORWARD_RULES = f"""*filter
-A FORWARD -s {POD_SUPERNET} -m comment --comment "flanneld forward" -j ACCEPT
-A FORWARD -d {POD_SUPERNET} -m comment --comment "flanneld forward" -j ACCEPT
COMMIT
"""


@dataclass(frozen=True)
class LabNode:
    name: str  # inventory name, node1..nodeN
    index: int
    netns: str
    address: str  # underlay address on eth0
    pod_cidr: str
    pod_gateway: str  # cni0 address
    pod_netns: str
    pod_address: str


def _make_node(prefix: str, i: int) -> LabNode:
    pod_net = IPv4Network(f"{POD_SUPERNET.network_address + (i << 8)}/24")
    return LabNode(
        name=f"node{i}",
        index=i,
        netns=f"{prefix}-node{i}",
        address=str(UNDERLAY.network_address + NODE_HOST_OFFSET + i),
        pod_cidr=str(pod_net),
        pod_gateway=str(pod_net.network_address + 1),
        pod_netns=f"{prefix}-node{i}-pod1",
        pod_address=str(pod_net.network_address + 2),
    )


class Lab:
    """Build, inspect, break and tear down the lab. See the module docstring for the layout."""

    def __init__(self, workdir: Path, nodes: int = 2, prefix: str = "knd") -> None:
        if not PREFIX_RE.match(prefix):
            # No "-" allowed: it keeps every lab's namespace names unambiguous for `down`.
            raise LabError(f"lab prefix {prefix!r} must match {PREFIX_RE.pattern}")
        if not 1 <= nodes <= MAX_NODES:
            raise LabError(f"lab node count must be 1..{MAX_NODES}, got {nodes}")
        self.workdir = Path(workdir).resolve()
        self.prefix = prefix
        self.switch_netns = f"{prefix}-sw"
        self.client_netns = f"{prefix}-client"
        self.client_address = CLIENT_ADDRESS
        self.nodes: list[LabNode] = [_make_node(prefix, i) for i in range(1, nodes + 1)]
        self.inventory_path = self.workdir / "hosts.yaml"
        self.known_hosts_path = self.workdir / "known_hosts"
        self.key_path = self.workdir / "id_ed25519"
        self.authorized_keys_path = self.workdir / "authorized_keys"
        self.state_path = self.workdir / "lab.json"
        self.active_faults: set[tuple[str, str]] = set()
        self.timings: dict[str, float] = {}
        self._sshd_pids: dict[str, int] = {}
        self._sshd_procs: dict[str, subprocess.Popen[bytes]] = {}

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
        lab = cls(Path(state["workdir"]), nodes=len(state["nodes"]), prefix=state["prefix"])
        lab._sshd_pids = {k: int(v) for k, v in state.get("sshd_pids", {}).items()}
        lab.active_faults = {(f, n) for f, n in state.get("active_faults", [])}
        return lab

    @property
    def namespaces(self) -> list[str]:
        return [
            self.switch_netns,
            self.client_netns,
            *(n.netns for n in self.nodes),
            *(n.pod_netns for n in self.nodes),
        ]

    def node(self, name: str) -> LabNode:
        for node in self.nodes:
            if name in (node.name, node.netns, node.address):
                return node
        raise LabError(f"no lab node {name!r}; nodes are {', '.join(n.name for n in self.nodes)}")

    @property
    def sshd_pids(self) -> dict[str, int]:
        return dict(self._sshd_pids)

    def _sshd_files(self, node: LabNode) -> sshd.SshdFiles:
        return sshd.SshdFiles(self.workdir / "nodes" / node.name)

    # ---- lifecycle ------------------------------------------------------------------------

    def up(self) -> None:
        """Build the lab; on any failure tear down whatever was built, then re-raise."""
        started = time.monotonic()
        _require_root_and_tools()
        check_root_namespace([UNDERLAY, POD_SUPERNET])
        leftovers = lab_namespaces(self.prefix)
        if leftovers:
            raise LabError(
                f"namespaces of lab prefix {self.prefix!r} already exist: {', '.join(leftovers)}\n"
                f"  a lab with this prefix is running or an earlier run crashed; remove it with "
                f"`python -m kubenetdiag.lab down --prefix {self.prefix} --workdir {self.workdir}`"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            # Keys and files first: they touch no system state, so failing there costs nothing.
            self._write_ssh_material()
            add_netns(self.namespaces)
            self._write_state()
            self._wire_switch_and_client()
            for node in self.nodes:
                self._wire_node(node)
            self._start_sshds(self.nodes)
            self._write_state()
        except BaseException as exc:
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
        names = lab_namespaces(self.prefix)
        victims = {pid for pids in pids_in_netns(names).values() for pid in pids}
        # An sshd whose namespace was already deleted is invisible to the scan above; the
        # recorded pids (verified against their command line) catch it.
        for node in self.nodes:
            files = self._sshd_files(node)
            pid = sshd.running_pid(self._sshd_pids.get(node.name), files)
            if pid:
                victims.add(pid)
        problems = []
        try:
            terminate(victims)
        except LabError as exc:  # still delete the namespaces; report at the end
            problems.append(str(exc))
        for proc in self._sshd_procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
        self._sshd_procs.clear()
        self._sshd_pids.clear()
        self.active_faults.clear()
        # Reverse of build order (pods, nodes and client, switch); the kernel does not need
        # it, but a delete that fails halfway then leaves a lab that still hangs together.
        ordered = sorted(names, key=lambda n: ("-pod" not in n, n.endswith("-sw"), n))
        remaining = delete_netns(ordered)
        self.state_path.unlink(missing_ok=True)
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
            files = self._sshd_files(node)
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
                },
                "hosts": {n.name: {"ansible_host": n.address} for n in self.nodes},
            }
        }
        self.inventory_path.write_text(yaml.safe_dump(inventory, sort_keys=False))

    def _wire_switch_and_client(self) -> None:
        # Each veth is created in the switch with its peer born directly in the other
        # namespace, so no interface ever exists in the root namespace, even transiently.
        lines = ["link set lo up", "link add br0 type bridge", "link set br0 up",
                 f"link add swc type veth peer name eth0 netns {self.client_netns}",
                 "link set swc master br0 up"]
        for node in self.nodes:
            lines += [f"link add swp{node.index} type veth peer name eth0 netns {node.netns}",
                      f"link set swp{node.index} master br0 up"]
        ip_batch(self.switch_netns, lines)
        ip_batch(self.client_netns, [
            "link set lo up",
            f"addr add {self.client_address}/{UNDERLAY.prefixlen} dev eth0",
            "link set eth0 up",
        ])

    def _wire_node(self, node: LabNode) -> None:
        plen = IPv4Network(node.pod_cidr).prefixlen
        lines = [
            "link set lo up",
            f"addr add {node.address}/{UNDERLAY.prefixlen} dev eth0",
            "link set eth0 up",
            "link add cni0 type bridge",
            f"addr add {node.pod_gateway}/{plen} dev cni0",
            "link set cni0 up",
            f"link add veth-pod1 type veth peer name eth0 netns {node.pod_netns}",
            "link set veth-pod1 master cni0 up",
        ]
        lines += [f"route add {peer.pod_cidr} via {peer.address} dev eth0"
                  for peer in self.nodes if peer is not node]
        ip_batch(node.netns, lines)
        ip_batch(node.pod_netns, [
            "link set lo up",
            f"addr add {node.pod_address}/{plen} dev eth0",
            "link set eth0 up",
            f"route add default via {node.pod_gateway} dev eth0",
        ])
        # New namespaces start with forwarding off regardless of the root namespace.
        self.node_exec(node.name, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        self.node_exec(node.name, ["iptables-restore", "--noflush"], input=FLANNEL_FORWARD_RULES)

    def _start_sshds(self, nodes: Sequence[LabNode]) -> None:
        # Start all, then wait for all: startup latency overlaps instead of adding up.
        started = {}
        for node in nodes:
            item = sshd.start(node.netns, self._sshd_files(node), node.address)
            self._sshd_procs[node.name] = item.proc
            self._sshd_pids[node.name] = item.proc.pid
            started[node.name] = item
        sshd.wait_listening(started)

    def _write_state(self) -> None:
        state: dict[str, Any] = {
            "schema": STATE_SCHEMA,
            "prefix": self.prefix,
            "workdir": str(self.workdir),
            "namespaces": self.namespaces,
            "switch_netns": self.switch_netns,
            "client": {"netns": self.client_netns, "address": self.client_address},
            "underlay": str(UNDERLAY),
            "pod_supernet": str(POD_SUPERNET),
            "nodes": [asdict(n) for n in self.nodes],
            "sshd_pids": self._sshd_pids,
            "active_faults": sorted(self.active_faults),
            "inventory": str(self.inventory_path),
            "known_hosts": str(self.known_hosts_path),
            "key": str(self.key_path),
        }
        tmp = self.state_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_path)  # a reader never sees half a file

    def _save_state_if_up(self) -> None:
        if self.state_path.exists():
            self._write_state()

    # ---- running things -------------------------------------------------------------------

    def node_exec(
        self, node: str, argv: Sequence[str], check: bool = True, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run argv in the node's network namespace. kw: input, timeout, env."""
        return run(exec_argv(self.node(node).netns, argv), check=check, **kw)

    def pod_exec(
        self, node: str, argv: Sequence[str], check: bool = True, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run argv in the node's pod namespace. kw: input, timeout, env."""
        return run(exec_argv(self.node(node).pod_netns, argv), check=check, **kw)

    def client_exec(
        self,
        argv: Sequence[str],
        check: bool = False,
        timeout: float | None = 60.0,
        env: dict[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv in the client namespace, where the diagnoser's network calls belong."""
        return run(exec_argv(self.client_netns, argv), check=check, timeout=timeout, env=env,
                   input=input)

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

    def pod_ping(
        self, src_node: str, dst_node: str, count: int = 1, timeout: float = 1.0
    ) -> subprocess.CompletedProcess[str]:
        """ICMP echo from src_node's pod to dst_node's pod; returncode 0 if any reply."""
        dst = self.node(dst_node).pod_address
        # -I: the helper is stdlib-only; isolation keeps the caller's env from changing it.
        argv = [sys.executable, "-I", icmp.__file__, dst, "-c", str(count), "-W", f"{timeout:g}"]
        return self.pod_exec(src_node, argv, check=False, timeout=count * (timeout + 1) + 10)

    # ---- sshd -----------------------------------------------------------------------------

    def stop_sshd(self, node: str) -> None:
        target = self.node(node)
        sshd.stop(self._sshd_pids.pop(target.name, None), self._sshd_files(target))
        proc = self._sshd_procs.pop(target.name, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
        self._save_state_if_up()

    def start_sshd(self, node: str) -> None:
        target = self.node(node)
        if sshd.running_pid(self._sshd_pids.get(target.name), self._sshd_files(target)):
            return
        self._start_sshds([target])
        self._save_state_if_up()

    # ---- faults ---------------------------------------------------------------------------

    def inject(self, fault: str, node: str) -> None:
        spec = FAULTS.get(fault)
        if spec is None:
            raise LabError(f"unknown fault {fault!r}; known: {', '.join(sorted(FAULTS))}")
        target = self.node(node)
        spec.inject(self, target)
        self.active_faults.add((fault, target.name))
        self._save_state_if_up()

    def heal(self, fault: str | None = None, node: str | None = None) -> None:
        """Undo faults; None means all faults / all nodes. Heals are idempotent, so this
        restores the healthy state even for faults injected by another process."""
        if fault is not None and fault not in FAULTS:
            raise LabError(f"unknown fault {fault!r}; known: {', '.join(sorted(FAULTS))}")
        faults = [FAULTS[fault]] if fault else list(FAULTS.values())
        targets = [self.node(node)] if node else self.nodes
        for spec in faults:
            for target in targets:
                spec.heal(self, target)
                self.active_faults.discard((spec.name, target.name))
        self._save_state_if_up()

    @contextlib.contextmanager
    def injected(self, fault: str, node: str) -> Iterator[None]:
        """`with lab.injected(...)`: the fault holds inside the block and is healed after,
        even when the block raises."""
        try:
            self.inject(fault, node)
            yield
        finally:
            self.heal(fault, node)


def missing_requirements() -> str | None:
    """Why the lab cannot run here, or None. For callers that want to skip, not fail."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, sshd)"
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"the lab needs these tools: {', '.join(missing)}"
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


def _require_root_and_tools() -> None:
    reason = missing_requirements()
    if reason:
        raise LabError(reason)
