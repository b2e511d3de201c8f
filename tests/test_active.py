"""Active probes without a lab: planning, the script's syntax, parsers on real outputs, and
the DNS/HTTP spoken over an SSH channel."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import threading
from pathlib import Path

import pytest

from kubenetdiag.collect import channel
from kubenetdiag.collect.active import split
from kubenetdiag.facts import parse
from kubenetdiag.facts.model import Fact
from kubenetdiag.inventory import Host
from kubenetdiag.probes.active import capture, dns, http, mtu, ownpod, ping, plan, script, tcp
from kubenetdiag.probes.active.common import example, section

FIX = Path(__file__).parent / "fixtures" / "active"


def fx(name: str) -> str:
    return (FIX / name).read_text()


def _facts(n: int) -> list[Fact]:
    facts = []
    for i in range(1, n + 1):
        name = f"node{i}"
        facts += [
            Fact("node_status", name, {"reachable": True, "address": f"198.18.0.{10 + i}"}),
            Fact("k8s_node", name, {"name": name, "internal_ip": f"198.18.0.{10 + i}",
                                    "pod_cidr": f"10.244.{i}.0/24"}),
            Fact("interface", name, {"name": "eth0", "kind": "device", "mtu": 1500,
                                     "addresses": f"198.18.0.{10 + i}/24"}),
            Fact("interface", name, {"name": "flannel.1", "kind": "vxlan", "mtu": 1450,
                                     "vxlan_port": 8472, "vxlan_dev": "eth0"}),
            Fact("interface", name, {"name": "cni0", "kind": "bridge", "mtu": 1450,
                                     "addresses": f"10.244.{i}.1/24"}),
        ]
    facts += [
        Fact("dns_pod", "node1", {"pod": "coredns-0", "ip": "10.244.1.3", "ready": True}),
        Fact("dns_service", "cluster", {"name": "kube-dns", "namespace": "kube-system",
                                        "cluster_ip": "10.96.0.10",
                                        "cluster_domain": "cluster.local"}),
    ]
    return facts


def _hosts(n: int, **vars_: object) -> list[Host]:
    return [Host(f"node{i}", f"198.18.0.{10 + i}", vars=dict(vars_)) for i in range(1, n + 1)]


def test_plan_targets_come_from_facts_and_inventory() -> None:
    plans = plan.plan(_facts(3), _hosts(3, kubenetdiag_endpoints=[
        "203.0.113.10:3306", "db.example.invalid:3306", "bad;rm:1", "noport"]))
    p = plans["node1"]
    assert [(x["name"], x["pod_gateway"], x["address"]) for x in p["peers"]] == [
        ("node2", "10.244.2.1", "198.18.0.12"), ("node3", "10.244.3.1", "198.18.0.13")]
    assert p["mtu"] == [{"layer": "pod", "size": 1422}, {"layer": "underlay", "size": 1472}]
    assert p["vxlan"] == {"port": 8472, "dev": "eth0"}
    assert [(d["server"], d["kind"]) for d in p["dns"]] == [("10.244.1.3", "pod"),
                                                            ("10.96.0.10", "service")]
    assert p["dns_name"] == "kubernetes.default.svc.cluster.local"
    assert p["http"][0]["url"] == "http://10.244.1.3:9153/metrics"
    assert [(e["target"], e["by"]) for e in p["endpoints"]] == [
        ("203.0.113.10:3306", "ip"), ("db.example.invalid:3306", "name")]


def test_plan_falls_back_to_flannel_subnet_and_skips_unreached() -> None:
    facts = [f for f in _facts(2) if f.kind != "k8s_node"]
    facts.append(Fact("flannel_subnet", "node2", {"subnet": "10.244.2.1/24", "mtu": 1450}))
    facts = [f for f in facts if not (f.kind == "node_status" and f.node == "node1")] + [
        Fact("node_status", "node1", {"reachable": False, "address": "198.18.0.11"})]
    plans = plan.plan(facts, _hosts(2))
    assert list(plans) == ["node2"]  # node1 was not reached: no plan of its own
    assert plans["node2"]["mtu"][0] == {"layer": "pod", "size": 1422}


def test_a_node_not_logged_in_to_is_pinged_at_its_address_and_nothing_else() -> None:
    """Its peers' pings tell a node that is down or cut off from one whose SSH alone fails;
    its pod layer, MTU and NodePorts, unknown without its facts, are not probed."""
    facts = [f for f in _facts(3) if f.node != "node2" or f.kind in ("k8s_node",)] + [
        Fact("node_status", "node2", {"reachable": False, "address": "198.18.0.12"}),
        _nodeport("web", 30080, on="node3")]
    plans = plan.plan(facts, _hosts(3))
    assert list(plans) == ["node1", "node3"]
    p = plans["node1"]
    assert [(x["name"], x["collected"], x["pod_target"]) for x in p["peers"]] == [
        ("node2", False, None), ("node3", True, "10.244.3.1")]
    assert [(layer, peer["name"]) for _, (layer, peer) in ping._targets(p)] == [
        ("underlay", "node2"), ("pod", "node3"), ("underlay", "node3")]
    assert {peer["name"] for _, (_, peer) in mtu._targets(p)} == {"node3"}
    assert plan.not_checked("node1", p) == []  # node_unreachable says why, not a probe gap
    assert {t["dst"] for t in p["nodeports"]} == {"node1", "node3"}


def test_plan_bounds_peers_and_every_node_is_still_probed_by_k_sources() -> None:
    plans = plan.plan(_facts(20), _hosts(20), max_peers=4)
    assert all(len(p["peers"]) == 4 for p in plans.values())
    targeted: dict[str, int] = {}
    for p in plans.values():
        for peer in p["peers"]:
            targeted[peer["name"]] = targeted.get(peer["name"], 0) + 1
    assert set(targeted.values()) == {4} and len(targeted) == 20


def _nodeport(name: str, node_port: int, policy: str = "Cluster",
              endpoints: str = "10.244.2.3:8080", proto: str = "TCP", ready: int = 1,
              on: str = "node2") -> Fact:
    return Fact("service_port", "cluster", {
        "namespace": "default", "name": name, "port_name": "http", "port": 80,
        "protocol": proto, "cluster_ip": "10.96.0.30", "type": "NodePort",
        "node_port": node_port, "external_traffic_policy": policy, "endpoints": endpoints,
        "ready_endpoints": ready, "endpoint_nodes": on if ready else ""})


def test_plan_connects_to_each_nodeport_on_the_node_itself_and_two_peers() -> None:
    facts = _facts(4) + [_nodeport("web", 30085)]
    plans = plan.plan(facts, _hosts(4))
    got = [(t["service"], t["node_port"], t["dst"], t["address"], t["own"])
           for t in plans["node2"]["nodeports"]]
    assert got == [("default/web:http", 30085, "node2", "198.18.0.12", True),
                   ("default/web:http", 30085, "node3", "198.18.0.13", False),
                   ("default/web:http", 30085, "node4", "198.18.0.14", False)]
    # every node is connected to by itself and by two others: a node the peers fail on is
    # seen from two sides
    to = [t["dst"] for p in plans.values() for t in p["nodeports"]]
    assert sorted(to) == sorted(f"node{i}" for i in range(1, 5) for _ in range(3))


def test_plan_skips_nodeports_that_must_not_answer_and_rotates_many() -> None:
    facts = _facts(3) + [
        # Local: only node2 has an endpoint; the others drop by design
        _nodeport("local", 30086, policy="Local"),
        # Local, its endpoint on node3 by the slice's nodeName though the address is in
        # node2's pod range (Calico's IPAM blocks follow no node's podCIDR)
        _nodeport("calico", 30089, policy="Local", on="node3"),
        _nodeport("udp", 30087, proto="UDP"),
        _nodeport("empty", 30088, endpoints="", ready=0),
    ]
    plans = plan.plan(facts, _hosts(3))
    assert {(t["node_port"], t["dst"]) for p in plans.values() for t in p["nodeports"]} == {
        (30086, "node2"), (30089, "node3")}
    many = _facts(3) + [_nodeport(f"s{i}", 30100 + i) for i in range(5)]
    plans = plan.plan(many, _hosts(3))
    per_node = [{t["node_port"] for t in p["nodeports"]} for p in plans.values()]
    assert all(len(ports) == plan.MAX_NODEPORTS for ports in per_node)
    assert set().union(*per_node) == {30100 + i for i in range(5)}


def test_script_is_valid_sh_and_quotes_every_target() -> None:
    p = plan.plan(_facts(3), _hosts(3, kubenetdiag_endpoints=["203.0.113.10:3306"]))["node1"]
    p["peers"][0]["pod_gateway"] = "10.244.2.1; touch /tmp/pwned"  # hostile fact
    p["peers"][0]["pod_target"] = p["peers"][0]["pod_gateway"]  # what the checks now send to
    text = script.build(p, "@@KND:abc")
    assert subprocess.run(["sh", "-n"], input=text, text=True).returncode == 0
    assert "'10.244.2.1; touch /tmp/pwned'" in text
    assert script.deadline(p) <= 20


def test_split_accepts_only_planned_checks() -> None:
    p = plan.plan(_facts(2), _hosts(2))["node1"]
    out = ("@@M:tools: ping curl\n@@M:podns:cni-x\n@@M:chk:ping.pod.0:0:21:a\x1eb\n"
           "@@M:chk:rm.everything:0:1:x\n@@M:cap:0:listening on eth0\x1eline\n")
    r = split(out, "@@M", p, 1.5)
    assert r["tools"] == ["ping", "curl"] and r["podns"] == "cni-x"
    assert [s["probe"] for s in r["sections"]] == ["active.ping.pod.0", "active.capture"]
    assert r["sections"][0]["stdout"] == "a\nb" and r["sections"][0]["duration_s"] == 0.21


@pytest.mark.parametrize("name,ok,detail,rtt", [
    ("ping_iputils_ok.txt", True, None, 0.082),
    ("ping_iputils_loss.txt", False, "timeout", None),
    ("ping_iputils_toolong.txt", False, "message too long, mtu=1400", None),
    ("ping_busybox_ok.txt", True, None, 0.105),
])
def test_parse_ping(name: str, ok: bool, detail: str | None, rtt: float | None) -> None:
    r = ping.parse_ping(fx(name), 0 if ok else 1)
    assert (r["ok"], r["detail"], r["rtt_ms"]) == (ok, detail, rtt)


@pytest.mark.parametrize("name,detail,icmp_from", [
    # a REJECT on the target itself: icmp-host-prohibited, and iptables' default port unreachable
    ("ping_iputils_host_prohibited.txt", "rejected", "198.18.0.12"),
    ("ping_iputils_port_unreachable.txt", "rejected", "198.18.0.12"),
    # no neighbour answered ARP: the sender's own kernel says so, from the sender's address
    ("ping_iputils_no_neighbour.txt", "unreachable", "198.18.0.11"),
    ("ping_iputils_loss.txt", "timeout", None),
])
def test_a_ping_answered_with_an_error_says_what_and_who_sent_it(
        name: str, detail: str, icmp_from: str | None) -> None:
    r = ping.parse_ping(fx(name), 1)
    assert (r["ok"], r["detail"], r["icmp_from"]) == (False, detail, icmp_from)


def test_busybox_without_df_is_unsupported_not_failed() -> None:
    assert ping.unsupported(fx("ping_busybox_noM.txt"))
    assert not ping.unsupported(fx("ping_iputils_loss.txt"))


@pytest.mark.parametrize("name,rc,ok,answer,detail", [
    ("dig_ok.txt", 0, True, "10.96.0.1", None),
    ("dig_timeout.txt", 9, False, None, "timeout"),
    ("dig_nxdomain.txt", 0, False, None, "NXDOMAIN"),
    ("nslookup_bind_ok.txt", 0, True, "172.26.0.1", None),
    ("nslookup_busybox_ok.txt", 0, True, "10.96.0.1", None),
    ("nslookup_timeout.txt", 1, False, None, "timeout"),
    ("host_ok.txt", 0, True, "10.96.0.1", None),
])
def test_parse_dns(name: str, rc: int, ok: bool, answer: str | None, detail: str | None
                   ) -> None:
    r = dns.parse_dns(fx(name), rc)
    assert (r["ok"], r["answer"], r["detail"]) == (ok, answer, detail)


def test_parse_http_curl_wget_channel() -> None:
    assert http.parse_http("http_code=200 time=0.004\n", 0)["ok"]
    r = http.parse_http("http_code=000 time=2.001\n", 28)
    assert (r["status"], r["ok"], r["detail"]) == (None, False, "timeout")
    assert http.parse_http("  HTTP/1.1 200 OK\n  Content-Type: text/plain\n", 0)["status"] \
        == 200
    assert http.parse_http("wget: can't connect to remote host: Connection refused", 4)[
        "detail"] == "refused"


def test_parse_tcp() -> None:
    assert tcp.parse_tcp("", 0) == {"ok": True, "address": None, "detail": None,
                                    "resolver": None}
    assert tcp.parse_tcp("unresolved: db.invalid\n", 3)["detail"] == "unresolved"
    r = tcp.parse_tcp("resolved: db 10.0.0.5\nbash: connect: Connection refused\n", 1)
    assert (r["ok"], r["address"], r["detail"]) == (False, "10.0.0.5", "refused")
    assert tcp.parse_tcp("", 124)["detail"] == "timeout"
    # from a pod, through the pod's resolver: the helper's line naming it is no connect output
    r = tcp.parse_tcp("resolver: pod 10.96.0.10\nresolved: web 10.96.0.20\n", 1, seconds=2.2)
    assert (r["address"], r["detail"], r["resolver"]) == ("10.96.0.20", "timeout", "pod 10.96.0.10")
    r = tcp.parse_tcp("resolver: pod 10.96.0.10\nunresolved: web (no answer from 10.96.0.10)\n", 3)
    assert (r["detail"], r["resolver"]) == ("unresolved", "pod 10.96.0.10")


def test_count_vxlan() -> None:
    counts = capture.count_vxlan(fx("tcpdump_vxlan.txt"), "198.18.0.11",
                               {"198.18.0.12": "node2", "198.18.0.13": "node3"}, 8472)
    assert counts == {"node2": (0, 2), "node3": (0, 0)}


def test_active_facts_and_missing_tool_is_not_a_failure() -> None:
    p = plan.plan(_facts(2), _hosts(2))["node1"]
    active = {"plan": p, "podns": "cni-a", "sections": [
        {"probe": "active.ping.pod.0", "exit_code": 0, "stdout": fx("ping_iputils_ok.txt")},
        {"probe": "active.pod.ping.pod.0", "exit_code": 1,
         "stdout": fx("ping_iputils_loss.txt")},
        {"probe": "active.mtu.1.0", "exit_code": 1, "stdout": fx("ping_busybox_noM.txt")},
        {"probe": "active.capture", "exit_code": 0, "stdout": fx("tcpdump_vxlan.txt"),
         "duration_s": 1.2},
    ]}
    facts = parse.active_facts("node1", active)
    kinds = [(f.kind, f.attrs.get("ok"), f.attrs.get("vantage")) for f in facts]
    assert kinds[:2] == [("reach", True, None), ("reach", False, "cni-a")]
    assert facts[2].kind == "probe_status" and facts[2].attrs["status"] == "missing_tool"
    assert facts[3].attrs == {"peer": "node2", "port": 8472, "sent": 0, "received": 2,
                              "window_s": 1.2}


class _Stream:
    """A fake channel: answers what a DNS server or an HTTP server would."""

    def __init__(self, reply: bytes) -> None:
        self.reply, self.sent = reply, b""

    def settimeout(self, t: float) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def recv(self, n: int) -> bytes:
        if callable(self.reply):
            self.reply = self.reply(self.sent)
        out, self.reply = self.reply[:n], self.reply[n:]
        return out

    def close(self) -> None:
        pass


def test_dns_over_channel_round_trip() -> None:
    def server(query: bytes) -> bytes:
        body = query[2:]
        qid = body[:2]
        question = body[12:]
        answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 4) + bytes([10, 96, 0, 1])
        msg = qid + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0) + question + answer
        return struct.pack("!H", len(msg)) + msg

    line = channel.dns_over(_Stream(server), "kubernetes.default.svc.cluster.local")
    r = dns.parse_dns(line, 0)
    assert (r["ok"], r["answer"]) == (True, "10.96.0.1"), line
    assert dns.parse_dns(channel.dns_over(_Stream(b""), "x.local"), 0)["detail"] == "reset"


def _udp_dns_server(answer: str | None) -> tuple[socket.socket, threading.Thread]:
    """A resolver on loopback that answers one query with `answer`, or never (None)."""
    import dns.message
    import dns.rrset

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)

    def serve() -> None:
        data, peer = sock.recvfrom(4096)
        query = dns.message.from_wire(data)  # one datagram, or this raises
        reply = dns.message.make_response(query)
        if answer:
            reply.answer.append(dns.rrset.from_text(query.question[0].name, 5, "IN", "A",
                                                    answer))
            sock.sendto(reply.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return sock, thread


@pytest.mark.skipif(not all(shutil.which(t) for t in ("bash", "od", "dd", "timeout")),
                    reason="the UDP helper needs bash, od, dd and timeout")
@pytest.mark.parametrize("answer", ["10.96.0.1", None])
def test_dns_over_udp_without_a_dns_tool(answer: str | None) -> None:
    """The helper a node without dig uses: one datagram out (a name whose label length is a
    newline byte, which printf alone would split), the reply decoded; silence is a timeout."""
    sock, thread = _udp_dns_server(answer)
    script = dns.udp_script("kubernetes.default.svc.cluster.local")
    assert script is not None
    out = subprocess.run(["bash", "-c", script, "127.0.0.1", str(sock.getsockname()[1])],
                         capture_output=True, text=True, timeout=10).stdout
    thread.join(5)
    sock.close()
    r = dns.parse_dns(out.strip(), 0)
    assert (r["ok"], r["answer"], r["detail"]) == (
        (True, "10.96.0.1", None) if answer else (False, None, "timeout")), out


def test_http_over_channel() -> None:
    line = channel.http_over(_Stream(b"HTTP/1.1 200 OK\r\n\r\n# metrics"), "10.244.1.3:9153",
                             "/metrics")
    assert http.parse_http(line, 0)["status"] == 200
    assert http.parse_http(channel.http_over(_Stream(b""), "h:1", "/"), 0)["status"] is None


def _bash_only_path(tmp_path: Path) -> str:
    """A PATH with sh, bash and sleep but no nc: the TCP helper's bash branch runs."""
    import shutil
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("sh", "bash", "sleep"):
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"no {tool}")
        (bindir / tool).symlink_to(found)
    return str(bindir)


def _connect(path: str, port: int) -> tuple[dict, float]:
    import time
    start = time.monotonic()
    # the way __knd_chk runs a check: its output read through a pipe until EOF
    done = subprocess.run(["sh", "-c", script.TCP_HELPER, "_", "127.0.0.1", str(port), "ip"],
                          capture_output=True, text=True, env={"PATH": path}, timeout=20)
    return tcp.parse_tcp(done.stdout + done.stderr, done.returncode), time.monotonic() - start


def test_tcp_helper_without_nc_connects_refuses_and_times_out(tmp_path: Path) -> None:
    import socket
    path = _bash_only_path(tmp_path)
    with socket.create_server(("127.0.0.1", 0)) as up:
        result, took = _connect(path, up.getsockname()[1])
        # an accepted connect does not wait for the watchdog's 3 s
        assert result["ok"] and took < 2
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result, _ = _connect(path, port)
    assert (result["ok"], result["detail"]) == (False, "refused")
    # a listener whose accept queue is full drops the SYN: no answer at all
    with socket.create_server(("127.0.0.1", 0), backlog=0) as full:
        port = full.getsockname()[1]
        waiting = [socket.create_connection(("127.0.0.1", port), timeout=1) for _ in range(1)]
        try:
            result, took = _connect(path, port)
        finally:
            for s in waiting:
                s.close()
    assert (result["ok"], result["detail"]) == (False, "timeout") and 2.5 < took < 10


def test_tcp_helper_does_not_count_a_slow_start_as_a_timeout(tmp_path: Path) -> None:
    """On a busy node starting bash can take seconds: that is not the network's time."""
    import shutil
    import socket
    path = _bash_only_path(tmp_path)
    bash = tmp_path / "bin" / "bash"
    real = bash.resolve()
    bash.unlink()
    bash.write_text(f"#!/bin/sh\nsleep 3.5\nexec {real} \"$@\"\n")
    bash.chmod(0o755)
    if shutil.which("timeout"):
        (tmp_path / "bin" / "timeout").symlink_to(shutil.which("timeout"))
    with socket.create_server(("127.0.0.1", 0)) as up:
        result, _ = _connect(path, up.getsockname()[1])
    assert result == {"ok": True, "address": None, "detail": None, "resolver": None}


def _record(name: str, p: dict) -> dict:
    return {"name": name, "reachable": True, "address": p["address"], "sections": [],
            "active": {"plan": p, "podns": "cni-a", "sections": []}}


def test_no_declared_endpoint_is_said_once_as_not_checked_with_how_to_declare_one() -> None:
    plans = plan.plan(_facts(2), _hosts(2))
    facts = parse.facts_from_records([_record(n, p) for n, p in plans.items()])
    notes = [f for f in facts if f.kind == "probe_status"
             and f.attrs["probe"] == parse.ENDPOINTS_PROBE]
    assert [(f.node, f.attrs["status"]) for f in notes] == [("cluster", "not_queried")]
    assert "kubenetdiag_endpoints" in notes[0].attrs["reason"]

    declared = plan.plan(_facts(2), _hosts(2, kubenetdiag_endpoints=["10.0.0.5:3306"]))
    facts = parse.facts_from_records([_record(n, p) for n, p in declared.items()])
    assert not [f for f in facts if f.attrs.get("probe") == parse.ENDPOINTS_PROBE]


def test_a_run_without_active_checks_does_not_also_blame_the_inventory() -> None:
    rec = {"name": "node1", "reachable": True, "sections": [],
           "active": {"skipped": "active checks not asked for"}}
    facts = parse.facts_from_records([rec])
    assert [f.attrs["probe"] for f in facts if f.kind == "probe_status"
            and f.attrs["probe"].startswith("active")] == ["active"]


def _own_pod(inpod: str) -> list[Fact]:
    """Run the node -> own pod check's command as the script would, with $__inpod as given,
    and parse its output."""
    ctx = example("cni-a")
    cmd = ownpod.NODE_TO_POD.command(ctx.plan, "node_to_pod")
    cp = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=20,
                        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "__inpod": inpod,
                             "__pi": ""})
    return ownpod.NODE_TO_POD.parse(section("active.own.node_to_pod", cp.stdout + cp.stderr,
                                            cp.returncode), "node_to_pod", ctx)


def test_own_pod_check_without_a_pod_namespace_is_not_checked_not_failed() -> None:
    [fact] = _own_pod("")
    assert (fact.kind, fact.attrs["status"]) == ("probe_status", "missing_tool")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="needs root to enter an empty network namespace")
def test_own_pod_check_in_a_namespace_without_an_address_pings_nothing() -> None:
    # a fresh network namespace has only lo: no pod address, so no ping is sent anywhere
    [fact] = _own_pod("unshare -n")
    assert fact.kind == "probe_status" and "no pod address" in fact.attrs["reason"]
