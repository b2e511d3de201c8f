"""Kernel drop and error counters, sampled twice so a fact says whether a counter is rising
*now* rather than merely non-zero since boot (a node up for a year has ListenOverflows from
incidents long past).

The counters come from /proc/net/snmp, /proc/net/netstat and /proc/net/stat/nf_conntrack,
which is where `nstat` and `netstat -s` read them, but reading them directly writes nothing:
`nstat` without `-s` would keep a history file on the node. The first sample is taken by the
script's prelude, before any other probe runs, and the second at this probe's turn at the end:
the other probes' run time is the interval, topped up with a sleep to MIN_INTERVAL_S.
"""

from __future__ import annotations

import contextlib

from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.probes.base import Probe, Section, prelude_var
from kubenetdiag.probes.conntrack import sum_proc_stat
from kubenetdiag.probes.text import parts

MIN_INTERVAL_S = 2
SAMPLE = "cat /proc/uptime /proc/net/snmp /proc/net/netstat /proc/net/stat/nf_conntrack 2>/dev/null"
_VAR = prelude_var("counters")

# Arithmetic on /proc/uptime's "seconds.hundredths" in the shell itself: no fork per sample.
COMMAND = (
    f"S='{SAMPLE}'; first=${_VAR}; [ -n \"$first\" ] || first=$(eval \"$S\"); "
    "echo '##knd:sample 1'; printf '%s\\n' \"$first\"; "
    "u0=${first%%[!0-9.]*}; read u1 _ </proc/uptime; "
    "if [ -n \"$u0\" ]; then "
    "c0=$((${u0%.*}*100+1${u0#*.}-100)); c1=$((${u1%.*}*100+1${u1#*.}-100)); "
    f"r=$(({MIN_INTERVAL_S * 100}-c1+c0)); "
    "if [ $r -gt 0 ]; then f=$((r%100)); [ $f -lt 10 ] && f=0$f; "
    "sleep $((r/100)).$f 2>/dev/null || sleep $(((r+99)/100)); fi; fi; "
    "echo '##knd:sample 2'; eval \"$S\""
)

# (group, counter): the drops and errors the runbooks look at. Group and counter are spelled
# as the kernel prints them; `name` joins them as nstat does (TcpExtListenOverflows).
WATCH: tuple[tuple[str, str], ...] = (
    ("Ip", "InHdrErrors"), ("Ip", "InAddrErrors"), ("Ip", "InDiscards"), ("Ip", "OutDiscards"),
    ("Ip", "OutNoRoutes"), ("Ip", "ReasmFails"), ("Ip", "FragFails"), ("Ip", "ForwDatagrams"),
    ("Tcp", "AttemptFails"), ("Tcp", "EstabResets"), ("Tcp", "RetransSegs"), ("Tcp", "InErrs"),
    ("Tcp", "OutRsts"), ("Tcp", "InCsumErrors"),
    ("Udp", "InErrors"), ("Udp", "NoPorts"), ("Udp", "RcvbufErrors"), ("Udp", "SndbufErrors"),
    ("Udp", "InCsumErrors"),
    ("TcpExt", "ListenOverflows"), ("TcpExt", "ListenDrops"), ("TcpExt", "TCPRcvQDrop"),
    ("TcpExt", "TCPBacklogDrop"), ("TcpExt", "TCPTimeWaitOverflow"), ("TcpExt", "TW"),
    ("TcpExt", "TWRecycled"), ("TcpExt", "PAWSActive"), ("TcpExt", "PAWSPassive"),
    ("TcpExt", "PAWSEstab"), ("TcpExt", "TCPAbortOnMemory"), ("TcpExt", "TCPAbortOnTimeout"),
    ("TcpExt", "TCPReqQFullDrop"), ("TcpExt", "TCPReqQFullDoCookies"),
    ("TcpExt", "SyncookiesSent"), ("TcpExt", "SyncookiesFailed"),
    ("TcpExt", "TCPMemoryPressures"), ("TcpExt", "TCPZeroWindowDrop"),
    ("TcpExt", "TCPOFODrop"), ("IpExt", "InNoRoutes"),
    ("Conntrack", "insert_failed"), ("Conntrack", "drop"), ("Conntrack", "early_drop"),
    ("Conntrack", "invalid"), ("Conntrack", "error"), ("Conntrack", "search_restart"),
)


def read_sample(lines: list[str]) -> tuple[float | None, dict[tuple[str, str], int]]:
    """(uptime seconds, {(group, counter): value}) from one sample."""
    uptime = None
    values: dict[tuple[str, str], int] = {}
    header: dict[str, list[str]] = {}
    conntrack: list[str] = []
    for i, line in enumerate(lines):
        words = line.split()
        if not words:
            continue
        if i == 0 and uptime is None:
            with contextlib.suppress(ValueError):
                uptime = float(words[0])
            continue
        if words[0] == "entries" or (conntrack and not words[0].endswith(":")):
            conntrack.append(line)
            continue
        if not words[0].endswith(":"):
            continue
        group = words[0][:-1]
        if group not in header or header[group] == []:
            if all(w.lstrip("-").isdigit() for w in words[1:]):
                continue  # values before any header: a cut-off sample
            header[group] = words[1:]
            continue
        names, header[group] = header[group], []
        for name, value in zip(names, words[1:], strict=False):
            if value.lstrip("-").isdigit():
                values[(group, name)] = int(value)
    totals, _ = sum_proc_stat(conntrack)
    for name, value in totals.items():
        values[("Conntrack", name)] = value
    return uptime, values


def parse(section: Section, node: str) -> list[Fact]:
    samples = {arg: lines for name, arg, lines in parts(section.stdout) if name == "sample"}
    t0, first = read_sample(samples.get("1", []))
    t1, second = read_sample(samples.get("2", []))
    interval = round(t1 - t0, 2) if t0 is not None and t1 is not None and t1 > t0 else None
    facts = []
    for group, counter in WATCH:
        key = (group, counter)
        if key not in first and key not in second:
            continue  # this kernel has no such counter: nothing to say
        value = second.get(key, first.get(key))
        delta = None
        if key in first and key in second and second[key] >= first[key] and interval:
            delta = second[key] - first[key]
        name = f"conntrack_{counter}" if group == "Conntrack" else f"{group}{counter}"
        facts.append(Fact("net_counter", node, {
            "name": name,
            "group": group,
            "counter": counter,
            "value": value,
            "delta": delta,
            "interval_s": interval if delta is not None else None,
            "rate_per_s": round(delta / interval, 3) if delta is not None and interval else None,
            "rising": None if delta is None else delta > 0,
        }, Source("counters", SAMPLE + " (twice)", section.exit_code,
                  f"{name}: {first.get(key)} -> {second.get(key)} over {interval}s")))
    return facts


PROBE = Probe(
    name="counters",
    command=COMMAND,
    parse=parse,
    blocks="drop and error counters rising now (listen overflows, UDP buffer errors, RcvQ drops)",
    timeout_s=MIN_INTERVAL_S + 10,
    prelude=SAMPLE,
)
