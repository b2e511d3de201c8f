"""One node's collected configuration, assembled from its facts into what the walk needs:
the netfilter base chains of every tool by hook, the routing tables and policy rules, the
per-interface settings, and the pod-network shape the CNI gives it."""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import dataclass, field, replace

from kubenetdiag.facts.model import Fact
from kubenetdiag.facts.paths import ipsets, ipt, nft, xfrm
from kubenetdiag.facts.paths.ipsets import IpSet
from kubenetdiag.facts.paths.packet import addr
from kubenetdiag.facts.paths.routing import PolicyRule, Route, Routing
from kubenetdiag.facts.paths.ruleset import (
    ARP_HOOK,
    BRIDGE_HOOK,
    BaseChain,
    Context,
    NamedSet,
    Rule,
    Table,
)
from kubenetdiag.probes.iptables import OWNERS

# Where iptables' tables hook in: (table, chain) -> (hook, priority, kind). Both backends use
# these fixed priorities, so legacy and nf_tables chains of one hook interleave by them.
IPTABLES_HOOKS = {
    ("raw", "PREROUTING"): ("prerouting", -300, "filter"),
    ("raw", "OUTPUT"): ("output", -300, "filter"),
    ("mangle", "PREROUTING"): ("prerouting", -150, "route"),
    ("mangle", "INPUT"): ("input", -150, "filter"),
    ("mangle", "FORWARD"): ("forward", -150, "filter"),
    ("mangle", "OUTPUT"): ("output", -150, "route"),
    ("mangle", "POSTROUTING"): ("postrouting", -150, "filter"),
    ("nat", "PREROUTING"): ("prerouting", -100, "nat"),
    ("nat", "OUTPUT"): ("output", -100, "nat"),
    ("filter", "INPUT"): ("input", 0, "filter"),
    ("filter", "FORWARD"): ("forward", 0, "filter"),
    ("filter", "OUTPUT"): ("output", 0, "filter"),
    ("security", "INPUT"): ("input", 50, "filter"),
    ("security", "FORWARD"): ("forward", 50, "filter"),
    ("security", "OUTPUT"): ("output", 50, "filter"),
    ("nat", "INPUT"): ("input", 100, "nat"),
    ("nat", "POSTROUTING"): ("postrouting", 100, "nat"),
}
_OWNER_WORDS = (("kubernetes", "kube-proxy"), ("flanneld", "flannel"), ("cali:", "calico"),
                ("cilium", "cilium"), ("docker", "docker"))


def _chain_owner(chain: str) -> str | None:
    for owner, prefixes in OWNERS.items():
        if chain.startswith(prefixes):
            return owner.replace("_", "-")
    return None


def _ipt_owner(table: Table):
    # Jumps out of the built-in chains tell whose rules sit around them: a built-in chain that
    # jumps to firewalld's zone chains carries firewalld's own catch-all REJECT too.
    jumpers: dict[str, set[str]] = {}
    for chain, rules in table.chains.items():
        for r in rules:
            if r.action.chain:
                o = _chain_owner(r.action.chain)
                if o:
                    jumpers.setdefault(chain, set()).add(o)

    def owner(chain: str, rule: Rule | None) -> str:
        o = _chain_owner(chain)
        if o:
            return o
        if rule is not None:
            comment = _comment(rule.text.lower())
            for word, who in _OWNER_WORDS:
                if word in comment:
                    return who
            target = _chain_owner(rule.action.chain) if rule.action.chain else None
            if target:
                return target
        hosts = jumpers.get(chain, set()) & {"firewalld", "ufw"}
        if len(hosts) == 1:
            return hosts.pop()
        return "unknown"

    return owner


def _comment(spec: str) -> str:
    i = spec.find("--comment")
    return spec[i + 10:] if i >= 0 else ""


@dataclass
class NodeView:
    name: str
    address: int | None = None
    local: set[int] = field(default_factory=set)
    ifaces: dict[str, dict] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    rules: list[PolicyRule] = field(default_factory=list)
    sysctl: dict[str, int | None] = field(default_factory=dict)
    chains: list[BaseChain] = field(default_factory=list)
    altered: dict[str, list[str]] = field(default_factory=dict)  # dev -> ["tc ingress", "xdp"]
    has_netfilter: bool = False
    arp_filtered: bool = False  # chains of the arp family: each flow's ARP goes through them
    # False when the routes probe failed or left lines unread on this node: a destination
    # with no route is then unknown, not "no route" (which would blame the CNI for our gap)
    routes_complete: bool = True
    sets: dict[tuple[str, str], NamedSet] = field(default_factory=dict)  # nftables @name
    ipsets: dict[str, IpSet] = field(default_factory=dict)  # -m set --match-set NAME
    # IPVS virtual servers: (address, port, proto) -> real servers taking new connections
    ipvs: dict[tuple[int, int, str], tuple[tuple[int, int], ...]] = field(default_factory=dict)
    xfrm: list[xfrm.Policy] = field(default_factory=list)  # IPsec policies, as listed
    _routing: Routing | None = None
    _ctx: Context | None = None

    @property
    def ctx(self) -> Context:
        if self._ctx is None:
            self._ctx = Context(frozenset(self.local), self.sets, self.ipsets)
        return self._ctx

    @property
    def routing(self) -> Routing:
        if self._routing is None:
            self._routing = Routing(self.routes, self.rules, frozenset(self.local),
                                    self.routes_complete and bool(self.routes))
        return self._routing

    def dev_of(self, a: int) -> str | None:
        """The interface holding address `a`."""
        held = self.held_as(a)
        return held[0] if held else None

    def held_as(self, a: int) -> tuple[str, str] | None:
        """(interface, ADDRESS/LENGTH as it holds it) of address `a`."""
        for name, i in self.ifaces.items():
            for cidr in (i.get("addresses") or "").split(","):
                if cidr and "/" in cidr and addr(cidr.split("/")[0]) == a:
                    return name, cidr.strip()
        return None

    def setting(self, key: str) -> int | None:
        return self.sysctl.get(key)


def build(name: str, facts: list[Fact]) -> NodeView:
    v = NodeView(name)
    ipt_tables: dict[tuple[str, str], Table] = {}
    ipt_policies: dict[tuple[str, str, str], str] = {}
    nft_tables: dict[tuple[str, str], Table] = {}
    nft_bases: list[tuple[str, str, str, dict]] = []
    # ("ip kube-proxy", set name) -> (elements as listed, all of them listed)
    nft_sets: dict[tuple[str, str], tuple[list[tuple[str, str | None]], bool]] = {}
    for f in facts:
        a = f.attrs
        k = f.kind
        if k == "node_status" and a.get("address"):
            with contextlib.suppress(ValueError):
                v.address = addr(str(a["address"]))
        elif k == "interface":
            v.ifaces[str(a["name"])] = a
            for cidr in str(a.get("addresses") or "").split(","):
                if cidr:
                    with contextlib.suppress(ValueError):
                        v.local.add(addr(cidr.split("/")[0]))
            if a.get("xdp"):
                v.altered.setdefault(str(a["name"]), []).append(f"XDP program ({a['xdp']})")
        elif k == "route":
            v.routes.append(Route(str(a.get("table") or "main"), str(a.get("type") or "unicast"),
                                  str(a["dst"]), a.get("gateway"), a.get("dev"),  # type: ignore[arg-type]
                                  str(a.get("protocol") or ""), int(a.get("metric") or 0)))
        elif k == "ip_rule":
            v.rules.append(PolicyRule(
                int(a.get("priority") or 0), str(a.get("action") or "lookup"), a.get("table"),  # type: ignore[arg-type]
                a.get("src"), a.get("dst"), a.get("iif"), a.get("oif"), a.get("fwmark"),  # type: ignore[arg-type]
                bool(a.get("invert")), str(a.get("text") or ""), a.get("ipproto"),  # type: ignore[arg-type]
                a.get("dport")))  # type: ignore[arg-type]
        elif k == "sysctl":
            v.sysctl[str(a["key"])] = a.get("number")  # type: ignore[assignment]
        elif k == "tc_hook" and (int(a.get("filters") or 0) > 0 or "netem" in str(a.get("qdisc"))):
            # filters may drop or redirect; netem drops, delays and corrupts by design
            v.altered.setdefault(str(a["dev"]), []).append(
                f"tc {a.get('direction')} filters ({a.get('actions') or a.get('qdisc')})")
        elif k == "iptables_chain":
            backend = str(a.get("backend") or "unknown")
            key = (str(a["table"]), backend)
            ipt_tables.setdefault(key, Table(str(a["table"]), backend))
            ipt_tables[key].chains.setdefault(str(a["chain"]), [])
            if a.get("policy"):
                ipt_policies[(str(a["table"]), str(a["chain"]), backend)] = str(a["policy"])
            v.has_netfilter = True
        elif k == "nft_table" and a.get("owner") != "iptables-nft":
            key = (str(a["family"]), str(a["table"]))
            owner = str(a.get("owner") or "nft")
            # (its rules may have been read first: keep them)
            t = nft_tables.setdefault(key, Table(f"{a['family']} {a['table']}", "nft"))
            t.owner_of = (lambda o: lambda c, r: o)(owner)
            for name in filter(None, str(a.get("empty_chains") or "").split(",")):
                t.chains.setdefault(name, [])
            v.has_netfilter = True
        elif k == "nft_chain" and a.get("owner") != "iptables-nft":
            nft_bases.append((str(a["family"]), str(a["table"]), str(a["chain"]), a))
        elif k in ("nft_set", "nft_element"):
            sk = (f"{a['family']} {a['table']}", str(a["set"]))
            listed, complete = nft_sets.get(sk, ([], False))
            if k == "nft_set":
                complete = a.get("listed") == a.get("elements")
            else:
                listed.append((str(a.get("key") or ""), a.get("value")))  # type: ignore[arg-type]
            nft_sets[sk] = (listed, complete)
        elif k == "ipset" and a.get("family") in (None, "inet"):
            v.ipsets[str(a["name"])] = ipsets.index(str(a.get("type") or ""),
                                                    str(a.get("members") or ""),
                                                    bool(a.get("complete")))
        elif k == "ipvs_service" and a.get("address") and a.get("port"):
            with contextlib.suppress(ValueError):
                reals = []
                for b in str(a.get("backends") or "").split(","):
                    host, _, port = b.rpartition(":")
                    if host and port.isdigit():
                        reals.append((addr(host), int(port)))
                v.ipvs[(addr(str(a["address"])), int(a["port"]),  # type: ignore[arg-type]
                        str(a.get("proto") or "").lower())] = tuple(reals)
        elif k == "xfrm_policy":
            policy = xfrm.from_fact(f)
            if policy is not None:
                v.xfrm.append(policy)
        elif k == "nft_rule":
            key = (str(a["family"]), str(a["table"]))
            nft_tables.setdefault(key, Table(f"{a['family']} {a['table']}", "nft"))
            nrule = nft.compile_rule(str(a["chain"]), int(a["position"]), str(a["text"]),
                                     f"{a['family']} {a['table']}")
            if a.get("handle") is not None:
                nrule = replace(nrule, handle=int(a["handle"]))  # type: ignore[arg-type]
            nft_tables[key].chains.setdefault(str(a["chain"]), []).append(nrule)

    # Rules of a bundle from before iptables_rule carried its backend: the table's only one.
    backends: dict[str, set[str]] = {}
    for table, backend in ipt_tables:
        backends.setdefault(table, set()).add(backend)
    for f in facts:
        if f.kind != "iptables_rule":
            continue
        a = f.attrs
        table = str(a["table"])
        known = backends.get(table, set())
        backend = str(a.get("backend") or (next(iter(known)) if len(known) == 1 else "unknown"))
        t = ipt_tables.setdefault((table, backend), Table(table, backend))
        rule = ipt.compile_rule(str(a["spec"]), int(a["position"]))  # type: ignore[arg-type]
        if rule is not None and a.get("pkts") is not None:
            rule = replace(rule, pkts=int(a["pkts"]))  # type: ignore[arg-type]
        if rule is not None:
            t.chains.setdefault(rule.chain, []).append(rule)
            v.has_netfilter = True

    # facts come in any order; a chain's rules run in position order
    for t in (*ipt_tables.values(), *nft_tables.values()):
        for rules in t.chains.values():
            rules.sort(key=lambda r: r.position)

    # iptables: both backends' tables hook in at the same fixed priorities
    for (table, backend), t in sorted(ipt_tables.items()):
        t.owner_of = _ipt_owner(t)
        for chain in t.chains:
            hook = IPTABLES_HOOKS.get((table, chain))
            if hook is None:
                continue
            policy = ipt_policies.get((table, chain, backend), "ACCEPT").lower()
            v.chains.append(BaseChain(t, chain, hook[0], hook[1],
                                      "drop" if policy == "drop" else "accept", hook[2]))
    for family, table, chain, a in nft_bases:
        if family not in ("ip", "inet", "netdev", "bridge", "arp"):
            continue
        if family == "netdev" and a.get("hook") not in ("ingress", "egress"):
            continue
        t = nft_tables.setdefault((family, table), Table(f"{family} {table}", "nft"))
        t.chains.setdefault(chain, [])
        hook = str(a.get("hook") or "")
        named = {"bridge": BRIDGE_HOOK, "arp": ARP_HOOK}.get(family, "") + hook
        v.chains.append(BaseChain(t, chain, named,
                                  nft.priority(str(a.get("priority") or "0"), family),
                                  "drop" if a.get("policy") == "drop" else "accept",
                                  str(a.get("type") or "filter"),
                                  tuple(d for d in str(a.get("device") or "").split(",") if d)))
    v.chains.sort(key=lambda b: b.priority)
    v.arp_filtered = any(b.hook.startswith(ARP_HOOK) for b in v.chains)
    v.sets.update({sk: nft.set_of(listed, complete) for sk, (listed, complete)
                   in nft_sets.items()})
    return v


def pod_cidr_of(api_cidr: str | None, facts: list[Fact]) -> str | None:
    """A node's pod range: the API's podCIDR, else flannel's subnet.env among the node's
    facts, else the block a BGP CNI blackholes for itself."""
    if api_cidr:
        return api_cidr
    for f in facts:
        if f.kind == "flannel_subnet" and f.attrs.get("subnet"):
            try:
                return str(ipaddress.IPv4Network(str(f.attrs["subnet"]), strict=False))
            except ValueError:
                pass
    for f in facts:
        if f.kind == "route" and f.attrs.get("type") == "blackhole" and \
                f.attrs.get("protocol") == "bird":
            return str(f.attrs["dst"])
    return None
