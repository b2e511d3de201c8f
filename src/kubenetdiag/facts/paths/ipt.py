"""iptables-save rule specs compiled into walkable rules.

Matches the walk can decide from the flow (addresses, interfaces, protocol, ports, conntrack
state, addrtype, marks set earlier on the way) are decided; anything else (an ipset, a BPF or
u32 program, a random draw, a rate limit, the owning socket) is undecidable and named, so a
verdict that hangs on it is reported as unknown; an ipset match is decided from the node's sets
as collected (ipsets.py), undecided when the set was not read. Targets that only annotate the
packet (LOG, CT, TCPMSS...) let the walk go on; a queue to userspace ends it as unknown.
"""

from __future__ import annotations

from functools import lru_cache

from kubenetdiag.facts.paths import ipsets
from kubenetdiag.facts.paths.packet import (
    PROTO_NUMBERS,
    Packet,
    Tri,
    addr,
    any_of,
    iface_match,
    in_net,
    nat_address,
    negate,
    port_match,
)
from kubenetdiag.facts.paths.ruleset import Action, Context, Matcher, Rule
from kubenetdiag.probes.iptables import _split

# Targets that change nothing the walk decides on, so the packet goes on to the next rule.
_NON_TERMINAL = {
    "LOG", "NFLOG", "ULOG", "TRACE", "AUDIT", "NOTRACK", "CT", "TCPMSS", "CHECKSUM", "CLASSIFY",
    "DSCP", "TOS", "TTL", "SET", "SECMARK", "CONNSECMARK", "CONNMARK", "IDLETIMER", "LED",
    "RATEEST", "HMARK", "TEE", "NFACCT", "ECN", "HL", "CONNTRACK",
}
# end the nat table's walk for this packet; SNAT and MASQUERADE too, each recorded (below)
_NAT_ACCEPT = {"NETMAP"}
_UNKNOWN = {"NFQUEUE": "a userspace program (NFQUEUE) decides", "QUEUE": "a userspace program "
            "(QUEUE) decides", "TPROXY": "a transparent proxy takes it", "SYNPROXY": "SYNPROXY "
            "answers it", "REDIRECT": "it is redirected to a local port"}
# Match modules whose outcome the collected configuration cannot decide.
_UNDECIDABLE = {
    "bpf", "u32", "string", "statistic", "limit", "hashlimit", "recent", "owner",
    "socket", "cgroup", "rpfilter", "physdev", "length", "ttl", "hl", "mac", "time", "quota",
    "connlimit", "connbytes", "helper", "realm", "policy", "ipvs", "devgroup", "cpu", "nfqueue",
    "condition", "geoip", "ipp2p", "osf", "cluster", "connlabel", "dscp", "tos", "ecn", "esp",
    "ah", "sctp", "dccp", "tcpmss", "l2tp", "ipcomp", "frag", "hbh", "rt", "mh", "ipv6header",
}
_STATES = {"NEW", "ESTABLISHED", "RELATED", "INVALID", "UNTRACKED", "SNAT", "DNAT"}


def _addresses(values: str, field: str) -> Matcher:
    nets = values.split(",")

    def m(p: Packet, c: Context) -> Tri:
        a = p.src if field == "src" else p.dst
        return any_of(in_net(a, n) for n in nets)

    return m


def _state(values: str) -> Matcher:
    wanted = {v.upper() for v in values.split(",")}

    def m(p: Packet, c: Context) -> Tri:
        if p.untracked_by is not None:
            return "UNTRACKED" in wanted
        have = {"NEW" if p.state == "new" else "ESTABLISHED"}
        if p.dnat:
            have.add("DNAT")
        return bool(have & wanted)

    return m


def _addrtype(kind: str, field: str, limit_iface: bool) -> Matcher:
    kinds = {k.upper() for k in kind.split(",")}

    def m(p: Packet, c: Context) -> Tri:
        a = p.src if field == "src" else p.dst
        local = a in c.local or (a >> 24) == 127
        if limit_iface:
            return None  # LOCAL "on this interface": the per-interface addresses are not walked
        got = {"LOCAL", "UNICAST"} if local else {"UNICAST"}
        return bool(got & kinds)

    return m


def _mark(value: str) -> Matcher:
    v, _, mask = value.partition("/")
    try:
        want, msk = int(v, 0), int(mask, 0) if mask else 0xFFFFFFFF
    except ValueError:
        return lambda p, c: None
    return lambda p, c: (p.mark & msk) == want


def _icmp_type(value: str) -> Matcher:
    names = {"echo-request": 8, "echo-reply": 0, "any": -1}

    def m(p: Packet, c: Context) -> Tri:
        if p.proto != "icmp":
            return False
        t = names.get(value.split("/")[0])
        if t is None:
            try:
                t = int(value.split("/")[0])
            except ValueError:
                return None
        return t == -1 or t == (8 if p.state == "new" else 0)

    return m


def _lookup_value(tokens: list[str], i: int) -> tuple[str, int]:
    return (tokens[i + 1], i + 2) if i + 1 < len(tokens) else ("", i + 1)


# Most nodes carry the same rule text (kube-proxy's, the CNI's): compiled once, shared, since a
# compiled rule is immutable.
@lru_cache(maxsize=65536)
def compile_rule(spec: str, position: int) -> Rule | None:
    """The rule `-A CHAIN ...` as the walk sees it; None when it is not a rule line."""
    tokens = _split(spec)
    if len(tokens) < 2 or tokens[0] != "-A":
        return None
    chain, tokens = tokens[1], tokens[2:]
    matchers: list[Matcher] = []
    undecidable = ""
    action = Action("continue")
    neg = False
    module = ""
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "!":
            neg, i = True, i + 1
            continue
        if tok in ("-j", "--jump", "-g", "--goto"):
            action = _action(tok, tokens[i + 1:] if i + 1 < len(tokens) else [])
            break
        value, nxt = _lookup_value(tokens, i)
        m: Matcher | None = None
        if tok in ("-s", "--source"):
            m = _addresses(value, "src")
        elif tok in ("-d", "--destination"):
            m = _addresses(value, "dst")
        elif tok in ("-i", "--in-interface"):
            m = (lambda pat: lambda p, c: iface_match(pat, p.iif))(value)
        elif tok in ("-o", "--out-interface"):
            m = (lambda pat: lambda p, c: iface_match(pat, p.oif))(value)
        elif tok in ("-p", "--protocol"):
            proto = PROTO_NUMBERS.get(value, value.lower())
            m = (lambda pr: lambda p, c: True if pr == "all" else p.proto == pr)(proto)
        elif tok in ("-m", "--match"):
            module = value
            if module in _UNDECIDABLE and not undecidable:
                undecidable = f"-m {module}"
            if module in _UNDECIDABLE:
                matchers.append(lambda p, c: None)
            i, neg = nxt, False
            continue
        elif tok in ("--dport", "--destination-port", "--dports", "--destination-ports"):
            m = (lambda s: lambda p, c: port_match(s, p.dport))(value)
        elif tok in ("--sport", "--source-port", "--sports", "--source-ports"):
            m = (lambda s: lambda p, c: port_match(s, p.sport))(value)
        elif tok == "--ports":
            m = (lambda s: lambda p, c: True if port_match(s, p.dport) else port_match(s, p.sport))(
                value)
        elif tok in ("--ctstate", "--state"):
            m = _state(value)
        elif tok in ("--src-type", "--dst-type"):
            limit = any(t.startswith("--limit-iface") for t in tokens[i:])
            m = _addrtype(value, "src" if tok == "--src-type" else "dst", limit)
        elif tok == "--mark" and module == "mark":
            m = _mark(value)
        elif tok == "--icmp-type":
            m = _icmp_type(value)
        elif tok in ("--src-range", "--dst-range"):
            m = _range(value, "src" if tok == "--src-range" else "dst")
        elif tok == "--pkt-type":
            m = (lambda v: lambda p, c: v == "unicast")(value)
        elif tok == "--syn":
            m = lambda p, c: p.proto == "tcp" and p.state == "new"  # noqa: E731
            nxt = i + 1
        elif tok in ("-f", "--fragment"):
            m = lambda p, c: False  # noqa: E731 - the walk follows whole packets
            nxt = i + 1
        elif tok in ("--match-set", "--set") and module == "set":
            flags = tokens[nxt] if nxt < len(tokens) else ""
            m = _match_set(value, flags)
            undecidable = undecidable or f"-m set --match-set {value}"
            nxt += 1
        elif tok in ("--comment", "--nfacct-name"):
            i, neg = nxt, False
            continue
        elif tok.startswith("--") and module in _UNDECIDABLE:
            # an option of an undecidable module: its None is already in the matchers
            i, neg = _skip_option(tokens, i), False
            continue
        elif tok.startswith("-"):
            # an option this walk does not know: it cannot decide the rule
            matchers.append(lambda p, c: None)
            undecidable = undecidable or tok
            i, neg = _skip_option(tokens, i), False
            continue
        else:
            i += 1
            continue
        if m is not None:
            matchers.append((lambda f, n: lambda p, c: negate(f(p, c), n))(m, neg))
        i, neg = nxt, False
    return Rule(chain, position, spec, tuple(matchers), action, undecidable)


def _skip_option(tokens: list[str], i: int) -> int:
    """Past an option and its values (tokens up to the next option)."""
    i += 1
    while i < len(tokens) and not tokens[i].startswith("-") and tokens[i] != "!":
        i += 1
    return i


def _match_set(name: str, flags: str) -> Matcher:
    """`-m set --match-set NAME FLAGS`: a lookup in the node's ipset of that name (undecided
    when the set was not read)."""
    sides = flags.split(",")

    def m(p: Packet, c: Context) -> Tri:
        s = c.ipsets.get(name)
        return None if s is None else ipsets.lookup(s, sides, p)

    return m


def _range(value: str, field: str) -> Matcher:
    lo, _, hi = value.partition("-")
    try:
        a, b = addr(lo), addr(hi or lo)
    except ValueError:
        return lambda p, c: None
    return lambda p, c: a <= (p.src if field == "src" else p.dst) <= b


def _opt(args: list[str], name: str) -> str | None:
    for i, t in enumerate(args):
        if t == name and i + 1 < len(args):
            return args[i + 1]
    return None


def _action(flag: str, args: list[str]) -> Action:
    if not args:
        return Action("continue")
    target, rest = args[0], args[1:]
    if flag in ("-g", "--goto"):
        return Action("goto", chain=target)
    if target == "ACCEPT":
        return Action("accept")
    if target == "DROP":
        return Action("drop")
    if target == "REJECT":
        return Action("reject")
    if target == "RETURN":
        return Action("return")
    if target == "DNAT":
        to = _opt(rest, "--to-destination") or ""
        host, _, port = to.partition(":")
        try:
            return Action("dnat", to=(nat_address(to), int(port.split("-")[0]) if port
                                      else None))
        except ValueError:
            return Action("unknown", why=f"DNAT to {to!r}")
    if target == "SNAT":
        to = _opt(rest, "--to-source") or ""
        try:
            return Action("snat", to=(nat_address(to), None))
        except ValueError:
            return Action("accept")  # a source the walk cannot read changes no verdict
    if target == "MASQUERADE":
        return Action("masq")
    if target in _NAT_ACCEPT:
        return Action("accept")
    if target == "MARK":
        for opt, kind in (("--set-xmark", "xset"), ("--set-mark", "set"), ("--or-mark", "or"),
                          ("--and-mark", "and"), ("--xor-mark", "xor")):
            v = _opt(rest, opt)
            if v is not None:
                value, _, mask = v.partition("/")
                try:
                    msk = int(mask, 0) if mask else (0xFFFFFFFF if kind in ("xset", "set") else 0)
                    return Action("mark", mark=(kind, int(value, 0), msk))
                except ValueError:
                    return Action("continue")
        return Action("continue")
    if target == "NOTRACK" or (target == "CT" and "--notrack" in rest):
        return Action("continue", notrack=True)
    if target in _UNKNOWN:
        return Action("unknown", why=_UNKNOWN[target])
    if target in _NON_TERMINAL:
        return Action("continue")
    # A user chain, or an extension target this walk does not know: the walk tells them apart
    # by whether the table has such a chain.
    return Action("jump", chain=target)
