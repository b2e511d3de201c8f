"""The network lab itself: it must behave like a small healthy cluster, its faults must really
break what they claim to, and it must leave the machine's root namespace exactly as it was."""

from __future__ import annotations

import glob
import ipaddress
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from kubenetdiag_lab import Lab, LabError, find_overlaps, overlap_message
from kubenetdiag_lab import preflight as preflight_mod
from kubenetdiag_lab.netns import cmdline, lab_namespaces, list_netns, pids_in_netns

LAB_NETS = [ipaddress.ip_network("198.18.0.0/24"), ipaddress.ip_network("10.244.0.0/16")]

# What this machine (and a typical VM) looks like: eth0 on 192.0.2.0/24, loopback, IPv6.
ROOT_ADDRS = [
    {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8},
                                   {"family": "inet6", "local": "::1", "prefixlen": 128}]},
    {"ifname": "eth0", "addr_info": [{"family": "inet", "local": "192.0.2.2", "prefixlen": 24},
                                     {"family": "inet6", "local": "fd00::2", "prefixlen": 64}]},
]
ROOT_ROUTES = [
    {"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"},
    {"dst": "192.0.2.0/24", "dev": "eth0", "protocol": "kernel"},
    {"type": "local", "dst": "127.0.0.0/8", "dev": "lo", "table": "local"},
    {"type": "broadcast", "dst": "192.0.2.255", "dev": "eth0", "table": "local"},
    {"dst": "fd00::/64", "dev": "eth0"},
    {"dst": "default", "gateway": "fd00::1", "dev": "eth0"},
]


# ---- faults a lab's shape rules out (pure: refused before anything is touched) ----------------


@pytest.mark.parametrize("fault", ["nodeport_no_local_endpoint", "kube_proxy_rules_missing"])
def test_a_fault_of_kube_proxys_iptables_rules_is_refused_in_nftables_mode(tmp_path, fault):
    lab = Lab(tmp_path / "lab", nodes=3, prefix="kndq", proxy_mode="nftables")
    with pytest.raises(LabError, match=r"needs kube-proxy in iptables mode .*--proxy-mode "
                                       r"iptables.*runs nftables"):
        lab.inject(fault)
    assert not (tmp_path / "lab").exists()


# ---- preflight (pure, no root needed) -------------------------------------------------------


def test_logins_cover_only_the_start_up_files_the_machine_has(tmp_path):
    from kubenetdiag_lab.nodehost import NodeFiles, init_script, login_mounts

    home = tmp_path / "machine-home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".bashrc").write_text('eval "$(pyenv init -)"\n')
    (home / ".ssh" / "rc").write_text("echo hi\n")
    (home / "notes.txt").write_text("not a start-up file\n")
    files = NodeFiles(tmp_path / "node1")
    files.home.mkdir(parents=True)
    (files.home / ".bashrc").write_text("# the node's own\n")
    (files.home / ".profile").write_text("# the machine has none: nothing to cover\n")
    assert login_mounts(files, home) == [
        f"mount --bind {files.home / '.bashrc'} {home / '.bashrc'}",
        f"mount --bind /dev/null {home / '.ssh' / 'rc'}",  # the node has no such hook
    ]
    # --login machine: the init leaves the machine's files where they are
    assert not any(line.endswith("/root/.bashrc") for line in
                   init_script(files, [], own_login=False).splitlines())


def test_an_unknown_login_mode_is_refused(tmp_path):
    with pytest.raises(LabError, match="login mode"):
        Lab(tmp_path, login="laptop")


def test_preflight_accepts_a_machine_on_192_0_2():
    assert find_overlaps(LAB_NETS, ROOT_ADDRS, ROOT_ROUTES) == []


def test_preflight_refuses_a_route_covering_the_underlay_with_a_clear_message():
    routes = [*ROOT_ROUTES, {"dst": "198.18.0.0/15", "gateway": "192.0.2.1", "dev": "eth0"}]
    overlaps = find_overlaps(LAB_NETS, ROOT_ADDRS, routes)
    assert [(str(o.lab_network), str(o.root_network)) for o in overlaps] == [
        ("198.18.0.0/24", "198.18.0.0/15")]
    message = overlap_message(overlaps)
    assert message.startswith("refusing to build the lab")
    assert "lab network 198.18.0.0/24 overlaps route 198.18.0.0/15 dev eth0" in message


def test_preflight_refuses_a_pod_address_already_on_the_machine():
    addrs = [*ROOT_ADDRS, {"ifname": "cni0", "addr_info": [
        {"family": "inet", "local": "10.244.3.1", "prefixlen": 24}]}]
    overlaps = find_overlaps(LAB_NETS, addrs, ROOT_ROUTES)
    assert [str(o) for o in overlaps] == [
        "lab network 10.244.0.0/16 overlaps address 10.244.3.1/24 on cni0"]


def test_preflight_ignores_default_routes_and_ipv6_but_not_host_routes():
    routes = [{"dst": "0.0.0.0/0", "dev": "eth0"}, {"dst": "::/0", "dev": "eth0"},
              {"type": "local", "dst": "10.244.7.9", "dev": "lo", "table": "local"}]
    overlaps = find_overlaps(LAB_NETS, [], routes)
    assert [str(o) for o in overlaps] == [
        "lab network 10.244.0.0/16 overlaps local route 10.244.7.9 dev lo table local"]


@pytest.mark.lab
def test_up_refuses_on_overlap_and_creates_nothing(lab_requirements, tmp_path, monkeypatch):
    routes = [*ROOT_ROUTES, {"dst": "198.18.0.0/15", "gateway": "192.0.2.1", "dev": "eth0"}]
    monkeypatch.setattr(preflight_mod, "read_root_state", lambda: (ROOT_ADDRS, routes))
    lab = Lab(tmp_path, prefix="kndovl")
    with pytest.raises(LabError, match=r"refusing to build the lab(.|\n)*198\.18\.0\.0/15"):
        lab.up()
    assert lab_namespaces("kndovl") == []


# ---- the shared session lab ------------------------------------------------------------------


def ssh(lab: Lab, node: str, *command: str, **kw) -> subprocess.CompletedProcess:
    return lab.client_exec(lab.ssh_argv(node, *command, **kw), timeout=30)


@pytest.mark.lab
def test_inventory_known_hosts_and_state_describe_the_lab(lab):
    inventory = yaml.safe_load(lab.inventory_path.read_text())["all"]
    assert inventory["vars"] == {
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(lab.key_path),
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={lab.known_hosts_path}",
        # the endpoints an SRE would declare for the active TCP checks, by address
        "kubenetdiag_endpoints": ["203.0.113.10:3306", f"{lab.pod_for_app('web').ip}:8080"],
    }
    assert inventory["hosts"] == {"node1": {"ansible_host": "198.18.0.11"},
                                  "node2": {"ansible_host": "198.18.0.12"}}
    known = [line.split() for line in lab.known_hosts_path.read_text().splitlines()]
    assert [(k[0], k[1]) for k in known] == [("198.18.0.11", "ssh-ed25519"),
                                             ("198.18.0.12", "ssh-ed25519")]
    assert known[0][2] != known[1][2]  # each node has its own host key
    assert lab.key_path.stat().st_mode & 0o077 == 0  # ssh refuses a readable private key

    state = json.loads(lab.state_path.read_text())
    assert state["prefix"] == lab.prefix and state["workdir"] == str(lab.workdir)
    assert sorted(state["namespaces"]) == sorted(lab_namespaces(lab.prefix))
    assert [(n["name"], n["netns"], n["address"], n["pod_cidr"]) for n in state["nodes"]] == [
        ("node1", f"{lab.prefix}-node1", "198.18.0.11", "10.244.1.0/24"),
        ("node2", f"{lab.prefix}-node2", "198.18.0.12", "10.244.2.0/24")]
    assert set(state["sshd_pids"]) == {"node1", "node2"}
    reloaded = Lab.load(lab.workdir)
    assert reloaded.nodes == lab.nodes and reloaded.sshd_pids == lab.sshd_pids


@pytest.mark.lab
def test_ssh_from_client_reaches_every_node_with_host_key_checking(lab, tmp_path):
    for node in lab.nodes:
        cp = ssh(lab, node.name, "cat", "/proc/sys/net/ipv4/ip_forward")
        assert (cp.returncode, cp.stdout.strip()) == (0, "1"), cp.stderr
    # Checking is really on: the same login against an empty known_hosts must be refused.
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    argv = [a.replace(str(lab.known_hosts_path), str(empty)) for a in lab.ssh_argv("node1", "true")]
    cp = lab.client_exec(argv, timeout=30)
    assert cp.returncode == 255 and "Host key verification failed" in cp.stderr
    assert empty.read_text() == ""


@pytest.mark.lab
def test_ip_forward_fault_breaks_cross_node_pod_traffic_until_healed(lab):
    healthy = lab.pod_ping("node1", "node2", count=2, timeout=2)
    assert healthy.returncode == 0, healthy.stdout
    with lab.injected("ip_forward_disabled", "node2"):
        assert lab.node_exec("node2", ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout == "0\n"
        broken = lab.pod_ping("node1", "node2", timeout=1)
        assert broken.returncode == 1 and "no reply" in broken.stdout  # a silent drop
    healed = lab.pod_ping("node1", "node2", count=2, timeout=2)
    assert healed.returncode == 0, healed.stdout


@pytest.mark.lab
def test_forward_reject_fault_refuses_pod_traffic(lab):
    with lab.injected("forward_chain_reject", "node2"):
        rules = lab.node_exec("node2", ["iptables", "-S", "FORWARD"]).stdout.splitlines()
        assert rules[1] == "-A FORWARD -j REJECT --reject-with icmp-port-unreachable"
        started = time.monotonic()
        broken = lab.pod_ping("node1", "node2", timeout=3)
        assert broken.returncode == 1 and "unreachable" in broken.stdout, broken.stdout
        assert time.monotonic() - started < 2.5  # refused at once, not timed out
    rules = lab.node_exec("node2", ["iptables", "-S", "FORWARD"]).stdout
    # only the injected rule goes; flanneld's jump to its FLANNEL-FWD accepts stays
    assert "-j REJECT" not in rules and rules.count('"flanneld forward" -j FLANNEL-FWD') == 1
    assert lab.pod_ping("node1", "node2", count=2, timeout=2).returncode == 0


@pytest.mark.lab
def test_stopped_sshd_is_refused_fast_and_comes_back(lab):
    with lab.injected("node_unreachable", "node2"):
        started = time.monotonic()
        cp = ssh(lab, "node2", "true", connect_timeout=10)
        elapsed = time.monotonic() - started
        assert cp.returncode == 255 and "Connection refused" in cp.stderr, cp.stderr
        assert elapsed < 3, f"refusal took {elapsed:.1f}s: it timed out instead"
        assert ssh(lab, "node1", "true").returncode == 0  # the other node is unaffected
        # The node's network stays healthy; only its management plane is gone.
        assert lab.pod_ping("node1", "node2", count=2, timeout=2).returncode == 0
    assert ssh(lab, "node2", "true").returncode == 0


@pytest.mark.lab
def test_unknown_fault_and_node_are_rejected(lab):
    with pytest.raises(LabError, match="unknown fault 'no_such_fault'; known: .*forward_chain"):
        lab.inject("no_such_fault", "node1")
    with pytest.raises(LabError, match="nodes are node1, node2"):
        lab.inject("ip_forward_disabled", "node9")


def routes(netns: str, family: str) -> list[dict]:
    out = subprocess.run(["ip", "-n", netns, "-j", family, "route", "show", "table", "all"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out or "[]")


LAB_RANGES = [ipaddress.ip_network(n) for n in
              ("198.18.0.0/24", "10.244.0.0/16", "203.0.113.0/24", "10.96.0.0/12")]


def _in_lab(dst: str) -> bool:
    net = ipaddress.ip_network(dst, strict=False)
    return net.version == 6 or any(net.subnet_of(r) for r in LAB_RANGES) or \
        net.subnet_of(ipaddress.ip_network("127.0.0.0/8"))


@pytest.mark.lab
def test_nothing_in_the_lab_routes_or_nats_to_the_outside(lab):
    pods = {p.netns: p for p in lab.pods}
    gateways = {n.name: n.pod_gateway for n in lab.nodes}
    for netns in lab.namespaces:
        every = [r for fam in ("-4", "-6") for r in routes(netns, fam)]
        defaults = [r for r in every if r.get("dst") in ("default", "0.0.0.0/0", "::/0")]
        if netns in pods:
            # A pod's only way out is its own node's cni0, as under a real CNI.
            assert [(r.get("gateway"), r.get("dev")) for r in defaults] == [
                (gateways[pods[netns].node], "eth0")], netns
        else:
            assert defaults == [], netns
        others = [r["dst"] for r in every if r not in defaults and r.get("type") != "multicast"
                  and not r["dst"].startswith(("fe80", "ff", "multicast"))]
        assert all(_in_lab(d) for d in others), (netns, others)
    for node in lab.nodes:
        nat = lab.node_exec(node.name, ["iptables-save", "-t", "nat"]).stdout
        # NAT only ever rewrites to a pod or, for default/kubernetes, the lab's apiserver
        # (kube-proxy's DNAT), or to the node itself (MASQUERADE).
        for dest in re.findall(r"--to-destination (\S+)", nat):
            address = ipaddress.ip_address(dest.split(":")[0])
            assert address in LAB_RANGES[1] or dest == "198.18.0.3:6443", dest
        assert not re.search(r"-j (SNAT|NETMAP|REDIRECT)", nat), nat


# ---- lifecycle: separate prefixes so the session lab is never disturbed ---------------------


SYSCTL_GLOBS = ("ipv4/ip_forward", "ipv4/tcp_*", "ipv4/conf/all/*", "ipv4/conf/default/*",
                "ipv6/conf/all/*", "ipv6/conf/default/*", "core/*", "bridge/*", "netfilter/*")
SYSCTL_VOLATILE = ("nf_conntrack_count",)  # counters move with unrelated traffic
LIFETIME_KEYS = ("valid_life_time", "preferred_life_time", "expires")


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in LIFETIME_KEYS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _cmd(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def _rules(text: str) -> list[str]:
    # Comments carry timestamps; packet counters move with unrelated traffic.
    text = re.sub(r"\[\d+:\d+\]", "[0:0]", text)
    text = re.sub(r"counter packets \d+ bytes \d+", "counter", text)
    return [line for line in text.splitlines() if not line.startswith("#")]


def root_snapshot() -> dict:
    sysctls = {}
    for pattern in SYSCTL_GLOBS:
        for path in glob.glob(f"/proc/sys/net/{pattern}"):
            if Path(path).is_file() and not path.endswith(SYSCTL_VOLATILE):
                try:
                    sysctls[path] = Path(path).read_text()
                except OSError:  # write-only or restricted entries
                    continue
    return {
        "links": _strip(json.loads(_cmd("ip", "-j", "link"))),
        "addrs": _strip(json.loads(_cmd("ip", "-j", "addr"))),
        "routes4": _strip(json.loads(_cmd("ip", "-j", "-4", "route", "show", "table", "all"))),
        "routes6": _strip(json.loads(_cmd("ip", "-j", "-6", "route", "show", "table", "all"))),
        "rules": json.loads(_cmd("ip", "-j", "rule")),
        "iptables": _rules(_cmd("iptables-save")),
        "ip6tables": _rules(_cmd("ip6tables-save")),
        "nft": _rules(_cmd("nft", "list", "ruleset")),
        "sysctl": sysctls,
    }


@pytest.mark.lab
def test_full_cycle_leaves_the_root_namespace_untouched(lab_requirements, tmp_path):
    before = root_snapshot()
    assert before["sysctl"]  # the comparison below must not be vacuous
    cycle = Lab(tmp_path / "cycle", nodes=2, prefix="kndcycle")
    try:
        cycle.up()
        for fault in ("ip_forward_disabled", "forward_chain_reject", "node_unreachable",
                      "host_firewall_active", "security_software_present", "mtu_mismatch",
                      "vxlan_port_mismatch", "listen_queue_overflow", "cni_pod_not_running"):
            cycle.inject(fault, "node2")
        cycle.inject("ip_forward_disabled", "node1", {"via": "file"})
        cycle.inject("service_no_endpoints")
        assert cycle.pod_ping("node1", "node2", timeout=0.5).returncode == 1
        cycle.heal()
        assert cycle.pod_ping("node1", "node2", count=2, timeout=2).returncode == 0
        # Left in force, processes among them stopped with SIGSTOP: down must clean them too
        cycle.inject("udp_buffer_errors", "node1")
        cycle.inject("coredns_unreachable", params={"via": "hang"})
        cycle.inject("node_unreachable", "node2", {"via": "hang"})
        cycle.inject("cni_pod_not_running", "node2", {"via": "hang"})
        cycle.inject("vxlan_udp_blocked", "node1", {"via": "tc"})
        cycle.inject("host_firewall_active", "node1", {"via": "firewalld-nft"})
        cycle.inject("policy_route_blackhole", "node1", {"via": "table"})
        cycle.inject("mtu_mismatch", "node2", {"via": "pod"})
    finally:
        started = time.monotonic()
        cycle.down()
        took = time.monotonic() - started
    # a stopped process must not make down wait for it (it is killed, not asked)
    assert took < 30, f"down took {took:.1f}s"
    after = root_snapshot()
    for part in before:
        assert after[part] == before[part], f"root namespace {part} changed"
    assert lab_namespaces("kndcycle") == []
    assert not cycle.state_path.exists()
    # nothing left: no process started from the lab's work dir, no mount of it
    workdir = str(cycle.workdir)
    leftovers = [pid for pid in os.listdir("/proc") if pid.isdigit()
                 and workdir in cmdline(int(pid))]
    assert leftovers == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert workdir not in mounts and "/run/netns/kndcycle-" not in mounts
    cycle.down()  # idempotent: nothing left to do, and no error


@pytest.mark.lab
def test_down_removes_stale_namespaces_and_their_processes(lab_requirements, tmp_path):
    stale = ["kndstale-sw", "kndstale-node3", "kndstale-node3-pod1"]
    bystanders = ["kndstalex-node1", "kndstale-other"]  # similar names, not this lab's
    sleeper = None
    try:
        for name in stale + bystanders:
            subprocess.run(["ip", "netns", "add", name], check=True)
        # What a crashed run leaves behind: a live process inside a lab namespace.
        sleeper = subprocess.Popen(["ip", "netns", "exec", "kndstale-node3", "sleep", "60"])
        deadline = time.monotonic() + 5
        while not pids_in_netns(["kndstale-node3"])["kndstale-node3"]:
            assert time.monotonic() < deadline, "sleeper never entered its namespace"
            time.sleep(0.02)
        Lab(tmp_path, prefix="kndstale").down()
        assert sleeper.wait(timeout=5) != 0  # killed, not finished
        remaining = set(list_netns())
        assert not remaining & set(stale)
        assert set(bystanders) <= remaining
    finally:
        if sleeper is not None and sleeper.poll() is None:
            sleeper.kill()
        subprocess.run(["ip", "-force", "-batch", "-"], text=True, capture_output=True,
                       input="".join(f"netns del {n}\n" for n in stale + bystanders))


@pytest.mark.lab
def test_failed_up_cleans_up_what_it_built(lab_requirements, tmp_path, monkeypatch):
    def boom(self, nodes):
        raise RuntimeError("simulated failure while starting sshd")

    monkeypatch.setattr(Lab, "_start_sshds", boom)
    lab = Lab(tmp_path, nodes=3, prefix="kndfail")
    with pytest.raises(RuntimeError, match="simulated"):
        lab.up()
    assert lab_namespaces("kndfail") == []
    assert not lab.state_path.exists()


@pytest.mark.lab
def test_up_refuses_when_the_prefix_is_in_use(lab_requirements, tmp_path):
    subprocess.run(["ip", "netns", "add", "kndbusy-sw"], check=True)
    try:
        with pytest.raises(LabError, match="kndbusy-sw(.|\n)*down --prefix kndbusy"):
            Lab(tmp_path, prefix="kndbusy").up()
        assert lab_namespaces("kndbusy") == ["kndbusy-sw"]  # someone else's: left alone
    finally:
        Lab(tmp_path, prefix="kndbusy").down()
    assert lab_namespaces("kndbusy") == []


def test_lab_rejects_bad_prefix_and_node_count(tmp_path):
    with pytest.raises(LabError, match="prefix"):
        Lab(tmp_path, prefix="knd-x")
    with pytest.raises(LabError, match="1..950"):
        Lab(tmp_path, nodes=0)
    with pytest.raises(LabError, match="--light"):
        Lab(tmp_path, nodes=201)
    with pytest.raises(LabError, match="flannel-host-gw"):
        Lab(tmp_path, nodes=3, light=True)


def test_a_large_lab_fits_one_switch_and_keeps_every_address_apart():
    """500 light nodes: a wider underlay and pod network, every node its own address and /24,
    none on the outside's or the control plane's address, and under the bridge's 1,024
    ports; a small lab keeps the addresses it always had."""
    import ipaddress

    from kubenetdiag_lab.topology import OUTSIDE_UNDERLAY, build

    big = build("kndbig", 500, "flannel-host-gw", light=True)
    underlay = ipaddress.ip_network(big.underlay)
    pods = ipaddress.ip_network(big.pod_network)
    addresses = [ipaddress.ip_address(n.address) for n in big.nodes]
    assert len(set(addresses)) == 500 and all(a in underlay for a in addresses)
    assert not {str(a) for a in addresses} & {OUTSIDE_UNDERLAY, "198.18.0.2", "198.18.0.3"}
    assert all(str(a).split(".")[-1] not in ("0", "255") for a in addresses)
    cidrs = [ipaddress.ip_network(n.pod_cidr) for n in big.nodes]
    assert len(set(cidrs)) == 500 and all(c.subnet_of(pods) for c in cidrs)
    assert len(big.nodes) + 3 <= 1024  # switch ports: nodes, client, outside, control plane
    small = build("knd", 3)
    assert (small.underlay, small.pod_network, small.nodes[2].address) == (
        "198.18.0.0/24", "10.244.0.0/16", "198.18.0.13")


@pytest.mark.lab
def test_a_light_lab_routes_pods_as_host_gw_and_runs_no_node_component(lab_requirements,
                                                                       tmp_path):
    lab = Lab(tmp_path / "lab", nodes=3, prefix="kndlight", cni_mode="flannel-host-gw",
              light=True)
    lab.up()
    try:
        routes = lab.node_exec("node1", ["ip", "-4", "route", "show"]).stdout
        for peer in lab.nodes[1:]:
            assert f"{peer.pod_cidr} via {peer.address} dev eth0" in routes
        assert lab.pod_ping("node1", "node3", count=2).returncode == 0
        from kubenetdiag_lab.netns import pids_in_netns

        # the programs in the node's own network namespace (`ps` would list other labs' too)
        node1 = lab.node("node1").netns
        running = set()
        for pid in pids_in_netns([node1]).get(node1, []):
            try:
                running.add(Path(f"/proc/{pid}/comm").read_text().strip())
            except OSError:
                continue
        assert "sshd" in running
        assert not {"flanneld", "kube-proxy", "coredns"} & running
        assert Lab.load(tmp_path / "lab").topology.light
        # the ARP table every namespace shares is not filled by a large lab: see neighbours.py
        neigh = lab.node_exec("node1", ["ip", "neigh", "show", "nud", "permanent"]).stdout
        assert all(p.address in neigh for p in lab.nodes[1:])
    finally:
        lab.down()
