"""End to end over real SSH: the diagnoser runs in the lab's client namespace and finds faults
injected for real into the lab's nodes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab


def run_cli(lab, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return lab.client_exec([sys.executable, "-m", "kubenetdiag", *args], timeout=timeout)


def diagnose(lab, tmp_path: Path, *extra: str, inventory: Path | None = None
             ) -> tuple[dict, subprocess.CompletedProcess]:
    bundle = tmp_path / "bundle"
    proc = run_cli(lab, "diagnose", "--inventory", str(inventory or lab.inventory_path),
                   "--format", "json",
                   "--kubeconfig", str(lab.kubeconfig_path), "--bundle", str(bundle), "--quiet",
                   "--connect-timeout", "5", *extra)
    assert proc.returncode in (0, 1, 3), proc.stderr
    return json.loads(proc.stdout), proc


def alarms(report: dict) -> list[dict]:
    return [f for f in report["findings"] if f["severity"] in ("critical", "error", "warning")]


def root_causes(report: dict) -> list[tuple[str, list[str]]]:
    return [(f["fault"], f["nodes"]) for f in report["findings"] if f["root_cause"]]


def test_healthy_lab_has_no_alarm_and_pods_resolve_a_cluster_name_their_own_way(lab, tmp_path):
    # `web` is a Service's short name, declared as an endpoint: only a pod's resolv.conf (the
    # cluster DNS, the namespace's search path, ndots:5) resolves it; the node's resolver is
    # not meant to, and that is no alarm
    import yaml

    from kubenetdiag.bundle import Bundle
    from kubenetdiag.facts.parse import facts_from_records

    inventory = yaml.safe_load(lab.inventory_path.read_text())
    inventory["all"]["vars"]["kubenetdiag_endpoints"].append("web:80")
    path = tmp_path / "hosts.yaml"
    path.write_text(yaml.safe_dump(inventory))
    report, proc = diagnose(lab, tmp_path, inventory=path)
    assert alarms(report) == [], report["findings"]
    assert proc.returncode == 0
    assert [n["reachable"] for n in report["nodes"]] == [True] * len(lab.nodes)
    assert report["not_checked"] == []
    b = Bundle.read(tmp_path / "bundle")
    checks = [f.attrs for f in facts_from_records(b.records, b.cluster)
              if f.kind == "tcp_check" and f.attrs["target"] == "web:80"]
    from_pods = [c for c in checks if c["vantage"] and c["vantage"].startswith("cni-")]
    assert len(from_pods) == len(lab.nodes)
    assert all((c["ok"], c["address"], c["resolver"]) == (True, "10.96.0.20", "pod 10.96.0.10")
               for c in from_pods), from_pods
    assert all(c["detail"] == "unresolved" and c["resolver"] == "node"
               for c in checks if c not in from_pods)


def test_ip_forward_off_on_node2(lab, tmp_path):
    lab.inject("ip_forward_disabled", "node2")
    try:
        html = tmp_path / "incident.html"
        report, proc = diagnose(lab, tmp_path, "--report", str(html))
    finally:
        lab.heal("ip_forward_disabled", "node2")
    assert proc.returncode == 1
    found = alarms(report)
    assert [f["fault"] for f in found] == ["ip_forward_disabled"]
    finding = found[0]
    assert finding["nodes"] == ["node2"] and finding["root_cause"] is True
    evidence = [e for e in finding["evidence"] if e["kind"] == "sysctl"]
    assert evidence and evidence[0]["attrs"]["key"] == "net.ipv4.ip_forward"
    assert evidence[0]["attrs"]["number"] == 0 and evidence[0]["node"] == "node2"
    page = html.read_text()
    assert "ip_forward_disabled" in page and "node2" in page
    assert "net.ipv4.ip_forward" in page


def test_forward_reject_on_node1(lab, tmp_path):
    lab.inject("forward_chain_reject", "node1")
    try:
        html = tmp_path / "incident.html"
        report, proc = diagnose(lab, tmp_path, "--report", str(html))
    finally:
        lab.heal("forward_chain_reject", "node1")
    assert proc.returncode == 1
    found = alarms(report)
    assert [(f["fault"], f["nodes"]) for f in found] == [("forward_chain_reject", ["node1"])]
    # the evidence is the walk's verdict: where the flow stops, and the rule as collected
    paths = [e["attrs"] for e in found[0]["evidence"] if e["kind"] == "path"]
    assert paths and all(p["at"] == "filter FORWARD rule 1" and p["verdict"] == "reject"
                         for p in paths)
    assert paths[0]["rule"].startswith("-A FORWARD -j REJECT")
    assert "forward_chain_reject" in html.read_text()


def test_stopped_sshd_makes_node_unreachable_and_others_are_still_diagnosed(lab, tmp_path):
    lab.inject("ip_forward_disabled", "node1")
    lab.stop_sshd("node2")
    try:
        report, proc = diagnose(lab, tmp_path)
    finally:
        lab.start_sshd("node2")
        lab.heal("ip_forward_disabled", "node1")
    assert proc.returncode == 1
    nodes = {n["name"]: n for n in report["nodes"]}
    assert nodes["node2"]["reachable"] is False
    assert "refused" in nodes["node2"]["errors"][0]
    assert nodes["node1"]["reachable"] is True
    faults = {(f["fault"], tuple(f["nodes"])) for f in alarms(report)}
    assert ("node_unreachable", ("node2",)) in faults
    assert ("ip_forward_disabled", ("node1",)) in faults
    assert any(n["node"] == "node2" and n["status"] == "unreachable"
               for n in report["not_checked"])


def test_every_node_down_exits_3(lab, tmp_path):
    for node in lab.nodes:
        lab.stop_sshd(node.name)
    try:
        report, proc = diagnose(lab, tmp_path)
    finally:
        for node in lab.nodes:
            lab.start_sshd(node.name)
    assert proc.returncode == 3
    assert report["summary"]["unreachable"] == len(lab.nodes)


def test_unknown_host_key_is_refused_unless_opted_in(lab, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    report, proc = diagnose(lab, tmp_path, "--known-hosts", str(empty))
    assert proc.returncode == 3
    assert all("unknown host key" in n["errors"][0] for n in report["nodes"])
    assert empty.read_text() == ""  # refusing must not record anything

    (tmp_path / "bundle").rename(tmp_path / "refused")
    report, proc = diagnose(lab, tmp_path, "--known-hosts", str(empty), "--accept-new-host-keys")
    assert proc.returncode == 0
    recorded = empty.read_text()
    assert all(n.address in recorded for n in lab.nodes)


def test_collect_then_analyze_offline_gives_the_same_findings(lab, tmp_path):
    lab.inject("forward_chain_reject", "node2")
    try:
        proc = run_cli(lab, "collect", "--inventory", str(lab.inventory_path),
                       "-o", str(tmp_path / "b"), "--quiet")
    finally:
        lab.heal("forward_chain_reject", "node2")
    assert proc.returncode == 0, proc.stderr
    # analysis needs no lab: run it in this (root-namespace) process, with no network at all
    out = subprocess.run([sys.executable, "-m", "kubenetdiag", "analyze", str(tmp_path / "b"),
                          "--format", "json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    assert [(f["fault"], f["nodes"]) for f in alarms(report)] == [
        ("forward_chain_reject", ["node2"])]
    assert (tmp_path / "b" / "facts.json").exists() and (tmp_path / "b" / "report.json").exists()


def node_state(lab, node: str) -> dict[str, str]:
    """Everything about a node's network config that a collector could conceivably change."""

    def sh(cmd: str) -> str:
        return lab.node_exec(node, ["sh", "-c", cmd]).stdout

    return {
        "sysctl": sh("cd /proc/sys/net && grep -r '' . 2>/dev/null | grep -v -e conntrack_count "
                     "-e '/stable_secret' | sort"),
        # Packet counters move with any traffic (the collection's own SSH included) once a
        # chain policy counts, e.g. after a firewall fault was healed on the shared lab.
        "iptables": re.sub(r"\[\d+:\d+\]", "[0:0]", sh("iptables-save | grep -v '^#'")),
        "routes": sh("ip route show table all"),
        "addrs": sh("ip addr"),
        "conntrack_max": sh("cat /proc/sys/net/netfilter/nf_conntrack_max"),
        "conntrack": sh("cd /proc/sys/net/netfilter && grep -H '' nf_conntrack_max "
                        "nf_conntrack_buckets nf_conntrack_tcp_timeout_established "
                        "nf_conntrack_tcp_timeout_time_wait 2>&1"),
        "legacy_tables": sh("cat /proc/net/ip_tables_names 2>&1"),
        "nft": sh("nft list ruleset 2>&1 | grep -v -e counter -e '^#'"),
        # Files in the node's view: nothing created, removed or touched. Other jobs on this
        # machine write to /tmp too, so only what a probe could plausibly leave is compared
        # there (pytest's own dirs and the tool runner's are not the node's doing), entry by
        # entry: /tmp's own mtime moves whenever the other test worker makes a temporary
        # file; the strace test in test_node_conditions_become_facts.py proves it per call.
        "files": node_view(lab, node, (
            "find /var/tmp /run -xdev ! -path '/run/netns*' ! -path '/run/user/*' "
            "-printf '%p %T@ %s\\n' 2>/dev/null | sort; "
            # tmpXXXXXXXX: Python's tempfile names, made by the other test worker meanwhile
            # (mktemp(1), which a shell script would use, names tmp.XXXXXXXXXX: still caught)
            "find /root /tmp -xdev -mindepth 1 -maxdepth 1 ! -name 'pytest-of-*' "
            "! -name 'bash_jobs*' ! -name 'bash_tool_*' ! -name '.*history' "
            "! -name 'tmp????????' "
            "-printf '%p %T@\\n' 2>/dev/null | sort; "
            "ls -a /tmp/.nstat* /root/.nstat* 2>/dev/null; true")),
    }


def node_view(lab, node: str, cmd: str) -> str:
    """Run cmd with the node's own mount (and PID) namespace where the lab gives it one, so
    /run and /etc are what the node's sshd sees."""
    if hasattr(lab, "init_pid"):
        argv = ["nsenter", "-t", str(lab.init_pid(lab.node(node))), "-m", "-p", "-n", "--"]
        return subprocess.run([*argv, "sh", "-c", cmd], capture_output=True, text=True,
                              timeout=60, check=True).stdout
    return lab.node_exec(node, ["sh", "-c", cmd]).stdout


def test_collection_is_read_only(lab, tmp_path):
    # A freshly built lab is still settling (IPv6 link-local addresses appear a moment after
    # the links come up): wait for two identical snapshots before collecting.
    before = {n.name: node_state(lab, n.name) for n in lab.nodes}
    for _ in range(10):
        time.sleep(2)  # IPv6 DAD takes about a second
        again = {n.name: node_state(lab, n.name) for n in lab.nodes}
        if again == before:
            break
        before = again
    proc = run_cli(lab, "collect", "--inventory", str(lab.inventory_path), "-o",
                   str(tmp_path / "b"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    after = {n.name: node_state(lab, n.name) for n in lab.nodes}
    for name in before:  # per item, so a failure names what changed
        for key in before[name]:
            b, a = before[name][key].splitlines(), after[name][key].splitlines()
            assert b == a, (name, key, sorted(set(b) ^ set(a))[:20])


def test_proxy_jump_reaches_a_node_the_client_cannot(lab, tmp_path):
    """A bastion setup: node2 only accepts SSH from inside; the run goes through node1."""
    n1, n2 = lab.nodes[0], lab.nodes[1]
    block = ["-s", "198.18.0.2", "-p", "tcp", "--dport", "22", "-j", "REJECT",
             "--reject-with", "tcp-reset"]
    inv = tmp_path / "hosts.yaml"
    inv.write_text(
        "all:\n"
        "  vars:\n"
        "    ansible_user: root\n"
        f"    ansible_ssh_private_key_file: {lab.key_path}\n"
        f"    ansible_ssh_common_args: '-o UserKnownHostsFile={lab.known_hosts_path}'\n"
        "  hosts:\n"
        f"    node2:\n      ansible_host: {n2.address}\n"
        f"      ansible_ssh_common_args: '-o UserKnownHostsFile={lab.known_hosts_path} "
        f"-o ProxyJump=root@{n1.address}'\n"
        f"    direct-node2:\n      ansible_host: {n2.address}\n"
    )
    lab.node_exec(n2.name, ["iptables", "-I", "INPUT", "1", *block])
    try:
        proc = run_cli(lab, "diagnose", "--inventory", str(inv), "--format", "json",
                       "--bundle", str(tmp_path / "b"), "--quiet", "--connect-timeout", "5")
    finally:
        lab.node_exec(n2.name, ["iptables", "-D", "INPUT", *block])
    report = json.loads(proc.stdout)
    nodes = {n["name"]: n for n in report["nodes"]}
    assert nodes["direct-node2"]["reachable"] is False  # the block is real
    assert nodes["node2"]["reachable"] is True, nodes["node2"]["errors"]
    assert report["summary"]["unreachable"] == 1


def test_without_a_kubeconfig_the_report_says_the_api_was_not_asked(lab, tmp_path):
    proc = run_cli(lab, "diagnose", "--inventory", str(lab.inventory_path), "--format", "json",
                   "--bundle", str(tmp_path / "b"), "--quiet")
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    (entry,) = report["not_checked"]
    assert (entry["node"], entry["status"]) == ("cluster", "not_queried")
    assert "--kubeconfig" in entry["blocks"]


def test_a_hung_kube_proxy_is_named_by_its_node_after_a_service_was_deleted(lab, tmp_path):
    # kube-proxy on node1 is frozen, then the canary Service is deleted: the other node drops
    # it, node1 still answers its VIP. Only the comparison with the API and the peer can tell;
    # the node's own rules look complete. (A moved targetPort is proven on the nftables lab,
    # tests/test_lab_kube_proxy_nftables.py; a change younger than 15 s is still settling and
    # would make this test wait that long.)
    with lab.injected("kube_proxy_out_of_sync", "node1", {"via": "deleted"}):
        report, proc = diagnose(lab, tmp_path)
        web = next(p for p in lab.pods if p.app == "web")
    assert proc.returncode == 1
    found = alarms(report)
    assert [(f["fault"], f["nodes"], f["root_cause"]) for f in found] == [
        ("kube_proxy_out_of_sync", ["node1"], True)]
    (sync,) = [e["attrs"] for e in found[0]["evidence"] if e["kind"] == "service_sync"]
    assert sync["service"] == "default/web-canary:http" and sync["state"] == "stale_service"
    assert sync["stale"] == f"{web.ip}:8080"
    assert "node2" in found[0]["title"]

def test_a_stopped_controller_manager_is_found_through_the_api_alone(lab, tmp_path):
    # kube-controller-manager exits, then web's pod fails its readiness probe: every node's
    # kube-proxy agrees with the slices, which still list the pod; only the pods, the slices
    # and the lease nobody renews tell. (A hung one: tests/test_lab_faults.py.)
    web = lab.pod_for_app("web")
    with lab.injected("endpoints_controller_lagging", params={"via": "stop"}):
        assert lab.controlplane.recorded_pid("kube-controller-manager") is None
        report, proc = diagnose(lab, tmp_path)
    assert proc.returncode == 1
    found = alarms(report)
    assert [(f["rule"], f["fault"], f["nodes"], f["root_cause"]) for f in found] == [
        ("endpoints-controller-stopped", "endpoints_controller_lagging", [], True)]
    assert "default/web" in found[0]["title"]
    (lag,) = [e["attrs"] for e in found[0]["evidence"] if e["kind"] == "endpoint_lag"]
    assert lag["still_listed"] == f"{web.ip} ({web.name}: not Ready)"
    # its age is known only when the slice says when it last changed: a controller restarted
    # by an earlier test's heal may have written it without that time
    assert lag["behind_s"] is None or lag["behind_s"] >= 10
    (lease,) = [e["attrs"] for e in found[0]["evidence"] if e["kind"] == "controller_lease"]
    assert lease["expired_s"] >= 10 and lease["holder_node"] is None


def test_a_pods_veth_at_its_bandwidth_limit_is_named_on_its_node(lab, tmp_path):
    # the web pod on node2 shaped as the CNI bandwidth plugin does, a peer's pod sending to it
    # as fast as the shaping lets through: the node's own counters and its tc say so, and the
    # pod is named (the node routes the transfer to it, so its address is a neighbour there)
    web = lab.pod_for_app("web")
    with lab.injected("link_saturated", web.node, {"via": "pod"}):
        report, proc = diagnose(lab, tmp_path)
    assert proc.returncode == 1
    found = alarms(report)
    assert [(f["rule"], f["nodes"], f["root_cause"]) for f in found] == [
        ("pod-link-saturated", [web.node], True)]
    assert found[0]["title"].startswith(f"Pod default/{web.name} on {web.node}: its link ")
    (full,) = [e["attrs"] for e in found[0]["evidence"] if e["kind"] == "link_saturation"]
    assert (full["direction"], full["limit"], full["capacity_mbps"]) == ("send", "tbf rate", 8.0)
    assert full["name"].startswith(("veth", "cali")) and full["used_pct"] >= 90
    assert (full["namespace"], full["pod"]) == ("default", web.name)


def test_hairpin_off_and_nodeport_traffic_without_a_local_endpoint_each_named_on_its_node(
        lab, tmp_path):
    # Two Service-path faults at once, on two nodes: the web pod's bridge port without hairpin
    # mode on its node, and NodePort traffic (externalTrafficPolicy Local) sent to the other
    web = lab.pod_for_app("web")
    other = next(n.name for n in lab.nodes if n.name != web.node)
    elsewhere = next(p for p in lab.pods if p.node != web.node)
    with lab.injected("hairpin_disabled"), lab.injected("nodeport_no_local_endpoint", other):
        # the kernel's own verdict first: the web pod cannot reach itself through its Service,
        # a pod elsewhere still can
        assert lab.netprog(web.name, "--timeout", "2", "http", "http://10.96.0.20/").returncode
        assert lab.netprog(elsewhere.name, "--timeout", "2", "http",
                           "http://10.96.0.20/").returncode == 0
        report, proc = diagnose(lab, tmp_path)
    assert proc.returncode == 1
    found = {f["fault"]: f for f in alarms(report)}
    assert sorted((f, x["nodes"], x["root_cause"]) for f, x in found.items()) == [
        ("hairpin_disabled", [web.node], True), ("nodeport_no_local_endpoint", [other], True)]
    (bridge,) = [e["attrs"] for e in found["hairpin_disabled"]["evidence"]
                 if e["kind"] == "pod_bridge"]
    from kubenetdiag_lab import cni

    veth = cni.host_veth(lab.topology, lab.runners.node(web.node), web, lab.runners.pod(web.name))
    # the pod is named by its cached CNI result, the port by the name the bridge plugin gave it
    assert (bridge["bridge"], bridge["hairpin_off_ports"], bridge["hairpin_off_pods"]) == (
        "cni0", veth, "default/web-0")
    (rule,) = [e["attrs"] for e in found["nodeport_no_local_endpoint"]["evidence"]
               if e["kind"] == "iptables_rule"]
    assert rule["comment"] == "default/web-local:http has no local endpoints" and rule["pkts"] > 0
    # healed: the web pod reaches itself again
    assert lab.netprog(web.name, "--timeout", "2", "http", "http://10.96.0.20/").returncode == 0


def test_worker_processes_find_the_same_as_one_process(lab, tmp_path):
    """--workers 2: each worker process has its share of the nodes and its own connections,
    passive and active; the report is the one a single process makes, and both workers'
    first-seen host keys land in the one known_hosts file, once each."""
    lab.inject("ip_forward_disabled", "node2")
    try:
        runs = {}
        for workers in ("1", "2"):
            known = tmp_path / f"known_hosts-{workers}"
            runs[workers], _ = diagnose(lab, tmp_path / workers, "--workers", workers,
                                        "--known-hosts", str(known), "--accept-new-host-keys")
    finally:
        lab.heal("ip_forward_disabled", "node2")
    one, two = runs["1"], runs["2"]
    assert [(f["fault"], f["nodes"]) for f in alarms(two)] == [("ip_forward_disabled", ["node2"])]
    assert [(f["fault"], f["nodes"]) for f in two["findings"]] == [
        (f["fault"], f["nodes"]) for f in one["findings"]]
    assert [n["name"] for n in two["nodes"]] == [n.name for n in lab.nodes]
    assert two["connectivity"]["layers"] == one["connectivity"]["layers"]
    lines = (tmp_path / "known_hosts-2").read_text().splitlines()
    assert sorted(line.split()[0] for line in lines) == sorted(n.address for n in lab.nodes)


def test_the_counters_interval_overlaps_the_active_phase(lab, tmp_path):
    """With the active phase, a node's passive script no longer waits out the counters' 2 s:
    the second sample is taken once the node's checks are done, and the bundle's counters
    section holds both, with an interval of at least 2 s."""
    from kubenetdiag.bundle import Bundle
    from kubenetdiag.facts.parse import facts_from_records
    from kubenetdiag.probes.counters import MIN_INTERVAL_S

    diagnose(lab, tmp_path)
    b = Bundle.read(tmp_path / "bundle")
    for rec in b.records:
        counters = next(s for s in rec["sections"] if s["probe"] == "counters")
        assert counters["exit_code"] == 0
        assert counters["stdout"].count("##knd:sample ") == 2
        assert "after the active checks" in counters["command"]
        assert rec["duration_s"] < MIN_INTERVAL_S, rec["name"]  # no sleep in the passive script
    facts = [f.attrs for f in facts_from_records(b.records, b.cluster) if f.kind == "net_counter"]
    assert facts and all(a["interval_s"] >= MIN_INTERVAL_S for a in facts)


def test_ssh_config_aliases_a_bastion_and_an_agent_only_key(lab, tmp_path):
    """The inventory names hosts by alias only; the SSH config says where they are, who logs
    in, with which key and through which bastion: node2 accepts SSH only from inside the lab
    (through node1, a Host of the config), and edge-c (node1 again) has its key only in an
    ssh-agent."""
    import os

    n1, n2 = lab.nodes[:2]
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host edge-a\n  HostName {n1.address}\n  IdentityFile {lab.key_path}\n"
        f"Host edge-b\n  HostName {n2.address}\n  IdentityFile {lab.key_path}\n"
        "  ProxyJump edge-a\n"
        f"Host edge-c\n  HostName {n1.address}\n"
        f"Host edge-*\n  User root\n  UserKnownHostsFile {lab.known_hosts_path}\n"
        "  ServerAliveInterval 15\n")
    inv = tmp_path / "hosts.yaml"
    inv.write_text("all:\n  hosts:\n    edge-a:\n    edge-b:\n    edge-c:\n")
    agent = subprocess.run(["ssh-agent", "-s"], capture_output=True, text=True, check=True)
    env = dict(os.environ)
    for line in agent.stdout.split(";"):
        key, _, value = line.strip().partition("=")
        if key in ("SSH_AUTH_SOCK", "SSH_AGENT_PID"):
            env[key] = value
    block = ["-s", lab.client_address, "-p", "tcp", "--dport", "22", "-j", "REJECT",
             "--reject-with", "tcp-reset"]
    lab.node_exec(n2.name, ["iptables", "-I", "INPUT", "1", *block])
    try:
        subprocess.run(["ssh-add", str(lab.key_path)], env=env, check=True,
                       capture_output=True)
        proc = lab.client_exec(
            [sys.executable, "-m", "kubenetdiag", "collect", "--inventory", str(inv),
             "--ssh-config", str(config), "-o", str(tmp_path / "b"), "--quiet",
             "--connect-timeout", "5"], env={**env, "HOME": str(tmp_path)}, timeout=120)
    finally:
        lab.node_exec(n2.name, ["iptables", "-D", "INPUT", *block])
        subprocess.run(["ssh-agent", "-k"], env=env, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    from kubenetdiag.bundle import read_bundle

    _, records = read_bundle(tmp_path / "b")
    assert [(r["name"], r["reachable"]) for r in records] == [
        ("edge-a", True), ("edge-b", True), ("edge-c", True)], [r["error"] for r in records]
    # without the agent, edge-c has no key: it is reported with the reason, nothing waits
    proc = lab.client_exec(
        [sys.executable, "-m", "kubenetdiag", "collect", "--inventory", str(inv),
         "--ssh-config", str(config), "-o", str(tmp_path / "b2"), "--quiet",
         "--connect-timeout", "5"], env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        timeout=120)
    _, records = read_bundle(tmp_path / "b2")
    failed = {r["name"]: r["error"] for r in records if not r["reachable"]}
    assert list(failed) == ["edge-c"] and "authentication failed" in failed["edge-c"]


def test_an_on_demand_ipsec_tunnel_is_blamed_only_once_the_kernel_asked_in_vain(lab, tmp_path):
    # A real strongSwan charon on node2 holds a trap (on-demand) tunnel to node1, which never
    # answers IKE. Read passively it is an idle tunnel: policies and no SA, as a healthy one
    # has, and nothing is blamed. With the checks, their packets make the kernel ask charon,
    # the larval entry it leaves after them names the template, and node2 is the root cause.
    (tmp_path / "idle").mkdir()
    (tmp_path / "active").mkdir()
    with lab.injected("xfrm_sa_missing", "node2", {"via": "ike", "peer": "node1"}):
        lab.node_exec("node2", ["ip", "xfrm", "state", "flush"])  # no request pending
        idle, _ = diagnose(lab, tmp_path / "idle", "--no-active")
        active, proc = diagnose(lab, tmp_path / "active")
    assert [f["fault"] for f in alarms(idle)] == []
    assert {f["sa"] for f in _facts(tmp_path / "idle", "xfrm_policy", "node2")} == {"on_demand"}
    assert proc.returncode == 1
    assert root_causes(active) == [("xfrm_sa_missing", ["node2"])]
    [asked] = _facts(tmp_path / "active", "xfrm_acquire", "node2")
    assert (asked["src"], asked["dst"]) == (lab.topology.node("node2").address,
                                             lab.topology.node("node1").address)


def _facts(run: Path, kind: str, node: str) -> list[dict]:
    data = json.loads((run / "bundle" / "facts.json").read_text())
    facts = data["facts"] if isinstance(data, dict) else data
    return [f["attrs"] for f in facts if f["kind"] == kind and f["node"] == node]


def test_a_node_holding_its_peers_address_is_named_with_the_address_to_delete(lab, tmp_path):
    """node2 with node1's address on eth0 as well: before, node1 and node2 'cannot reach each
    other and no known cause was found'. Now the holder is named with the device and the
    undo, and nothing is blamed on node1, whose traffic node2 swallows."""
    with lab.injected("node_address_duplicate", "node2", {"peer": "node1"}):
        report, proc = diagnose(lab, tmp_path)
    assert proc.returncode == 1
    assert root_causes(report) == [("node_address_duplicate", ["node2"])]
    (finding,) = [f for f in report["findings"] if f["rule"] == "node-holds-peer-address"]
    commands = [r.get("command") for r in finding["remediation"]]
    assert "ip address del 198.18.0.11/24 dev eth0" in commands
