"""IPVS virtual servers, for kube-proxy in ipvs mode: every Service VIP and its real servers.

Only when the ip_vs module is already loaded (/proc/net/ip_vs exists): `ipvsadm` loads it
otherwise, which would change the node. Without ipvsadm, or without CAP_NET_ADMIN (a login
that is not root: ipvsadm is refused, "you must be root"), the kernel's own table in
/proc/net/ip_vs, which anyone may read, is read instead (hex addresses, the same servers).

Sample output and the facts it gives:

>>> out = (
...     '##knd:table ipvsadm\\n'
...     'IP Virtual Server version 1.2.1 (size=4096)\\n'
...     'Prot LocalAddress:Port Scheduler Flags\\n'
...     '  -> RemoteAddress:Port           Forward Weight ActiveConn InAc'
...     'tConn\\n'
...     'TCP  10.96.0.10:53 rr\\n'
...     '  -> 10.244.1.3:53                Masq    1      2          5\\n'
...     'TCP  10.96.0.20:80 rr\\n'
... )
>>> facts = parse(Section("ipvs", "", 0, 0.0, out, ""), "node1")
>>> [(f.kind, f.attrs.get("address"), f.attrs.get("real_servers")) for f in facts][:2]
[('ipvs_service', '10.96.0.10', 1), ('ipvs_service', '10.96.0.20', 0)]
"""

from __future__ import annotations

import ipaddress
import re

from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.probes.base import CAN_NET_ADMIN, HOLD, Probe, Section, unread_lines
from kubenetdiag.probes.text import clip, parts, to_int

COMMAND = (
    "if [ ! -e /proc/net/ip_vs ]; then echo '##knd:none'; return 0; fi; "
    f"if command -v ipvsadm >/dev/null 2>&1 && {CAN_NET_ADMIN}; then "
    f"echo '##knd:table ipvsadm'; {HOLD} ipvsadm -Ln; "
    f"else echo '##knd:table proc'; {HOLD} cat /proc/net/ip_vs; fi"
)
MAX_BACKENDS = 2000  # as service_port.endpoints keeps them
_SERVICE = re.compile(r"^(TCP|UDP|SCTP|FWM)\s+(\S+)\s+(\S+)")
# ipvsadm's and /proc/net/ip_vs's three header lines
_HEADERS = ("IP Virtual Server version", "Prot LocalAddress", "-> RemoteAddress")
_REAL = re.compile(r"^\s+->\s+(\S+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)")


def _unhex(addr: str) -> str:
    """/proc/net/ip_vs's `0A600001:01BB` or `[fd00:0010:...:0001]:01BB` (the port in hex both
    ways) as ipvsadm -Ln prints it: `10.96.0.1:443`, `[fd00:10::1]:443`."""
    ip, _, port = addr.rpartition(":")
    try:
        number = int(port, 16)
        if ip.startswith("[") and ip.endswith("]"):
            return f"[{ipaddress.IPv6Address(ip[1:-1]).compressed}]:{number}"
        if len(ip) == 8:
            return f"{ipaddress.IPv4Address(int(ip, 16))}:{number}"
    except ValueError:
        pass
    return addr


def _hex_int(text: str) -> int | None:
    try:
        return int(text, 16)
    except ValueError:
        return None


def parse(section: Section, node: str) -> list[Fact]:
    services: list[dict] = []
    unread: list[str] = []
    enabled = False
    for name, fmt, lines in parts(section.stdout):
        if name != "table":
            continue
        enabled = True
        for line in lines:
            if not line.strip() or line.lstrip().startswith(_HEADERS):
                continue
            m = _SERVICE.match(line)
            if m:
                proto, addr, mark = m.group(1), m.group(2), None
                if proto == "FWM":  # by firewall mark: no address, no port
                    mark = to_int(addr) if fmt != "proc" else _hex_int(addr)
                elif fmt == "proc":
                    addr = _unhex(addr)
                services.append({"proto": proto, "address": addr, "fwmark": mark,
                                 "scheduler": m.group(3), "reals": 0, "active": 0,
                                 "inactive": 0, "raw": [line], "backends": []})
                continue
            r = _REAL.match(line)
            if not r or not services:
                unread.append(line)
                continue
            s = services[-1]
            s["reals"] += 1
            s["active"] += int(r.group(4))
            s["inactive"] += int(r.group(5))
            # weight 0: kube-proxy keeps a terminating endpoint for its open connections
            # and sends it no new one
            if int(r.group(3)) > 0:
                s["backends"].append(_unhex(r.group(1)) if fmt == "proc" else r.group(1))
            if len(s["raw"]) < 10:
                s["raw"].append(line)
    facts = []
    for s in services:
        host, _, port = s["address"].rpartition(":")
        fwm = s["proto"] == "FWM"
        facts.append(Fact("ipvs_service", node, {
            "proto": s["proto"],
            "address": None if fwm else clip(host.strip("[]") or s["address"], 60),
            "port": None if fwm else to_int(port),
            "fwmark": s["fwmark"],
            "scheduler": clip(s["scheduler"], 20),
            "real_servers": s["reals"],
            "active_conns": s["active"],
            "inactive_conns": s["inactive"],
            "backends": ",".join(sorted(s["backends"])[:MAX_BACKENDS]),
        }, Source("ipvs", "ipvsadm -Ln", section.exit_code, clip("\n".join(s["raw"]), 800))))
    facts.append(Fact("ipvs", node, {
        "enabled": enabled,
        "services": len(services),
        "services_without_backends": sum(1 for s in services if not s["reals"]),
    }, Source("ipvs", "ipvsadm -Ln", section.exit_code,
              f"{len(services)} virtual servers" if enabled else "ip_vs is not loaded")))
    return facts + unread_lines(section, node, unread, "the virtual servers on those lines")


PROBE = Probe(
    name="ipvs",
    command=COMMAND,
    parse=parse,
    kinds=("ipvs", "ipvs_service"),
    blocks="IPVS virtual servers (kube-proxy ipvs mode): Service VIPs and their backends",
    timeout_s=15,
)
