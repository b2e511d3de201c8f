"""The pods' own socket counters and listeners, sampled twice like the node's (counters).

A pod has a network namespace of its own, with its own TCP and UDP counters: a server in a pod
whose accept queue overflows, or whose UDP socket drops datagrams, counts it there, and the
node's /proc/net/netstat and `ss` show nothing of it. Most servers run in pods, so this is
where runbook 004's overflows usually are (`nsenter -t <pid> -n netstat -s` by hand).

Read without entering any namespace and without a process per pod: the shell picks the
processes whose network namespace is not its own (`[ /proc/PID/ns/net -ef /proc/self/ns/net ]`,
a test of the shell itself), and one awk reads, through /proc/PID/net, each namespace's local
addresses (fib_trie), the counters below (netstat, snmp), and, where those say there is
something to find, its listeners with connections waiting to be accepted (tcp, tcp6, where
ListenOverflows is not 0: the kernel lists listeners first, so the read stops at the first
other socket), its UDP sockets that dropped datagrams (udp, udp6, where UDP errors are
counted: their last column) and, where its sockstat counts 500 TIME_WAIT sockets or more, how
many go toward each peer (tcp, tcp6 read whole: a client in the pod that closes first holds a
local port for each).
The processes of one pod share its namespace and so its addresses: one is read per set of
addresses, and a namespace with no address but loopback (a service's private network) is no
pod's. The namespace is known by its addresses, which the API's pods name (the pod_names step
of the parse stage).

Sample output and the facts it gives:

>>> out = (
...     "##knd:sample 1\\n1000.00 1900.00\\n"
...     "ns 77 10.244.1.5\\nc 10.244.1.5 TcpExt ListenOverflows 40\\n"
...     "##knd:sample 2\\n1002.50 1904.00\\n"
...     "ns 77 10.244.1.5\\nc 10.244.1.5 TcpExt ListenOverflows 45\\n"
...     "l 10.244.1.5 00000000:1F90 3\\n"
... )
>>> facts = parse(Section("pod_counters", "", 0, 2.6, out, ""), "node1")
>>> [(f.kind, f.attrs["addresses"], f.attrs.get("name"), f.attrs.get("delta"),
...   f.attrs.get("local")) for f in facts]
[('pod_netns', '10.244.1.5', None, None, None), \
('pod_net_counter', '10.244.1.5', 'TcpExtListenOverflows', 5, None), \
('pod_listener', '10.244.1.5', None, None, '0.0.0.0:8080')]
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.probes.base import Probe, Section, TwoSample, unread_lines
from kubenetdiag.probes.counters import MIN_INTERVAL_S, change
from kubenetdiag.probes.sockets import (
    MAX_TIME_WAIT_PEERS,
    TIME_WAIT_FLOOR,
    hex_address,
    host_of,
    port_of,
)

# The counters a pod's server shows its trouble in (docs/runbooks.md#runbook-004): accept
# queues overflowing, segments dropped for want of memory or room, UDP datagrams dropped for a
# full receive buffer.
WATCH: tuple[tuple[str, str], ...] = (
    ("TcpExt", "ListenOverflows"), ("TcpExt", "ListenDrops"), ("TcpExt", "TCPBacklogDrop"),
    ("TcpExt", "TCPRcvQDrop"), ("Udp", "RcvbufErrors"), ("Udp", "InErrors"),
)
MAX_PROCESSES = 4096  # processes outside the node's namespace looked at, at most
MAX_NAMESPACES = 512  # a node runs 110 pods by default

# One line per finding, all under the sample's uptime line:
#   ns PID ADDRS            a namespace (ADDRS: its addresses, comma-separated, the key below)
#   c ADDRS GROUP NAME N    a watched counter that is not 0
#   l ADDRS LOCAL N         a listener with N connections waiting to be accepted (hex LOCAL)
#   u ADDRS LOCAL Q D       a UDP socket that dropped D datagrams, Q bytes (hex) queued now
#   t ADDRS REMOTE N        N sockets in TIME_WAIT toward one peer (hex REMOTE), from TWFLOOR on
#   hidden N                N processes whose namespace this login may not look at (not root)
#   missing awk             pods were found and there is no awk to read them
# The node's own addresses (awk's namespace is the node's) are no pod's: a process this login
# may not look at fails the shell's test, and reading its files shows the node's.
# The socket tables are read only where a counter says there is something to find in them
# (listeners where ListenOverflows is not 0, UDP sockets where UDP errors are not, TIME_WAIT
# where sockstat counts many): each read of /proc/net/tcp walks the kernel's whole socket
# hash table, shared by every namespace, about 1.3 ms on a lab node, where the counters and
# addresses cost 0.02 ms a file.
# Tests run it on a /proc of their own (ROOT).
AWK = r"""
function addrs(p,   f, l, k, prev) {
  f = ROOT "/" p "/net/fib_trie"; k = ""; prev = "";
  while ((getline l < f) > 0) {
    if (l ~ /\|-- /) { prev = l; sub(/.*\|-- /, "", prev) }
    else if (l ~ /\/32 host LOCAL/ && prev !~ /^127\./ && index("," k ",", "," prev ",") == 0)
      k = k (k == "" ? "" : ",") prev;
  }
  close(f); return k;
}
function counters(p, k,   f, j, l, w, g, h, n, i, names) {
  for (j = 0; j < 2; j++) {
    f = ROOT "/" p "/net/" (j ? "snmp" : "netstat"); split("", h);
    while ((getline l < f) > 0) {
      n = split(l, w, " "); g = w[1]; sub(/:$/, "", g);
      if (!(g in G)) continue;
      if (!(g in h)) { h[g] = l; continue }
      split(h[g], names, " "); delete h[g];
      for (i = 2; i <= n; i++) if ((g " " names[i]) in W && w[i] != 0) {
        print "c " k " " g " " names[i] " " w[i]; V[names[i]] = w[i];
      }
    }
    close(f);
  }
}
function listeners(p, k,   f, j, l, w, q) {
  for (j = 0; j < 2; j++) {
    f = ROOT "/" p "/net/tcp" (j ? "6" : ""); getline l < f;
    while ((getline l < f) > 0) {
      split(l, w, " "); if (w[4] != "0A") break;
      q = w[5]; sub(/.*:/, "", q); if (q != "00000000") print "l " k " " w[2] " " q;
    }
    close(f);
  }
}
function udp(p, k,   f, j, l, w, q) {
  for (j = 0; j < 2; j++) {
    f = ROOT "/" p "/net/udp" (j ? "6" : ""); getline l < f;
    while ((getline l < f) > 0) {
      split(l, w, " "); q = w[5]; sub(/.*:/, "", q);
      if (w[13] != "" && w[13] != "0") print "u " k " " w[2] " " q " " w[13];
    }
    close(f);
  }
}
function timewait(p, k,   f, j, l, w, n, t, c, m) {
  f = ROOT "/" p "/net/sockstat"; n = 0;
  while ((getline l < f) > 0) if (split(l, w, " ") >= 7 && w[1] == "TCP:" && w[6] == "tw") n = w[7];
  close(f);
  if (n + 0 < TWFLOOR) return;
  split("", c);
  for (j = 0; j < 2; j++) {
    f = ROOT "/" p "/net/tcp" (j ? "6" : ""); getline l < f;
    while ((getline l < f) > 0) { split(l, w, " "); if (w[4] == "06") c[w[3]]++ }
    close(f);
  }
  for (t in c) if (c[t] >= TWFLOOR && m++ < TWPEERS) print "t " k " " t " " c[t];
}
BEGIN {
  n = split(WATCHED, x, " ");
  for (i = 1; i < n; i += 2) { W[x[i] " " x[i + 1]] = 1; G[x[i]] = 1 }
  self = addrs("self");
  for (i = 1; i < ARGC; i++) {
    k = addrs(ARGV[i]);
    if (k == "" || k == self || (k in seen)) continue;
    if (++ns > MAXNS) break;
    seen[k] = 1; print "ns " ARGV[i] " " k; split("", V); counters(ARGV[i], k);
    if (V["ListenOverflows"] + 0 > 0) listeners(ARGV[i], k);
    if (V["RcvbufErrors"] + V["InErrors"] > 0) udp(ARGV[i], k);
    timewait(ARGV[i], k);
  }
  exit;
}
"""


def _dquoted(text: str) -> str:
    """`text` as one double-quoted shell word (the sample is kept in single quotes)."""
    body = " ".join(line.strip() for line in text.strip().splitlines())
    return '"' + re.sub(r'([\\$"`])', r"\\\1", body) + '"'


_WATCHED = " ".join(f"{g} {c}" for g, c in WATCH)
AWK_VARS = (f"-v WATCHED=\"{_WATCHED}\" -v MAXNS={MAX_NAMESPACES} -v TWFLOOR={TIME_WAIT_FLOOR} "
            f"-v TWPEERS={MAX_TIME_WAIT_PEERS} -v ROOT=/proc")
# `[ -ef ]` is the shell's own test: no process for the walk over /proc. A process whose
# namespace cannot be looked at is hidden from this login, unless it has no namespace left: a
# zombie (state Z, as containers' unreaped children are) or one exiting (X), or gone since the
# glob (no status to read).
THEN = (
    "__pp=; __pn=0; __ph=0; for __d in /proc/[0-9]*; do "
    "[ \"$__d/ns/net\" -ef /proc/self/ns/net ] && continue; "
    "if [ ! -e \"$__d/ns/net\" ]; then __st=; { while read -r __k __st __r; do "
    "[ \"$__k\" = State: ] && break; __st=; done <\"$__d/status\"; } 2>/dev/null; "
    "[ \"$__st\" = Z ] || [ \"$__st\" = X ] || [ -z \"$__st\" ] || __ph=$((__ph+1)); "
    "continue; fi; "
    f"__pp=\"$__pp ${{__d#/proc/}}\"; __pn=$((__pn+1)); [ $__pn -lt {MAX_PROCESSES} ] || break; "
    "done; [ $__ph = 0 ] || echo \"hidden $__ph\"; if [ -n \"$__pp\" ]; then "
    "if command -v awk >/dev/null 2>&1; then "
    f"awk {AWK_VARS} {_dquoted(AWK)} $__pp; else echo \"missing awk\"; fi; fi"
)
SAMPLING = TwoSample("pod_counters", "", MIN_INTERVAL_S, then=THEN)


def _local(hex_local: str) -> str | None:
    """/proc/net/tcp's `0100007F:1F90` (or tcp6's 32 hex digits) as `127.0.0.1:8080`, an
    IPv4-mapped address as IPv4; None when it is not that form."""
    shown = hex_address(hex_local)
    host = host_of(shown)
    if shown == hex_local or host is None:
        return None
    return f"[{host}]:{port_of(shown)}" if ":" in host else f"{host}:{port_of(shown)}"


@dataclass
class _Sample:
    namespaces: dict[str, int] = field(default_factory=dict)  # addresses -> pid
    values: dict[tuple[str, str, str], int] = field(default_factory=dict)
    listeners: dict[tuple[str, str], int] = field(default_factory=dict)  # -> waiting
    udp: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)  # -> queue, drops
    time_wait: dict[tuple[str, str], int] = field(default_factory=dict)  # toward a peer
    hidden: int = 0
    no_awk: bool = False
    unread: list[str] = field(default_factory=list)


def _addresses(text: str) -> str:
    """A namespace's key, checked: what a node printed is not trusted to be addresses."""
    for part in text.split(","):
        ipaddress.IPv4Address(part)
    return text


def _read(lines: list[str]) -> _Sample:
    out = _Sample()
    for line in lines:
        w = line.split()
        try:
            if len(w) == 3 and w[0] == "ns":
                out.namespaces[_addresses(w[2])] = int(w[1])
            elif len(w) == 5 and w[0] == "c":
                out.values[(w[1], w[2], w[3])] = int(w[4])
            elif len(w) == 4 and w[0] == "l":
                out.listeners[(w[1], w[2])] = int(w[3], 16)
            elif len(w) == 5 and w[0] == "u":
                out.udp[(w[1], w[2])] = (int(w[3], 16), int(w[4]))
            elif len(w) == 4 and w[0] == "t":
                out.time_wait[(w[1], w[2])] = int(w[3])
            elif len(w) == 2 and w[0] == "hidden":
                out.hidden = int(w[1])
            elif w == ["missing", "awk"]:
                out.no_awk = True
            elif w:
                out.unread.append(line)
        except ValueError:
            out.unread.append(line)
    return out


def parse(section: Section, node: str) -> list[Fact]:
    samples = SAMPLING.split(section.stdout)
    one, two = _read(samples.first), _read(samples.second)
    interval = samples.interval_s
    if one.no_awk or two.no_awk:
        return [_status(section, node, "missing_tool", "awk is not installed: the pods' network "
                        "namespaces were found and not read", None, "missing awk")]

    def src(excerpt_text: str) -> Source:
        return Source("pod_counters", "awk over /proc/<pid>/net of each pod (twice)",
                      section.exit_code, excerpt_text)

    facts = []
    for addrs, pid in sorted((two.namespaces or one.namespaces).items()):
        facts.append(Fact("pod_netns", node, {"addresses": addrs, "pid": pid},
                          src(f"pid {pid}: network namespace with {addrs}")))
        for group, counter in WATCH:
            key = (addrs, group, counter)
            before, after = one.values.get(key, 0), two.values.get(key, 0)
            if not before and not after:
                continue
            name = f"{group}{counter}"
            facts.append(Fact("pod_net_counter", node, {
                "addresses": addrs,
                "name": name,
                "group": group,
                "counter": counter,
                "value": after if addrs in two.namespaces else before,
                # a counter the awk left out is 0 in a namespace that sample read
                **change(before if addrs in one.namespaces else None,
                         after if addrs in two.namespaces else None, interval),
            }, src(f"{name} in the namespace of {addrs}: {before} -> {after} "
                   f"over {interval}s")))
    for (addrs, hex_local), queue in sorted(two.listeners.items()):
        local = _local(hex_local)
        if local is None or addrs not in two.namespaces:
            continue
        before = one.listeners.get((addrs, hex_local), 0)
        facts.append(Fact("pod_listener", node, {
            "addresses": addrs,
            "local": local,
            "port": port_of(local),
            "accept_queue": queue,
            "accept_queue_before": before,
        }, src(f"{local} in the namespace of {addrs}: {before}, then {queue} connection(s) "
               "waiting to be accepted")))
    for (addrs, hex_local), (queue, drops) in sorted(two.udp.items()):
        local = _local(hex_local)
        if local is None or addrs not in two.namespaces:
            continue
        before = one.udp.get((addrs, hex_local), (0, 0))[0]
        facts.append(Fact("pod_udp_socket", node, {
            "addresses": addrs,
            "local": local,
            "port": port_of(local),
            "recv_q": queue,
            "recv_q_before": before,
            "drops": drops,
        }, src(f"UDP {local} in the namespace of {addrs}: {drops} datagram(s) dropped, "
               f"{before}, then {queue} bytes queued")))
    for (addrs, hex_peer), count in sorted(two.time_wait.items()):
        peer = _local(hex_peer)
        if peer is None or addrs not in two.namespaces:
            continue
        facts.append(Fact("pod_time_wait_peer", node, {
            "addresses": addrs,
            "peer": peer,
            "address": host_of(peer),
            "port": port_of(peer),
            "count": count,
        }, src(f"{count} sockets in TIME_WAIT in the namespace of {addrs} toward {peer}")))
    hidden, unread = two.hidden or one.hidden, one.unread + two.unread
    return (facts + _hidden(section, node, hidden, bool(two.namespaces))
            + unread_lines(section, node, unread, "pods' counters and listeners"))


def _hidden(section: Section, node: str, hidden: int, some: bool) -> list[Fact]:
    """What a login that is not root could not see: other users' processes, the pods' among
    them. With no namespace read at all, the pods' facts are unknown, not absent."""
    if not hidden:
        return []
    return [_status(section, node, "partial",
                    f"{hidden} process(es) whose network namespace this login may not look at "
                    "(log in as root): the pods among them were not read",
                    "" if some else None, f"hidden {hidden}")]


def _status(section: Section, node: str, status: str, reason: str, kinds: str | None,
            line: str) -> Fact:
    return Fact("probe_status", node, {
        "probe": section.probe, "status": status, "reason": reason, "blocks": PROBE.blocks,
        "kinds": kinds,
    }, Source(section.probe, section.command, section.exit_code, line))


PROBE = Probe(
    name="pod_counters",
    command=SAMPLING.command,
    parse=parse,
    kinds=("pod_netns", "pod_net_counter", "pod_listener", "pod_udp_socket",
           "pod_time_wait_peer"),
    blocks="the pods' own accept-queue overflows, UDP buffer drops, listeners with "
    "connections waiting, UDP sockets that dropped datagrams and TIME_WAIT sockets piling "
    "toward one peer",
    timeout_s=MIN_INTERVAL_S + 10,
    preludes=(SAMPLING.prelude,),
    sampling=SAMPLING,
    # with counters, after every other probe: their run time is the interval
    order=899,
)
