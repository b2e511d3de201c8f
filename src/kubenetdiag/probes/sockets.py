"""Sockets: TCP listeners with accept-queue depth vs backlog and their process, the open file
descriptors of each listener's process against its limit, sockets with a large Recv-Q/Send-Q,
TCP state counts (TIME_WAIT above all), CLOSE-WAIT sockets per process and FIN-WAIT-2 and
TIME_WAIT sockets per peer, UDP sockets with their buffer sizes and drops, and /proc/net/sockstat.

One `ss -tanp` pass, reduced on the node by awk: a node with 100k TIME_WAIT sockets sends us a
dozen count lines, not 100k. Without ss the counts and listeners come from /proc/net/tcp, and a
probe_status says what that cannot show (backlog, owning process, UDP buffers).

Sample output and the facts it gives:

>>> out = (
...     '##knd:tcp ss\\n'
...     'L LISTEN 129    128          0.0.0.0:80         0.0.0.0:*    use'
...     'rs:(("nginx",pid=911,fd=6))\\n'
...     'S ESTAB 3\\n'
...     'S TIME-WAIT 2\\n'
... )
>>> facts = parse(Section("sockets", "", 0, 0.0, out, ""), "node1")
>>> [(f.kind, f.attrs.get("port"), f.attrs.get("full"), f.attrs.get("time_wait"))
...  for f in facts]
[('tcp_listener', 80, True, None), ('tcp_states', None, None, 2)]
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.probes.base import NEWLINE, Probe, Section, from_sysctl_read, read_files
from kubenetdiag.probes.sysctl import SYSCTL_READ
from kubenetdiag.probes.text import clip, parts, to_int

QUEUE_BYTES = 1024  # a socket holding more than this in a queue is worth a look
# (docs/runbooks.md#runbook-004 says more than 100)
MAX_LINES = 200
MAX_UDP = 2000
MAX_FD_PIDS = 64
# A process's CLOSE-WAIT sockets are reported from this many on, for at most this many processes
CLOSE_WAIT_FLOOR = 16
MAX_CLOSE_WAIT_OWNERS = 50
# The same for FIN-WAIT-2 sockets per peer address and port: the connections this node closed
# and the peer has not (an orphan waits tcp_fin_timeout for it, a socket its process still
# holds waits for ever)
FIN_WAIT2_FLOOR = 16
MAX_FIN_WAIT2_PEERS = 50
# And TIME_WAIT per peer address and port: many toward one destination are connections this
# node opened and closed first, each holding one of its local ports for 60 s (a server's
# TIME_WAITs, one per client address and port, never gather here)
TIME_WAIT_FLOOR = 500
MAX_TIME_WAIT_PEERS = 50
# Connections holding this much unread are read again later (socket_reads), to tell a reader
# that stopped from one caught between two reads; at most MAX_REREAD of them (one ss filter).
REREAD_BYTES = 32768
MAX_REREAD = 16

# One ss for TCP and UDP, one awk to sort its lines (Netid first; an indented line is the
# skmem of the socket above it): TCP as listeners (L), queues past QUEUE_BYTES (Q), a count
# per state (S), CLOSE-WAIT per owner (W), FIN-WAIT-2 (R) and TIME-WAIT (T) per peer, and ss
# filters for the sockets socket_reads reads again: the connections with REREAD_BYTES unread
# (X, by their ports), the UDP sockets (Y) and the listeners (Z) below; UDP as ss prints it,
# skmem and all, after them.
_SS_AWK = (
    "BEGIN{print \"##knd:tcp ss-all\"} NR==1{next} "
    "/^[ \\t]/{if(u){uy($0); if(k<" + str(MAX_UDP) + "){k++;U[k]=$0}}; next} "
    "{p=$1; sub(/^[^ \\t]+[ \\t]+/, \"\"); u=(p==\"udp\")} "
    "u{up=$4; sub(/.*:/, \"\", up); uq=$2+0; uy($0); if(k<" + str(MAX_UDP)
    + "){k++;U[k]=$0}; next} p!=\"tcp\"{next} "
    "{n[$1]++} $1==\"LISTEN\"{if(l<m){l++;print \"L \" $0; pids($0)}; lz($0); next} "
    "$1==\"CLOSE-WAIT\"{cw($0)} $1==\"FIN-WAIT-2\"{F[$5]++} $1==\"TIME-WAIT\"{T[$5]++} "
    "($2+0>t||$3+0>t)&&q<m{q++;print \"Q \" $0} "
    "($1==\"ESTAB\"||$1==\"CLOSE-WAIT\")&&$2+0>=" + str(REREAD_BYTES) + "&&nx<"
    + str(MAX_REREAD) + "{a=$4; b=$5; sub(/.*:/, \"\", a); sub(/.*:/, \"\", b); "
    "if(a~/^[0-9]+$/&&b~/^[0-9]+$/){nx++; X=X (X==\"\"?\"\":\" or \") "
    "\"( sport = :\" a \" and dport = :\" b \" )\"}} "
    "END{for(s in n) print \"S \" s \" \" n[s]; if(X!=\"\") print \"X \" X; "
    "if(Y!=\"\") print \"Y \" Y; if(Z!=\"\") print \"Z \" Z; "
    "for(o in W) if(W[o]>=" + str(CLOSE_WAIT_FLOOR) + "&&nw<" + str(MAX_CLOSE_WAIT_OWNERS)
    + "){nw++; print \"W \" W[o] \" \" o}; "
    "for(r in F) if(F[r]>=" + str(FIN_WAIT2_FLOOR) + "&&nr<" + str(MAX_FIN_WAIT2_PEERS)
    + "){nr++; print \"R \" F[r] \" \" r}; "
    "for(r in T) if(T[r]>=" + str(TIME_WAIT_FLOOR) + "&&nt<" + str(MAX_TIME_WAIT_PEERS)
    + "){nt++; print \"T \" T[r] \" \" r}; print \"##knd:udp ss-all\"; "
    "for(i=1;i<=k;i++) print U[i]; printf \"##knd:fds\\nP\"; for(p in P) printf \" %s\", p; "
    "print \"\"}"
)
# A UDP socket that has dropped datagrams and is at least half full (skmem's r against rb) is
# read again too (socket_reads): the Y line, an ss filter by its port. Its skmem is on its own
# line or on the next, indented (older ss).
_UDP_REREAD_AWK = (
    "function uy(s, rb, d){if(!match(s, /skmem:\\([^)]*\\)/)) return; "
    "s=substr(s, RSTART, RLENGTH); rb=0; d=0; "
    "if(match(s, /rb[0-9]+/)) rb=substr(s, RSTART+2, RLENGTH-2)+0; "
    "if(match(s, /,d[0-9]+/)) d=substr(s, RSTART+2, RLENGTH-2)+0; "
    "if(d>0&&rb>0&&uq*2>=rb&&up~/^[0-9]+$/&&!(up in Yp)&&ny<" + str(MAX_REREAD) + "){"
    "ny++; Yp[up]=1; Y=Y (Y==\"\"?\"\":\" or \") \"( sport = :\" up \" )\"}} "
)
# A listener whose accept queue is full (Recv-Q at its backlog, Send-Q) is read again too: the Z
# line, by its port.
_LISTEN_REREAD_AWK = (
    "function lz(s, a, w){split(s, w); a=w[4]; sub(/.*:/, \"\", a); "
    "if(w[3]+0>0&&w[2]+0>=w[3]+0&&a~/^[0-9]+$/&&!(a in Zp)&&nz<" + str(MAX_REREAD) + "){"
    "nz++; Zp[a]=1; Z=Z (Z==\"\"?\"\":\" or \") \"( sport = :\" a \" )\"}} "
)
# The listeners' owners, for the file-descriptor count below: `pid=N` (current ss) or `"comm",N,fd`
# (iproute 3.10), at most MAX_FD_PIDS of them.
_PIDS_AWK = (
    "function pids(s, x){while(match(s, /pid=[0-9]+/)||match(s, /\",[0-9]+,/)){"
    "x=substr(s, RSTART, RLENGTH); gsub(/[^0-9]/, \"\", x); if(x!=\"\"&&np<" + str(MAX_FD_PIDS)
    + "&&!(x in P)){P[x]=1; np++}; s=substr(s, RSTART+RLENGTH)}} "
)
# CLOSE-WAIT sockets counted per owner ("PID COMM", "- -" without one), both users:() forms.
_CLOSE_WAIT_AWK = (
    "function cw(s, c, p){c=\"-\"; p=\"-\"; "
    "if(match(s, /\\(\"[^\"]*\",pid=[0-9]+/)||match(s, /\\(\"[^\"]*\",[0-9]+,/)){"
    "c=substr(s, RSTART+2, RLENGTH-2); p=c; sub(/\".*/, \"\", c); sub(/^.*\",(pid=)?/, \"\", p); "
    "sub(/,$/, \"\", p)}; W[p \" \" c]++} "
)
# The whole awk program the node runs over ss's output
AWK = _PIDS_AWK + _CLOSE_WAIT_AWK + _UDP_REREAD_AWK + _LISTEN_REREAD_AWK + _SS_AWK
SS = "ss -tuanmp"
REREAD = "ss -tni"
REREAD_UDP = "ss -uanm"
REREAD_LISTEN = "ss -ltn"
# How many descriptors each listener's process holds against its RLIMIT_NOFILE: the shell
# globs /proc/PID/fd (no process per pid; a login that is not root cannot list another user's,
# which leaves the count unknown) and reads /proc/PID/limits. Once a process holds its soft
# limit, accept() fails with EMFILE and the kernel's accept queue fills behind it.
_FDS = (
    "case $__so in *\"${__nl}P \"*) __ps=${__so##*\"${__nl}P \"};; *) __ps=;; esac; "
    "for __p in $__ps; do set -- /proc/$__p/fd/*; __c=$#; [ -L \"$1\" ] || __c=-; __s=-; __h=-; "
    "{ while read -r __a __b __f __d __e __g; do case \"$__a $__b $__f\" in "
    "'Max open files') __s=$__d; __h=$__e; break;; esac; done <\"/proc/$__p/limits\"; } "
    "2>/dev/null; echo \"F $__p $__c $__s $__h\"; done"
)
# The first reading of the connections the X line names, with their byte counts (ss -i), kept
# in the shell for socket_reads, which reads them again later and prints both: a reader that
# read nothing in between has stopped. The UDP sockets of the Y line and the listeners of the Z
# line were read by the ss above; socket_reads reads them once more. Nothing runs when no socket
# is that full.
def _take(line: str, var: str, then: str = "") -> str:
    """Shell that sets `var` to the rest of $__so's line starting `line `, then runs `then`."""
    return (f"case $__so in *\"${{__nl}}{line} \"*) {var}=${{__so##*\"${{__nl}}{line} \"}}; "
            f"{var}=${{{var}%%\"$__nl\"*}}{'; ' + then if then else ''};; esac")


_REREAD_FIRST = "; ".join((
    "__knd_cs; __rq_cs=$__cs",
    _take("X", "__rq_filter", "__rq_first=$(" + REREAD + " \"$__rq_filter\" 2>&1)"),
    _take("Y", "__ru_filter"),
    _take("Z", "__rl_filter"),
))
COMMAND = (
    "__rq_filter=; __ru_filter=; __rl_filter=; if command -v ss >/dev/null 2>&1; then " + NEWLINE
    + f"__so=$({SS} | awk -v t={QUEUE_BYTES} -v m={MAX_LINES} "
    f"'{AWK}'); "
    "printf '%s\\n' \"$__so\"; " + _FDS + "; " + _REREAD_FIRST + "; "
    "else echo 'kubenetdiag: ss: command not found' >&2; "
    "echo '##knd:tcp proc'; cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v m="
    + str(MAX_LINES) + " '$1==\"sl\"{next} {n[$4]++} $4==\"0A\"&&l<m{l++;print \"L \" $0} "
    "END{for(s in n) print \"S \" s \" \" n[s]}'; fi; "
    + read_files("/proc/net/sockstat /proc/net/sockstat6", head="##knd:sockstat") + "; "
    # the thresholds sockstat's `mem` (pages) is judged against: low, pressure, max. tcp_mem is
    # host-wide and only the initial network namespace has the file: a node that is itself a
    # namespace (a lab node, a node in a container) lacks it, and that leaves the thresholds
    # unknown rather than failing the probe.
    # (the script's one grep of /proc/sys, sysctl.SYSCTL_READ, where it ran)
    + from_sysctl_read("net/ipv4/tcp_mem:*", strip="net/ipv4/tcp_mem:", head="##knd:tcpmem")
    + " || { echo '##knd:tcpmem'; cat /proc/sys/net/ipv4/tcp_mem 2>/dev/null; } || :"
)

# How a section's TCP and UDP parts were made: one ss for both, or (older versions of this
# probe) `ss -tanp` and `ss -uanmp`.
_SS_COMMANDS = {"ss-all": SS, "ss": "ss -tanp"}

STATES = {  # ss names and /proc/net/tcp hex codes -> the names facts use
    "ESTAB": "established", "SYN-SENT": "syn_sent", "SYN-RECV": "syn_recv",
    "FIN-WAIT-1": "fin_wait1", "FIN-WAIT-2": "fin_wait2", "TIME-WAIT": "time_wait",
    "UNCONN": "close", "CLOSE": "close", "CLOSE-WAIT": "close_wait", "LAST-ACK": "last_ack",
    "LISTEN": "listen", "CLOSING": "closing",
    "01": "established", "02": "syn_sent", "03": "syn_recv", "04": "fin_wait1",
    "05": "fin_wait2", "06": "time_wait", "07": "close", "08": "close_wait", "09": "last_ack",
    "0A": "listen", "0B": "closing", "0C": "syn_recv",
}
_USERS_NEW = re.compile(r'\("([^"]*)",pid=(\d+)')
_USERS_OLD = re.compile(r'\("([^"]*)",(\d+),\d+\)')  # iproute 3.10 (CentOS 7.0-7.6)
_SKMEM = re.compile(r"skmem:\(([^)]*)\)")


def _process(text: str) -> tuple[str | None, int | None]:
    m = _USERS_NEW.search(text) or _USERS_OLD.search(text)
    return (clip(m.group(1), 64), int(m.group(2))) if m else (None, None)


def _skmem(line: str) -> dict[str, int | None]:
    m = _SKMEM.search(line)
    if not m:
        return {}
    mem = dict(re.findall(r"([a-z]+)(\d+)", m.group(1)))
    return {"rcvbuf": to_int(mem.get("rb")), "sndbuf": to_int(mem.get("tb")),
            "drops": to_int(mem.get("d"))}


def listener_full(queue: int, backlog: int) -> bool:
    """Whether a listener's accept queue (ss's Recv-Q) is at its limit (Send-Q): ss shows
    backlog+1 queued once it has overflowed."""
    return queue > backlog or (backlog > 0 and queue >= backlog)


def fill_pct(queued: int | None, buffer: int | None) -> float | None:
    """How full a UDP socket's receive buffer is, in percent: ss's Recv-Q (the memory its
    queued datagrams take) against skmem's rb. A reader that stopped leaves it at 100 or just
    above; a busy one, a few datagrams deep, far below.

    >>> fill_pct(213248, 212992), fill_pct(6912, 212992), fill_pct(0, None)
    (100.1, 3.2, None)
    """
    return round(100.0 * queued / buffer, 1) if queued is not None and buffer else None


def udp_sockets(lines: list[str]) -> list[dict]:
    """ss's UDP lines, each with its skmem (on the line or the next, indented, as older ss
    prints it), as dicts; `raw` is the line."""
    sockets: list[dict] = []
    for line in lines:
        w = line.split()
        if w and w[0].startswith("skmem:") and sockets:
            sockets[-1].update(_skmem(line))  # older ss: on the next line, indented
        elif len(w) >= 5 and to_int(w[1]) is not None and to_int(w[2]) is not None:
            proc, pid = _process(line)
            sockets.append({"state": w[0].lower(), "local": clip(w[3], 80),
                            "port": port_of(w[3]), "recv_q": to_int(w[1]),
                            "send_q": to_int(w[2]), "rcvbuf": None, "sndbuf": None,
                            "drops": None, "process": proc, "pid": pid, "raw": line,
                            **_skmem(line)})
    return sockets


def _wildcard(addr: str) -> bool:
    """A listener on every address of its family: ss prints 0.0.0.0, *, [::] or :: (old ss
    `:::22`); /proc/net/tcp's all-zero addresses are decoded to the same.

    >>> [_wildcard(a) for a in ("0.0.0.0:80", "*:80", "[::]:80", ":::22", "10.0.0.5:80",
    ...                         "127.0.0.53%lo:53", "[::ffff:0.0.0.0]:80")]
    [True, True, True, True, False, False, True]
    """
    host = addr.rsplit(":", 1)[0].split("%", 1)[0]
    return host in ("0.0.0.0", "*", "[::]", "::", "[::ffff:0.0.0.0]")


def port_of(addr: str) -> int | None:
    return to_int(addr.rsplit(":", 1)[-1]) if ":" in addr else None


def host_of(addr: str) -> str | None:
    """The address of `address:port` as ss prints it, an IPv4-mapped IPv6 one as IPv4, so it
    compares with a node's address; None when it is no address.

    >>> [host_of(a) for a in ("10.244.2.3:30084", "[::ffff:10.0.0.7]:80", "[fd00::5]:443",
    ...                     "::ffff:10.0.0.7:80", "*:*", "junk")]
    ['10.244.2.3', '10.0.0.7', 'fd00::5', '10.0.0.7', None, None]
    """
    host = addr.rsplit(":", 1)[0].strip("[]").split("%", 1)[0] if ":" in addr else ""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


def hex_address(h: str) -> str:
    """/proc/net/tcp's `0100007F:0016` -> `127.0.0.1:22`, and /proc/net/tcp6's four 32-bit
    words, each in the host's byte order (little-endian, as the IPv4 form assumes too):
    `00000000000000000000000001000000:1F90` -> `[::1]:8080`."""
    ip, _, port = h.partition(":")
    try:
        p = int(port, 16)
        raw = bytes.fromhex(ip)
        if len(raw) == 4:
            return f"{ipaddress.IPv4Address(raw[::-1])}:{p}"
        if len(raw) == 16:
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
            return f"[{ipaddress.IPv6Address(words)}]:{p}"
    except ValueError:
        pass
    return h


def _tcp_mem_state(pages: int | None, tcp_mem: list[int]) -> dict[str, int | str | None]:
    """Where TCP's memory stands against net.ipv4.tcp_mem (low, pressure, max, in pages): the
    kernel shrinks socket buffers from `pressure` on and refuses memory at `max`.

    >>> _tcp_mem_state(153, [21888, 29184, 43776])["tcp_mem_state"]
    'normal'
    >>> _tcp_mem_state(30000, [21888, 29184, 43776])["tcp_mem_state"]
    'pressure'
    >>> _tcp_mem_state(43776, [21888, 29184, 43776])["tcp_mem_state"]
    'max'
    >>> _tcp_mem_state(153, [])["tcp_mem_state"] is None
    True
    """
    if not tcp_mem or pages is None:
        return {"tcp_mem_pressure_pages": tcp_mem[1] if tcp_mem else None,
                "tcp_mem_max_pages": tcp_mem[2] if tcp_mem else None, "tcp_mem_state": None}
    _low, pressure, top = tcp_mem
    state = "max" if pages >= top else "pressure" if pages >= pressure else "normal"
    return {"tcp_mem_pressure_pages": pressure, "tcp_mem_max_pages": top,
            "tcp_mem_state": state}


def _fd_limit(word: str) -> int | None:
    return to_int(word) if word.isdigit() else None  # "unlimited", or "-": not read


def _process_fds(lines: list[list[str]], facts: list[Fact], node: str,
                 src: Callable[[str, str], Source]) -> list[Fact]:
    """One process_fds fact per listener's process: `F PID OPEN SOFT HARD` lines, `-` where
    a value could not be read. A process gone since ss listed it has neither count nor limit
    and gives no fact.

    >>> from kubenetdiag.facts.model import Source
    >>> lst = [Fact("tcp_listener", "n1", {"port": 8080, "pid": 77, "process": "app"}, None)]
    >>> [f.attrs for f in _process_fds([["F", "77", "64", "64", "4096"]], lst, "n1",
    ...                                lambda c, t: Source("sockets", c, 0, t))]
    ... # doctest: +NORMALIZE_WHITESPACE
    [{'pid': 77, 'process': 'app', 'ports': '8080', 'open': 64, 'limit': 64,
      'hard_limit': 4096, 'free': 0, 'usage_pct': 100.0, 'at_limit': True}]
    """
    owners: dict[int, tuple[str | None, set[int]]] = {}
    for f in facts:
        if f.kind == "tcp_listener" and f.attrs.get("pid") is not None:
            name, ports = owners.setdefault(f.attrs["pid"], (f.attrs.get("process"), set()))
            if f.attrs.get("port") is not None:
                ports.add(f.attrs["port"])
    out = []
    for w in lines:
        pid = to_int(w[1]) if len(w) == 5 else None
        if pid is None:
            continue
        open_, soft, hard = to_int(w[2]), _fd_limit(w[3]), _fd_limit(w[4])
        if open_ is None and soft is None and w[3] != "unlimited":
            continue
        name, ports = owners.get(pid, (None, set()))
        free = soft - open_ if soft is not None and open_ is not None else None
        out.append(Fact("process_fds", node, {
            "pid": pid, "process": name,
            "ports": ",".join(str(p) for p in sorted(ports)) or None,
            "open": open_, "limit": soft, "hard_limit": hard, "free": free,
            "usage_pct": round(100.0 * open_ / soft, 1) if free is not None and soft else None,
            # accept() fails with EMFILE at the limit; within 1% of it, at the next burst
            "at_limit": None if free is None else free <= max(1, soft // 100),
        }, src(f"ls /proc/{pid}/fd | wc -l; grep 'Max open files' /proc/{pid}/limits",
               " ".join(w))))
    return out


def parse(section: Section, node: str) -> list[Fact]:
    facts: list[Fact] = []
    counts: dict[str, int] = {}
    tcp_source = None

    def src(cmd: str, text: str) -> Source:
        return Source("sockets", cmd, section.exit_code, clip(text, 500))

    tcp_mem: list[int] = []
    fd_lines: list[list[str]] = []
    for name, arg, lines in parts(section.stdout):
        if name == "tcp":
            tcp_source = arg
            cmd = _SS_COMMANDS.get(arg, "cat /proc/net/tcp /proc/net/tcp6")
            for line in lines:
                kind, _, rest = line.partition(" ")
                w = rest.split()
                if kind == "S" and len(w) == 2 and w[0] in STATES and w[1].isdigit():
                    state = STATES[w[0]]
                    counts[state] = counts.get(state, 0) + int(w[1])
                elif kind == "W" and len(w) >= 3 and to_int(w[0]) is not None:
                    owner = rest.split(None, 2)
                    facts.append(Fact("close_wait_process", node, {
                        "count": to_int(w[0]), "pid": to_int(w[1]),
                        "process": clip(owner[2], 64) if owner[2] != "-" else None,
                    }, src(cmd + " state close-wait (counted per process on the node)", rest)))
                elif kind == "R" and len(w) == 2 and to_int(w[0]) is not None:
                    facts.append(Fact("fin_wait2_peer", node, {
                        "peer": clip(w[1], 80), "address": host_of(w[1]), "port": port_of(w[1]),
                        "count": to_int(w[0]),
                    }, src(cmd + " state fin-wait-2 (counted per peer on the node)", rest)))
                elif kind == "T" and len(w) == 2 and to_int(w[0]) is not None:
                    facts.append(Fact("time_wait_peer", node, {
                        "peer": clip(w[1], 80), "address": host_of(w[1]), "port": port_of(w[1]),
                        "count": to_int(w[0]),
                    }, src(cmd + " state time-wait (counted per peer on the node)", rest)))
                elif kind in ("L", "Q") and arg in _SS_COMMANDS and len(w) >= 5:
                    recv_q, send_q = to_int(w[1]), to_int(w[2])
                    if recv_q is None or send_q is None:
                        continue
                    proc, pid = _process(rest)
                    if kind == "L":
                        facts.append(Fact("tcp_listener", node, {
                            "local": clip(w[3], 80), "port": port_of(w[3]),
                            "wildcard": _wildcard(w[3]),
                            "accept_queue": recv_q, "backlog": send_q,
                            "full": listener_full(recv_q, send_q),
                            "process": proc, "pid": pid,
                        }, src(cmd, rest)))
                    else:
                        facts.append(Fact("socket_queue", node, {
                            "proto": "tcp", "state": STATES.get(w[0], w[0].lower()),
                            "local": clip(w[3], 80), "peer": clip(w[4], 80),
                            "recv_q": recv_q, "send_q": send_q, "process": proc, "pid": pid,
                        }, src(cmd, rest)))
                elif kind == "L" and arg == "proc" and len(w) >= 5:
                    _tx, _, rx = w[4].partition(":")
                    try:
                        queue = int(rx, 16)
                    except ValueError:
                        continue
                    local = hex_address(w[1])
                    facts.append(Fact("tcp_listener", node, {
                        "local": local, "port": port_of(local), "wildcard": _wildcard(local),
                        "accept_queue": queue,
                        "backlog": None, "full": None, "process": None, "pid": None,
                    }, src(cmd, rest)))
        elif name == "udp":
            for a in udp_sockets(lines):
                # the bound sockets (DNS, VXLAN) and any that hold data or dropped: not every
                # short-lived client socket
                if a["state"] == "unconn" or a["recv_q"] or a["drops"]:
                    raw = a.pop("raw")
                    a.pop("state")
                    a["fill_pct"] = fill_pct(a["recv_q"], a["rcvbuf"])
                    facts.append(Fact("udp_socket", node, a,
                                      src(_SS_COMMANDS.get(arg, "ss -uanmp"), raw)))
        elif name == "fds":
            fd_lines = [line.split() for line in lines if line.startswith("F ")]
        elif name == "tcpmem":
            words = " ".join(lines).split()
            if len(words) == 3 and all(w.isdigit() for w in words):
                tcp_mem = [int(w) for w in words]
        elif name == "sockstat":
            stat: dict[str, int] = {}
            for line in lines:
                proto, _, rest = line.partition(":")
                w = rest.split()
                for k, v in zip(w[::2], w[1::2], strict=False):
                    if v.isdigit():
                        stat[f"{proto.strip().lower()}_{k}"] = int(v)
            if stat:
                facts.append(Fact("sockstat", node, {
                    "sockets_used": stat.get("sockets_used"),
                    "tcp_inuse": stat.get("tcp_inuse"), "tcp_orphan": stat.get("tcp_orphan"),
                    "tcp_tw": stat.get("tcp_tw"), "tcp_alloc": stat.get("tcp_alloc"),
                    "tcp_mem_pages": stat.get("tcp_mem"), "udp_inuse": stat.get("udp_inuse"),
                    "udp_mem_pages": stat.get("udp_mem"), "tcp6_inuse": stat.get("tcp6_inuse"),
                }, src("cat /proc/net/sockstat", "\n".join(lines[:6]))))
    facts += _process_fds(fd_lines, facts, node, src)
    for fact in facts:
        if fact.kind == "sockstat":
            fact.attrs.update(_tcp_mem_state(fact.attrs["tcp_mem_pages"], tcp_mem))
    if tcp_source:
        states = ("established", "syn_sent", "syn_recv", "fin_wait1", "fin_wait2", "time_wait",
                  "close", "close_wait", "last_ack", "listen", "closing")
        facts.append(Fact("tcp_states", node, {
            **{s: counts.get(s, 0) for s in states},
            "total": sum(counts.values()),
            "source": "ss" if tcp_source in _SS_COMMANDS else "/proc/net/tcp",
        }, src("ss -tan (counted on the node)",
               " ".join(f"{k}={v}" for k, v in sorted(counts.items())))))
    if tcp_source == "proc":
        facts.append(Fact("probe_status", node, {
            "probe": "sockets",
            "status": "missing_tool",
            "reason": "ss is not installed (iproute2); TCP states and listeners were read from "
                      "/proc/net/tcp instead",
            "blocks": "listen backlog and owning process, per-socket Recv-Q/Send-Q, UDP buffers",
            # /proc gave the listeners and states; the per-socket queues and UDP sockets are
            # what ss alone shows
            "kinds": "socket_queue,udp_socket",
        }, src("command -v ss", section.stderr)))
    return facts


PROBE = Probe(
    name="sockets",
    command=COMMAND,
    preludes=(SYSCTL_READ,),
    parse=parse,
    kinds=("tcp_listener", "socket_queue", "tcp_states", "sockstat", "udp_socket",
           "process_fds", "close_wait_process", "fin_wait2_peer", "time_wait_peer"),
    blocks="sockets (accept queues, listeners' open files, TIME_WAIT, CLOSE-WAIT and FIN-WAIT-2 "
           "counts, stuck Recv-Q/Send-Q, UDP buffers)",
    tools=("awk",),
    timeout_s=20,
)
