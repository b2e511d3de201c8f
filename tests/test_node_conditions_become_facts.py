"""Node facts proven on the lab: every node-level condition injected for real shows up as the
expected fact on the right node, and the healthy lab's facts hold no false alarm.

Also here, because they need root but not the lab: a node missing conntrack, ss and iptables
(binaries hidden in a private mount namespace), and sysctl provenance from a real file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubenetdiag.collect.script import build_script, new_marker, split_output
from kubenetdiag.collect.ssh import SshOptions, _command
from kubenetdiag.facts.parse import facts_from_records, node_facts
from kubenetdiag.facts.registry import validate_fact
from kubenetdiag.inventory import Host
from kubenetdiag.probes import PROBES

ROOT = os.geteuid() == 0


def test_become_runs_the_script_through_sudo_n_which_never_prompts():
    plain = _command(Host("n", "a"), SshOptions(command_timeout=30))
    assert plain == "timeout -k 5 30 nice -n 10 sh -s"
    become = _command(Host("n", "a", become=True), SshOptions(command_timeout=30))
    assert become == "sudo -n -- timeout -k 5 30 nice -n 10 sh -s"
    other = _command(Host("n", "a", become=True, become_user="ops; rm -rf /"), SshOptions())
    assert other.startswith("sudo -n -u 'ops; rm -rf /' -- ")


# ---- helpers -------------------------------------------------------------------------------

def collect(lab, tmp_path: Path, name: str = "b") -> dict[str, list]:
    """Collect over SSH from the client namespace; facts by node, each checked against the
    registry."""
    out = tmp_path / name
    proc = lab.client_exec([sys.executable, "-m", "kubenetdiag", "collect", "--inventory",
                            str(lab.inventory_path), "-o", str(out), "--quiet"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(p.read_text()) for p in sorted((out / "nodes").glob("*.json"))]
    by_node: dict[str, list] = {}
    for f in facts_from_records(records):
        assert not validate_fact(f), (f, validate_fact(f))
        by_node.setdefault(f.node, []).append(f)
    return by_node


def attrs(facts, kind, **match):
    return [f.attrs for f in facts if f.kind == kind
            and all(f.attrs.get(k) == v for k, v in match.items())]


def one(facts, kind, **match):
    got = attrs(facts, kind, **match)
    assert len(got) == 1, (kind, match, got)
    return got[0]


DROP_COUNTERS = ("TcpExtListenOverflows", "TcpExtListenDrops", "TcpExtTCPRcvQDrop",
                 "TcpExtTCPBacklogDrop", "UdpRcvbufErrors", "UdpSndbufErrors", "UdpInErrors",
                 "conntrack_insert_failed", "conntrack_drop", "conntrack_early_drop")


# ---- the healthy lab -----------------------------------------------------------------------

@pytest.mark.lab
def test_healthy_lab_node_facts_hold_no_false_alarm(lab, tmp_path):
    facts = collect(lab, tmp_path)
    # `collect` without --active says once, cluster-wide, that the active phase did not run
    assert [(f.kind, f.attrs["probe"]) for f in facts.pop("cluster")] == [
        ("probe_status", "active")]
    assert set(facts) == {n.name for n in lab.nodes}
    for node in lab.nodes:
        f = facts[node.name]
        assert attrs(f, "probe_status") == [], (node.name, attrs(f, "probe_status"))
        assert one(f, "sysctl", key="net.ipv4.ip_forward")["number"] == 1
        assert one(f, "kernel_module", name="br_netfilter")["loaded"] in (True, None)
        ct = one(f, "conntrack")
        # insert_failed counts since the namespace was made, and the session lab's nodes
        # have had faults: what is healthy is that none is rising (the counters below)
        assert ct["loaded"] and ct["usage_pct"] < 50
        for c in attrs(f, "net_counter"):
            if c["name"] in DROP_COUNTERS:
                assert c["rising"] is False, c
        ssh = [lst for lst in attrs(f, "tcp_listener") if lst["port"] == 22]
        assert ssh and not any(lst["full"] for lst in ssh)
        # the node's own iptables; a legacy table a fault left (the kernel keeps it, empty)
        # has a summary of its own
        summary = one(f, "iptables_summary", backend="nf_tables")
        assert not summary["firewalld_chains"] and not summary["ufw_chains"]
        assert not [r for r in attrs(f, "nft_rule") if r["verdict"] in ("drop", "reject")]
        assert not attrs(f, "bgp_session") and one(f, "ipvs")["enabled"] is False
        cni0 = one(f, "interface", name="cni0")
        assert cni0["admin_up"] and cni0["addresses"].startswith(node.pod_gateway)
        for peer in lab.nodes:
            if peer is not node:  # a route to every other node's pod CIDR
                assert attrs(f, "route", dst=peer.pod_cidr), (node.name, peer.pod_cidr)
        assert not [p for p in attrs(f, "process", role="security_software") if p["running"]]
        assert not [h for h in attrs(f, "host_firewall") if h["active"]]
        assert attrs(f, "resolv_conf") and attrs(f, "filesystem")


# ---- injected node-level conditions ---------------------------------------------------------

def inside(lab, node: str) -> list[str]:
    """argv prefix that runs a process as part of the node: in its own PID and mount namespace
    when the lab gives nodes one, else in its network namespace only."""
    n = lab.node(node)
    if hasattr(lab, "init_pid"):
        return ["nsenter", "-t", str(lab.init_pid(n)), "-m", "-p", "-n", "--"]
    return ["ip", "netns", "exec", n.netns]


@contextlib.contextmanager
def node_change(lab, node: str, do: list[list[str]], undo: list[list[str]]):
    try:
        for argv in do:
            lab.node_exec(node, argv)
        yield
    finally:
        for argv in undo:
            lab.node_exec(node, argv, check=False)


LOAD = r"""
import socket, sys, time
end = time.time() + float(sys.argv[1])
# TCP: a listener nobody accepts from, with a backlog of 1, and clients knocking
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 18080)); srv.listen(1)
# UDP: a receiver with a tiny buffer that never reads, and a sender flooding it
rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048); rx.bind(("127.0.0.1", 18081))
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
# connections this side closes first end in TIME_WAIT
acc = socket.socket(); acc.bind(("127.0.0.1", 18082)); acc.listen(16)
held = []
print("ready", flush=True)
while time.time() < end:
    for _ in range(50):
        tx.sendto(b"x" * 512, ("127.0.0.1", 18081))
    c = socket.socket(); c.setblocking(False)
    try:
        c.connect(("127.0.0.1", 18080))
    except BlockingIOError:
        pass
    held.append(c)
    held = held[-64:]
    t = socket.create_connection(("127.0.0.1", 18082), timeout=1)
    a, _ = acc.accept()
    t.close()
    a.close()
    time.sleep(0.02)
"""


@pytest.mark.lab
def test_injected_node_conditions_appear_on_the_right_node(lab, tmp_path):
    n1, n2 = lab.nodes[0].name, lab.nodes[1].name
    peer_cidr = lab.nodes[1].pod_cidr  # node1's route to node2's pods
    route = lab.node_exec(n1, ["ip", "route", "show", peer_cidr]).stdout.split()
    mtu = lab.node_exec(n2, ["cat", "/sys/class/net/cni0/mtu"]).stdout.strip()
    somaxconn = lab.node_exec(n2, ["cat", "/proc/sys/net/core/somaxconn"]).stdout.strip()
    fake = tmp_path / "bin" / "qaxsafed"
    fake.parent.mkdir()
    shutil.copy("/bin/sleep", fake)
    load = subprocess.Popen([*inside(lab, n1), sys.executable, "-c", LOAD, "40"],
                            stdout=subprocess.PIPE, text=True)
    security = subprocess.Popen([*inside(lab, n1), str(fake), "60"])
    with contextlib.ExitStack() as stack:
        stack.callback(security.kill)
        stack.callback(load.kill)
        assert load.stdout.readline().strip() == "ready"
        stack.enter_context(node_change(
            lab, n1,
            [["iptables", "-I", "FORWARD", "1", "-j", "DROP"],
             ["iptables", "-N", "FORWARD_IN_ZONES"],
             ["ip", "route", "del", peer_cidr]],
            [["iptables", "-D", "FORWARD", "-j", "DROP"],
             ["iptables", "-X", "FORWARD_IN_ZONES"],
             ["ip", "route", "replace", *route]]))
        stack.enter_context(node_change(
            lab, n2,
            [["sysctl", "-qw", "net.core.somaxconn=64"],
             ["ip", "link", "set", "cni0", "mtu", "1400"],
             ["nft", "add", "table", "inet", "kndtest"],
             ["nft", "add", "chain", "inet", "kndtest", "input",
              "{ type filter hook input priority 0 ; policy accept ; }"],
             ["nft", "add", "rule", "inet", "kndtest", "input", "udp", "dport", "8472",
              "counter", "drop"]],
            [["nft", "delete", "table", "inet", "kndtest"],
             ["ip", "link", "set", "cni0", "mtu", mtu],
             ["sysctl", "-qw", f"net.core.somaxconn={somaxconn}"]]))
        time.sleep(2)  # let the load build a full queue and some drops before the first sample
        facts = collect(lab, tmp_path)
    f1, f2 = facts[n1], facts[n2]

    # iptables: a DROP at the top of FORWARD, and firewalld's zone chain, on node1 only
    top = one(f1, "iptables_rule", table="filter", chain="FORWARD", position=1)
    assert top["target_kind"] == "drop" and top["unconditional"]
    assert one(f2, "iptables_rule", table="filter", chain="FORWARD", position=1)[
        "target_kind"] != "drop"
    assert one(f1, "iptables_summary", backend="nf_tables")["firewalld_chains"] is True
    assert one(f2, "iptables_summary", backend="nf_tables")["firewalld_chains"] is False
    # a missing pod route on node1; node2 still has its own
    assert not attrs(f1, "route", dst=peer_cidr), (route, attrs(f1, "route"))
    assert attrs(f2, "route", dst=lab.nodes[0].pod_cidr)
    # node2: lowered somaxconn, cni0 MTU, and an nft table dropping VXLAN
    assert one(f2, "sysctl", key="net.core.somaxconn")["number"] == 64
    assert one(f1, "sysctl", key="net.core.somaxconn")["number"] != 64
    assert one(f2, "interface", name="cni0")["mtu"] == 1400
    assert one(f1, "interface", name="cni0")["mtu"] != 1400
    drop = one(f2, "nft_rule", table="kndtest")
    assert drop["verdict"] == "drop" and "8472" in drop["text"]
    assert one(f2, "nft_table", table="kndtest")["owner"] == "nft"
    assert not attrs(f1, "nft_table", table="kndtest")
    # node1 under load: a full accept queue, overflows and UDP buffer errors rising now
    lst = one(f1, "tcp_listener", port=18080)
    assert lst["full"] is True
    assert lst["process"] is None or lst["process"].startswith("python")
    assert not attrs(f2, "tcp_listener", port=18080)
    rising = {c["name"]: c for c in attrs(f1, "net_counter") if c["rising"]}
    assert "TcpExtListenOverflows" in rising and "UdpRcvbufErrors" in rising
    assert rising["UdpRcvbufErrors"]["rate_per_s"] > 0
    quiet = {c["name"]: c for c in attrs(f2, "net_counter")}
    assert quiet["TcpExtListenOverflows"]["rising"] is False
    assert quiet["UdpRcvbufErrors"]["rising"] is False
    udp = one(f1, "udp_socket", port=18081)
    assert udp["drops"] > 0 and udp["rcvbuf"] <= 8192
    assert one(f1, "tcp_states")["time_wait"] > 0
    # security software from the list in docs/runbooks.md#runbook-001-security-software,
    # running on node1
    sec = one(f1, "process", name="qaxsafed")
    assert sec["running"] and sec["role"] == "security_software"
    if hasattr(lab, "init_pid"):  # nodes with their own PID namespace: only node1 has it
        assert one(f2, "process", name="qaxsafed")["running"] is False


# ---- read-only, proven per system call -------------------------------------------------------

WRITE_CALLS = "trace=creat,mkdir,mkdirat,rename,renameat,renameat2,unlink,unlinkat,link," \
    "linkat,symlink,symlinkat,truncate,chmod,fchmodat,chown,fchownat,utimensat,open,openat"


@pytest.mark.lab
def test_the_probe_script_opens_no_file_for_writing(lab):
    """strace every process the script starts on a node: the only file ever opened for writing
    is /dev/null, and no file is created, renamed, removed or retimed."""
    if not shutil.which("strace"):
        pytest.skip("strace is not installed")
    marker = new_marker()
    script = build_script(PROBES, marker)
    node = lab.nodes[0]
    proc = subprocess.run(
        ["ip", "netns", "exec", node.netns, "strace", "-f", "-qq", "-e", WRITE_CALLS,
         "-o", "/dev/stderr", "sh", "-s"],
        input=script, capture_output=True, text=True, timeout=120)
    sections = split_output(proc.stdout, proc.stderr, marker, PROBES)
    assert {s.probe for s in sections} == {p.name for p in PROBES}
    bad = []
    for line in proc.stderr.splitlines():
        call = line.split(" ", 1)[-1]
        if call.startswith(("open(", "openat(")):
            if any(flag in call for flag in ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC")) \
                    and '"/dev/null"' not in call:
                bad.append(call)
        elif call.startswith(("creat(", "mkdir", "rename", "unlink", "link", "symlink",
                              "truncate", "chmod", "fchmodat", "chown", "fchownat", "utimensat")):
            bad.append(call)
    assert bad == []


# ---- a node without conntrack, ss and iptables; sysctl provenance from a real file ---------

HIDE = ("conntrack", "ss", "iptables-save", "iptables-legacy-save")
SCRIPT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # as script.py sets


@pytest.mark.skipif(not ROOT or not shutil.which("unshare"), reason="needs root and unshare")
def test_node_missing_tools_gives_probe_status_and_provenance_reads_files(tmp_path):
    """Run the real script through the local transport's `sh -s` inside a private mount
    namespace: /dev/null bound over conntrack, ss and iptables-save, and a tmpfs on
    /etc/sysctl.d holding a file that turns ip_forward off. The machine sees none of it."""
    marker = new_marker()
    script = build_script(PROBES, marker)
    binds = []
    for tool in HIDE:
        path = shutil.which(tool, path=SCRIPT_PATH)
        if path:
            binds.append(f"mount --bind /dev/null {os.path.realpath(path)}")
    setup = " && ".join([
        "mount --make-rprivate /",
        "mount -t tmpfs kndfx /etc/sysctl.d",
        "printf 'net.ipv4.ip_forward = 1\\n' > /etc/sysctl.d/10-kubernetes.conf",
        "printf '# a later file wins\\nnet.ipv4.ip_forward=0\\n' > /etc/sysctl.d/90-zz.conf",
        *binds,
        "exec sh -s",
    ])
    proc = subprocess.run(["unshare", "--mount", "sh", "-c", setup], input=script,
                          capture_output=True, text=True, timeout=120)
    sections = split_output(proc.stdout, proc.stderr, marker, PROBES)
    assert sections, proc.stderr
    facts = node_facts({"name": "bare", "address": "local", "reachable": True, "error": None,
                        "sections": [s.to_dict() for s in sections]})
    for f in facts:
        assert not validate_fact(f), f
    status = {f.attrs["probe"]: f.attrs for f in facts if f.kind == "probe_status"}
    assert status["iptables"]["status"] == "missing_tool"
    assert "iptables-save" in status["iptables"]["reason"]
    assert status["sockets"]["status"] == "missing_tool" and "ss" in status["sockets"]["reason"]
    assert status["conntrack"]["status"] == "missing_tool"
    # nothing healthy was made up for what could not be read
    assert not [f for f in facts if f.kind in ("iptables_rule", "iptables_chain",
                                               "iptables_summary", "tcp_listener")
                and f.attrs.get("backlog") is not None]
    states = [f.attrs for f in facts if f.kind == "tcp_states"]
    assert states and states[0]["source"] == "/proc/net/tcp"  # counted without ss
    ct = [f.attrs for f in facts if f.kind == "conntrack"][0]
    assert ct["stats_source"] in ("/proc/net/stat/nf_conntrack", None)
    fwd = [f.attrs for f in facts if f.kind == "sysctl_file_setting"
           and f.attrs["key"] == "net.ipv4.ip_forward"]
    assert fwd and fwd[0]["file"] in ("/etc/sysctl.d/90-zz.conf", "/etc/sysctl.conf")
    if fwd[0]["file"] == "/etc/sysctl.d/90-zz.conf":
        assert fwd[0]["number"] == 0
        assert fwd[0]["overrides"].startswith("/etc/sysctl.d/10-kubernetes.conf:1")
    # and the machine's own /etc/sysctl.d never saw the file
    assert not Path("/etc/sysctl.d/90-zz.conf").exists()


@pytest.mark.lab
def test_calico_bgp_sessions_are_read_from_calico_nodes_bird(calico_lab, tmp_path):
    """BIRD's client exists only inside calico-node (bird's mount namespace), as on a real
    calico node; the sessions still become facts, every one Established to its peer."""
    facts = collect(calico_lab, tmp_path)
    for node in calico_lab.nodes:
        sessions = attrs(facts[node.name], "bgp_session")
        peers = {p.address for p in calico_lab.nodes if p.name != node.name}
        assert {s["peer"] for s in sessions} == peers, sessions
        assert all(s["established"] for s in sessions), sessions
        assert not attrs(facts[node.name], "probe_status"), attrs(facts[node.name], "probe_status")
