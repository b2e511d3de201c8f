"""Connection tracking: table fill (count vs max) and the per-CPU `conntrack -S` totals that say
packets were lost to it (insert_failed, drop, early_drop).

Without conntrack-tools the same counters are in /proc/net/stat/nf_conntrack (hex, one row per
CPU); the facts are then taken from there and a probe_status says the tool is missing. A login
without CAP_NET_ADMIN (not root) reads them there too: anyone may, and conntrack -S is refused.

Sample output and the facts it gives:

>>> out = (
...     '##knd:sysctl\\n'
...     'nf_conntrack_count:262100\\n'
...     'nf_conntrack_max:262144\\n'
...     '##knd:stats conntrack\\n'
...     'cpu=0   \\tfound=0 invalid=4 insert=0 insert_failed=17 drop=17 ear'
...     'ly_drop=0 error=0 search_restart=2\\n'
...     'cpu=1   \\tfound=0 invalid=1 insert=0 insert_failed=3 drop=3 early'
...     '_drop=0 error=0 search_restart=0\\n'
... )
>>> facts = parse(Section("conntrack", "", 0, 0.0, out, ""), "node1")
>>> [(f.kind, f.attrs["count"], f.attrs["max"], f.attrs["insert_failed"]) for f in facts]
[('conntrack', 262100, 262144, 20)]
"""

from __future__ import annotations

import re

from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.probes.base import (
    CAN_NET_ADMIN,
    Probe,
    Section,
    from_sysctl_read,
    read_files,
)
from kubenetdiag.probes.sysctl import SYSCTL_READ
from kubenetdiag.probes.text import clip, parts, to_int

COMMAND = (
    # the script's one grep of /proc/sys (sysctl.SYSCTL_READ), else one of its own: grep, not
    # the shell's read: an integer sysctl answers a read at an offset other than 0 with EOF,
    # and the shell reads a byte at a time (it would see "2" of "262144")
    from_sysctl_read("net/netfilter/nf_conntrack_*", strip="net/netfilter/",
                       head="##knd:sysctl") + " || "
    "{ echo '##knd:sysctl'; cd /proc/sys/net/netfilter 2>/dev/null && "
    "grep -H '' nf_conntrack_count nf_conntrack_max nf_conntrack_buckets 2>&1; }; "
    # conntrack -S only where it is allowed: refused (not root), it prints the /proc counters
    # anyway and fails, which would read as "permission denied" over counters that are there
    f"if command -v conntrack >/dev/null 2>&1 && {CAN_NET_ADMIN}; then "
    "s=$(conntrack -S); r=$?; printf '##knd:stats conntrack\\n%s\\n' \"$s\"; return $r; "
    "else command -v conntrack >/dev/null 2>&1 || "
    "echo 'kubenetdiag: conntrack: command not found' >&2; "
    "if [ -r /proc/net/stat/nf_conntrack ]; then "
    + read_files("/proc/net/stat/nf_conntrack", head="##knd:stats proc") + "; fi; fi"
)
STATS = ("found", "invalid", "insert", "insert_failed", "drop", "early_drop", "error",
         "search_restart", "clash_resolve", "chaintoolong")
_PROC_NAMES = {"icmp_error": "error", "clashres": "clash_resolve"}
_PAIR = re.compile(r"(\w+)=(\d+)")


def sum_proc_stat(lines: list[str]) -> tuple[dict[str, int], int]:
    """/proc/net/stat/nf_conntrack: a header of names, then one row of hex numbers per CPU."""
    totals: dict[str, int] = {}
    header: list[str] = []
    cpus = 0
    for line in lines:
        words = line.split()
        if not words:
            continue
        if words[0] == "entries":
            header = [_PROC_NAMES.get(w, w) for w in words]
            continue
        if not header or len(words) != len(header):
            continue
        try:
            values = [int(w, 16) for w in words]
        except ValueError:
            continue
        cpus += 1
        for name, value in zip(header, values, strict=True):
            if name != "entries":  # the table size, repeated on every row: not a counter
                totals[name] = totals.get(name, 0) + value
    return totals, cpus


def parse(section: Section, node: str) -> list[Fact]:
    settings: dict[str, int | None] = {}
    totals: dict[str, int] = {}
    cpus = 0
    source = None
    raw = []
    for name, arg, lines in parts(section.stdout):
        raw.extend(lines[:8])
        if name == "sysctl":
            for line in lines:
                key, sep, value = line.partition(":")
                if sep and key.startswith("nf_conntrack_"):
                    settings[key] = to_int(value)
        elif name == "stats" and arg == "conntrack":
            source = "conntrack -S"
            for line in lines:
                if not line.startswith("cpu="):
                    continue
                cpus += 1
                for k, v in _PAIR.findall(line):
                    # conntrack-tools that read /proc themselves print its names (icmp_error)
                    k = _PROC_NAMES.get(k, k)
                    if k not in ("cpu", "entries"):
                        totals[k] = totals.get(k, 0) + int(v)
        elif name == "stats" and arg == "proc":
            source = "/proc/net/stat/nf_conntrack"
            totals, cpus = sum_proc_stat(lines)
    count, limit = settings.get("nf_conntrack_count"), settings.get("nf_conntrack_max")
    loaded = bool(settings) or bool(totals)
    facts = [Fact("conntrack", node, {
        "loaded": loaded,
        "count": count,
        "max": limit,
        "buckets": settings.get("nf_conntrack_buckets"),
        "usage_pct": round(100.0 * count / limit, 1) if count is not None and limit else None,
        "cpus": cpus or None,
        "stats_source": source,
        **{k: totals.get(k) if source else None for k in STATS},
    }, Source("conntrack", "conntrack -S; cat /proc/sys/net/netfilter/nf_conntrack_{count,max}",
              section.exit_code, clip("\n".join(raw), 1500)))]
    if "conntrack: command not found" in section.stderr and loaded:
        if source:
            reason = ("conntrack is not installed (conntrack-tools); its per-CPU counters were "
                      "read from /proc/net/stat/nf_conntrack instead")
            blocks = "only conntrack-tools' own views (conntrack -L/-E); the totals are known"
            unknown = ""  # every attribute a rule reads was read from /proc
        else:
            reason = "conntrack is not installed and /proc/net/stat/nf_conntrack is unreadable"
            blocks = "conntrack drop counters (insert_failed, drop, early_drop)"
            unknown = "conntrack"
        facts.append(Fact("probe_status", node, {
            "probe": "conntrack", "status": "missing_tool", "reason": reason, "blocks": blocks,
            "kinds": unknown,
        }, Source("conntrack", COMMAND, section.exit_code, clip(section.stderr, 500))))
    return facts


PROBE = Probe(
    name="conntrack",
    command=COMMAND,
    preludes=(SYSCTL_READ,),
    parse=parse,
    kinds=("conntrack",),
    blocks="connection tracking (table full, insert_failed, drop, early_drop)",
    tools=("grep",),
    timeout_s=10,
)
