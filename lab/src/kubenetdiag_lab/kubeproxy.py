"""The real kube-proxy (iptables or nftables mode) as a daemon inside each lab node.

kube-proxy runs in the node's own network, mount and PID namespaces (started with nsenter into
the node's init, like sshd and bird), watches the lab's kube-apiserver as user
`system:kube-proxy` (Kubernetes' bootstrap ClusterRoleBinding system:node-proxier gives it
its rights) and programs the node: in iptables mode (the default) its iptables chains
KUBE-SERVICES, KUBE-SVC-*, KUBE-SEP-*, ...; in nftables mode (`lab up --proxy-mode nftables`)
its own table `ip kube-proxy` (the service-ips verdict map to one chain per Service port, which
DNATs to the endpoints). Either is rewritten whenever Services or EndpointSlices change and
re-synced by itself.

nftables mode needs what kube-proxy itself checks: a kernel of 5.13 or later (it refuses an
older one) and nft 1.0.1 or later on the PATH (knftables runs the nft binary), with nf_tables
(and nft's numgen, ct, nat and reject expressions) in the kernel; `requirements()` says what
is missing.

A network namespace cannot change some host-wide settings, so the configuration leaves them
alone through kube-proxy's own knobs instead of letting it fail: conntrack.maxPerCore 0 (do not
resize nf_conntrack_max), the conntrack TCP timeouts 0 (leave as is), localhost NodePorts off
(it would set route_localnet), oomScoreAdj 0. healthz and metrics listen on the node's
loopback only. Logs: `<workdir>/logs/kube-proxy-<node>.log`.

Stopping the node's init ends its kube-proxy with the whole PID namespace, and `down` kills
every process in a lab namespace, so a crashed run leaves nothing behind.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shlex
import shutil
import subprocess
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
TABLE = "kube-proxy"  # nftables mode: its table, `ip kube-proxy`


NFT_MIN_KERNEL = (5, 13)
NFT_MIN_VERSION = (1, 0, 1)


def _version(text: str) -> tuple[int, ...]:
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(g or 0) for g in m.groups()) if m else ()


def requirements(mode: str) -> str | None:
    """Why kube-proxy cannot run in `mode` on this machine, or None."""
    if mode != "nftables":
        return None
    kernel = _version(os.uname().release)
    if kernel < NFT_MIN_KERNEL:
        return (f"kube-proxy's nftables mode needs kernel {'.'.join(map(str, NFT_MIN_KERNEL))}"
                f" or later, this one is {os.uname().release}")
    nft = shutil.which("nft")
    if nft is None:
        return "kube-proxy's nftables mode needs the nft binary (package nftables)"
    try:
        out = subprocess.run([nft, "--version"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"nft --version failed: {exc}"
    if _version(out) < NFT_MIN_VERSION:
        return (f"kube-proxy's nftables mode needs nft {'.'.join(map(str, NFT_MIN_VERSION))} "
                f"or later, this one says {out.strip()!r}")
    missing = _kernel_lacks(("NF_TABLES", "NFT_NUMGEN", "NFT_CT", "NFT_NAT", "NFT_REJECT"))
    if missing:
        return f"kube-proxy's nftables mode needs kernel options {', '.join(missing)}"
    return None


def _kernel_lacks(options: Sequence[str]) -> list[str]:
    """Of CONFIG_<option>s, those /proc/config.gz says are not set (none when the kernel does
    not publish its config: kube-proxy's own log then says what fails)."""
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            config = f.read()
    except OSError:
        return []
    return [o for o in options if not re.search(rf"^CONFIG_{o}=[ym]$", config, re.M)]


def config_dir(paths: LabPaths, node: str) -> Path:
    return paths.node_files(node).dir / "kube-proxy"


def log_path(paths: LabPaths, node: str) -> Path:
    return paths.logs / f"kube-proxy-{node}.log"


def config(topology: Topology, node: LabNode, kubeconfig: Path) -> dict:
    """KubeProxyConfiguration for one node (what `--config` reads)."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": topology.proxy_mode,
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
        "nftables": {"masqueradeAll": False, "masqueradeBit": 14, "minSyncPeriod": "1s",
                     "syncPeriod": "30s"},
    }


def write_config(topology: Topology, paths: LabPaths, node: LabNode, kubeconfig: Path) -> Path:
    from kubenetdiag_lab import ipvs_shadow

    directory = config_dir(paths, node.name)
    directory.mkdir(parents=True, exist_ok=True)
    # a new lab's kube-proxy has no IPVS shadow, whatever an earlier lab in this work
    # directory ran (start() restarts one only where its state file exists)
    ipvs_shadow.state_path(paths, node.name).unlink(missing_ok=True)
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config(topology, node, kubeconfig), sort_keys=False))
    return path


def pids(node: LabNode) -> list[int]:
    """kube-proxy processes running in the node, its IPVS shadow's too (ipvs_shadow.py): a
    fault that freezes or stops kube-proxy leaves the shadow as stale."""
    from kubenetdiag_lab import ipvs_shadow

    return nodehost.procs_in(node.netns, BINARY) + ipvs_shadow.pids(node)


def start(paths: LabPaths, node: LabNode, runner: NodeRunner) -> None:
    """Start the node's kube-proxy (detached, inside the node) unless it runs already.
    The config must have been written (write_config)."""
    from kubenetdiag_lab import ipvs_shadow

    if ipvs_shadow.ran(paths, node.name):
        ipvs_shadow.start(paths, node, runner)
    if nodehost.procs_in(node.netns, BINARY):
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


def service_port_names(services: Sequence[Service]) -> dict[str, bool]:
    """kube-proxy's name for each Service port of `services` (as ActiveFaults.services gives
    them under the faults in force), "<ns>/<svc>:<port>", -> whether it has ready endpoints
    (programmed as a DNAT) or not (programmed as a reject)."""
    return {f"{svc.namespace}/{svc.name}:{port.name}": bool(svc.endpoints or svc.external)
            for svc in services for port in svc.ports}


_IPT_ENTRY = re.compile(r'^-A KUBE-SERVICES .*--comment "([^"]+) (cluster IP|has no endpoints)"')
_IPT_SEP = re.compile(r'^-A KUBE-SEP-\S+ .*--comment "([^"]+)".* --to-destination (\S+)')


def _iptables_programmed(saved: str) -> dict[str, set[str]]:
    # KUBE-SERVICES only: a flushed chain leaves the same comments in KUBE-SVC-*
    out: dict[str, set[str]] = {}
    for line in saved.splitlines():
        m = _IPT_ENTRY.match(line)
        if m:
            out.setdefault(m.group(1), set())
    for line in saved.splitlines():
        m = _IPT_SEP.match(line)
        if m and m.group(1) in out:
            out[m.group(1)].add(m.group(2))
    return out


def _port_name(chain: str) -> str | None:
    """ "<ns>/<svc>:<port>" from a service chain's name, service-<hash>-<ns>/<svc>/<proto>/<port>
    (kube-proxy hashes the name and puts the hash first, so the name follows the first '-'
    after the prefix); None for another chain."""
    if not chain.startswith("service-"):
        return None
    parts = chain.removeprefix("service-").partition("-")[2].split("/")
    if len(parts) != 4:
        return None
    ns, name, _proto, port = parts
    return f"{ns}/{name}:{port}" if port else f"{ns}/{name}"


def _dnat_targets(node: object, chains: dict[str, list], seen: set[str]) -> set[str]:
    """Every ip:port a rule's expression (nft JSON) DNATs to, directly (dnat to ip:port, or a
    numgen map of them) or through the endpoint chains its vmap goes to."""
    out: set[str] = set()
    if isinstance(node, list):
        for item in node:
            out |= _dnat_targets(item, chains, seen)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "dnat" and isinstance(value, dict):
                out |= _dnat_addresses(value)
            elif key in ("goto", "jump") and isinstance(value, dict):
                target = str(value.get("target", ""))
                if target.startswith("endpoint-") and target not in seen:
                    seen.add(target)
                    out |= _dnat_targets(chains.get(target, []), chains, seen)
            else:
                out |= _dnat_targets(value, chains, seen)
    return out


def _dnat_addresses(dnat: dict) -> set[str]:
    addr, port = dnat.get("addr"), dnat.get("port")
    if isinstance(addr, str):
        return {f"{addr}:{port}"} if port is not None else {addr}
    out: set[str] = set()

    def pairs(node: object) -> None:
        if isinstance(node, dict):
            concat = node.get("concat")
            if isinstance(concat, list) and len(concat) == 2 and all(
                    isinstance(v, (str, int)) for v in concat):
                out.add(f"{concat[0]}:{concat[1]}")
                return
            for value in node.values():
                pairs(value)
        elif isinstance(node, list):
            for item in node:
                pairs(item)

    pairs(addr)
    return out


def _elements(obj: dict) -> list[tuple[object, object, str]]:
    """(key, value, comment) of a set or map's elements in nft JSON."""
    out = []
    for elem in obj.get("elem") or []:
        key, value = (elem[0], elem[1]) if isinstance(elem, list) and len(elem) == 2 else (
            elem, None)
        comment = ""
        if isinstance(key, dict) and isinstance(key.get("elem"), dict):
            comment = str(key["elem"].get("comment") or "")
            key = key["elem"].get("val")
        out.append((key, value, comment))
    return out


def _nftables_programmed(listed: str) -> dict[str, set[str]]:
    try:
        items = json.loads(listed).get("nftables", [])
    except (ValueError, AttributeError):
        return {}
    chains: dict[str, list] = {}
    maps: dict[str, dict] = {}
    for item in items:
        if not isinstance(item, dict):
            continue
        if "rule" in item:
            rule = item["rule"]
            chains.setdefault(str(rule.get("chain")), []).append(rule.get("expr", []))
        elif "map" in item:
            maps[str(item["map"].get("name"))] = item["map"]
    out: dict[str, set[str]] = {}
    for _key, value, _comment in _elements(maps.get("service-ips", {})):
        target = value.get("goto", {}).get("target") if isinstance(value, dict) else None
        name = _port_name(str(target or ""))
        if name is not None:
            out[name] = _dnat_targets(chains.get(str(target), []), chains, set())
    for _key, _value, comment in _elements(maps.get("no-endpoint-services", {})):
        if comment:
            out.setdefault(comment, set())
    return out


def programmed(runner: NodeRunner, mode: str) -> dict[str, set[str]]:
    """The Service ports the node's kube-proxy has programmed for their ClusterIPs, by
    kube-proxy's name ("<ns>/<svc>:<port>"), each with the endpoints (ip:port) it DNATs to;
    an empty set is a reject (no endpoints). iptables: nat and filter KUBE-SERVICES and the
    KUBE-SEP chains' DNATs; nftables: table ip kube-proxy, the service-ips map's service
    chains (their dnat, directly or through endpoint chains) and the no-endpoint-services
    map's elements."""
    if mode == "nftables":
        listed = runner.run(["nft", "-j", "list", "table", "ip", TABLE], check=False).stdout
        return _nftables_programmed(listed)
    return _iptables_programmed(runner.run(["iptables-save"], check=False).stdout)


def wait_synced(topology: Topology, paths: LabPaths, nodes: Sequence[LabNode],
                runner_of: Callable[[LabNode], NodeRunner],
                services: Sequence[Service] | None = None,
                timeout: float = SYNC_TIMEOUT) -> None:
    """Wait until every node's kube-proxy has programmed every lab Service (`services`, as
    ActiveFaults.services gives them; default: the healthy ones), those without ready
    endpoints as rejects; raise with the log tail if one exits or the time runs out."""
    wanted = service_port_names(cluster_services(topology) if services is None else services)

    def synced(node: LabNode) -> bool:
        have = programmed(runner_of(node), topology.proxy_mode)
        return all(name in have and bool(have[name]) == endpoints
                   for name, endpoints in wanted.items())

    nodehost.wait_nodes(BINARY, "program the lab's Services", nodes, synced,
                        lambda name: log_path(paths, name), timeout)
