"""Native nftables rules, as `nft list ruleset` prints them, compiled into walkable rules.

The expressions a firewall or a security agent writes to pick traffic (interfaces, addresses,
protocol, ports, conntrack state, fib address type, marks) are decided; a named set (`@allowed`),
a map, a rate limit, an expression this walk does not know, is undecidable and named. Statements
that only count or log let the walk go on.
"""

from __future__ import annotations

import contextlib
import re
from functools import lru_cache

from kubenetdiag.facts.paths.packet import (
    PROTO_NUMBERS,
    Packet,
    Tri,
    any_of,
    iface_match,
    in_net,
    port_match,
)
from kubenetdiag.facts.paths.ruleset import Action, Context, Matcher, Rule

_TOKEN = re.compile(r'"[^"]*"|[{}]|,|!=|==|[^\s{},"]+')
_OPS = {"!=", "==", "<", ">", "<=", ">=", "eq", "ne"}

# selector words -> what it reads
_SELECTORS: dict[tuple[str, ...], str] = {
    ("iifname",): "iif", ("oifname",): "oif", ("iif",): "iif", ("oif",): "oif",
    ("meta", "iifname"): "iif", ("meta", "oifname"): "oif", ("meta", "iif"): "iif",
    ("meta", "oif"): "oif",
    ("ip", "saddr"): "src", ("ip", "daddr"): "dst",
    ("ip", "protocol"): "proto", ("meta", "l4proto"): "proto", ("meta", "protocol"): "nfproto",
    ("meta", "nfproto"): "nfproto",
    ("tcp", "dport"): "tcp.dport", ("tcp", "sport"): "tcp.sport",
    ("udp", "dport"): "udp.dport", ("udp", "sport"): "udp.sport",
    ("th", "dport"): "th.dport", ("th", "sport"): "th.sport",
    ("ct", "state"): "ctstate", ("ct", "status"): "ctstatus",
    ("meta", "mark"): "mark", ("mark",): "mark",
    ("fib", "daddr", "type"): "fib.daddr", ("fib", "saddr", "type"): "fib.saddr",
    ("icmp", "type"): "icmp", ("meta", "pkttype"): "pkttype", ("pkttype",): "pkttype",
    ("ip", "version"): "ipversion",
}
_MAX_SELECTOR = max(len(k) for k in _SELECTORS)
_VERDICTS = {"accept", "drop", "reject", "return", "continue", "queue"}
# statements that let the packet go on; their arguments are skipped up to the next keyword
_STATEMENTS = {"counter", "log", "comment", "notrack", "limit", "quota", "meter", "ct", "meta",
               "nftrace", "flow", "add", "update", "set", "numgen", "synproxy"}


def tokens_of(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _value(tokens: list[str], i: int) -> tuple[list[str] | None, int]:
    """A value or a `{ a, b }` set at i; None for a named set or map (`@name`)."""
    if i >= len(tokens):
        return [], i
    if tokens[i] == "{":
        out, i = [], i + 1
        while i < len(tokens) and tokens[i] != "}":
            if tokens[i] != ",":
                out.append(tokens[i].strip('"'))
            i += 1
        return out, i + 1
    if tokens[i].startswith("@"):
        return None, i + 1
    vals = [tokens[i].strip('"')]
    i += 1
    while i + 1 < len(tokens) and tokens[i] == ",":  # `established,related`
        vals.append(tokens[i + 1].strip('"'))
        i += 2
    return vals, i


def _mark_is(mark: int, value: str) -> Tri:
    try:
        return mark == int(value, 0)
    except ValueError:
        return None


def _compare(what: str, values: list[str], p: Packet, c: Context) -> Tri:
    if what in ("iif", "oif"):
        name = p.iif if what == "iif" else p.oif
        return any(iface_match(v, name) for v in values)
    if what in ("src", "dst"):
        a = p.src if what == "src" else p.dst
        return any_of(in_net(a, v) for v in values)
    if what == "proto":
        return any(PROTO_NUMBERS.get(v, v) == p.proto for v in values)
    if what in ("nfproto", "ipversion"):
        return any(v in ("ipv4", "ip", "4") for v in values)
    if what.endswith(("dport", "sport")):
        l4, _, field = what.partition(".")
        if l4 in ("tcp", "udp") and p.proto != l4:
            return False
        if l4 == "th" and p.proto not in ("tcp", "udp", "sctp"):
            return False
        port = p.dport if field == "dport" else p.sport
        return any_of(port_match(v, port) for v in values)
    if what == "ctstate":
        have = {"new"} if p.state == "new" else {"established"}
        return bool(have & {v.lower() for v in values})
    if what == "ctstatus":
        return ("dnat" in values) and p.dnat if "dnat" in values else None
    if what == "mark":
        return any_of(_mark_is(p.mark, v) for v in values)
    if what in ("fib.daddr", "fib.saddr"):
        a = p.dst if what == "fib.daddr" else p.src
        local = a in c.local or (a >> 24) == 127
        kinds = set(values)
        return ("local" in kinds) if local else bool(kinds & {"unicast"})
    if what == "icmp":
        if p.proto != "icmp":
            return False
        return ("echo-request" if p.state == "new" else "echo-reply") in values
    if what == "pkttype":
        return "host" in values or "unicast" in values
    return None


def _matcher(what: str, values: list[str], neg: bool) -> Matcher:
    def m(p: Packet, c: Context) -> Tri:
        r = _compare(what, values, p, c)
        return r if r is None or not neg else not r

    return m


def _verdict(tokens: list[str], i: int) -> tuple[Action | None, int]:
    tok = tokens[i]
    if tok in ("jump", "goto") and i + 1 < len(tokens):
        return Action(tok, chain=tokens[i + 1]), i + 2
    if tok == "accept":
        return Action("accept"), i + 1
    if tok == "drop":
        return Action("drop"), i + 1
    if tok == "reject":
        return Action("reject"), len(tokens)
    if tok == "return":
        return Action("return"), i + 1
    if tok == "continue":
        return Action("continue"), i + 1
    if tok == "queue":
        return Action("unknown", why="a userspace program (nft queue) decides"), len(tokens)
    if tok in ("masquerade", "snat"):
        return Action("accept"), len(tokens)
    if tok == "dnat":
        return Action("unknown", why="a native nft dnat is not followed by the walk"), len(tokens)
    if tok == "redirect":
        return Action("unknown", why="it is redirected to a local port"), len(tokens)
    if tok == "tproxy":
        return Action("unknown", why="a transparent proxy takes it"), len(tokens)
    return None, i


@lru_cache(maxsize=65536)
def compile_rule(chain: str, position: int, text: str) -> Rule:
    toks = tokens_of(text)
    matchers: list[Matcher] = []
    undecidable = ""
    action = Action("continue")
    i = 0
    while i < len(toks):
        verdict, j = _verdict(toks, i)
        if verdict is not None:
            action = verdict
            break
        # meta mark set / mark set: the walk tracks marks set on the way
        if toks[i:i + 2] == ["mark", "set"] or toks[i:i + 3] == ["meta", "mark", "set"]:
            k = toks.index("set", i)
            with contextlib.suppress(ValueError, IndexError):
                action = Action("mark", mark=("set", int(toks[k + 1], 0), 0xFFFFFFFF))
            i = k + 2
            continue
        if "set" in toks[i:i + 3] and toks[i] in ("ct", "meta"):  # ct mark set, meta nftrace set
            i = toks.index("set", i) + 2
            continue
        what = None
        for n in range(_MAX_SELECTOR, 0, -1):
            key = tuple(toks[i:i + n])
            if key in _SELECTORS:
                what, i = _SELECTORS[key], i + n
                break
        if what is None:
            if toks[i] in _STATEMENTS or toks[i] in ("packets", "bytes", "prefix", "level",
                                                      "flags", "group", "rate", "burst"):
                if toks[i] in ("limit", "quota", "meter", "numgen") and not undecidable:
                    matchers.append(lambda p, c: None)
                    undecidable = toks[i]
                i += 1
                # skip the statement's own arguments (numbers, quoted text, units)
                while i < len(toks) and (toks[i].startswith('"') or toks[i][:1].isdigit()
                                         or toks[i] in ("over", "until", "/", "second", "minute",
                                                        "hour", "day", "bytes", "packets")):
                    i += 1
                continue
            if toks[i].startswith(("ip6", "icmpv6")):
                matchers.append(lambda p, c: False)  # an IPv6 match never matches an IPv4 packet
                i += 1
                continue
            # an expression the walk does not know: the rule cannot be decided
            matchers.append(lambda p, c: None)
            undecidable = undecidable or toks[i]
            i += 1
            continue
        neg = False
        if i < len(toks) and toks[i] in _OPS:
            neg = toks[i] in ("!=", "ne")
            i += 1
        values, i = _value(toks, i)
        if values is None:
            matchers.append(lambda p, c: None)
            undecidable = undecidable or f"a named set in {what}"
            continue
        matchers.append(_matcher(what, values, neg))
    return Rule(chain, position, text, tuple(matchers), action, undecidable)


NAMED_PRIORITIES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50,
                    "srcnat": 100, "out": 100}


def priority(text: str) -> int:
    """`filter`, `mangle - 5`, `-100` as a number."""
    t = text.replace(" ", "")
    m = re.fullmatch(r"([a-z]+)?([+-]?\d+)?", t)
    if not m:
        return 0
    base = NAMED_PRIORITIES.get(m.group(1) or "", 0)
    return base + int(m.group(2) or 0)
