"""Policy routing rules (`ip rule`): which routing table each packet is looked up in, in
priority order, or whether a rule kills it before any lookup (blackhole, unreachable,
prohibit). The routes probe reads every table; these rules say which of them a flow sees, so
a `to 10.244.2.0/24 blackhole` or a mark-based rule steering pod traffic into an empty table
is found where the main table looks healthy.

`ip -j` where iproute2 has it. CentOS 7's iproute prints text only (`0:	from all lookup
local`); so does an iproute2 that takes `-j` without knowing JSON for rules, and the parser
reads either. A rule's `text` is the line `ip rule show` prints (rebuilt from JSON in the same
words), so evidence reads the same whichever format the node gave.

Sample output and the facts it gives:

>>> out = (
...     '##knd:rule json\\n'
...     '[{"priority":0,"src":"all","table":"local"},{"priority":100,"src":"all",'
...     '"dst":"10.244.2.0","dstlen":24,"action":"blackhole"},{"priority":32766,'
...     '"src":"all","table":"main"}]\\n'
... )
>>> facts = parse(Section("ip_rule", "", 0, 0.0, out, ""), "node1")
>>> [(f.attrs["priority"], f.attrs["action"], f.attrs["table"], f.attrs["dst"]) for f in facts]
[(0, 'lookup', 'local', None), (100, 'blackhole', None, '10.244.2.0/24'),
 (32766, 'lookup', 'main', None)]
>>> facts[1].attrs["text"]
'100: from all to 10.244.2.0/24 blackhole'
"""

from __future__ import annotations

import json
import re

from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.probes.base import IP_BATCH, Probe, Section, from_ip_batch
from kubenetdiag.probes.text import clip, parts

# The script's `ip -batch` (IP_BATCH), else the JSON attempt's output, not asked for twice.
COMMAND = (
    from_ip_batch("rule") + " || "
    "if o=$(ip -j -4 rule show 2>/dev/null); then "
    "echo '##knd:rule json'; printf '%s\\n' \"$o\"; "
    "else echo '##knd:rule text'; ip -4 rule show; fi"
)

# Rule types ip prints as the rule's last word (FR_ACT_* and the route types a rule may take).
_TYPES = {"blackhole", "unreachable", "prohibit", "nop", "throw"}
_LINE = re.compile(r"^(\d+):\s+(.*)$")
# Selector and modifier words ip prints, each followed by one value.
_VALUED = {"from", "to", "tos", "dsfield", "dscp", "fwmark", "iif", "dev", "oif", "uidrange",
           "ipproto", "sport", "dport", "lookup", "table", "suppress_prefixlength",
           "suppress_ifgroup", "realms", "goto", "proto", "map-to", "flowlabel"}


def _prefix(address: str | None, length: object = None) -> str | None:
    """ip prints a host prefix as a bare address; a fact always carries the length."""
    if not address or address == "all":
        return None
    if "/" in address:
        return address
    if isinstance(length, int) and not isinstance(length, bool):
        return f"{address}/{length}"
    return f"{address}/32" if "." in address else f"{address}/128"


def _port(d: dict, key: str) -> str | None:
    if d.get(key) is not None:
        return str(d[key])
    start, end = d.get(f"{key}_start"), d.get(f"{key}_end")
    if start is None:
        return None
    return str(start) if end in (None, start) else f"{start}-{end}"


def _json_text(d: dict) -> str:
    """The rule as `ip rule show` words it, from its JSON object (same words, same order)."""
    words = ["not"] if "not" in d else []
    src = d.get("src")
    if src and src != "all":
        words += ["from", f"{src}/{d['srclen']}" if "srclen" in d else str(src)]
    else:
        words += ["from", "all"]
    if d.get("dst"):
        words += ["to", f"{d['dst']}/{d['dstlen']}" if "dstlen" in d else str(d["dst"])]
    for key in ("tos", "dscp"):
        if key in d:
            words += [key, str(d[key])]
    if "fwmark" in d:
        words += ["fwmark", f"{d['fwmark']}/{d['fwmask']}" if "fwmask" in d else str(d["fwmark"])]
    for key in ("iif", "oif"):
        if key in d:
            words += [key, str(d[key])] + (["[detached]"] if f"{key}_detached" in d else [])
    if d.get("l3mdev"):
        words += ["lookup", "[l3mdev-table]"]
    if "uid_start" in d:
        words += ["uidrange", f"{d['uid_start']}-{d.get('uid_end')}"]
    if "ipproto" in d:
        words += ["ipproto", str(d["ipproto"])]
    for key in ("sport", "dport"):
        port = _port(d, key)
        if port:
            words += [key, port]
    if "table" in d:
        words += ["lookup", str(d["table"])]
        for key, word in (("suppress_prefixlen", "suppress_prefixlength"),
                          ("suppress_ifgroup", "suppress_ifgroup")):
            if key in d:
                words += [word, str(d[key])]
    if "flow_to" in d:
        words += ["realms", f"{d['flow_from']}/{d['flow_to']}" if "flow_from" in d
                  else str(d["flow_to"])]
    if "goto" in d:
        words += ["goto", str(d["goto"])] + (["[unresolved]"] if "unresolved" in d else [])
    elif "nop" in d:
        words.append("nop")
    elif "action" in d:
        words.append(str(d["action"]))
    # `ip -d` (the script's one `ip -batch` has it, for the links) adds the protocol of every
    # rule; the kernel's own three read as ip prints them without it
    if "protocol" in d and d["protocol"] != "kernel":
        words += ["proto", str(d["protocol"])]
    return " ".join(words)


def _json_table(d: dict, action: str) -> str | None:
    # A goto's target priority goes where a lookup's table does: the walk reads the one
    # place for where a rule sends the packet next.
    if action == "goto":
        return str(d["goto"])
    if action == "lookup":
        if "table" in d:
            return str(d["table"])
        return "[l3mdev-table]" if d.get("l3mdev") else None
    return None


def _from_json(d: dict) -> dict:
    if "goto" in d:
        action = "goto"
    elif "nop" in d:
        action = "nop"
    elif d.get("action"):
        action = str(d["action"])
    elif "table" in d or d.get("l3mdev"):
        action = "lookup"
    else:
        action = "unknown"
    src = d.get("src") if isinstance(d.get("src"), str) else None
    dst = d.get("dst") if isinstance(d.get("dst"), str) else None
    fwmark = None
    if d.get("fwmark") is not None:
        fwmark = f"{d['fwmark']}/{d['fwmask']}" if "fwmask" in d else str(d["fwmark"])
    prio = d.get("priority")
    return {
        "priority": prio if isinstance(prio, int) and not isinstance(prio, bool) else 0,
        "action": action,
        "table": _json_table(d, action),
        "src": _prefix(src, d.get("srclen")),
        "dst": _prefix(dst, d.get("dstlen")),
        "iif": str(d["iif"]) if d.get("iif") else None,
        "oif": str(d["oif"]) if d.get("oif") else None,
        "fwmark": fwmark,
        "invert": "not" in d,
        "ipproto": str(d["ipproto"]) if d.get("ipproto") is not None else None,
        "dport": _port(d, "dport"),
        "text": f"{d.get('priority', 0)}: {_json_text(d)}",
    }


def _from_text(line: str) -> dict | None:
    m = _LINE.match(line.strip())
    if not m:
        return None
    words = m.group(2).split()
    rule: dict = {"priority": int(m.group(1)), "action": "unknown", "table": None, "src": None,
                  "dst": None, "iif": None, "oif": None, "fwmark": None, "invert": False,
                  "ipproto": None, "dport": None,
                  "text": f"{m.group(1)}: {' '.join(words)}"}
    i = 0
    while i < len(words):
        w, value = words[i], words[i + 1] if i + 1 < len(words) else None
        if w == "not":
            rule["invert"] = True
        elif w in _VALUED and value is not None:
            if w == "from":
                # `from 0/8`: a source length with no address (ip's own shorthand)
                rule["src"] = _prefix("0.0.0.0/" + value[2:] if value.startswith("0/") else value)
            elif w == "to":
                rule["dst"] = _prefix("0.0.0.0/" + value[2:] if value.startswith("0/") else value)
            elif w in ("iif", "dev", "oif"):
                rule["oif" if w == "oif" else "iif"] = value
            elif w in ("fwmark", "ipproto", "dport"):
                rule[w] = value
            elif w in ("lookup", "table"):
                rule["action"], rule["table"] = "lookup", value
            elif w == "goto":
                rule["action"], rule["table"] = "goto", value
            elif w == "map-to":
                rule["action"] = "nat"
            i += 2
            continue
        elif w in _TYPES:
            rule["action"] = w
        elif w == "masquerade":
            rule["action"] = "nat"
        i += 1
    return rule


def _rules(fmt: str, lines: list[str]) -> list[tuple[dict, str]]:
    if fmt == "json":
        try:
            data = json.loads("\n".join(lines) or "[]")
        except ValueError:
            data = None  # text under a JSON header (an ip that takes -j without JSON rules)
        if isinstance(data, list):
            return [(_from_json(d), json.dumps(d)) for d in data if isinstance(d, dict)]
    out = []
    for line in lines:
        rule = _from_text(line)
        if rule:
            out.append((rule, line.strip()))
    return out


def parse(section: Section, node: str) -> list[Fact]:
    facts = []
    for name, fmt, lines in parts(section.stdout):
        if name != "rule":
            continue
        for rule, raw in _rules(fmt, lines):
            attrs = {k: clip(v, 120) if isinstance(v, str) and k != "text" else v
                     for k, v in rule.items()}
            attrs["text"] = clip(rule["text"], 500)
            facts.append(Fact("ip_rule", node, attrs, Source(
                "ip_rule", "ip -j -4 rule show", section.exit_code, clip(raw, 500))))
    return facts


PROBE = Probe(
    name="ip_rule",
    command=COMMAND,
    preludes=(IP_BATCH,),
    parse=parse,
    kinds=("ip_rule",),
    blocks="policy routing rules (which table a flow is looked up in; blackhole, unreachable "
           "and prohibit rules)",
    tools=("ip",),
)
