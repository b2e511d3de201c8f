"""Whether the programs behind full queues still drain them: a TCP connection's receive
queue, a UDP socket's buffer, a listener's accept queue.

TCP:

One look at a receive queue cannot tell a reader that stopped from a busy one caught between
two reads, or from a slow one that keeps up as best it can while its sender waits: all three
show bytes in Recv-Q. What tells them apart is whether the program reads. ss -i shows how many
bytes the connection has received (`bytes_received`, from tcp_info, Linux 4.1 and later); less
what still waits in the queue, that is what the program has read.

The sockets probe names the connections with at least sockets.REREAD_BYTES unread (its X
line), reads them once with `ss -tni` and keeps that in the shell (__rq_filter, __rq_first,
__rq_cs: the filter, the reading, and when it was taken). This probe, run after every other
one, reads them again no sooner than INTERVAL_S after the first and prints both readings. A
node with no such connection costs it nothing: not a process, not a sleep.

UDP: a socket that has dropped datagrams (skmem's d) and was half full or more (r against
rb) in the sockets probe's ss is read once more (`ss -uanm`, the Y line's filter by its port).
Its drop count is for the socket's whole life, so it may be a burst long past; a socket still
that full seconds later is a reader that does not keep up now.

Listeners: one whose accept queue was full (the Z line) is read once more (`ss -ltn`): a
server that stopped accepting is still full; a busy one caught at a burst has caught up.

Sample output and the fact it gives:

>>> out = (
...     "##knd:reading 1 100000\\n"
...     "State Recv-Q Send-Q Local Address:Port Peer Address:Port Process\\n"
...     "ESTAB 129024 0 127.0.0.1:30070 127.0.0.1:51420\\n"
...     "\\t bbr wscale:10,10 rto:204 bytes_received:145408 segs_in:8\\n"
...     "##knd:reading 2 100210\\n"
...     "State Recv-Q Send-Q Local Address:Port Peer Address:Port Process\\n"
...     "ESTAB 129024 0 127.0.0.1:30070 127.0.0.1:51420\\n"
...     "\\t bbr wscale:10,10 rto:204 bytes_received:145408 segs_in:8\\n"
... )
>>> [f.attrs for f in parse(Section("socket_reads", "", 0, 2.1, out, ""), "node1")]
... # doctest: +NORMALIZE_WHITESPACE
[{'state': 'established', 'local': '127.0.0.1:30070', 'peer': '127.0.0.1:51420',
  'recv_q_before': 129024, 'recv_q': 129024, 'read_bytes': 0, 'interval_s': 2.1}]
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.probes.base import Probe, Section, sleep_until, unread_lines
from kubenetdiag.probes.counters import MIN_INTERVAL_S
from kubenetdiag.probes.sockets import (
    REREAD,
    REREAD_LISTEN,
    REREAD_UDP,
    STATES,
    fill_pct,
    listener_full,
    udp_sockets,
)
from kubenetdiag.probes.text import clip, parts, to_int

INTERVAL_S = MIN_INTERVAL_S

COMMAND = (
    "[ -n \"$__rq_filter$__ru_filter$__rl_filter\" ] || return 0; "
    + sleep_until("$__rq_cs", INTERVAL_S) + "; "
    "if [ -n \"$__rq_filter\" ]; then "
    "printf '##knd:reading 1 %s\\n%s\\n' \"$__rq_cs\" \"$__rq_first\"; "
    "__knd_cs; echo \"##knd:reading 2 $__cs\"; "
    + REREAD + " \"$__rq_filter\"; fi; "
    "if [ -n \"$__ru_filter\" ]; then __knd_cs; echo \"##knd:udp $__rq_cs $__cs\"; "
    + REREAD_UDP + " \"$__ru_filter\"; fi; "
    "if [ -n \"$__rl_filter\" ]; then __knd_cs; echo \"##knd:listen $__rq_cs $__cs\"; "
    + REREAD_LISTEN + " \"$__rl_filter\"; fi"
)

_BYTES_RECEIVED = re.compile(r"\bbytes_received:(\d+)")


@dataclass
class _Conn:
    state: str
    recv_q: int
    received: int | None  # bytes_received; None where ss or the kernel does not show it
    line: str


def _reading(lines: list[str]) -> tuple[dict[tuple[str, str], _Conn], list[str]]:
    """The connections of one `ss -tni` reading by (local, peer), and the lines not read. An
    indented line is the tcp_info of the connection above it (every ss version)."""
    conns: dict[tuple[str, str], _Conn] = {}
    unread: list[str] = []
    last: _Conn | None = None
    for line in lines:
        w = line.split()
        if not w:
            continue
        if line[0] in " \t":
            if last is not None:
                m = _BYTES_RECEIVED.search(line)
                last.received = int(m.group(1)) if m else None
            continue
        last = None
        if w[0] in ("State", "Netid"):  # the header
            continue
        recv_q = to_int(w[1]) if len(w) >= 5 else None
        if recv_q is None or w[0] not in STATES:
            unread.append(line)
            continue
        last = conns[(clip(w[3], 80), clip(w[4], 80))] = _Conn(STATES[w[0]], recv_q, None, line)
    return conns, unread


def _interval(cs1: int | None, cs2: int | None) -> float | None:
    return round((cs2 - cs1) / 100, 2) if cs1 is not None and cs2 is not None else None


def _interval_of(arg: str) -> float | None:
    """The interval of a part whose header gives both readings' uptimes ("CS1 CS2")."""
    cs = arg.split()
    return _interval(to_int(cs[0]), to_int(cs[1])) if len(cs) == 2 else None


def _udp(arg: str, lines: list[str], node: str, section: Section) -> list[Fact]:
    """The UDP sockets read again: the first reading is the sockets probe's own udp_socket."""
    interval = _interval_of(arg)
    return [Fact("udp_socket_later", node, {
        "local": a["local"], "recv_q": a["recv_q"], "rcvbuf": a["rcvbuf"], "drops": a["drops"],
        "fill_pct": fill_pct(a["recv_q"], a["rcvbuf"]), "interval_s": interval,
    }, Source("socket_reads", f"{REREAD_UDP} '( sport = :PORT )'", section.exit_code,
              clip(a["raw"], 500))) for a in udp_sockets(lines)]


def _listen(arg: str, lines: list[str], node: str, section: Section) -> list[Fact]:
    """The full listeners read again: the first reading is the sockets probe's tcp_listener."""
    interval = _interval_of(arg)
    out = []
    for line in lines:
        w = line.split()
        if len(w) < 5 or w[0] != "LISTEN":
            continue  # ss's header, a blank line
        queue, backlog = to_int(w[1]), to_int(w[2])
        if queue is None or backlog is None:
            continue
        out.append(Fact("tcp_listener_later", node, {
            "local": clip(w[3], 80), "accept_queue": queue, "backlog": backlog,
            "full": listener_full(queue, backlog), "interval_s": interval,
        }, Source("socket_reads", f"{REREAD_LISTEN} 'sport = :PORT'", section.exit_code,
                  clip(line, 500))))
    return out


def parse(section: Section, node: str) -> list[Fact]:
    readings: dict[str, tuple[int | None, list[str]]] = {}
    facts: list[Fact] = []
    for name, arg, lines in parts(section.stdout):
        if name == "reading" and arg:
            number, _, cs = arg.partition(" ")
            readings[number] = (to_int(cs), lines)
        elif name == "udp":
            facts += _udp(arg, lines, node, section)
        elif name == "listen":
            facts += _listen(arg, lines, node, section)
    if "1" not in readings or "2" not in readings:
        return facts
    (cs1, lines1), (cs2, lines2) = readings["1"], readings["2"]
    first, unread1 = _reading(lines1)
    second, unread2 = _reading(lines2)
    interval = _interval(cs1, cs2)
    for key, now in second.items():
        then = first.get(key)
        if then is None:  # closed, or opened since: nothing to compare
            continue
        read = (None if then.received is None or now.received is None
                else (now.received - now.recv_q) - (then.received - then.recv_q))
        facts.append(Fact("socket_read_progress", node, {
            "state": now.state, "local": key[0], "peer": key[1],
            "recv_q_before": then.recv_q, "recv_q": now.recv_q,
            "read_bytes": read, "interval_s": interval,
        }, Source("socket_reads", f"{REREAD} '( sport = :PORT and dport = :PORT )' (twice)",
                  section.exit_code, clip(f"{then.line}\nthen\n{now.line}", 500))))
    return facts + unread_lines(section, node, unread1 + unread2,
                                "whether the programs behind full receive queues read them")


PROBE = Probe(
    name="socket_reads",
    command=COMMAND,
    parse=parse,
    kinds=("socket_read_progress", "udp_socket_later", "tcp_listener_later"),
    blocks="whether the programs behind full receive queues still read them",
    timeout_s=INTERVAL_S + 10,
    # after every other probe, the second samples' top-up included: their run time is the
    # interval, and this one seldom sleeps at all
    order=950,
)
