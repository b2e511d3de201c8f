"""Kernel drop and error counters, sampled twice so a fact says whether a counter is rising
*now* rather than merely non-zero since boot (a node up for a year has ListenOverflows from
incidents long past).

The counters come from /proc/net/snmp, /proc/net/netstat and /proc/net/stat/nf_conntrack,
which is where `nstat` and `netstat -s` read them, /proc/net/xfrm_stat (IPsec's drops, one
`Name value` line each, where the kernel keeps them) and /proc/net/softnet_stat (what each CPU's
receive softirq processed, dropped and left for later); each interface's bytes and drops from
/proc/net/dev, where `ip -s link` and `iftop`'s totals come from, give its throughput over the
same interval (interface_load). Reading them directly writes nothing:
`nstat` without `-s` would keep a history file on the node. The first sample is taken by the
script's prelude, before any other probe runs, and the second at this probe's turn at the end:
the other probes' run time is the interval, topped up with a sleep to MIN_INTERVAL_S.
"""

from __future__ import annotations

import re
from typing import Any

from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.probes.base import Probe, Section, TwoSample
from kubenetdiag.probes.conntrack import sum_proc_stat

MIN_INTERVAL_S = 2
# xfrm_stat, dev and softnet_stat before nf_conntrack: the per-CPU conntrack lines run to the
# end of a sample, and softnet_stat's rows are known by coming before conntrack's header
SAMPLING = TwoSample("counters", "/proc/net/snmp /proc/net/netstat /proc/net/xfrm_stat "
                     "/proc/net/dev /proc/net/softnet_stat /proc/net/stat/nf_conntrack",
                     MIN_INTERVAL_S)
# An interface moving less than this in both directions, and dropping nothing, gives no fact:
# a node's idle pod veths would outnumber everything else.
LOAD_FLOOR_BPS = 1_000_000
# /proc/net/dev: `name: ` then 8 receive and 8 transmit counters (a name may run into its
# first number when the count is wide: "eth0:123456789")
_DEV = re.compile(r"^\s*([^\s:]+):\s*((?:\d+\s+){15}\d+)\s*$")
# /proc/net/softnet_stat: one row per CPU, no header, each column eight hex digits; ten columns
# in 2.6 kernels, more since, fifteen in 6.x; the first three always the packets the CPU's receive
# softirq processed, those dropped because its input backlog (net.core.netdev_max_backlog
# packets) was full, and the times it ran out of budget with packets left (time_squeeze)
_SOFTNET_ROW = re.compile(r"^(?:[0-9a-f]{8}\s+){9,}[0-9a-f]{8}\s*$")
SOFTNET_COLUMNS = {"dropped": 1, "time_squeeze": 2}
SAMPLE = SAMPLING.sample

# (group, counter): the drops and errors docs/runbooks.md#runbook-004 looks at. Group and
# counter are spelled as the kernel prints them; `name` joins them as nstat does
# (TcpExtListenOverflows).
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
    # packets reverse-path filtering dropped: the only trace a strict rp_filter leaves
    ("TcpExt", "IPReversePathFilter"),
    # TCP MD5 signatures (RFC 2385, what a BGP password turns on): segments dropped for lacking
    # the signature the socket requires, or for carrying one it does not expect
    ("TcpExt", "TCPMD5NotFound"), ("TcpExt", "TCPMD5Unexpected"), ("TcpExt", "TCPMD5Failure"),
    ("Conntrack", "insert_failed"), ("Conntrack", "drop"), ("Conntrack", "early_drop"),
    ("Conntrack", "invalid"), ("Conntrack", "error"), ("Conntrack", "search_restart"),
    # IPsec: no SA to encrypt with, none to decrypt with, plain where IPsec was required, and
    # block policies (docs/paths.md: the walk's xfrm and ipsec stages)
    ("Xfrm", "OutNoStates"), ("Xfrm", "InNoStates"), ("Xfrm", "InTmplMismatch"),
    ("Xfrm", "OutPolBlock"), ("Xfrm", "InPolBlock"),
    # a CPU that cannot keep up with the packets it receives (docs/runbooks.md#runbook-004,
    # CPU speed): drops before any protocol or packet filter, summed over CPUs
    ("Softnet", "dropped"), ("Softnet", "time_squeeze"),
)


def read_sample(lines: list[str]) -> dict[tuple[str, str], int]:
    """{(group, counter): value} from one sample (its /proc/uptime line already taken off).

    /proc/net/snmp and /proc/net/netstat print each group as a header line and a value line;
    /proc/net/xfrm_stat one counter a line; /proc/net/softnet_stat and
    /proc/net/stat/nf_conntrack one line per CPU, summed here.

    >>> read_sample(["Udp: InDatagrams NoPorts InErrors", "Udp: 5120 3 41"])
    {('Udp', 'InDatagrams'): 5120, ('Udp', 'NoPorts'): 3, ('Udp', 'InErrors'): 41}
    >>> read_sample(["XfrmOutNoStates         \t12"])
    {('Xfrm', 'OutNoStates'): 12}
    >>> row = " ".join(["00000000"] * 8)
    >>> read_sample(["0000ff00 00000010 00000002 " + row, "0000ff00 00000001 00000000 " + row])
    {('Softnet', 'dropped'): 17, ('Softnet', 'time_squeeze'): 2}
    """
    values: dict[tuple[str, str], int] = {}
    header: dict[str, list[str]] = {}
    conntrack: list[str] = []
    softnet: list[list[str]] = []
    for line in lines:
        words = line.split()
        if not words:
            continue
        if not conntrack and _SOFTNET_ROW.match(line.strip()):
            softnet.append(words)
            continue
        if len(words) == 2 and words[0].startswith("Xfrm") and words[1].isdigit() \
                and not conntrack:
            values[("Xfrm", words[0][4:])] = int(words[1])
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
    for name, column in SOFTNET_COLUMNS.items() if softnet else ():
        values[("Softnet", name)] = sum(int(row[column], 16) for row in softnet)
    return values


def read_dev(lines: list[str]) -> dict[str, tuple[int, ...]]:
    """{interface: (rx_bytes, rx_packets, rx_drops, tx_bytes, tx_packets, tx_drops)} from one
    sample's /proc/net/dev lines. The receive drops are the kernel's rx_dropped plus
    rx_missed_errors (a NIC out of ring buffers), as /proc/net/dev sums them.

    >>> read_dev(["  eth0:123456789 10 0 2 0 0 0 0 987 5 0 1 0 0 0 0", "Ip: 1 2"])
    {'eth0': (123456789, 10, 2, 987, 5, 1)}
    """
    out = {}
    for line in lines:
        m = _DEV.match(line)
        if m:
            n = [int(v) for v in m.group(2).split()]
            out[m.group(1)] = (n[0], n[1], n[3], n[8], n[9], n[11])
    return out


def _load_facts(first: list[str], second: list[str], interval: float | None,
                node: str, exit_code: int | None) -> list[Fact]:
    """interface_load: what each interface received and sent per second between the samples."""
    before, after = read_dev(first), read_dev(second)
    facts = []
    for name in sorted(after):
        if name not in before or not interval:
            continue
        delta = [b - a for a, b in zip(before[name], after[name], strict=True)]
        if any(d < 0 for d in delta):
            continue  # a counter reset (the device re-created between the samples)
        rx_bps, tx_bps = (round(delta[i] * 8 / interval) for i in (0, 3))
        if max(rx_bps, tx_bps) < LOAD_FLOOR_BPS and not (delta[2] or delta[5]):
            continue
        facts.append(Fact("interface_load", node, {
            "name": name,
            "rx_bps": rx_bps,
            "tx_bps": tx_bps,
            "rx_pps": round(delta[1] / interval),
            "tx_pps": round(delta[4] / interval),
            "rx_drops": delta[2],
            "tx_drops": delta[5],
            "interval_s": interval,
        }, Source("counters", "/proc/net/dev (twice)", exit_code,
                  f"{name}: rx {delta[0]} bytes, tx {delta[3]} bytes, drops rx {delta[2]} "
                  f"tx {delta[5]} over {interval}s")))
    return facts


def change(before: int | None, after: int | None, interval: float | None) -> dict[str, Any]:
    """A counter's delta, interval_s, rate_per_s and rising between two samples: unknown
    (None) when either sample lacks it, no time passed, or it went backwards (a reset).

    >>> change(40, 45, 2.5)
    {'delta': 5, 'interval_s': 2.5, 'rate_per_s': 2.0, 'rising': True}
    >>> change(45, 40, 2.5)["rising"] is None and change(None, 3, 2.5)["delta"] is None
    True
    """
    delta = (after - before if before is not None and after is not None and after >= before
             and interval else None)
    return {
        "delta": delta,
        "interval_s": interval if delta is not None else None,
        "rate_per_s": round(delta / interval, 3) if delta is not None and interval else None,
        "rising": None if delta is None else delta > 0,
    }


def parse(section: Section, node: str) -> list[Fact]:
    """One net_counter fact per watched counter this kernel has.

    >>> out = (
    ...     "##knd:sample 1\\n1000.00 1900.00\\n"
    ...     "TcpExt: ListenOverflows ListenDrops\\nTcpExt: 40 40\\n"
    ...     "##knd:sample 2\\n1002.50 1904.00\\n"
    ...     "TcpExt: ListenOverflows ListenDrops\\nTcpExt: 45 45\\n"
    ... )
    >>> facts = parse(Section("counters", "", 0, 2.6, out, ""), "node1")
    >>> [(f.attrs["name"], f.attrs["delta"], f.attrs["rate_per_s"], f.attrs["rising"])
    ...  for f in facts]
    [('TcpExtListenOverflows', 5, 2.0, True), ('TcpExtListenDrops', 5, 2.0, True)]
    """
    samples = SAMPLING.split(section.stdout)
    first, second = read_sample(samples.first), read_sample(samples.second)
    interval = samples.interval_s
    facts = []
    for group, counter in WATCH:
        key = (group, counter)
        if key not in first and key not in second:
            continue  # this kernel has no such counter: nothing to say
        value = second.get(key, first.get(key))
        name = (f"{group.lower()}_{counter}" if group in ("Conntrack", "Softnet")
                else f"{group}{counter}")
        facts.append(Fact("net_counter", node, {
            "name": name,
            "group": group,
            "counter": counter,
            "value": value,
            **change(first.get(key), second.get(key), interval),
        }, Source("counters", SAMPLE + " (twice)", section.exit_code,
                  f"{name}: {first.get(key)} -> {second.get(key)} over {interval}s")))
    return facts + _load_facts(samples.first, samples.second, interval, node,
                               section.exit_code)


PROBE = Probe(
    name="counters",
    command=SAMPLING.command,
    parse=parse,
    kinds=("net_counter", "interface_load"),
    blocks="drop and error counters rising now (listen overflows, UDP buffer errors, RcvQ "
    "drops, a CPU's full input backlog) and each interface's throughput",
    timeout_s=MIN_INTERVAL_S + 10,
    preludes=(SAMPLING.prelude,),
    sampling=SAMPLING,
    # last: the other probes' run time is the interval between the two samples
    order=900,
)
