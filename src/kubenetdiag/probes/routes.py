"""IPv4 routes in every table: per pod CIDR, which device, gateway and protocol
(`proto bird` is Calico's BGP, onlink via flannel.1 is flannel VXLAN, via an underlay address
is host-gw). The `local` table (the node's own and broadcast addresses) is left out.

`ip -j` where iproute2 has it; CentOS 7's `ip route` text otherwise, which reads the same.

Sample output and the facts it gives:

>>> out = (
...     '##knd:route json\\n'
...     '[{"dst":"10.244.2.0/24","gateway":"10.244.2.0","dev":"flannel.1"'
...     ',"flags":["onlink"]},{"type":"blackhole","dst":"10.244.9.0/26","'
...     'protocol":"bird","flags":[]}]\\n'
... )
>>> facts = parse(Section("routes", "", 0, 0.0, out, ""), "node1")
>>> [(f.attrs["dst"], f.attrs["type"], f.attrs["dev"], f.attrs["gateway"]) for f in facts]
[('10.244.2.0/24', 'unicast', 'flannel.1', '10.244.2.0'),
 ('10.244.9.0/26', 'blackhole', None, None)]
"""

from __future__ import annotations

import json

from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.probes.base import Probe, Section
from kubenetdiag.probes.text import clip, parts, to_int

COMMAND = (  # the JSON attempt's output is kept, not asked for twice
    "if o=$(ip -j -4 route show table all 2>/dev/null); then "
    "echo '##knd:route json'; printf '%s\\n' \"$o\"; "
    "else echo '##knd:route text'; ip -4 route show table all; fi"
)
_TYPES = {"unicast", "local", "broadcast", "multicast", "blackhole", "unreachable", "prohibit",
          "throw", "nat", "anycast"}
_SKIP_TYPES = {"local", "broadcast", "multicast", "anycast"}


def _from_text(line: str) -> dict | None:
    words = line.split()
    if not words:
        return None
    rtype = "unicast"
    if words[0] in _TYPES:
        rtype, words = words[0], words[1:]
    if not words:
        return None
    route: dict = {"type": rtype, "dst": words[0], "flags": []}
    i = 1
    while i < len(words):
        w = words[i]
        nxt = words[i + 1] if i + 1 < len(words) else None
        if w in ("via", "dev", "proto", "scope", "src", "metric", "table") and nxt is not None:
            route[{"via": "gateway", "src": "prefsrc", "proto": "protocol"}.get(w, w)] = nxt
            i += 2
            continue
        if w in ("onlink", "linkdown", "dead"):
            route["flags"].append(w)
        i += 1
    return route


def parse(section: Section, node: str) -> list[Fact]:
    routes: list[tuple[dict, str]] = []
    for name, fmt, lines in parts(section.stdout):
        if name != "route":
            continue
        if fmt == "json":
            try:
                data = json.loads("\n".join(lines) or "[]")
            except ValueError:
                data = []
            for d in data if isinstance(data, list) else []:
                if isinstance(d, dict) and isinstance(d.get("dst"), str):
                    d.setdefault("type", "unicast")
                    routes.append((d, json.dumps(d)))
        else:
            for line in lines:
                r = _from_text(line)
                if r:
                    routes.append((r, line.strip()))
    facts = []
    for r, raw in routes:
        table = str(r.get("table", "main"))
        if r.get("type") in _SKIP_TYPES or table == "local":
            continue
        flags = r.get("flags") if isinstance(r.get("flags"), list) else []
        dst = str(r["dst"])
        facts.append(Fact("route", node, {
            "table": clip(table, 40),
            "type": clip(str(r.get("type")), 20),
            "dst": "0.0.0.0/0" if dst == "default" else clip(dst, 60),
            "gateway": clip(str(r["gateway"]), 60) if r.get("gateway") else None,
            "dev": clip(str(r["dev"]), 64) if r.get("dev") else None,
            "protocol": clip(str(r.get("protocol", "boot")), 20),
            "scope": clip(str(r.get("scope", "global")), 20),
            "metric": r["metric"] if isinstance(r.get("metric"), int) else to_int(r.get("metric")),
            "onlink": "onlink" in flags,
            "linkdown": "linkdown" in flags,
        }, Source("routes", "ip -j -4 route show table all", section.exit_code, clip(raw, 500))))
    return facts


PROBE = Probe(
    name="routes",
    command=COMMAND,
    parse=parse,
    kinds=("route",),
    blocks="routes to pod CIDRs (missing route, wrong device or gateway, BGP-learned routes)",
    tools=("ip",),
)
