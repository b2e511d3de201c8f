"""The packet a path walk follows, and the three-valued logic of deciding a match on it.

A match is True, False or None: None when what was collected cannot decide it (an ipset whose
members were not read, a BPF program, a random draw). The walk then follows both outcomes, and a
verdict that depends on the choice is reported as unknown: never a guess.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import lru_cache

Tri = bool | None

PROTO_NUMBERS = {"1": "icmp", "6": "tcp", "17": "udp", "132": "sctp"}


# A packet's device inside the bridge family's hooks: one port of the bridge (a pod's veth),
# which the walk cannot tell, so a match on it is undecidable
BRIDGE_PORT = "<a port of the bridge>"


@dataclass(frozen=True)
class Packet:
    src: int
    dst: int
    proto: str  # tcp, udp or icmp
    sport: int | None  # None: an ephemeral port the walk cannot know
    dport: int | None
    iif: str | None  # None for a packet the node itself sends
    oif: str | None = None  # known after the routing decision
    state: str = "new"  # conntrack state: new or established
    mark: int = 0
    dnat: bool = False  # the destination was translated on this node
    # (table, chain, rule) of the NOTRACK that exempted the packet from connection tracking:
    # its conntrack state is then UNTRACKED and no nat chain sees it (no DNAT, no masquerade)
    untracked_by: tuple | None = field(default=None, compare=False)
    # (table, chain, rule) of the DNAT that translated the destination, to tell kube-proxy's
    # Service translation from a rule that sends the packet somewhere else
    dnat_by: tuple | None = field(default=None, compare=False)
    # the source an SNAT on this node gave it, and (table, chain, rule) of that SNAT: replies
    # come back to that address, and only this node's connection tracking can undo it
    snat_to: int | None = None
    snat_by: tuple | None = field(default=None, compare=False)
    # (table, chain, rule) of the masquerade that gave it the outgoing device's address
    masq_by: tuple | None = field(default=None, compare=False)
    # a nat postrouting base chain that let it go untranslated: (table, chain, rule) of the
    # RETURN or ACCEPT that ended its walk there, the rule None when it fell off the end
    nat_kept_by: tuple | None = field(default=None, compare=False)
    # an ARP packet's operation (request or reply), which only the arp family's hooks see;
    # src and dst are then its sender's and target's protocol addresses
    arp: str | None = None

    def but(self, **changes) -> Packet:
        return replace(self, **changes)


def addr(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def nat_address(text: str) -> int:
    """The address a NAT target sets, `A[-B][:port[-port]]` as iptables and nft write it: the
    first of a range stands for them all. ValueError when it is not one.

    >>> show(nat_address("10.99.0.7-10.99.0.9:1024-2048"))
    '10.99.0.7'
    """
    return addr(text.partition(":")[0].split("-")[0])


def show(a: int) -> str:
    return str(ipaddress.IPv4Address(a))


@lru_cache(maxsize=4096)
def network(text: str) -> tuple[int, int] | None:
    """(base, mask) of an IPv4 prefix or address; None when it is not IPv4."""
    try:
        net = ipaddress.IPv4Network(text.strip(), strict=False)
    except ValueError:
        return None
    return int(net.network_address), int(net.netmask)


def in_net(a: int, text: str) -> Tri:
    net = network(text)
    if net is None:
        return None
    return (a & net[1]) == net[0]


def prefix_len(text: str) -> int:
    net = network(text)
    return bin(net[1]).count("1") if net else -1


def all_of(results: Iterable[Tri]) -> Tri:
    """True when every one is True; False as soon as one is False; else None."""
    undecided = False
    for r in results:
        if r is False:
            return False
        if r is None:
            undecided = True
    return None if undecided else True


def any_of(results: Iterable[Tri]) -> Tri:
    """True as soon as one is True; else None when one is undecided; else False."""
    undecided = False
    for r in results:
        if r is True:
            return True
        if r is None:
            undecided = True
    return None if undecided else False


def negate(value: Tri, neg: bool) -> Tri:
    if value is None or not neg:
        return value
    return not value


def iface_match(pattern: str, name: str | None) -> bool:
    """iptables `eth+` and nft `eth*` wildcards."""
    if name is None:
        return False
    if pattern.endswith(("+", "*")):
        return name.startswith(pattern[:-1])
    return name == pattern


def port_match(spec: str, port: int | None) -> Tri:
    """A port, `a:b` or `a-b` range, or comma list against a port; None when the port is an
    ephemeral one the walk cannot know."""
    if port is None:
        return None
    for part in spec.replace(" ", "").split(","):
        if not part:
            continue
        sep = ":" if ":" in part else ("-" if "-" in part else None)
        try:
            if sep:
                lo, hi = part.split(sep, 1)
                if int(lo or 0) <= port <= int(hi or 65535):
                    return True
            elif int(part) == port:
                return True
        except ValueError:
            return None  # a service name (`domain`): not resolved here
    return False
