"""Benchmark 4: diagnosis accuracy over the lab, scenario by scenario.

For each CNI mode one lab is built (3 nodes) and reused: the healthy lab (diagnosed
--healthy-runs times, spread over the run, so each later one also shows that the heals before it
left nothing behind), then every way of making every injectable fault of that mode (each
mechanism, the fault's `via` parameter, is its own scenario: `vxlan_udp_blocked[via=nft] on
node3`) alone on a node, the mechanisms of one fault on different nodes, then pairs and a triple
of simultaneous faults on different nodes, healing between scenarios. Faults the lab kernel
cannot produce, and kube-proxy's ipvs mode (this kernel has no ip_vs), are judged from recorded
bundles under tests/fixtures/bundles/ with `analyze`.

Scored strictly: a scenario passes (is exact) when the root causes reported at warning or above,
as (fault, node) pairs, are exactly the injected faults: every injected fault found on its node
(a cluster-wide root cause has no nodes and stands for any node) and no other root cause, on
any node. "found" (every injected fault among the root causes) and the false root causes are
recorded too, so the table shows found, exact and false separately. A healthy lab passes when
nothing of warning or above is reported, and so does a benign condition (lab/src/
kubenetdiag_lab/benign.py: docker's chains, a distribution's strict rp_filter, ...), each
injected alone on a node like a fault. Consequences (root_cause false) are listed, not
counted against a scenario.

    sudo python bench/bench_scenarios.py [--modes flannel-vxlan,flannel-host-gw,calico-bgp]
                                         [--proxy-mode iptables|nftables]
                                         [--network-policy none|kube-router]
                                         [--only FAULT[,FAULT[via=V]...]] [--no-pairs]
                                         [--healthy-runs 3] [--prefix kb]
                                         [--output scenarios.json]

The labs run kube-proxy in --proxy-mode and NetworkPolicies enforced by --network-policy (a
fault that needs another kube-proxy mode, or an enforcer, is left out). Prints a table and
writes bench/results/scenarios.json (or --output, a file name in bench/results/).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BUNDLES = ROOT / "tests" / "fixtures" / "bundles"
MODES = ("flannel-vxlan", "flannel-host-gw", "calico-bgp")
ALARM = ("critical", "error", "warning")
NODES = 3
# Where a node fault goes: a fixed node per fault (from its name, so adding a fault moves no
# other), and its further mechanisms on the next nodes in turn, so every node carries faults
# and every way of making a fault is seen on another node than the one before. A rule that
# blames the first (or last) node it sees is caught by the strict score on any of them.


def first_node(fault: str, nodes: list[str]) -> int:
    return zlib.crc32(fault.encode()) % len(nodes)


# Simultaneous faults on different nodes, as (mode, "fault[via=...]@node", ...): overlay +
# kernel, firewall + sockets, two faults that both cut pod traffic, hung processes beside
# filters, and a triple per mode.
MULTI: list[tuple[str, ...]] = [
    ("flannel-vxlan", "vxlan_udp_blocked@node2", "somaxconn_low@node3"),
    ("flannel-vxlan", "ip_forward_disabled@node1", "forward_chain_reject@node3"),
    ("flannel-vxlan", "host_firewall_active@node2", "listen_queue_overflow@node1"),
    ("flannel-vxlan", "coredns_unreachable[via=hang]@node1",
     "forward_chain_reject[via=nft]@node3"),
    ("flannel-vxlan", "vxlan_udp_blocked[via=nft]@node1",
     "ip_forward_disabled[via=interface]@node2", "node_unreachable[via=hang]@node3"),
    # a slow inter-zone link beside a node-local fault, a node's full uplink beside
    # unanswered workload traffic
    ("flannel-vxlan", "cross_zone_latency[via=switch]@node2", "vxlan_udp_blocked@node3"),
    ("flannel-vxlan", "link_saturated[via=uplink]@node2",
     "connections_unanswered[via=stuck]@node3"),
    ("flannel-vxlan", "vxlan_port_in_use@node2", "listen_port_conflict@node3"),
    ("flannel-vxlan", "vxlan_peer_entry_missing[via=neigh]@node1",
     "socket_recv_queue_backlog@node3", "syn_backlog_low[via=file]@node2"),
    # (host-gw's own route faults do not last: flanneld re-adds a deleted route within 10 s)
    ("flannel-host-gw", "ip_forward_disabled@node1", "tcp_window_scaling_disabled@node3"),
    ("flannel-host-gw", "pod_cidr_route_missing[via=blackhole]@node3",
     "node_unreachable[via=hang]@node1"),
    ("flannel-host-gw", "forward_chain_reject[via=userchain]@node1",
     "policy_route_blackhole[via=rule]@node2", "mtu_mismatch[via=pod]@node3"),
    # middleware timeouts: one node's pods lose their way out, another node is turned away
    ("flannel-vxlan", "pod_egress_broken[via=masquerade]@node1",
     "endpoint_unreachable[via=allowlist]@node3"),
    ("flannel-vxlan", "node_pod_link_broken[via=filter]@node2", "node_not_ready[via=hang]@node1"),
    # two devices switched off on two nodes: each node's own, not the other's
    ("flannel-vxlan", "overlay_device_down@node2", "pod_bridge_down@node3"),
    # a node's link losing packets at random beside another node that stopped forwarding: the
    # chance failures across the link are set aside, the other node's are not
    ("flannel-vxlan", "underlay_packet_loss@node1", "ip_forward_disabled@node3"),
    # machines cloned with their identity kept (a MAC, an address) beside a node-local fault:
    # what the clones break across the underlay must not swallow the other node's fault
    ("flannel-vxlan", "underlay_mac_duplicate@node3", "forward_chain_reject@node2"),
    ("flannel-vxlan", "node_address_duplicate@node1", "ip_forward_disabled@node3"),
    # a node's netmask typed wrong cuts it from the middleware's gateway, beside another
    # node whose pods lose their own way to the middleware: each named on its node
    ("flannel-vxlan", "node_address_prefix_wrong@node3", "pod_egress_broken@node2"),
    # beneath every filter and route: a gateway pinned with a stale MAC on one node, a peer's
    # ARP dropped by arptables on another
    ("flannel-host-gw", "underlay_neighbor_wrong[via=gateway]@node2",
     "iptables_drop_rule[via=arp]@node3"),
    # the node network between two nodes broken on one end, beside one pod cut from its bridge
    ("flannel-vxlan", "underlay_neighbor_wrong[via=mac]@node1",
     "node_pod_link_broken[via=nomaster]@node3"),
    ("flannel-host-gw", "underlay_route_broken[via=unreachable]@node2",
     "iptables_drop_rule[via=peer_out]@node3"),
    # the bridge of CoreDNS's node without its gateway: every node's DNS fails through it,
    # beside another node's pod cut from its bridge
    ("flannel-vxlan", "pod_bridge_address_wrong[via=flush]@node1",
     "node_pod_link_broken[via=veth]@node3"),
    ("flannel-host-gw", "pod_bridge_address_wrong[via=stale]@node2",
     "icmp_echo_blocked[via=file]@node3"),
    # a fault beside a benign look-alike on another node: only the fault is named
    ("flannel-vxlan", "rp_filter_strict@node2", "benign_rp_filter_strict@node3"),
    ("flannel-vxlan", "iptables_drop_rule[via=arp]@node2", "benign_lvs_dr_real_server@node3"),
    ("flannel-vxlan", "overlay_device_down@node2", "benign_leftover_vxlan_device@node3"),
    ("flannel-host-gw", "forward_chain_reject@node1", "benign_docker_installed@node2"),
    ("calico-bgp", "underlay_neighbor_wrong[via=neigh]@node1", "benign_static_arp@node3"),
    ("flannel-vxlan", "time_wait_pileup[via=remote]@node2", "benign_server_time_wait@node3"),
    ("flannel-host-gw", "host_firewall_active@node1", "benign_firewalld_for_kubernetes@node3"),
    ("flannel-vxlan", "host_firewall_active[via=ufw]@node1", "benign_ufw_for_kubernetes@node2"),
    ("calico-bgp", "somaxconn_low@node2", "benign_somaxconn_old_default@node3"),
    ("calico-bgp", "host_firewall_active[via=firewalld-nft]@node1",
     "benign_firewalld_nft_for_kubernetes@node2"),
    ("flannel-vxlan", "bridge_nf_call_iptables_disabled@node1",
     "benign_firewalld_nft_for_kubernetes@node3"),
    ("flannel-host-gw", "security_software_present@node1",
     "benign_security_agent_exempting_cluster@node2"),
    # a healthy cluster as they come: several benign conditions at once, nothing to report
    ("flannel-vxlan", "benign_docker_installed@node1", "benign_firewalld_for_kubernetes@node2",
     "benign_rp_filter_strict@node3", "benign_external_service", "benign_service_across_zones",
     "benign_coredns_stub_domain", "benign_security_agent_exempting_cluster@node3"),
    ("flannel-host-gw", "benign_podman_cni_config@node1", "benign_leftover_vxlan_device@node2",
     "benign_ntp_untracked@node3", "benign_tcp_timestamps_off@node1",
     "benign_server_time_wait@node3", "benign_ufw_for_kubernetes@node2",
     "benign_nodeport_local_behind_lb"),
    ("calico-bgp", "benign_static_arp@node1", "benign_sysctl_overridden@node2",
     "benign_somaxconn_old_default@node3", "benign_keepalived_vip@node3",
     "benign_fail2ban@node1", "benign_htb_unlimited@node2",
     "benign_firewalld_nft_for_kubernetes@node3", "benign_bridge_nf_off_routed_pods@node1"),
    # a peer's tunnel entries left stale on one node, beside the peer's own forwarding off
    ("flannel-vxlan", "vxlan_peer_entry_stale[via=mac]@node3",
     "ip_forward_disabled[via=interface]@node1"),
    # CoreDNS cut off from its upstream beside another node's DNS or egress fault
    ("flannel-vxlan", "coredns_upstream_unreachable[via=firewall]@node1",
     "pod_egress_broken[via=drop]@node2"),
    ("calico-bgp", "coredns_upstream_unreachable[via=config]@node1", "notrack_rule@node3"),
    ("calico-bgp", "bgp_session_down@node3", "time_wait_pileup@node2"),
    ("calico-bgp", "pod_egress_broken[via=drop]@node2", "endpoint_unreachable[via=route]@node1"),
    ("calico-bgp", "node_pod_link_broken[via=veth]@node1", "node_not_ready[via=kill]@node3"),
    ("calico-bgp", "policy_route_blackhole[via=table]@node2", "mtu_mismatch[via=pod]@node1"),
    ("calico-bgp", "bgp_session_down[via=hang]@node3", "iptables_drop_rule[via=mangle]@node1",
     "security_software_present[via=iptables]@node2"),
    # denied by a policy on one node, by the host's firewall on another: told apart
    ("flannel-vxlan+kube-router", "network_policy_denies[via=ingress]@node2",
     "forward_chain_reject@node3"),
    ("flannel-vxlan+kube-router", "network_policy_denies[via=default-deny]@node2",
     "host_firewall_active@node1"),
]
# Recorded-bundle scenarios: (bundle directory, expected fault and node; None, None: healthy).
FIXTURES = [
    ("lab-tw-recycle-3.10", "tw_recycle_with_timestamps", "node2"),
    ("lab-conntrack-full", "conntrack_table_full", "node1"),
    ("lab-vxlan-underlay-down", "vxlan_underlay_down", "node3"),
    ("lab-tcp-memory-pressure", "tcp_memory_pressure", "node2"),
    ("lab-softnet-backlog-drop", "softnet_backlog_drop", "node3"),
    ("lab-nft-invalid-not-dropped-5.15", "conntrack_invalid_not_dropped", "node2"),
    ("lab-invalid-not-dropped-5.4", "conntrack_invalid_not_dropped", "node1"),
    # kube-proxy's ipvs mode, which this kernel (no ip_vs) cannot run: recorded by
    # tests/fixtures/bundles/record-ipvs.sh with kube-proxy's own IPVS proxier beside each
    # node's kube-proxy (lab/src/kubenetdiag_lab/ipvs_shadow.py)
    ("lab-ipvs-healthy", None, None),
    ("lab-ipvs-kube-proxy-out-of-sync", "kube_proxy_out_of_sync", "node1"),
    ("lab-ipvs-missing-virtual-server", "kube_proxy_out_of_sync", "node2"),
    ("lab-ipvs-stale-virtual-server", "kube_proxy_out_of_sync", "node3"),
    ("lab-ipvs-vip-unbound", "ipvs_vip_unbound", "node3"),
    # externalTrafficPolicy Local: node1 and node3 hold the NodePort without an endpoint, by
    # design; the fake IPVS table counts no connection, so nothing is wrong (the planted count
    # is tests/test_ipvs_mode_bundles.py's)
    ("lab-ipvs-local-nodeport", None, None),
]


@dataclass
class Scenario:
    name: str
    mode: str
    expected: list[tuple[str, str | None]]  # (fault, node); [] = healthy
    # what is injected: (fault, node, params), params holding the mechanism ("via") if any
    inject: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    root_causes: list[str] = field(default_factory=list)  # "fault@nodes"
    extra: list[str] = field(default_factory=list)  # other findings of warning or above
    false_roots: list[str] = field(default_factory=list)  # "fault@node" not injected
    found: bool = False  # every injected fault is among the root causes, on its node
    passed: bool = False  # exact: found, and no false root cause
    seconds: float = 0.0
    error: str = ""


def _label(f: dict) -> str:
    return f"{f['fault']}@{','.join(f['nodes']) or 'cluster'}"


def judge(sc: Scenario, report: dict) -> None:
    findings = report["findings"]
    roots = [f for f in findings if f["root_cause"] and f["severity"] in ALARM]
    sc.root_causes = [_label(f) for f in roots]
    expected = {(fault, node) for fault, node in sc.expected}
    faults = {fault for fault, _node in expected}
    # each root cause as (fault, node) pairs; a cluster-wide one (no nodes) as (fault, None)
    reported = {(f["fault"], node) for f in roots for node in (f["nodes"] or [None])}

    def injected(pair: tuple[str, str | None]) -> bool:
        fault, node = pair
        return (fault, node) in expected or (node is None and fault in faults)

    sc.found = all(any(f == fault and (n == node or n is None or node is None)
                       for f, n in reported) for fault, node in expected)
    sc.false_roots = sorted(f"{f}@{n or 'cluster'}" for f, n in reported if not injected((f, n)))
    matched = {id(f) for f in roots
               if any(injected((f["fault"], n)) for n in (f["nodes"] or [None]))}
    sc.extra = [_label(f) + ("" if f["root_cause"] else " (consequence)")
                for f in findings if f["severity"] in ALARM and id(f) not in matched]
    if not sc.expected:  # a healthy lab: anything at warning or above is a false alarm
        sc.false_roots = list(sc.extra)
        sc.passed = sc.found = not sc.extra
    else:
        sc.passed = sc.found and not sc.false_roots


def diagnose(lab, out: Path) -> dict:
    proc = lab.client_exec(
        [sys.executable, "-m", "kubenetdiag", "diagnose", "--inventory", str(lab.inventory_path),
         "--kubeconfig", str(lab.kubeconfig_path), "--format", "json", "--quiet",
         "--bundle", str(out), "--connect-timeout", "5"],
        timeout=180,
    )
    if proc.returncode not in (0, 1, 3):
        raise RuntimeError(f"diagnose exited {proc.returncode}: {proc.stderr.strip()[-400:]}")
    return json.loads(proc.stdout)


def parse_fault(text: str) -> tuple[str, dict[str, str], str | None]:
    """"fault[via=x,k=v]@node" -> (fault, params, node); the brackets and node optional."""
    head, _, node = text.partition("@")
    fault, _, rest = head.partition("[")
    params = dict(item.split("=", 1) for item in rest.rstrip("]").split(",") if item)
    return fault, params, node or None


def label(fault: str, params: dict[str, str]) -> str:
    return f"{fault}[via={params['via']}]" if params.get("via") else fault


def variant(mode: str, topology) -> str:
    """The label of a lab: its CNI mode, and what it runs other than the default."""
    return (mode + ("" if topology.proxy_mode == "iptables" else f"/{topology.proxy_mode}")
            + ("" if topology.network_policy == "none" else f"+{topology.network_policy}"))


def expected(spec, topology, node: str, params: dict[str, str]) -> list[tuple[str, str]]:
    """(fault, node) for each node a diagnosis should name: the node the fault is placed on,
    or those its spec blames (a policy breaks flows on the nodes of the pods it selects);
    none for a benign condition, which a diagnosis must leave alone."""
    if spec.benign:
        return []
    merged = {**spec.params, **params}
    nodes = spec.blamed_nodes(topology, node, merged) if spec.blamed_nodes else [node]
    return [(spec.name, n) for n in nodes]


def runnable(spec, topology) -> bool:
    """Whether this lab can make the fault: a policy is enforced only by a lab with an
    enforcer (`lab up --network-policy`), and a fault of one kube-proxy mode's rules needs
    that mode; the faults refuse to pretend otherwise."""
    if spec.name == "network_policy_denies" and topology.network_policy == "none":
        return False
    return not spec.proxy_modes or topology.proxy_mode in spec.proxy_modes


def single_scenarios(mode: str, topology, only: set[str] | None) -> list[Scenario]:
    """Every mechanism of every fault that applies in `mode`, each alone on its node."""
    from kubenetdiag_lab.faults import FAULTS

    nodes = [node.name for node in topology.nodes]
    label_mode = variant(mode, topology)
    out = []
    for name, spec in sorted(FAULTS.items()):
        if not runnable(spec, topology):
            continue
        # Faults tied to where something runs (CoreDNS, the web app) stay there.
        natural = spec.scope != "node" or name == "coredns_unreachable"
        for i, via in enumerate(spec.vias(mode)):
            params = {"via": via} if via else {}
            if only and name not in only and label(name, params) not in only:
                continue
            node = (spec.default_node(topology) if natural
                    else nodes[(first_node(name, nodes) + i) % len(nodes)])
            out.append(Scenario(f"{label(name, params)} on {node}", label_mode,
                                expected(spec, topology, node, params),
                                [(name, node, params)]))
    return out


def multi_scenarios(mode: str, topology, only: set[str] | None) -> list[Scenario]:
    """The simultaneous faults listed for this lab (MULTI); with `only`, those whose every
    fault is selected."""
    from kubenetdiag_lab.faults import FAULTS

    label_mode = variant(mode, topology)
    out = []
    for entry in MULTI:
        if entry[0] != label_mode:
            continue
        faults = [parse_fault(text) for text in entry[1:]]
        if only and not all(fault in only for fault, _params, _node in faults):
            continue
        out.append(Scenario(" + ".join(entry[1:]), label_mode,
                            [pair for fault, params, node in faults
                             for pair in expected(FAULTS[fault], topology, node or "", params)],
                            [(fault, node or "", params) for fault, params, node in faults]))
    return out


def plan_mode(mode: str, topology, only: set[str] | None, pairs: bool,
              healthy_runs: int) -> list[Scenario]:
    """The mode's scenarios in running order: singles, then pairs and triples, with the
    healthy runs spread over them, the first before any fault and the last after all."""
    faulty = single_scenarios(mode, topology, only)
    if pairs:
        faulty += multi_scenarios(mode, topology, only)
    runs = max(healthy_runs, 0)
    # before scenario 0, ..., after the last: evenly spread
    at = [0] if runs == 1 else [round(i * len(faulty) / (runs - 1)) for i in range(runs)]
    plan: list[Scenario] = []
    for k, sc in enumerate([*faulty, None]):
        while at and at[0] <= k:
            at.pop(0)
            run = runs - len(at)
            label_mode = variant(mode, topology)
            plan.append(Scenario(f"healthy {label_mode}" + (f" (run {run}/{runs})"
                                                             if runs > 1 else ""),
                                 label_mode, []))
        if sc is not None:
            plan.append(sc)
    return plan


def run_mode(mode: str, only: set[str] | None, pairs: bool, work: Path,
             prefix: str = "kb", healthy_runs: int = 3, proxy_mode: str = "iptables",
             network_policy: str = "none") -> list[Scenario]:
    from kubenetdiag_lab.lab import Lab

    prefix += {"flannel-vxlan": "v", "flannel-host-gw": "h", "calico-bgp": "c"}[mode]
    prefix += {"iptables": "", "nftables": "n"}[proxy_mode]
    prefix += {"none": "", "kube-router": "r"}[network_policy]
    lab = Lab(work / mode, nodes=NODES, prefix=prefix, cni_mode=mode, proxy_mode=proxy_mode,
              network_policy=network_policy)
    out: list[Scenario] = []
    started = time.monotonic()
    lab.up()
    try:
        plan = plan_mode(mode, lab.topology, only, pairs, healthy_runs)
        for i, sc in enumerate(plan):
            t0 = time.monotonic()
            try:
                for fault, node, params in sc.inject:
                    lab.inject(fault, node or None, params)
                report = diagnose(lab, work / f"{mode}-{i}")
                judge(sc, report)
            except Exception as exc:  # one broken scenario must not end the run
                sc.error = str(exc)[-300:]
            finally:
                try:
                    lab.heal()
                except Exception as exc:
                    sc.error = (sc.error + f"; heal: {exc}")[-300:]
            sc.seconds = round(time.monotonic() - t0, 1)
            out.append(sc)
            print(_row(sc), flush=True)
    finally:
        lab.down()
    print(f"{mode}: {len(out)} scenarios in {time.monotonic() - started:.0f}s (lab up and down "
          "included)", flush=True)
    return out


def run_fixtures() -> list[Scenario]:
    out = []
    for bundle, fault, node in FIXTURES:
        # a healthy bundle (no fault) must give no root cause
        sc = Scenario(f"{fault or 'healthy'} (recorded bundle {bundle})", "bundle",
                      [(fault, node)] if fault else [])
        t0 = time.monotonic()
        path = BUNDLES / bundle
        if not path.is_dir():
            sc.error = f"missing fixture {path}"
        else:
            # analyze writes facts.json and report.json into the bundle: use a copy.
            with tempfile.TemporaryDirectory() as tmp:
                copy = Path(tmp) / bundle
                shutil.copytree(path, copy)
                proc = subprocess.run(
                    [sys.executable, "-m", "kubenetdiag", "analyze", str(copy), "--format",
                     "json"],
                    capture_output=True, text=True, timeout=120,
                )
            if proc.returncode in (0, 1):
                judge(sc, json.loads(proc.stdout))
            else:
                sc.error = proc.stderr.strip()[-300:]
        sc.seconds = round(time.monotonic() - t0, 1)
        out.append(sc)
        print(_row(sc), flush=True)
    return out


def _row(sc: Scenario) -> str:
    exp = ", ".join(f"{f}@{n or 'cluster'}" for f, n in sc.expected) or "nothing >= warning"
    got = ", ".join(sc.root_causes) or "-"
    extra = ", ".join(sc.extra) or "-"
    if sc.false_roots and sc.expected:
        extra += f" | false root causes: {', '.join(sc.false_roots)}"
    # FOUND: the injected faults are there, with a false root cause beside them
    status = "PASS" if sc.passed else ("ERROR" if sc.error else "FOUND" if sc.found else "FAIL")
    line = f"{status:5} | {sc.mode:25} | {sc.name:60} | {exp:44} | {got:50} | {extra}"
    return line + (f" | {sc.error}" if sc.error else "")


def main(argv: list[str] | None = None) -> int:
    from kubenetdiag_lab import exit_on_sigterm

    exit_on_sigterm()  # its labs torn down on a timeout too
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--proxy-mode", choices=("iptables", "nftables"), default="iptables",
                    help="kube-proxy's mode in every lab (default iptables)")
    ap.add_argument("--network-policy", choices=("none", "kube-router"), default="none",
                    help="what enforces NetworkPolicies in every lab (kube-router: flannel "
                         "modes only); the policy faults run only with an enforcer")
    ap.add_argument("--only", default="",
                    help="comma-separated faults or fault[via=V] (single scenarios only)")
    ap.add_argument("--no-pairs", action="store_true", help="no pairs or triples")
    ap.add_argument("--healthy-runs", type=int, default=3, metavar="N",
                    help="diagnose the healthy lab N times per mode (default 3)")
    ap.add_argument("--no-fixtures", action="store_true")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/kubenetdiag-bench-scenarios"))
    ap.add_argument("--prefix", default="kb",
                    help="lab prefix (the mode's letter is added), so two runs can share a host")
    ap.add_argument("--output", default="scenarios.json", metavar="NAME",
                    help="file name of the results in bench/results/ (default scenarios.json)")
    args = ap.parse_args(argv)
    # "a,b[via=x,y=z]" -> {"a", "b[via=x,y=z]"}: commas inside brackets belong to the fault
    only = set(filter(None, re.split(r",(?![^\[]*\])", args.only))) or None
    # A fresh directory per run: diagnose refuses to overwrite an earlier bundle.
    args.workdir = args.workdir / time.strftime("run-%Y%m%d-%H%M%S")
    args.workdir.mkdir(parents=True)
    if Path(args.output).name != args.output or not args.output.endswith(".json"):
        ap.error("--output is a file name ending in .json, written in bench/results/")
    print(f"{'':5} | {'lab':25} | {'scenario':60} | {'expected (fault@node)':44} | "
          f"{'reported root causes':50} | other findings >= warning")
    t0 = time.monotonic()
    scenarios: list[Scenario] = []
    for mode in filter(None, args.modes.split(",")):
        scenarios += run_mode(mode, only, not args.no_pairs, args.workdir, args.prefix,
                              args.healthy_runs, args.proxy_mode, args.network_policy)
    if not args.no_fixtures:
        scenarios += run_fixtures()
    passed = sum(s.passed for s in scenarios)
    by_mode = {}
    for mode in dict.fromkeys(s.mode for s in scenarios):
        of = [s for s in scenarios if s.mode == mode]
        by_mode[mode] = {"total": len(of), "found": sum(s.found for s in of),
                         "exact": sum(s.passed for s in of),
                         "with_false_root_causes": sum(bool(s.false_roots) for s in of),
                         "false_root_causes": sum(len(s.false_roots) for s in of)}
        m = by_mode[mode]
        print(f"{mode:25} found {m['found']}/{m['total']}, exact {m['exact']}/{m['total']}, "
              f"{m['false_root_causes']} false root causes in {m['with_false_root_causes']} "
              "scenarios")
    print(f"\n{passed}/{len(scenarios)} scenarios exact in {time.monotonic() - t0:.0f}s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / args.output).write_text(json.dumps({
        "benchmark": "scenarios",
        "machine": {"python": platform.python_version(), "kernel": platform.release()},
        "command": " ".join(["bench/bench_scenarios.py", *(argv if argv is not None
                                                          else sys.argv[1:])]),
        "nodes": NODES,
        "healthy_runs": args.healthy_runs,
        "seconds": round(time.monotonic() - t0),
        "scoring": "strict: the root causes reported equal the faults injected (fault, node)",
        "passed": passed,
        "total": len(scenarios),
        "found": sum(s.found for s in scenarios),
        "false_root_causes": sum(len(s.false_roots) for s in scenarios),
        "by_mode": by_mode,
        "scenarios": [asdict(s) for s in scenarios],
    }, indent=2) + "\n")
    return 0 if passed == len(scenarios) else 1


if __name__ == "__main__":
    sys.exit(main())
