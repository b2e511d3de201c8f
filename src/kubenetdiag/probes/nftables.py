"""nftables rule sets, read with `nft list ruleset` where nf_tables is in use.

iptables-nft keeps its rules in nftables too (tables ip filter, ip nat...); those are already
facts of the iptables probe, so here they are only counted and marked `owner: iptables-nft`.
What this probe adds is what iptables-save cannot show: tables made with nft directly
(firewalld's `inet firewalld`, kube-proxy's nftables mode, a hand-written `inet filter`), with
the rules of every chain, the regular ones a base chain jumps or goes to included, and their
named sets and maps with the elements listed (nft_set, nft_element): what a rule's `@name`
looks up, such as kube-proxy's `service-ips` verdict map from `VIP . proto . port` to each
Service port's chain. Elements may span lines; commas and braces inside quoted comments do not
count.

It lists with -a, which adds `# handle N` to each rule: the handle is the only way to delete
one native rule (`nft delete rule FAMILY TABLE CHAIN handle N`), so a finding can print that
exact command. Older bundles, read without it, have no handle.

Listing needs nf_tables loaded: asking netlink for it otherwise makes the kernel load the
module, a change to the node, so when it is not loaded we say so and list nothing.

Sample output and the facts it gives:

>>> out = (
...     'table ip filter {\\n'
...     '\\tchain FORWARD {\\n'
...     '\\t\\ttype filter hook forward priority filter; policy drop;\\n'
...     '\\t\\tudp dport 8472 counter packets 3 bytes 180 drop # handle 4\\n'
...     '\\t}\\n'
...     '}\\n'
...     'table inet guard { # handle 9\\n'
...     '\\tchain input { # handle 1\\n'
...     '\\t\\ttype filter hook input priority 0; policy accept;\\n'
...     '\\t\\tudp dport 4789 drop # handle 7\\n'
...     '\\t}\\n'
...     '}\\n'
... )
>>> facts = parse(Section("nftables", "", 0, 0.0, out, ""), "node1")
>>> [(f.attrs["owner"], f.attrs["chain"], f.attrs["policy"], f.attrs["drop_rules"])
...  for f in facts if f.kind == "nft_chain"]
[('iptables-nft', 'FORWARD', 'drop', 1), ('nft', 'input', 'accept', 1)]
>>> [(f.attrs["text"], f.attrs["handle"]) for f in facts if f.kind == "nft_rule"]
[('udp dport 4789 drop', 7)]
"""

from __future__ import annotations

import re
from collections.abc import Callable

from kubenetdiag.facts.model import Fact, Source, excerpt
from kubenetdiag.probes.base import HOLD, Probe, Section
from kubenetdiag.probes.text import clip

COMMAND = (
    # A loaded module has its /sys/module directory; /proc/modules, read by the shell (a
    # seq_file: byte-wise reads are fine), only where it has none. Without module support
    # (no /proc/modules) nft is asked.
    "if [ ! -d /sys/module/nf_tables ] && [ -r /proc/modules ]; then l=; "
    "while read -r m _; do [ \"$m\" = nf_tables ] && { l=1; break; }; done </proc/modules; "
    "[ -n \"$l\" ] || { echo '# nf_tables is not loaded'; return 0; }; fi; "
    "command -v nft >/dev/null 2>&1 || "
    "{ echo 'kubenetdiag: nft: command not found (nf_tables is loaded)' >&2; return 127; }; "
    f"{HOLD} nft -a list ruleset"
)

_TABLE = re.compile(r"^table (\S+) (\S+) \{")
_CHAIN = re.compile(r"^chain (\S+) \{")
_SET = re.compile(r"^(set|map) (\S+) \{")
_COMMENT = re.compile(r'\s*\bcomment "((?:[^"\\]|\\.)*)"')
# Elements kept per named set or map: kube-proxy's service-ips holds one per Service port, a
# blocklist may hold hundreds of thousands; nft_set.listed says how many were kept.
MAX_ELEMENTS = 20000
_BASE = re.compile(
    r"type (\S+) hook (\S+)(?: devices? (?:= )?(\{[^}]*\}|\S+))? priority ([^;]+);"
    r"(?: policy (\w+);)?")
# nft writes this to stderr while it prints the rule holding the target; collected with 2>&1,
# it lands wherever stdout's buffer was last flushed, often in the middle of a rule's line.
_XT_WARNING = re.compile(r"# Warning: XT (?:target|match|watcher) \S+ not found\n")
_MANAGED = re.compile(r"table (\S+) (\S+) is managed by iptables-nft")
_COUNTER = re.compile(r"counter packets (\d+) bytes (\d+)")
_HANDLE = re.compile(r"\s*# handle (\d+)$")
_VERDICTS = ("accept", "drop", "reject", "return", "jump", "goto", "queue", "continue")
_IPTABLES_NAMES = {"filter", "nat", "mangle", "raw", "security"}


def _verdict(rule: str) -> str:
    words = rule.replace(";", " ").split()
    for w in reversed(words):
        if w in _VERDICTS:
            return w
    # `reject with icmpx admin-prohibited`: the verdict is not the last word
    for w in words:
        if w in ("reject", "drop", "accept", "jump", "goto"):
            return w
    return "other" if words else "none"


# the xtables-nft tool that writes each family's tables (nft warns "managed by iptables-nft"
# for all of them); only iptables' rules are read again by the iptables probe
_XTABLES = {"ip": "iptables-nft", "ip6": "iptables-nft", "arp": "arptables-nft",
            "bridge": "ebtables-nft"}


def _owner(family: str, table: str, chains: dict, managed: set) -> str:
    if (family, table) in managed:
        return _XTABLES.get(family, "iptables-nft")
    if table == "firewalld":
        return "firewalld"
    if table == "kube-proxy":
        return "kube-proxy"
    if table.startswith("cilium"):
        return "cilium"
    if family in ("ip", "ip6") and table in _IPTABLES_NAMES and any(c.isupper() for c in chains):
        return "iptables-nft"  # older nft prints no "managed by" warning
    return "nft"


def parse(section: Section, node: str) -> list[Fact]:
    managed = set(_MANAGED.findall(section.stdout + "\n" + section.stderr))
    tables: list[dict] = []
    table: dict | None = None
    chain: dict | None = None
    nset: dict | None = None  # a named set or map being read
    depth = 0
    for raw in _XT_WARNING.sub("", section.stdout).splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        opens, closes = _braces(line)
        if depth == 0:
            m = _TABLE.match(line)
            if m:
                table = {"family": m.group(1), "name": m.group(2), "chains": {}, "sets": {},
                         "raw": line}
                tables.append(table)
        elif depth == 1 and table is not None:
            m = _CHAIN.match(line)
            if m:
                chain = {"name": m.group(1), "base": None, "rules": []}
                table["chains"][m.group(1)] = chain
            m = _SET.match(line)
            if m:
                nset = {"kind": m.group(1), "name": m.group(2), "type": "", "elements": None}
                table["sets"][m.group(2)] = nset
        elif depth == 2 and chain is not None and opens == closes:
            m = _BASE.search(line)
            if m and line.startswith("type "):
                chain["base"] = m.groups()
            elif line != "}" and not line.startswith(("comment ", "policy ", "devices ")):
                h = _HANDLE.search(line)
                chain["rules"].append(
                    (line[:h.start()], int(h.group(1))) if h else (line, None))
        elif depth >= 2 and nset is not None:
            if depth == 2 and line.startswith("type "):
                nset["type"] = line[5:].strip()
            elif depth == 2 and line.startswith("elements = {"):
                nset["elements"] = [line.removeprefix("elements = {")]
            elif depth > 2 and nset["elements"] is not None:
                nset["elements"].append(line)
        depth = max(0, depth + opens - closes)
        if depth <= 1:
            chain = None
            nset = None
        if depth == 0:
            table = None
    facts: list[Fact] = []
    for t in tables:
        owner = _owner(t["family"], t["name"], t["chains"], managed)

        def src(text: str, t=t) -> Source:
            return Source("nftables", "nft -a list ruleset", section.exit_code,
                          excerpt(text, 1000))

        facts.append(Fact("nft_table", node, {
            "family": t["family"],
            "table": t["name"],
            "owner": owner,
            "chains": len(t["chains"]),
            "rules": sum(len(c["rules"]) for c in t["chains"].values()),
            # An empty chain has no nft_rule facts; without its name a jump to it would look
            # like a jump to a chain that was never read.
            "empty_chains": ",".join(name for name, c in t["chains"].items() if not c["rules"]),
        }, src(t["raw"])))
        for c in t["chains"].values():
            verdicts = [_verdict(r) for r, _ in c["rules"]]
            if c["base"] is not None:
                facts.append(_base_chain(node, t, c, owner, verdicts, src))
            if owner == "iptables-nft":
                continue  # the iptables probe has these rules, with iptables' own syntax
            # Regular chains too: a base chain's jump or goto runs them, and a walk that
            # follows it needs their rules as much as the base chain's.
            for pos, ((rule, handle), verdict) in enumerate(zip(c["rules"], verdicts, strict=True),
                                                             1):
                m = _COUNTER.search(rule)
                facts.append(Fact("nft_rule", node, {
                    "family": t["family"],
                    "table": t["name"],
                    "chain": c["name"],
                    "position": pos,
                    "verdict": verdict,
                    "text": clip(rule, 500),
                    "pkts": int(m.group(1)) if m else None,
                    "bytes": int(m.group(2)) if m else None,
                    "handle": handle,
                }, src(rule)))
        if owner != "iptables-nft":
            for st in t["sets"].values():
                facts.extend(_set_facts(node, t, st, src))
    return facts


def _braces(line: str) -> tuple[int, int]:
    """{ and } on a line, those in quoted text (a comment) left out."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', line)
    return bare.count("{"), bare.count("}")


def split_elements(text: str) -> list[str]:
    """The elements of `elements = { a, b : c, ... }` (text after the opening brace), split on
    the commas outside quotes and inner braces.

    >>> split_elements('10.96.0.1 . tcp . 443 : goto svc-a, 10.96.0.10 comment "x, y" }')
    ['10.96.0.1 . tcp . 443 : goto svc-a', '10.96.0.10 comment "x, y"']
    """
    out, cur, depth, quoted = [], [], 0, False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "{":
            depth += 1
        elif not quoted and ch == "}":
            if depth == 0:
                break
            depth -= 1
        elif not quoted and ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur).strip())
    return [e for e in out if e]


def element_parts(element: str) -> tuple[str, str | None, str | None]:
    """(key, value, comment) of one set or map element as nft prints it: `key [comment "c"]
    [: value]`; the key's own options (timeout, expires, counter) left in the key text.

    >>> element_parts('10.96.0.20 . tcp . 80 comment "default/web:http" : goto reject-chain')
    ('10.96.0.20 . tcp . 80', 'goto reject-chain', 'default/web:http')
    >>> element_parts('10.96.0.1')
    ('10.96.0.1', None, None)
    """
    m = _COMMENT.search(element)
    comment = m.group(1) if m else None
    bare = element[:m.start()] + element[m.end():] if m else element
    key, sep, value = bare.partition(" : ")
    return key.strip(), (value.strip() if sep else None), comment


def _set_facts(node: str, t: dict, st: dict, src: Callable[[str], Source]) -> list[Fact]:
    key_type, _, value_type = st["type"].partition(" : ")
    elements = split_elements(" ".join(st["elements"])) if st["elements"] else []
    out = [Fact("nft_set", node, {
        "family": t["family"],
        "table": t["name"],
        "set": st["name"],
        "map": st["kind"] == "map",
        "key_type": key_type.strip(),
        "value_type": value_type.strip() or None,
        "elements": len(elements),
        "listed": min(len(elements), MAX_ELEMENTS),
    }, src(f"{st['kind']} {st['name']} {{ type {st['type']}; {len(elements)} elements }}"))]
    for element in elements[:MAX_ELEMENTS]:
        key, value, comment = element_parts(element)
        out.append(Fact("nft_element", node, {
            "family": t["family"],
            "table": t["name"],
            "set": st["name"],
            "key": clip(key, 300),
            "value": clip(value, 300) if value is not None else None,
            "comment": clip(comment, 300) if comment is not None else None,
        }, src(element)))
    return out


def _base_chain(node: str, t: dict, c: dict, owner: str, verdicts: list[str],
                src: Callable[[str], Source]) -> Fact:
    ctype, hook, device, prio, policy = c["base"]
    return Fact("nft_chain", node, {
        "family": t["family"],
        "table": t["name"],
        "chain": c["name"],
        "owner": owner,
        "type": ctype,
        "hook": hook,
        "priority": prio.strip(),
        "policy": policy,
        "device": ",".join(d.strip('" ') for d in device.strip("{}").split(",") if d.strip('" '))
        if device else None,
        "rules": len(c["rules"]),
        "drop_rules": verdicts.count("drop"),
        "reject_rules": verdicts.count("reject"),
    }, src("\n".join([f"chain {c['name']}", *(r for r, _ in c["rules"][:20])])))


PROBE = Probe(
    name="nftables",
    command=COMMAND,
    parse=parse,
    kinds=("nft_table", "nft_chain", "nft_rule", "nft_set", "nft_element"),
    blocks="nftables rules made outside iptables (firewalld, kube-proxy nftables mode, nft)",
)
