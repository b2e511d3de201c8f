"""Connection-tracking entries toward each destination the diagnosis cares about: the CoreDNS
pods, the DNS Service VIP and the endpoints the inventory declares by IP
(docs/runbooks.md#runbook-003: `conntrack -L -d <ip>`). The node's own workloads made them, so
they show what live traffic to that address got: many entries still waiting for a reply
([UNREPLIED], TCP SYN_SENT) mean connections go out and nothing comes back.

Bounded on the node, whatever the table's size: `conntrack -L -d ADDR` (or, without
conntrack-tools, /proc/net/nf_conntrack) runs under the script's 4 s `timeout`, and awk counts
the matching entries (in all, unanswered, SYN_SENT, ESTABLISHED) and groups them by protocol,
state, reply flag, port and reply source (for a Service VIP: the endpoint it was DNATed to),
printing the totals and the 25 biggest groups, never the entries.
A table cut short by the timeout is flagged (`complete` false), not read as smaller.

>>> from kubenetdiag.probes.active.common import example, section
>>> ctx = example()
>>> target = {"address": "10.96.0.10", "role": "dns_service", "name": "10.96.0.10"}
>>> out = ("total 43 40 40 0\\ne 40 tcp SYN_SENT 1 53 10.244.2.3\\ne 3 udp - 0 53 10.244.2.3\\n"
...        "msg conntrack v1.4.6 (conntrack-tools): 43 flow entries have been shown.\\n"
...        "knd-src conntrack 0\\n")
>>> [f] = CONNTRACK_DEST.parse(section("active.ct.dns.0", out), target, ctx)
>>> f.attrs["entries"], f.attrs["unreplied"], f.attrs["syn_sent"], f.attrs["unreplied_port"]
(43, 40, 40, 53)
>>> f.attrs["unreplied_to"], f.attrs["unreplied_pct"]
('10.244.2.3', 93.0)
"""

from __future__ import annotations

import re
from typing import Any

from kubenetdiag.facts.model import Fact
from kubenetdiag.probes.active.common import source, status
from kubenetdiag.probes.active.plan import NodePlan, is_ipv4
from kubenetdiag.probes.base import ActiveCheck, CheckContext, Section, quoted

TOP = 25  # groups printed per destination: the line stays far below the script's 3 KiB
# Listings per node and run. Where conntrack-tools and the kernel filter the dump in the
# kernel, a listing reads only the matching entries; older ones read the whole table in
# user space, which the 4 s limit bounds, so the number of listings bounds the node's cost.
MAX_TARGETS = 8

# POSIX awk (mawk, gawk, busybox): `conntrack -L` lines start with the protocol,
# /proc/net/nf_conntrack lines with "ipv4 2" first. The original direction's dst must be the
# address (the /proc fallback reads every entry); the second src= is the reply's source.
_AWK = r"""
/^knd-src / { print; next }
{ s = ($1 ~ /^ipv[46]$/) ? 3 : 1 }
$s !~ /^(tcp|udp|udplite|icmp|icmpv6|sctp|dccp|gre|unknown)$/ {
  if (m < 3 && NF) { print "msg " $0; m++ }; next
}
{
  st = "-"; un = 0; o = ""; rs = "-"; dp = "-"; ns = 0; nd = 0
  for (i = s + 1; i <= NF; i++) {
    f = $i
    if (f ~ /^src=/) { ns++; if (ns == 2) rs = substr(f, 5) }
    else if (f ~ /^dst=/) { nd++; if (nd == 1) o = substr(f, 5) }
    else if (f ~ /^dport=/) { if (dp == "-") dp = substr(f, 7) }
    else if (f == "[UNREPLIED]") un = 1
    else if (ns == 0 && f ~ /^[A-Z_]+$/) st = f
  }
  if (o != d) next
  n++; u += un; if (st == "SYN_SENT") sy++; if (st == "ESTABLISHED") es++
  c[$s " " st " " un " " dp " " rs]++
}
END {
  print "total " n + 0 " " u + 0 " " sy + 0 " " es + 0
  for (j = 0; j < TOP; j++) {
    b = ""; bc = 0
    for (k in c) if (c[k] > bc) { bc = c[k]; b = k }
    if (b == "") break
    print "e " bc " " b; delete c[b]
  }
}
"""

_SUMMARY = re.compile(r"(\d+) flow entries have been shown")


def _targets(plan: NodePlan) -> list[tuple[str, Any]]:
    """Each address once, at most MAX_TARGETS: the DNS Service VIP (what every pod asks), the
    endpoints declared by IP (what the operator suspects), then the CoreDNS pods."""
    dns = list(enumerate(plan.get("dns") or []))
    ordered = ([(f"dns.{i}", s, "dns_service") for i, s in dns if s.get("kind") != "pod"]
               + [(f"ep.{i}", e, "endpoint") for i, e in enumerate(plan.get("endpoints") or [])
                  if e.get("by") == "ip"]
               + [(f"dns.{i}", s, "dns_pod") for i, s in dns if s.get("kind") == "pod"])
    out: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for suffix, item, role in ordered:
        address = str(item.get("server") or item.get("host") or "")
        if not is_ipv4(address) or address in seen or len(out) >= MAX_TARGETS:
            continue
        seen.add(address)
        name = item.get("pod") or item.get("target") or address
        out.append((suffix, {"address": address, "role": role, "name": name}))
    return out


def _command(plan: NodePlan, target: Any) -> str:
    addr = quoted(target["address"])
    return (
        "command -v awk >/dev/null 2>&1 || { echo 'kubenetdiag: awk: command not found'; "
        "exit 127; }\n"
        "{ if command -v conntrack >/dev/null 2>&1; then "
        f"$__to conntrack -L -d {addr}; echo \"knd-src conntrack $?\"; "
        "elif [ -r /proc/net/nf_conntrack ]; then "
        "$__to cat /proc/net/nf_conntrack; echo \"knd-src proc $?\"; "
        "elif [ -e /proc/net/nf_conntrack ]; then "
        "echo 'kubenetdiag: /proc/net/nf_conntrack: Permission denied'; "
        "else echo 'kubenetdiag: conntrack: command not found'; fi; } 2>&1 | "
        f"awk -v d={addr} -v TOP={TOP} {quoted(_AWK)}"
    )


def _blocks(target: Any) -> str:
    return f"connection-tracking entries toward {target['name']}"


def _resolve(plan: NodePlan, suffix: str) -> Any:
    return dict(_targets(plan))[suffix]


_DENIED = ("operation not permitted", "permission denied")


def parse_groups(text: str) -> dict[str, Any]:
    """{total, unreplied, syn_sent, established, groups: [(count, proto, state, unreplied,
    dport, reply_src)] (the biggest TOP), source, rc, msgs} from the awk summary."""
    out: dict[str, Any] = {"total": None, "unreplied": 0, "syn_sent": 0, "established": 0,
                           "groups": [], "source": None, "rc": None, "msgs": []}
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "total" and len(words) == 5 and all(w.isdigit() for w in words[1:]):
            out["total"], out["unreplied"], out["syn_sent"], out["established"] = map(
                int, words[1:])
        elif words[0] == "e" and len(words) == 7 and words[1].isdigit():
            _, count, proto, state, unreplied, dport, reply = words
            out["groups"].append((int(count), proto, state, unreplied == "1",
                                  int(dport) if dport.isdigit() else None,
                                  None if reply == "-" else reply))
        elif words[0] == "knd-src" and len(words) == 3:
            out["source"] = words[1]
            out["rc"] = int(words[2]) if words[2].isdigit() else None
        elif words[0] == "msg":
            out["msgs"].append(line[4:])
        elif line.startswith("kubenetdiag:"):
            out["msgs"].append(line)
    return out


def parse(section: Section, target: Any, ctx: CheckContext) -> list[Fact]:
    text = section.stdout
    low = text.lower()
    if section.exit_code == 127 or "command not found" in low:
        return [status(ctx, section, "missing_tool",
                       "neither conntrack (conntrack-tools) nor a readable "
                       "/proc/net/nf_conntrack" if "conntrack:" in low else
                       text.strip()[:200] or "awk missing", _blocks(target))]
    got = parse_groups(text)
    if any(word in low for word in _DENIED):
        return [status(ctx, section, "permission_denied",
                       "reading the connection-tracking table needs root (CAP_NET_ADMIN): "
                       + (got["msgs"][0] if got["msgs"] else "permission denied"),
                       _blocks(target))]
    if got["total"] is None or got["source"] is None:
        return [status(ctx, section, "failed",
                       (got["msgs"][0] if got["msgs"] else text.strip()[:200])
                       or f"no summary (exit {section.exit_code})", _blocks(target))]
    if got["source"] == "conntrack" and got["rc"] not in (0, 124) and not got["groups"]:
        # conntrack-tools answered with an error of its own (netlink module missing...)
        return [status(ctx, section, "failed",
                       got["msgs"][0] if got["msgs"] else f"conntrack exited {got['rc']}",
                       _blocks(target))]
    groups = got["groups"]
    unreplied = [g for g in groups if g[3]]
    by_port: dict[int | None, int] = {}
    by_reply: dict[str | None, int] = {}
    for count, _proto, _state, _un, dport, reply in unreplied:
        by_port[dport] = by_port.get(dport, 0) + count
        by_reply[reply] = by_reply.get(reply, 0) + count
    total, n_unreplied = got["total"], got["unreplied"]

    def top(counts: dict) -> Any:
        return max(counts, key=lambda k: (counts[k], str(k))) if counts else None

    return [Fact("conntrack_dest", ctx.node, {
        "dst": target["address"],
        "role": target["role"],
        "target": target["name"],
        "entries": total,
        "unreplied": n_unreplied,
        "unreplied_pct": round(100.0 * n_unreplied / total, 1) if total else None,
        "syn_sent": got["syn_sent"],
        "established": got["established"],
        "unreplied_port": top(by_port),
        "unreplied_to": top(by_reply),
        "table_source": got["source"],
        # 124: the 4 s timeout cut the listing short; the counts are a lower bound
        "complete": got["rc"] == 0,
    }, source(section))]


CONNTRACK_DEST = ActiveCheck(
    name="ct",
    targets=_targets,
    resolve=_resolve,
    command=_command,
    parse=parse,
    blocks=_blocks,
    kinds=("conntrack_dest",),
    order=900,  # after the checks whose own traffic it should not be mistaken for
)
CHECKS = (CONNTRACK_DEST,)
