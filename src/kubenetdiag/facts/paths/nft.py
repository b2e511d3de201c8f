"""Native nftables rules, as `nft list ruleset` prints them, compiled into walkable rules.

The expressions a firewall or a security agent writes to pick traffic (interfaces, addresses,
protocol, ports, conntrack state, fib address type, marks, masked marks) are decided. A named
set or verdict map (`ip daddr @allowed`, kube-proxy's `ip daddr . meta l4proto . th dport vmap
@service-ips`) is looked up in its elements as collected (nft_element facts, in the Context):
a key that matches an element is decided, one that none matches is not in it, and a set whose
elements were not all read, or a key part the flow leaves open (an ephemeral port), is
undecidable. A `dnat ... to numgen random mod N map { 0 : a . p, ... }` walks every
destination. A rate limit, a random draw of a verdict, an expression this walk does not know,
is undecidable and named. Statements that only count or log let the walk go on.
"""

from __future__ import annotations

import re
from dataclasses import replace
from functools import lru_cache

from kubenetdiag.facts.paths.packet import (
    BRIDGE_PORT,
    PROTO_NUMBERS,
    Packet,
    Tri,
    addr,
    all_of,
    any_of,
    iface_match,
    in_net,
    nat_address,
    port_match,
)
from kubenetdiag.facts.paths.ruleset import Action, Context, Matcher, NamedSet, Rule

_TOKEN = re.compile(r'"[^"]*"|[{}]|,|!=|==|[^\s{},"]+')
_ELEMENT_OPTIONS = ("timeout", "expires", "counter", "comment")
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
    # the arp family (arptables-nft writes its rules there): what an Ethernet ARP for IPv4
    # always carries, its operation, and the sender's and target's addresses
    ("arp", "saddr", "ip"): "src", ("arp", "daddr", "ip"): "dst",
    ("arp", "htype"): "arp.htype", ("arp", "hlen"): "arp.hlen", ("arp", "plen"): "arp.plen",
    ("arp", "ptype"): "arp.ptype", ("arp", "operation"): "arp.operation",
    ("arp", "saddr", "ether"): "arp.ether", ("arp", "daddr", "ether"): "arp.ether",
}
# the fields every ARP an Ethernet device sends for IPv4 has, with their values' spellings
_ARP_CONSTANT = {"arp.htype": {"1", "ether"}, "arp.hlen": {"6"}, "arp.plen": {"4"},
                 "arp.ptype": {"ip", "0x0800", "2048"}}
_ARP_OPERATIONS = {"request": {"request", "1"}, "reply": {"reply", "2"}}
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
        if name == BRIDGE_PORT:
            return None  # which port of the bridge the frame uses is not known
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
        if p.untracked_by is not None:
            return "untracked" in {v.lower() for v in values}
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
    if what.startswith("arp."):
        if p.arp is None:
            return False
        if what in _ARP_CONSTANT:
            return bool(_ARP_CONSTANT[what] & {v.lower() for v in values})
        if what == "arp.operation":
            return bool(_ARP_OPERATIONS[p.arp] & {v.lower() for v in values})
        return None  # a hardware address: which MAC a peer sends with is not walked
    return None


def set_of(elements: list[tuple[str, str | None]], listed: bool = True) -> NamedSet:
    """A NamedSet from (key, value) texts as nft_element facts hold them."""
    out = []
    for key, value in elements:
        parts = [x.strip() for x in key.split(" . ")]
        if parts:  # options nft prints after the key (timeout 3h, expires ...) are not it
            words = parts[-1].split()
            for i, w in enumerate(words):
                if w in _ELEMENT_OPTIONS:
                    words = words[:i]
                    break
            parts[-1] = " ".join(words)
        out.append((tuple(parts), value))
    return NamedSet(tuple(out), listed)


def _element_matches(parts: tuple[str, ...], key: tuple[str, ...], p: Packet, c: Context
                     ) -> Tri:
    if len(parts) != len(key):
        return None  # a key of another shape than the set's: not what the walk can compare
    return all_of(_compare(what, [value], p, c) for what, value in zip(key, parts, strict=True))


def _lookup(key: tuple[str, ...], name: str, table: str, p: Packet, c: Context
            ) -> tuple[Tri, str | None]:
    """(whether the packet's key is in the named set, the matching element's value)."""
    named = c.sets.get((table, name))
    if named is None:
        return None, None
    undecided = not named.complete
    for parts, value in named.elements:
        m = _element_matches(parts, key, p, c)
        if m is True:
            return True, value
        if m is None:
            undecided = True
    return (None if undecided else False), None


def _set_matcher(key: tuple[str, ...], name: str, table: str, neg: bool) -> Matcher:
    def m(p: Packet, c: Context) -> Tri:
        found, _ = _lookup(key, name, table, p, c)
        return found if found is None or not neg else not found

    return m


def _element_action(value: str | None) -> Action | None:
    if value is None:
        return None
    action, _ = _verdict(tokens_of(value), 0)
    return action or Action("unknown", why=f"a map verdict the walk does not know: {value}")


def _vmap(key: tuple[str, ...], name: str | None, table: str,
          anon: list[tuple[tuple[str, ...], str]] | None):
    def dispatch(p: Packet, c: Context) -> Action | None:
        if anon is not None:
            named = NamedSet(tuple((k, v) for k, v in anon))
            found, value = _lookup(key, "", "", p, Context(c.local, {("", ""): named}))
        else:
            found, value = _lookup(key, name or "", table, p, c)
        if found is None:
            return Action("unknown", why=f"the verdict map {'@' + name if name else ''} "
                          "cannot be decided for this packet")
        return _element_action(value) if found else None

    return dispatch


def _anon_elements(tokens: list[str], i: int) -> tuple[list[tuple[tuple[str, ...], str]], int]:
    """`{ k1 . k2 : v, ... }` at i: [(key parts, value)], the index after the brace."""
    out: list[tuple[tuple[str, ...], str]] = []
    cur: list[str] = []
    i += 1
    while i < len(tokens) and tokens[i] != "}":
        if tokens[i] == ",":
            if cur:
                out.append(_anon_element(cur))
            cur = []
        else:
            cur.append(tokens[i])
        i += 1
    if cur:
        out.append(_anon_element(cur))
    return out, i + 1


def _anon_element(words: list[str]) -> tuple[tuple[str, ...], str]:
    text = " ".join(words)
    key, _, value = text.partition(" : ")
    return tuple(x.strip() for x in key.split(" . ")), value.strip()


def _dnat(tokens: list[str], i: int) -> Action:
    """`dnat [ip] [addr . port] to X` at i: X an address[:port], or `numgen random mod N map {
    0 : a . p, ... }`, each destination then walked."""
    j = i + 1
    while j < len(tokens) and tokens[j] != "to":
        j += 1
    rest = tokens[j + 1:]
    unknown = Action("unknown", why="a native nft dnat the walk cannot follow: "
                     + " ".join(tokens[i:]))
    if not rest:
        return unknown
    dests: list[tuple[int, int | None]] = []
    try:
        if rest[0] == "numgen" and "map" in rest and "{" in rest:
            elements, _ = _anon_elements(rest, rest.index("{"))
            for _key, value in elements:
                host, _, port = value.partition(" . ")
                dests.append((addr(host.strip()), int(port) if port.strip() else None))
        elif rest[0][:1].isdigit():
            host, _, port = rest[0].partition(":")
            dests.append((addr(host), int(port) if port else None))
    except ValueError:
        return unknown
    if not dests:
        return unknown
    return Action("dnat", to=dests[0], alternatives=tuple(dests[1:]))


def _snat(tokens: list[str], i: int) -> Action:
    """`snat [ip] to A[-B][:port]` at i: the source it sets, the first of a range; a source the
    walk cannot read ends the chain as an accept, as masquerade does."""
    rest = tokens[tokens.index("to", i) + 1:] if "to" in tokens[i:] else []
    try:
        return Action("snat", to=(nat_address(rest[0]), None))
    except (IndexError, ValueError):
        return Action("accept")


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
    if tok == "masquerade":
        return Action("masq"), len(tokens)
    if tok == "snat":
        return _snat(tokens, i), len(tokens)
    if tok == "dnat":
        return _dnat(tokens, i), len(tokens)
    if tok == "redirect":
        return Action("unknown", why="it is redirected to a local port"), len(tokens)
    if tok == "tproxy":
        return Action("unknown", why="a transparent proxy takes it"), len(tokens)
    return None, i


_MARK_OPS = {"|": "or", "^": "xor", "&": "and"}


def _selector(toks: list[str], i: int) -> tuple[str | None, int]:
    for n in range(_MAX_SELECTOR, 0, -1):
        key = tuple(toks[i:i + n])
        if key in _SELECTORS:
            return _SELECTORS[key], i + n
    return None, i


def _mark_set(toks: list[str], k: int) -> tuple[Action | None, int]:
    """After `[meta] mark set` (k: the index after `set`): `0x10`, or `[meta] mark OP 0x10`
    (kube-proxy's `meta mark set meta mark | 0x00004000`)."""
    try:
        if toks[k] == "meta":
            k += 1
        if toks[k] == "mark" and toks[k + 1] in _MARK_OPS:
            op = _MARK_OPS[toks[k + 1]]
            return Action("mark", mark=(op, int(toks[k + 2], 0), 0)), k + 3
        return Action("mark", mark=("set", int(toks[k], 0), 0xFFFFFFFF)), k + 1
    except (ValueError, IndexError):
        return None, k + 1


@lru_cache(maxsize=65536)
def compile_rule(chain: str, position: int, text: str, table: str = "") -> Rule:
    """The rule as the walk sees it; `table` ("ip kube-proxy") is where its `@name` sets are."""
    toks = tokens_of(text)
    matchers: list[Matcher] = []
    undecidable = ""
    action = Action("continue")
    dispatch = None
    notrack = "notrack" in toks
    i = 0
    while i < len(toks):
        verdict, j = _verdict(toks, i)
        if verdict is not None:
            action = verdict
            break
        # meta mark set / mark set: the walk tracks marks set on the way
        if toks[i:i + 2] == ["mark", "set"] or toks[i:i + 3] == ["meta", "mark", "set"]:
            k = toks.index("set", i)
            marked, i = _mark_set(toks, k + 1)
            if marked is not None:
                action = marked
            continue
        if "set" in toks[i:i + 3] and toks[i] in ("ct", "meta"):  # ct mark set, meta nftrace set
            i = toks.index("set", i) + 2
            continue
        if toks[i:i + 3] == ["numgen", "random", "mod"]:
            # a random draw of a verdict (kube-proxy's endpoint chains under session
            # affinity): one choice is decided, several are not
            k = i + 4
            if toks[k:k + 1] == ["offset"]:
                k += 2
            if toks[k:k + 2] == ["vmap", "{"]:
                anon, _ = _anon_elements(toks, k + 1)
                values = {v for _, v in anon}
                if len(values) == 1:
                    action = _element_action(values.pop()) or action
                else:
                    action = Action("unknown", why="a random draw (numgen) picks the verdict")
                break
        what, i = _selector(toks, i)
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
        if what == "mark" and toks[i:i + 1] == ["&"]:  # meta mark & 0x4000 != 0x0
            try:
                mask = int(toks[i + 1], 0)
                i += 2
                neg = toks[i] in ("!=", "ne")
                i += 1 if toks[i] in _OPS else 0
                want = int(toks[i], 0)
                i += 1
                matchers.append(lambda p, c, m=mask, w=want, n=neg: ((p.mark & m) == w) != n)
            except (ValueError, IndexError):
                matchers.append(lambda p, c: None)
                undecidable = undecidable or "a masked mark"
                i += 1
            continue
        key = [what]
        while toks[i:i + 1] == ["."]:  # a concatenation: ip daddr . meta l4proto . th dport
            nxt, k = _selector(toks, i + 1)
            if nxt is None:
                break
            key.append(nxt)
            i = k
        neg = False
        if i < len(toks) and toks[i] in _OPS:
            neg = toks[i] in ("!=", "ne")
            i += 1
        if toks[i:i + 1] == ["vmap"]:
            name = toks[i + 1][1:] if toks[i + 1:i + 2] and toks[i + 1].startswith("@") else None
            if name is not None:
                dispatch = _vmap(tuple(key), name, table, None)
            elif toks[i + 1:i + 2] == ["{"]:
                anon, _ = _anon_elements(toks, i + 1)
                dispatch = _vmap(tuple(key), None, table, anon)
            else:
                action = Action("unknown", why="a verdict map the walk cannot read")
            break  # the map's verdict is the rule's
        if i < len(toks) and toks[i].startswith("@"):
            matchers.append(_set_matcher(tuple(key), toks[i][1:], table, neg))
            undecidable = undecidable or f"the set {toks[i]}"
            i += 1
            continue
        if len(key) > 1:
            if toks[i:i + 1] == ["{"]:
                anon, i = _anon_elements(toks, i)
                elems = NamedSet(tuple((k, None) for k, _ in anon))
                matchers.append(
                    lambda p, c, e=elems, k=tuple(key), n=neg: (
                        lambda r: r if r is None or not n else not r)(
                        _lookup(k, "", "", p, Context(c.local, {("", ""): e}))[0]))
            else:
                matchers.append(lambda p, c: None)
                undecidable = undecidable or "a concatenation"
                _, i = _value(toks, i)
            continue
        values, i = _value(toks, i)
        if values is None:
            matchers.append(lambda p, c: None)
            undecidable = undecidable or f"a named set in {what}"
            continue
        matchers.append(_matcher(what, values, neg))
    if notrack and dispatch is None:
        action = replace(action, notrack=True)
    return Rule(chain, position, text, tuple(matchers), action, undecidable, dispatch=dispatch)


NAMED_PRIORITIES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50,
                    "srcnat": 100, "out": 100}
# the bridge family names its own (nft(8), "standard priority names")
BRIDGE_PRIORITIES = {"dstnat": -300, "filter": -200, "out": 100, "srcnat": 300}


def priority(text: str, family: str = "ip") -> int:
    """`filter`, `mangle - 5`, `-100` as a number."""
    t = text.replace(" ", "")
    m = re.fullmatch(r"([a-z]+)?([+-]?\d+)?", t)
    if not m:
        return 0
    names = BRIDGE_PRIORITIES if family == "bridge" else NAMED_PRIORITIES
    base = names.get(m.group(1) or "", 0)
    return base + int(m.group(2) or 0)
