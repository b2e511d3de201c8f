"""A pod's own socket counters and listeners: the node-side awk on /proc files in the kernel's
formats, the parser on outputs recorded in the lab, and the findings that name the pod."""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from kubenetdiag.engine import infer, load_ruleset
from kubenetdiag.facts.model import Fact
from kubenetdiag.facts.pod_names import pod_name_facts
from kubenetdiag.probes import BY_NAME, Section
from kubenetdiag.probes.pod_counters import AWK, AWK_VARS, THEN
from probe_sections import section

PROBE = BY_NAME["pod_counters"]


def parse(name: str) -> list[Fact]:
    return PROBE.parse(section("pod_counters", name), "node1")


def attrs(facts: list[Fact], kind: str) -> list[dict]:
    return [f.attrs for f in facts if f.kind == kind]


def api(*pods: tuple[str, str, str]) -> dict:
    """The API's answer to a pod list: (namespace, name, podIP)."""
    return {"queried": True, "calls": [{"name": "pods", "status": "ok", "items": [
        {"metadata": {"namespace": ns, "name": name}, "spec": {},
         "status": {"phase": "Running", "podIP": ip}} for ns, name, ip in pods]}]}


@functools.cache
def ruleset():
    return load_ruleset()


def findings(facts: list[Fact], cluster: dict | None) -> list[dict]:
    return infer(ruleset(), facts + pod_name_facts(facts, cluster))


# ---- the node-side awk, on a /proc of our own in the kernel's formats ------------------------

def fib_trie(*local: str) -> str:
    """/proc/net/fib_trie's Local table, as kernel 6.x prints it, holding these addresses."""
    entries = "".join(f"        |-- {a}\n           /32 host LOCAL\n" for a in local)
    return ("Main:\n  +-- 0.0.0.0/0 3 0 5\n        |-- 0.0.0.0\n           /0 universe UNICAST\n"
            "Local:\n  +-- 0.0.0.0/0 3 0 5\n" + entries
            + "        |-- 127.0.0.1\n           /32 host LOCAL\n"
            "        |-- 127.255.255.255\n           /32 link BROADCAST\n")


NETSTAT = ("TcpExt: SyncookiesSent SyncookiesRecv ListenOverflows ListenDrops TCPBacklogDrop\n"
           "TcpExt: 0 0 {lo} {lo} 0\n"
           "IpExt: InNoRoutes InTruncatedPkts\nIpExt: 0 0\n")
SNMP = ("Ip: Forwarding DefaultTTL\nIp: 1 64\n"
        "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n"
        "Udp: 5 0 {rb} 3 {rb} 0\n")
TCP_HEAD = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
            "timeout inode\n")
# a listener on 0.0.0.0:8080 with 3 waiting, one on 0.0.0.0:22 with none, then an established
# socket (the kernel lists listeners first: the read stops there)
TCP = TCP_HEAD + (
    "   0: 00000000:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        "
    "0 41001 1 0000000000000000 100 0 0 10 0\n"
    "   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        "
    "0 41002 1 0000000000000000 100 0 0 10 0\n"
    "   2: 0501F40A:1F90 0701F40A:C350 01 00000000:00000000 00:00000000 00000000     0        "
    "0 41003 1 0000000000000000 20 4 30 10 -1\n"
    "   3: 00000000:0050 00000000:0000 0A 00000000:00000009 00:00000000 00000000     0        "
    "0 41004 1 0000000000000000 100 0 0 10 0\n")
# a dual-stack listener on [::]:9090 with 2 waiting
TCP6 = TCP_HEAD + (
    "   0: 00000000000000000000000000000000:2382 00000000000000000000000000000000:0000 0A "
    "00000000:00000002 00:00000000 00000000     0        0 41005 1 0000000000000000 100 0 0 "
    "10 0\n")
UDP = ("   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
       "timeout inode ref pointer drops\n"
       "  12: 00000000:2001 00000000:0000 07 00000000:00000900 00:00000000 00000000     0        "
       "0 42001 2 0000000000000000 1900\n"
       "  13: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        "
       "0 42002 2 0000000000000000 0\n")


def proc_dir(root: Path, pid: str, addrs: tuple[str, ...], overflows: int = 0,
             rcvbuf: int = 0, tcp: str = TCP_HEAD, tcp6: str = TCP_HEAD, udp: str = "",
             tw: int = 0) -> None:
    net = root / pid / "net"
    net.mkdir(parents=True)
    (net / "sockstat").write_text(f"sockets: used 20\nTCP: inuse 3 orphan 0 tw {tw} alloc 5 "
                                  "mem 1\nUDP: inuse 1 mem 0\n")
    (net / "fib_trie").write_text(fib_trie(*addrs))
    (net / "netstat").write_text(NETSTAT.format(lo=overflows))
    (net / "snmp").write_text(SNMP.format(rb=rcvbuf))
    (net / "tcp").write_text(tcp)
    (net / "tcp6").write_text(tcp6)
    (net / "udp").write_text(udp or UDP.splitlines(keepends=True)[0])


def run_awk(root: Path, *pids: str) -> list[str]:
    # the probe's own variables, its /proc replaced by ours
    variables = shlex.split(AWK_VARS.replace("ROOT=/proc", f"ROOT={root}"))
    out = subprocess.run(["awk", *variables, AWK, *pids],
                         capture_output=True, text=True, timeout=10, check=True)
    return out.stdout.splitlines()


@pytest.mark.skipif(not shutil.which("awk"), reason="no awk")
def test_the_awk_reads_one_process_per_pod_and_skips_the_nodes_and_loopback_only(tmp_path):
    proc_dir(tmp_path, "self", ("198.18.0.12",))
    proc_dir(tmp_path, "10", ("10.244.2.5",), overflows=62, rcvbuf=1900, tcp=TCP, tcp6=TCP6,
             udp=UDP)
    proc_dir(tmp_path, "11", ("10.244.2.5",), overflows=62)  # the same pod's other process
    proc_dir(tmp_path, "12", ())  # a service's private network: loopback alone
    proc_dir(tmp_path, "13", ("198.18.0.12",))  # the node's own, seen through a hidden process
    # two addresses, nothing counted: its socket tables are not read, whatever they hold
    proc_dir(tmp_path, "14", ("10.244.2.6", "10.244.2.7"), tcp=TCP, tcp6=TCP6, udp=UDP)
    lines = run_awk(tmp_path, "10", "11", "12", "13", "14", "99")  # 99: gone already
    assert lines == [
        "ns 10 10.244.2.5",
        "c 10.244.2.5 TcpExt ListenOverflows 62", "c 10.244.2.5 TcpExt ListenDrops 62",
        "c 10.244.2.5 Udp InErrors 1900", "c 10.244.2.5 Udp RcvbufErrors 1900",
        # the read stops at the first socket that is not a listener: port 80's is not seen
        "l 10.244.2.5 00000000:1F90 00000003",
        "l 10.244.2.5 00000000000000000000000000000000:2382 00000002",
        "u 10.244.2.5 00000000:2001 00000900 1900",
        "ns 14 10.244.2.6,10.244.2.7",
    ]
    out = "##knd:sample 1\n100.00 1.0\n" + "\n".join(lines) + "\n##knd:sample 2\n102.00 2.0\n" \
        + "\n".join(lines).replace("ListenOverflows 62", "ListenOverflows 70") + "\n"
    facts = PROBE.parse(section_of(out), "node2")
    assert attrs(facts, "pod_listener") == [
        {"addresses": "10.244.2.5", "local": "[::]:9090", "port": 9090, "accept_queue": 2,
         "accept_queue_before": 2},
        {"addresses": "10.244.2.5", "local": "0.0.0.0:8080", "port": 8080, "accept_queue": 3,
         "accept_queue_before": 3}]
    (sock,) = attrs(facts, "pod_udp_socket")
    assert (sock["local"], sock["recv_q"], sock["drops"]) == ("0.0.0.0:8193", 2304, 1900)
    rising = {(c["addresses"], c["name"]): c["rising"] for c in attrs(facts, "pod_net_counter")}
    assert rising[("10.244.2.5", "TcpExtListenOverflows")] is True
    assert rising[("10.244.2.5", "UdpRcvbufErrors")] is False


def section_of(stdout: str) -> Section:
    return Section("pod_counters", PROBE.command, 0, 2.0, stdout, "")


# ---- recorded in the lab -------------------------------------------------------------------

LAB_PODS = api(("default", "client-node1-1", "10.244.1.2"),
               ("kube-system", "coredns-0", "10.244.1.3"))


def test_a_stuck_server_in_a_pod_is_found_in_the_pods_counters_and_named():
    facts = parse("lab-listener-stuck-in-pod")
    (listener,) = attrs(facts, "pod_listener")
    assert (listener["addresses"], listener["local"], listener["accept_queue"]) == (
        "10.244.1.2", "0.0.0.0:30080", 2)
    overflows = [c for c in attrs(facts, "pod_net_counter") if c["name"] == "TcpExtListenOverflows"]
    assert [(c["value"], c["rising"]) for c in overflows] == [(124, False)]
    (found,) = findings(facts, LAB_PODS)
    assert (found["rule"], found["nodes"], found["fault"]) == (
        "pod-listener-not-accepting", ["node1"], "listen_queue_overflow")
    assert found["title"] == ("A listener in pod default/client-node1-1 on node1 is not "
                              "accepting: 2 connections wait on 0.0.0.0:30080")


def test_without_the_api_the_namespace_is_named_by_its_address():
    (found,) = findings(parse("lab-listener-stuck-in-pod"), None)
    assert "in the network namespace with 10.244.1.2 on node1" in found["title"]


def test_a_full_udp_socket_in_a_pod_is_found_after_the_flood():
    facts = parse("lab-udp-drops-in-pod")
    (sock,) = attrs(facts, "pod_udp_socket")
    assert (sock["local"], sock["recv_q"], sock["drops"]) == ("0.0.0.0:30053", 3840, 1997)
    got = {(f["rule"], f["title"]) for f in findings(facts, LAB_PODS)}
    assert ("pod-udp-socket-full-and-dropping", "UDP socket 0.0.0.0:30053 in pod "
            "default/client-node1-1 on node1 is full and has dropped 1997 datagrams") in got


def test_a_scraper_in_a_pod_that_closes_first_is_named_with_its_peer():
    facts = parse("lab-time-wait-in-pod")
    (peer,) = attrs(facts, "pod_time_wait_peer")
    assert (peer["addresses"], peer["peer"], peer["port"], peer["count"]) == (
        "10.244.1.2", "203.0.113.10:9104", 9104, 2997)
    (found,) = findings(facts, LAB_PODS)
    assert (found["rule"], found["nodes"], found["fault"]) == (
        "pod-time-wait-pileup", ["node1"], "time_wait_pileup")


def test_healthy_pods_give_their_namespaces_and_nothing_else():
    facts = parse("lab-healthy-node")
    assert sorted(a["addresses"] for a in attrs(facts, "pod_netns")) == ["10.244.2.2", "10.244.2.3"]
    assert not [f for f in facts if f.kind != "pod_netns"]
    assert not findings(facts, api(("default", "web-0", "10.244.2.3")))


def test_a_login_that_is_not_root_sees_no_pod_and_says_so():
    facts = parse("nonroot-hidden")
    assert not attrs(facts, "pod_netns")
    (status,) = attrs(facts, "probe_status")
    assert status["status"] == "partial" and status["kinds"] is None
    assert status["reason"].startswith("12 process(es) whose network namespace this login may "
                                       "not look at")


def test_a_key_that_is_not_addresses_is_shown_not_trusted():
    out = ("##knd:sample 1\n100.00 1.0\nns 7 10.244.1.2\n##knd:sample 2\n102.00 2.0\n"
           "ns 7 10.244.1.2\nns 8 $(reboot)\nc 10.244.1.2 TcpExt ListenOverflows x\n")
    facts = PROBE.parse(section_of(out), "node1")
    assert [a["addresses"] for a in attrs(facts, "pod_netns")] == ["10.244.1.2"]
    (status,) = attrs(facts, "probe_status")
    assert status["status"] == "partial" and "$(reboot)" in status["reason"]


def tcp_lines(state: str, remote: str, count: int, start: int = 0) -> str:
    return "".join(f"{start + i:4d}: 0201F40A:{40000 + i:04X} {remote} {state} "
                   "00000000:00000000 03:00000A1B 00000000     0        0 0 3 "
                   "0000000000000000\n" for i in range(count))


@pytest.mark.skipif(not shutil.which("awk"), reason="no awk")
def test_time_wait_is_counted_per_peer_only_where_the_pod_has_many(tmp_path):
    proc_dir(tmp_path, "self", ("198.18.0.12",))
    exporter, web = "0A7100CB:2390", "0302F40A:1F90"  # 203.0.113.10:9104, 10.244.2.3:8080
    # a scraper pod: 2100 toward the exporter, 600 toward the web pod, a few established
    table = (TCP_HEAD + tcp_lines("06", exporter, 2100) + tcp_lines("06", web, 600, 2100)
             + tcp_lines("01", web, 3, 2700))
    proc_dir(tmp_path, "20", ("10.244.1.2",), tcp=table, tw=2700)
    # the same table where sockstat says few: the table is not read at all
    proc_dir(tmp_path, "21", ("10.244.1.3",), tcp=table, tw=12)
    lines = run_awk(tmp_path, "20", "21")
    assert sorted(line for line in lines if line.startswith("t ")) == [
        f"t 10.244.1.2 {web} 600", f"t 10.244.1.2 {exporter} 2100"]
    out = "##knd:sample 1\n100.00 1.0\n##knd:sample 2\n102.00 2.0\n" + "\n".join(lines)
    facts = PROBE.parse(section_of(out), "node1")
    got = sorted((a["peer"], a["count"]) for a in attrs(facts, "pod_time_wait_peer"))
    assert got == [("10.244.2.3:8080", 600), ("203.0.113.10:9104", 2100)]
    (found,) = findings(facts, LAB_PODS)
    assert found["rule"] == "pod-time-wait-pileup" and found["title"] == (
        "2100 connections from pod default/client-node1-1 on node1 to 203.0.113.10:9104 wait "
        "in TIME_WAIT, each holding a local port")


def test_a_node_without_awk_says_the_pods_were_not_read():
    (status,) = [f.attrs for f in parse("no-awk")]
    assert (status["status"], status["kinds"]) == ("missing_tool", None)
    assert status["reason"].startswith("awk is not installed")


# ---- the walk over /proc: which processes are hidden from the login -------------------------

def _hidden(out: str) -> int:
    return next((int(line.split()[1]) for line in out.splitlines()
                 if line.startswith("hidden ")), 0)


def _walk(*prefix: str) -> str:
    # the walk alone: with awk missing from its PATH it lists what it found, reads nothing
    return subprocess.run([*prefix, shutil.which("sh") or "/bin/sh", "-c", THEN],
                          capture_output=True, text=True, env={"PATH": "/nonexistent"},
                          timeout=60).stdout


def test_a_zombie_is_no_process_hidden_from_the_login():
    # counted as hidden, it made a root login report pods it could not read (a container's
    # unreaped child on a node is enough). What this machine hides from this login anyway
    # changes as other processes come and go (a lab beside the tests), so the walk with the
    # zombie is compared with the walk right after it is reaped, a few times: counted, it is
    # one more every time.
    seen = []
    for _ in range(3):
        child = subprocess.Popen(["true"])
        try:
            status = Path(f"/proc/{child.pid}/status")
            for _ in range(200):  # bounded: 2 s
                if "\nState:\tZ" in status.read_text():
                    break
                subprocess.run(["sleep", "0.01"], check=True)
            assert "\nState:\tZ" in status.read_text()
            with_zombie = _hidden(_walk())
        finally:
            child.wait()
        seen.append((with_zombie, _hidden(_walk())))
        if seen[-1][0] == seen[-1][1]:
            return
    pytest.fail(f"hidden with the zombie, then without it: {seen}")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root to become another user")
def test_another_users_processes_are_hidden_from_a_login_that_is_not_root():
    out = _walk(shutil.which("setpriv") or "setpriv", "--reuid=nobody", "--regid=nogroup",
                "--clear-groups")
    assert _hidden(out) > 0, out
