"""Policy routing as the kernel does it: `ip rule` in priority order, each table's longest
matching prefix, blackhole/unreachable/prohibit/throw routes; plus the checks the routing
decision makes on a packet that arrives (reverse-path filtering, forwarding on the interface)."""

from __future__ import annotations

from dataclasses import dataclass

from kubenetdiag.facts.paths.packet import (
    PROTO_NUMBERS,
    Packet,
    Tri,
    all_of,
    in_net,
    negate,
    network,
    port_match,
    show,
)

_TABLE_IDS = {"local": "255", "main": "254", "default": "253", "unspec": "0"}


def table_id(name: str | None) -> str:
    return _TABLE_IDS.get(name or "main", name or "main")


@dataclass(frozen=True)
class Route:
    table: str
    type: str
    dst: str
    gateway: str | None
    dev: str | None
    protocol: str
    metric: int

    def text(self) -> str:
        out = [self.dst] if self.type == "unicast" else [self.type, self.dst]
        if self.gateway:
            out += ["via", self.gateway]
        if self.dev:
            out += ["dev", self.dev]
        out += ["proto", self.protocol]
        return " ".join(out) + ("" if self.table in ("main", "254") else f" table {self.table}")


@dataclass(frozen=True)
class PolicyRule:
    priority: int
    action: str
    table: str | None
    src: str | None
    dst: str | None
    iif: str | None
    oif: str | None
    fwmark: str | None
    invert: bool
    text: str
    ipproto: str | None = None
    dport: str | None = None

    @property
    def suppress_prefixlength(self) -> int | None:
        words = self.text.split()
        if "suppress_prefixlength" in words:
            try:
                return int(words[words.index("suppress_prefixlength") + 1])
            except (IndexError, ValueError):
                return None
        return None

    def matches(self, pkt: Packet) -> Tri:
        checks: list[Tri] = []
        if self.ipproto:
            checks.append(PROTO_NUMBERS.get(self.ipproto, self.ipproto) == pkt.proto)
        if self.dport:
            checks.append(port_match(self.dport, pkt.dport))
        # selectors the walk does not follow: which socket, which type of service
        words = self.text.split()
        if any(w in words for w in ("tos", "dsfield", "sport", "uidrange", "l3mdev")):
            checks.append(None)
        if self.src and self.src != "all":
            checks.append(in_net(pkt.src, self.src))
        if self.dst and self.dst != "all":
            checks.append(in_net(pkt.dst, self.dst))
        if self.iif:
            checks.append((pkt.iif or "lo") == self.iif)
        if self.oif:
            checks.append(None if pkt.oif is None else pkt.oif == self.oif)
        if self.fwmark:
            v, _, m = self.fwmark.partition("/")
            try:
                checks.append((pkt.mark & (int(m, 0) if m else 0xFFFFFFFF)) == int(v, 0))
            except ValueError:
                checks.append(None)
        return negate(all_of(checks), self.invert)


DEFAULT_RULES = (
    PolicyRule(0, "lookup", "local", None, None, None, None, None, False,
               "0: from all lookup local"),
    PolicyRule(32766, "lookup", "main", None, None, None, None, None, False,
               "32766: from all lookup main"),
    PolicyRule(32767, "lookup", "default", None, None, None, None, None, False,
               "32767: from all lookup default"),
)


@dataclass(frozen=True)
class Decision:
    kind: str  # local, unicast, blackhole, unreachable, prohibit, none, unknown
    route: Route | None = None
    rule: PolicyRule | None = None  # the policy rule that decided (when not the main lookup)
    why: str = ""  # for unknown: what could not be seen

    def at(self, dst: int) -> str:
        if self.rule is not None and self.rule.action != "lookup":
            return f"ip rule {self.rule.text}"
        if self.route is not None:
            return f"route {self.route.text()}"
        if self.kind == "none":
            return f"no route to {show(dst)}"
        if self.why == _UNREAD:
            return f"route to {show(dst)}"
        return self.kind


_UNREAD = ("no route was read for it, and the routes probe did not give every route on this "
           "node (see what could not be checked)")


class Routing:
    def __init__(self, routes: list[Route], rules: list[PolicyRule], local: frozenset[int],
                 complete: bool = True):
        self.local = local
        self.complete = complete
        self.rules = sorted(rules, key=lambda r: r.priority) if rules else list(DEFAULT_RULES)
        by_table: dict[str, list[tuple[tuple[int, int], Route]]] = {}
        for r in routes:
            net = network(_dst(r))
            if net is not None:
                by_table.setdefault(table_id(r.table), []).append((net, r))
        # Each table as its prefix lengths, longest first, each a dict of networks: a lookup
        # is one dict probe per length, not a scan of every route (a node of a 500-node
        # cluster has a route per peer, and its paths are walked towards many of them).
        # Within a length the lowest metric comes first and wins, as the kernel's does.
        self.tables: dict[str, list[tuple[int, int, dict[int, Route]]]] = {}
        for table, found in by_table.items():
            found.sort(key=lambda nr: (-nr[0][1].bit_count(), nr[1].metric))
            levels: list[tuple[int, int, dict[int, Route]]] = []
            for (base, mask), r in found:
                if not levels or levels[-1][1] != mask:
                    levels.append((mask.bit_count(), mask, {}))
                levels[-1][2].setdefault(base, r)
            self.tables[table] = levels

    def _lookup_table(self, table: str, dst: int, suppress: int | None = None) -> Route | None:
        for length, mask, nets in self.tables.get(table_id(table), ()):
            r = nets.get(dst & mask)
            if r is not None:
                # `suppress_prefixlength N` (wg-quick's rule) ignores routes this short
                if suppress is not None and length <= suppress:
                    return None
                return r
        return None

    def lookup(self, pkt: Packet) -> Decision:
        undecided = False
        goto = -1
        for rule in self.rules:
            if rule.priority < goto:
                continue
            m = rule.matches(pkt)
            if m is False:
                continue
            if m is None:
                undecided = True
                continue
            if rule.action in ("blackhole", "unreachable", "prohibit"):
                return Decision("unknown" if undecided else rule.action, None, rule)
            if rule.action == "goto":
                try:
                    goto = int(rule.table or -1)
                except ValueError:
                    goto = -1
                continue
            if rule.action != "lookup":
                continue
            if table_id(rule.table) == "255":
                if pkt.dst in self.local or (pkt.dst >> 24) == 127:
                    return Decision("local", None, None)
                continue
            route = self._lookup_table(rule.table or "main", pkt.dst, rule.suppress_prefixlength)
            if route is None or route.type == "throw":
                continue
            kind = route.type if route.type in ("blackhole", "unreachable", "prohibit") else \
                "unicast"
            if undecided:
                return Decision("unknown", route, rule)
            return Decision(kind, route, rule if table_id(rule.table) != "254" else None)
        if undecided:
            return Decision("unknown")
        return Decision("none") if self.complete else Decision("unknown", why=_UNREAD)


def _dst(r: Route) -> str:
    return "0.0.0.0/0" if r.dst == "default" else r.dst
