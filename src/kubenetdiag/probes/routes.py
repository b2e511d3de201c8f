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

import ipaddress
import json
import re

from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.probes.base import IP_BATCH, Probe, Section, from_ip_batch, unread_lines
from kubenetdiag.probes.text import clip, parts, to_int

COMMAND = (  # the script's `ip -batch`, else the JSON attempt's output, not asked for twice
    from_ip_batch("route") + " || "
    "if o=$(ip -j -4 route show table all 2>/dev/null); then "
    "echo '##knd:route json'; printf '%s\\n' \"$o\"; "
    "else echo '##knd:route text'; ip -4 route show table all; fi"
)
_TYPES = {"unicast", "local", "broadcast", "multicast", "blackhole", "unreachable", "prohibit",
          "throw", "nat", "anycast"}
_SKIP_TYPES = {"local", "broadcast", "multicast", "anycast"}


# Words followed by a value, and the attribute each one sets.
_VALUED = {"via": "gateway", "dev": "dev", "proto": "protocol", "scope": "scope",
           "src": "prefsrc", "metric": "metric", "table": "table", "weight": "weight"}
_FLAGS = ("onlink", "linkdown", "dead", "pervasive")
_FAMILIES = ("inet", "inet6")  # `via inet6 ADDR`: an IPv4 route with an IPv6 next hop


def _words(words: list[str], into: dict) -> None:
    i = 0
    while i < len(words):
        w = words[i]
        if w in _VALUED and i + 1 < len(words):
            value = words[i + 1]
            if w == "via" and value in _FAMILIES and i + 2 < len(words):
                value, i = words[i + 2], i + 1
            into[_VALUED[w]] = value
            i += 2
            continue
        if w in _FLAGS:
            into.setdefault("flags", []).append(w)
        i += 1


def _destination(word: str) -> bool:
    if word == "default":
        return True
    try:
        ipaddress.ip_network(word, strict=False)
    except ValueError:
        return False
    return True


def from_text(lines: list[str], unread: list[str]) -> list[tuple[dict, str]]:
    """Routes from `ip route` text. A multipath route is its first line followed by one
    indented `nexthop ...` line per path (BIRD's ECMP routes, as Calico installs them). A line
    that is neither goes to `unread`."""
    routes: list[tuple[dict, str]] = []
    for line in lines:
        words = line.split()
        if not words:
            continue
        if words[0] == "nexthop" and line[:1].isspace() and routes:
            head, raw = routes[-1]
            hop: dict = {}
            _words(words[1:], hop)
            head.setdefault("nexthops", []).append(hop)
            routes[-1] = (head, raw + "\n" + line.strip())
            continue
        rtype = "unicast"
        if words[0] in _TYPES:
            rtype, words = words[0], words[1:]
        if not words or not _destination(words[0]):
            unread.append(line)
            continue
        route: dict = {"type": rtype, "dst": words[0], "flags": []}
        _words(words[1:], route)
        routes.append((route, line.strip()))
    return routes


def _gateway(d: dict) -> object:
    """The next hop of a route or of one path of it: `gateway`, or for a next hop of another
    family (`via inet6 ADDR`) the `via` object's host."""
    if d.get("gateway"):
        return d["gateway"]
    via = d.get("via")
    if isinstance(via, dict):
        return via.get("host")
    return via if isinstance(via, str) else None


def _paths(r: dict) -> list[dict]:
    """One entry per path: the route itself, or each of its next hops with the route's
    other attributes."""
    hops = r.get("nexthops")
    if not isinstance(hops, list) or not hops:
        return [r]
    return [{**r, "gateway": _gateway(h), "dev": h.get("dev"), "weight": h.get("weight"),
             "flags": [*(r.get("flags") or []), *(h.get("flags") or [])], "via": None,
             "_paths": len(hops)}
            for h in hops if isinstance(h, dict)]


_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"\s*")


def _elements(text: str) -> list[tuple[object, str]]:
    """A JSON array's elements, each with its own text; ValueError or IndexError where the
    text is not exactly one array."""
    if not text.startswith("["):
        raise ValueError(text[:20])
    items: list[tuple[object, str]] = []
    i = _SPACE.match(text, 1).end()
    if text[i] != "]":
        while True:
            obj, end = _DECODER.raw_decode(text, i)
            items.append((obj, text[i:end]))
            i = _SPACE.match(text, end).end()
            if text[i] == "]":
                break
            if text[i] != ",":
                raise ValueError(text[i:i + 20])
            i = _SPACE.match(text, i + 1).end()
    if text[i + 1:].strip():
        raise ValueError(text[i + 1:i + 21])
    return items


def _from_json(text: str, unread: list[str]) -> list[tuple[dict, str]]:
    """Routes from `ip -j` output, each with its own bytes of the node's output as evidence
    (decoded one element at a time: a cluster of 500 nodes has 250,000 routes, and encoding
    each again as JSON cost more than reading it)."""
    text = text.strip() or "[]"
    try:
        items = _elements(text)
    except (ValueError, IndexError):
        try:  # not one array: whatever json makes of it, re-encoded as evidence
            data = json.loads(text)
        except ValueError:
            unread.extend(text.splitlines()[:3])
            return []
        items = [(d, json.dumps(d)) for d in (data if isinstance(data, list) else [data])]
    routes = []
    for d, raw in items:
        if isinstance(d, dict) and isinstance(d.get("dst"), str):
            d.setdefault("type", "unicast")
            routes.append((d, raw))
        else:
            unread.append(raw[:200])
    return routes


def _text(value: object, limit: int) -> str:
    s = value if type(value) is str else str(value)
    return s if len(s) <= limit else clip(s, limit)


def parse(section: Section, node: str) -> list[Fact]:
    routes: list[tuple[dict, str]] = []
    unread: list[str] = []
    for name, fmt, lines in parts(section.stdout):
        if name != "route":
            continue
        if fmt == "json":
            routes.extend(_from_json("\n".join(lines), unread))
        else:
            routes.extend(from_text(lines, unread))
    facts = []
    command, code = "ip -j -4 route show table all", section.exit_code
    for route, raw in routes:
        table = str(route.get("table", "main"))
        if route.get("type") in _SKIP_TYPES or table == "local":
            continue
        for r in _paths(route):
            flags = r.get("flags") if isinstance(r.get("flags"), list) else []
            dst, gateway, dev = r["dst"], _gateway(r), r.get("dev")
            metric, weight = r.get("metric"), r.get("weight")
            facts.append(Fact("route", node, {
                "table": _text(table, 40),
                "type": _text(r.get("type"), 20),
                "dst": "0.0.0.0/0" if dst == "default" else _text(dst, 60),
                "gateway": _text(gateway, 60) if gateway else None,
                "dev": _text(dev, 64) if dev else None,
                "protocol": _text(r.get("protocol", "boot"), 20),
                "scope": _text(r.get("scope", "global"), 20),
                "metric": metric if type(metric) is int else to_int(metric),
                "onlink": "onlink" in flags,
                "linkdown": "linkdown" in flags,
                "paths": r.get("_paths", 1),
                "weight": weight if type(weight) is int else to_int(weight),
            }, Source("routes", command, code, raw if len(raw) <= 500 else clip(raw, 500))))
    return facts + unread_lines(section, node, unread, "the routes on those lines")


PROBE = Probe(
    name="routes",
    command=COMMAND,
    preludes=(IP_BATCH,),
    parse=parse,
    kinds=("route",),
    blocks="routes to pod CIDRs (missing route, wrong device or gateway, BGP-learned routes)",
    tools=("ip",),
)
