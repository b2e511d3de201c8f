"""What a chain rule is to the walk, whichever tool wrote it: a match and an action.

iptables (both backends) and native nftables rules compile to the same `Rule`, so the walk in
netfilter.py follows jumps, returns and verdicts the same way for both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from kubenetdiag.facts.paths.ipsets import IpSet
from kubenetdiag.facts.paths.packet import Packet, Tri, all_of


@dataclass(frozen=True)
class NamedSet:
    """A named nftables set or map as listed: each element's key parts (a concatenation's,
    split on ` . `) and, in a map, its value; `complete` is False when not every element was
    kept, so a key not found is not known to be absent."""

    elements: tuple[tuple[tuple[str, ...], str | None], ...]
    complete: bool = True


@dataclass(frozen=True)
class Context:
    """What a match may need to know about the node beyond the packet."""

    local: frozenset[int]  # the node's own addresses (addrtype LOCAL, fib daddr type local)
    # named nftables sets and maps by ("ip kube-proxy", "cluster-ips"): what `@name` looks up
    sets: Mapping[tuple[str, str], NamedSet] = field(default_factory=dict, hash=False,
                                                     compare=False)
    # ipsets by name (`-m set --match-set NAME`), indexed by ipsets.index
    ipsets: Mapping[str, IpSet] = field(default_factory=dict, hash=False, compare=False)


Matcher = Callable[[Packet, Context], Tri]

# Actions that end the walk of the current base chain.
TERMINAL = {"accept", "drop", "reject", "unknown"}


@dataclass(frozen=True)
class Action:
    kind: str  # accept drop reject return jump goto continue dnat snat masq mark unknown
    chain: str | None = None  # jump / goto target
    to: tuple[int, int | None] | None = None  # dnat destination or snat source (address, port)
    # more dnat destinations a random draw picks among (nft `numgen random mod N map`): the
    # walk follows each
    alternatives: tuple[tuple[int, int | None], ...] = ()
    mark: tuple[str, int, int] | None = None  # (op, value, mask): set, xset, or, and, xor
    why: str = ""  # for unknown: what the walk cannot see into (NFQUEUE, TPROXY...)
    notrack: bool = False  # the rule also exempts the packet from connection tracking


@dataclass(frozen=True)
class Rule:
    chain: str
    position: int
    text: str
    matchers: tuple[Matcher, ...]
    action: Action
    undecidable: str = ""  # the first match the walk cannot decide, named for the report
    handle: int | None = None  # a native nftables rule's handle, when listed with -a (its undo)
    pkts: int | None = None  # packets it matched, as collected (iptables-save -c); None unknown
    # a verdict map (nft `vmap @name`): the action is the looked-up element's, None when no
    # element matches (the rule does not apply); `action` is then unused
    dispatch: Callable[[Packet, Context], Action | None] | None = None

    def matches(self, pkt: Packet, ctx: Context) -> Tri:
        return all_of(m(pkt, ctx) for m in self.matchers)


@dataclass
class Table:
    """One table's chains, as one tool wrote them: an iptables table of one backend, or a
    native nftables table."""

    name: str  # "filter", or "inet guard" for a native table
    backend: str  # legacy, nf_tables, nft
    chains: dict[str, list[Rule]] = field(default_factory=dict)
    owner_of: Callable[[str, Rule | None], str] = lambda chain, rule: "unknown"


# The bridge family's hooks are named apart from the IP ones ("bridge output"): they see the
# frames a bridge receives from and sends to its ports, around the IP hooks of routed traffic.
BRIDGE_HOOK = "bridge "
# The arp family's hooks ("arp input", "arp output") see the ARP a node receives and sends:
# no routed packet meets them, but a drop there keeps a neighbour from ever being resolved.
ARP_HOOK = "arp "


@dataclass(frozen=True)
class BaseChain:
    """A chain attached to a netfilter hook, with its priority and policy."""

    table: Table
    chain: str
    hook: str
    priority: int
    policy: str  # accept or drop
    kind: str = "filter"  # filter, nat or route: nat chains only see a connection's first packet
    devices: tuple[str, ...] = ()  # an ingress chain's devices: it sees only what they receive


def apply_mark(mark: int, op: tuple[str, int, int]) -> int:
    kind, value, mask = op
    if kind == "xset":  # --set-xmark value/mask: zero the mask bits, then xor in the value
        return (mark & ~mask & 0xFFFFFFFF) ^ value
    if kind == "set":  # --set-mark value/mask: zero the mask bits, then or in the value
        return (mark & ~mask & 0xFFFFFFFF) | value
    if kind == "or":
        return mark | value
    if kind == "and":
        return mark & value
    if kind == "xor":
        return mark ^ value
    return mark
