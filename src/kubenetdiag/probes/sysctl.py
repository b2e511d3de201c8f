"""Kernel settings, read straight from /proc/sys.

Reading the files (not running `sysctl`) works without procps, never writes anything, and lets a
key the kernel does not have (tcp_tw_recycle after 4.12, bridge-nf-* without br_netfilter) show
up as a fact of its own instead of an error.

Sample output and the facts it gives:

>>> out = (
...     'net/ipv4/ip_forward:0\\n'
...     'net/core/somaxconn:128\\n'
... )
>>> facts = parse(Section("sysctl", "", 0, 0.0, out, ""), "node1")
>>> [(f.attrs["key"], f.attrs["number"], f.attrs["present"]) for f in facts][:3]
[('net.ipv4.ip_forward', 0, True), ('net.core.somaxconn', 128, True),
 ('net.bridge.bridge-nf-call-iptables', None, False)]
"""

from __future__ import annotations

import re

from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.probes.base import Probe, Section, from_sysctl_read, sysctl_read

# Explicit keys: each yields a fact, present or not.
KEYS = (
    "net.ipv4.ip_forward",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.ipv4.conf.all.rp_filter",
    "net.ipv4.conf.default.rp_filter",
    "net.ipv4.icmp_echo_ignore_all",
    "net.ipv4.tcp_timestamps",
    "net.ipv4.tcp_tw_recycle",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_fin_timeout",
    # off: no window past 64 KiB, whatever the buffers allow
    "net.ipv4.tcp_window_scaling",
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.tcp_syncookies",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_count",
    # conntrack's TCP window check: at 0 (the default) an out-of-window segment is INVALID
    "net.netfilter.nf_conntrack_tcp_be_liberal",
)
# Globs: per-interface settings whose interfaces we cannot know in advance. A routed packet
# needs forwarding on the interface it came in on, whatever net.ipv4.ip_forward says (writing
# ip_forward sets every interface, but one interface can be turned off on its own after).
GLOBS = ("net/ipv4/conf/*/rp_filter", "net/ipv4/conf/*/forwarding",
         # Calico's pods reach their gateway only through proxy ARP on their veth
         "net/ipv4/conf/*/proxy_arp")


def _path(key: str) -> str:
    return key.replace(".", "/")


def _key(path: str) -> str:
    return path.replace("/", ".")


# One grep prints every file as "path:value", empty values included, in a single fork: the
# script's one for every /proc/sys file a probe reads, those of the conntrack and sockets probes
# too, where it ran; else this probe's own. Those other probes' files are left out here.
PATHS = (*(_path(k) for k in KEYS), *GLOBS)
OTHERS = ("net/netfilter/nf_conntrack_buckets", "net/ipv4/tcp_mem")
SYSCTL_READ = sysctl_read((*PATHS, *OTHERS))
COMMAND = (
    # the other probes' files and grep's errors about them are theirs
    from_sysctl_read("net/*", skip="|".join(f"{o}:*|grep:\\ {o}:*" for o in OTHERS),
                     errors=True)
    + " && return ${KND_SYSCTL_RC:-0}; cd /proc/sys && grep -H '' " + " ".join(PATHS)
)

_LINE = re.compile(r"^(net/[A-Za-z0-9_./@:+-]+?):(.*)$")
_INT = re.compile(r"^-?\d+$")


def parse(section: Section, node: str) -> list[Fact]:
    seen: dict[str, Fact] = {}
    for line in section.stdout.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        key, value = _key(m.group(1)), m.group(2).strip()
        if key in seen:  # a multi-line value: keep the first line, it is all we compare
            continue
        seen[key] = Fact(
            "sysctl",
            node,
            {
                "key": key,
                "value": value,
                "number": int(value) if _INT.match(value) else None,
                "present": True,
            },
            Source("sysctl", f"cat /proc/sys/{m.group(1)}", section.exit_code, f"{key} = {value}"),
        )
    denied = "Permission denied" in section.stderr
    for key in KEYS:
        if key in seen:
            continue
        path = _path(key)
        if denied and f"{path}: Permission denied" in section.stderr:
            continue  # unknown, not absent: the probe_status fact says why
        seen[key] = Fact(
            "sysctl",
            node,
            {"key": key, "value": None, "number": None, "present": False},
            Source("sysctl", f"cat /proc/sys/{path}", section.exit_code, f"{key}: no such key"),
        )
    return list(seen.values())


PROBE = Probe(
    name="sysctl",
    command=COMMAND,
    preludes=(SYSCTL_READ,),
    parse=parse,
    kinds=("sysctl",),
    blocks="kernel settings (ip_forward and per-interface forwarding, bridge-nf-call-iptables, "
           "rp_filter, TCP and conntrack)",
    tools=("grep",),
    ok_exit_codes=frozenset({0, 2}),  # grep says 2 when a key is absent; that is an answer
)
