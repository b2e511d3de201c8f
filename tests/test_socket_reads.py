"""Whether the program behind a full receive queue reads: the sockets probe names the
connection, socket_reads reads it again, and the rules tell a reader that stopped from a busy or
slow one. Parsers on outputs recorded in the lab and on CentOS 7's ss; the hand-off between the
two probes run for real in the local shell."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from kubenetdiag.collect.script import build_script, new_marker, split_output
from kubenetdiag.engine import infer, load_ruleset
from kubenetdiag.facts.model import Fact
from kubenetdiag.facts.registry import validate_fact
from kubenetdiag.probes import BY_NAME
from kubenetdiag.probes.sockets import AWK, MAX_REREAD
from probe_sections import section


def parse(probe: str, name: str) -> list[Fact]:
    facts = BY_NAME[probe].parse(section(probe, name), "node2")
    for fact in facts:
        validate_fact(fact)
    return facts


def progress(facts: list[Fact]) -> list[dict]:
    return [f.attrs for f in facts if f.kind == "socket_read_progress"]


@functools.cache
def ruleset():
    return load_ruleset()


def diagnosis(name: str) -> list[tuple[str, list[str], str]]:
    facts = parse("sockets", name) + parse("socket_reads", name)
    return [(f["rule"], f["nodes"], f["title"]) for f in infer(ruleset(), facts)
            if f["fault"] == "socket_recv_queue_backlog"]


# ---- recorded in the lab -----------------------------------------------------------------------

def test_a_stopped_reader_read_nothing_between_the_readings():
    assert progress(parse("socket_reads", "lab-stopped-reader")) == [{
        "state": "established", "local": "127.0.0.1:30070", "peer": "127.0.0.1:52876",
        "recv_q_before": 129024, "recv_q": 129024, "read_bytes": 0, "interval_s": 2.01}]


def test_a_slow_reader_reads_while_its_queue_grows():
    [conn] = progress(parse("socket_reads", "lab-slow-reader"))
    assert conn["recv_q"] > conn["recv_q_before"] >= 32768
    assert conn["read_bytes"] == (260150 - 104448) - (135222 - 41014)


def test_the_stopped_reader_is_found_with_its_program_and_the_slow_one_is_not():
    assert diagnosis("lab-stopped-reader") == [(
        "socket-recv-queue-piling-up", ["node2"],
        "python (pid 2948) on node2 has stopped reading: 129024 bytes wait in its receive "
        "queue on 127.0.0.1:30070, none read in 2.01 s")]
    assert diagnosis("lab-slow-reader") == []


def test_the_sockets_facts_do_not_change_for_the_reread_line():
    facts = parse("sockets", "lab-stopped-reader")
    queues = [f.attrs for f in facts if f.kind == "socket_queue"]
    assert [(q["local"], q["recv_q"], q["process"]) for q in queues] == [
        ("127.0.0.1:30070", 129024, "python"), ("127.0.0.1:52876", 0, "python")]
    assert not [f for f in facts if f.kind == "probe_status"]


# ---- CentOS 7: no bytes_received ----------------------------------------------------------------

def test_without_bytes_received_what_was_read_is_unknown_not_zero():
    got = {c["peer"]: c for c in progress(parse("socket_reads",
                                                "centos7-ss-3.10-no-bytes-received"))}
    assert got["10.35.16.97:63005"]["read_bytes"] is None
    assert (got["10.35.16.98:51200"]["recv_q_before"], got["10.35.16.98:51200"]["recv_q"]) == (
        1048576, 16384)
    assert got["10.35.16.97:63005"]["interval_s"] == 2.01


def test_without_bytes_received_only_a_queue_that_did_not_drain_is_suspected():
    queue = {"proto": "tcp", "state": "established", "local": "10.28.87.59:8000",
             "send_q": 0, "process": "java", "pid": 2301}
    facts = parse("socket_reads", "centos7-ss-3.10-no-bytes-received") + [
        Fact("socket_queue", "node2", {**queue, "peer": "10.35.16.97:63005", "recv_q": 2097152}),
        Fact("socket_queue", "node2", {**queue, "peer": "10.35.16.98:51200", "recv_q": 1048576}),
    ]
    got = [(f["rule"], f["confidence"]) for f in infer(ruleset(), facts)
           if f["fault"] == "socket_recv_queue_backlog"]
    assert got == [("socket-recv-queue-not-draining", "low")]


# ---- odd outputs ------------------------------------------------------------------------------

def _section(stdout: str):
    s = section("socket_reads", "lab-stopped-reader")
    return type(s)(s.probe, s.command, s.exit_code, s.duration_s, stdout, "")


def test_a_line_not_understood_is_reported_partial_and_the_rest_stands():
    text = section("socket_reads", "lab-stopped-reader").stdout.replace(
        "##knd:reading 2", "ESTAB lots-of-bytes 0 a b\n##knd:reading 2")
    facts = BY_NAME["socket_reads"].parse(_section(text), "node2")
    assert len(progress(facts)) == 1
    [status] = [f.attrs for f in facts if f.kind == "probe_status"]
    assert status["status"] == "partial" and "lots-of-bytes" in status["reason"]


def test_blank_and_header_lines_in_the_later_readings_are_skipped():
    text = ("##knd:udp 100 300\n\nState Recv-Q Send-Q Local Address:Port Peer Address:Port\n"
            "##knd:listen 100 300\n\nLISTEN 2 1 0.0.0.0:30080 0.0.0.0:*\n")
    facts = BY_NAME["socket_reads"].parse(_section(text), "node2")
    assert [(f.kind, f.attrs["local"]) for f in facts] == [
        ("tcp_listener_later", "0.0.0.0:30080")]


def test_a_reading_cut_off_gives_nothing_to_compare():
    text = section("socket_reads", "lab-stopped-reader").stdout
    cut = text[:text.index("##knd:reading 2")]
    assert BY_NAME["socket_reads"].parse(_section(cut), "node2") == []
    assert BY_NAME["socket_reads"].parse(_section(""), "node2") == []


# ---- on the node: which connections are read again ----------------------------------------------

def _reread_line(ss_lines: list[str], kind: str = "X") -> str | None:
    """The filter the node's awk names the sockets to read again by: X for TCP, Y for UDP."""
    out = subprocess.run(["awk", "-v", "t=1024", "-v", "m=200", AWK], capture_output=True,
                         text=True, check=True,
                         input="Netid State Recv-Q Send-Q Local Peer\n" + "\n".join(ss_lines)
                         + "\n").stdout
    return next((line[2:] for line in out.splitlines() if line.startswith(kind + " ")), None)


def _x_line(ss_lines: list[str]) -> str | None:
    return _reread_line(ss_lines, "X")


def test_only_established_or_close_wait_connections_with_32_kib_unread_are_named():
    lines = [
        "tcp ESTAB 129024 0 127.0.0.1:30070 127.0.0.1:52876",
        "tcp CLOSE-WAIT 40000 0 [::ffff:10.0.0.5]:8080 [::ffff:10.0.0.9]:41000",
        "tcp ESTAB 2066 36 10.0.0.5:8000 10.0.0.7:63005",  # a busy reader's few KiB
        "tcp ESTAB 0 903168 127.0.0.1:52876 127.0.0.1:30070",  # the sender's side
        "tcp LISTEN 129 128 0.0.0.0:80 0.0.0.0:*",
        "tcp ESTAB 65536 0 10.0.0.5:http 10.0.0.7:x",  # not numeric: never into the filter
    ]
    assert _x_line(lines) == ("( sport = :30070 and dport = :52876 ) or "
                              "( sport = :8080 and dport = :41000 )")
    assert _x_line(lines[2:]) is None


def test_at_most_sixteen_connections_are_read_again():
    lines = [f"tcp ESTAB 65536 0 10.0.0.5:{8000 + i} 10.0.0.7:{40000 + i}" for i in range(40)]
    assert _x_line(lines).count("sport") == MAX_REREAD


def test_udp_sockets_that_dropped_and_are_half_full_are_named_once_per_port():
    lines = [
        "udp UNCONN 212480 0 0.0.0.0:30053 0.0.0.0:* users:((\"python\",pid=8738,fd=3))",
        "\t skmem:(r212480,rb212992,t0,tb212992,f512,w0,o0,bl0,d1834)",
        # a reuseport twin on the same port, skmem on its own line
        "udp UNCONN 200000 0 0.0.0.0:30053 0.0.0.0:* skmem:(r200000,rb212992,t0,tb212992,f0,"
        "w0,o0,bl0,d3)",
        # a busy server a few datagrams deep, drops from long ago
        "udp UNCONN 1280 0 0.0.0.0:30054 0.0.0.0:*",
        "\t skmem:(r1280,rb212992,t0,tb212992,f2816,w0,o0,bl0,d1834)",
        # full but never dropped
        "udp UNCONN 4608 0 0.0.0.0:30055 0.0.0.0:*",
        "\t skmem:(r4608,rb4608,t0,tb212992,f0,w0,o0,bl0,d0)",
        # iproute 3.10: no d, so no drops known
        "udp UNCONN 213248 0 *:53 *:*",
        "\t skmem:(r213248,rb212992,t0,tb212992,f4096,w0,o640,bl0)",
        "tcp ESTAB 0 0 10.0.0.5:22 10.0.0.7:50000",
    ]
    assert _reread_line(lines, "Y") == "( sport = :30053 )"
    assert _reread_line(lines[3:], "Y") is None


def test_a_udp_socket_still_full_seconds_later_is_found_and_one_that_kept_up_is_not():
    [later] = [f.attrs for f in parse("socket_reads", "lab-udp-hung")
               if f.kind == "udp_socket_later"]
    assert later == {"local": "0.0.0.0:30053", "recv_q": 212480, "rcvbuf": 212992,
                     "drops": 1834, "fill_pct": 99.8, "interval_s": 2.0}
    facts = parse("sockets", "lab-udp-hung") + parse("socket_reads", "lab-udp-hung")
    assert [(f["rule"], f["nodes"]) for f in infer(ruleset(), facts)
            if f["fault"] == "udp_buffer_errors"] == [("udp-socket-full-and-dropping", ["node2"])]
    # the server that dropped 1834 in a burst long past and keeps up: 1280 bytes queued
    past = parse("sockets", "lab-udp-drops-from-the-past")
    [sock] = [f.attrs for f in past if f.kind == "udp_socket" and f.attrs["port"] == 30054]
    assert (sock["drops"], sock["fill_pct"]) == (1834, 0.6)
    assert not [f for f in infer(ruleset(), past) if f["fault"] == "udp_buffer_errors"]


def test_full_listeners_are_named_once_per_port():
    lines = [
        "tcp LISTEN 2 1 0.0.0.0:30080 0.0.0.0:* users:((\"python\",pid=15219,fd=3))",
        "tcp LISTEN 129 128 [::]:30080 [::]:*",  # the same port on IPv6
        "tcp LISTEN 3 128 0.0.0.0:8080 0.0.0.0:*",  # a few waiting: not full
        "tcp LISTEN 0 0 0.0.0.0:9 0.0.0.0:*",  # backlog 0: nothing to compare
    ]
    assert _reread_line(lines, "Z") == "( sport = :30080 )"
    assert _reread_line(lines[2:], "Z") is None


def test_a_listener_still_full_seconds_later_is_found():
    [later] = [f.attrs for f in parse("socket_reads", "lab-listener-stuck")
               if f.kind == "tcp_listener_later"]
    assert later == {"local": "0.0.0.0:30080", "accept_queue": 2, "backlog": 1, "full": True,
                     "interval_s": 2.0}
    facts = parse("sockets", "lab-listener-stuck") + parse("socket_reads", "lab-listener-stuck")
    overflows = Fact("net_counter", "node2", {
        "name": "TcpExtListenOverflows", "group": "TcpExt", "counter": "ListenOverflows",
        "value": 66, "delta": 0, "interval_s": 2.0, "rate_per_s": 0.0, "rising": False})
    assert [f["rule"] for f in infer(ruleset(), [*facts, overflows])
            if f["fault"] == "listen_queue_overflow"] == ["listener-queue-full"]
    # the same listener found drained when read again: a burst it has caught up with
    drained = [f for f in facts if f.kind != "tcp_listener_later"] + [Fact(
        "tcp_listener_later", "node2", {**later, "accept_queue": 0, "full": False})]
    assert not [f for f in infer(ruleset(), [*drained, overflows])
                if f["fault"] == "listen_queue_overflow"]


FAKE_SS = r"""
ss() {
  echo "$*" >> "$KND_T/calls"
  case "$1" in
  -tuanmp) printf '%s\n' 'Netid State Recv-Q Send-Q Local Address:Port Peer Address:Port' \
    'tcp ESTAB '"$KND_Q"' 0 127.0.0.1:30070 127.0.0.1:52876 users:(("python",pid=77,fd=4))' \
    'udp UNCONN '"$KND_Q"' 0 0.0.0.0:30053 0.0.0.0:*' \
    "	 skmem:(r$KND_Q,rb212992,t0,tb212992,f0,w0,o0,bl0,d9)" \
    'tcp LISTEN '"$KND_L"' 1 0.0.0.0:30080 0.0.0.0:*';;
  -ltn) printf '%s\n' 'State Recv-Q Send-Q Local Address:Port Peer Address:Port' \
    "LISTEN 2 1 0.0.0.0:30080 0.0.0.0:*";;
  -uanm) printf '%s\n' 'State Recv-Q Send-Q Local Address:Port Peer Address:Port' \
    "UNCONN $KND_Q 0 0.0.0.0:30053 0.0.0.0:*" \
    "	 skmem:(r$KND_Q,rb212992,t0,tb212992,f0,w0,o0,bl0,d9)";;
  -tni) printf '%s\n' 'State Recv-Q Send-Q Local Address:Port Peer Address:Port' \
    "ESTAB $KND_Q 0 127.0.0.1:30070 127.0.0.1:52876" \
    "	 cubic bytes_received:$((KND_Q + 16384)) segs_in:8";;
  esac
}
"""


def _run_both(tmp_path: Path, queue: int) -> tuple[dict, list[str]]:
    probes = [BY_NAME["sockets"], BY_NAME["socket_reads"]]
    marker = new_marker()
    proc = subprocess.run(["sh", "-s"], input=FAKE_SS + build_script(probes, marker),
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "KND_T": str(tmp_path),
                               "KND_Q": str(queue), "KND_L": "2" if queue >= 32768 else "0"})
    sections = {s.probe: s for s in split_output(proc.stdout, proc.stderr, marker, probes)}
    calls = (tmp_path / "calls").read_text().splitlines()
    return sections, calls


def test_the_connection_is_read_twice_two_seconds_apart_in_one_script(tmp_path):
    sections, calls = _run_both(tmp_path, 129024)
    assert calls == ["-tuanmp", "-tni ( sport = :30070 and dport = :52876 )",
                     "-tni ( sport = :30070 and dport = :52876 )", "-uanm ( sport = :30053 )",
                     "-ltn ( sport = :30080 )"]
    facts = BY_NAME["socket_reads"].parse(sections["socket_reads"], "n1")
    [conn] = progress(facts)
    assert conn["read_bytes"] == 0 and conn["interval_s"] >= 2
    [udp] = [f.attrs for f in facts if f.kind == "udp_socket_later"]
    assert udp["fill_pct"] == 60.6 and udp["interval_s"] >= 2
    [listener] = [f.attrs for f in facts if f.kind == "tcp_listener_later"]
    assert listener["full"] is True and listener["interval_s"] >= 2


def test_a_node_without_a_full_queue_is_not_read_again(tmp_path):
    sections, calls = _run_both(tmp_path, 2066)
    assert calls == ["-tuanmp"]
    assert sections["socket_reads"].stdout.strip() == ""
    assert sections["socket_reads"].exit_code == 0
