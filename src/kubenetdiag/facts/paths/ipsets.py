"""ipsets as the walk looks them up: `-m set --match-set NAME FLAGS` in an iptables rule.

A set's type names its dimensions (hash:ip,port,ip: an address, a protocol and port, an
address) and the rule's flags say which side of the packet each one is taken from (dst,dst,src).
Members that are single values (an address, a /32, one port) go in a hash for exact lookup, as
the kernel's hash types do; prefixes and ranges (hash:net, a range added to a bitmap) are
scanned. A `nomatch` member (a hash:net exception) wins over the others that cover the packet
(the kernel lets the most specific prefix decide; a member more specific than an exception
around it is not modelled). A type the walk does not model (list:set, a MAC, an interface or a
mark dimension) and a packet field the walk does not know (an ephemeral source port) leave the
lookup undecided, as does a value not found in a set that was not read in full.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from functools import lru_cache

from kubenetdiag.facts.paths.packet import Packet, Tri, network

_DIMS = {"ip", "net", "port"}
_DOTTED = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\Z")
_PORT_PROTOS = {"tcp", "udp", "sctp", "udplite"}
# A member's part: an exact value (an address as int, or (proto, port)), or a span to scan:
# ("net", base, mask), ("range", lo, hi), ("ports", proto, lo, hi).
Part = object


@dataclass(frozen=True)
class IpSet:
    dims: tuple[str, ...] | None  # None: a type the walk does not model
    exact: frozenset[tuple]
    scan: tuple[tuple, ...] = ()
    nomatch: tuple[tuple, ...] = ()
    complete: bool = True
    odd: bool = False  # a member the walk cannot read: a miss is then not a sure miss
    bitmap: bool = False  # bitmap:port holds ports of any protocol


def _dims(kind: str) -> tuple[str, ...] | None:
    family, _, dims = kind.partition(":")
    parts = tuple(dims.split(","))
    if family not in ("hash", "bitmap") or not all(d in _DIMS for d in parts):
        return None
    return parts


def _address_part(text: str) -> Part | None:
    if _DOTTED.match(text):  # what ipset prints for most members: no prefix parse needed
        try:
            return int.from_bytes(socket.inet_aton(text), "big")
        except OSError:
            return None
    if "-" in text:
        lo, _, hi = text.partition("-")
        a, b = network(lo), network(hi)
        return ("range", a[0], b[0]) if a and b else None
    net = network(text)
    if net is None:
        return None
    return net[0] if net[1] == 0xFFFFFFFF else ("net", net[0], net[1])


def _port_part(text: str, bitmap: bool) -> Part | None:
    proto, sep, port = text.rpartition(":")
    proto = proto.lower() if sep else ("*" if bitmap else "tcp")
    if proto not in _PORT_PROTOS and proto != "*":
        return None
    lo, _, hi = port.partition("-")
    if not lo.isdigit() or (hi and not hi.isdigit()):
        return None
    if not hi or int(hi) == int(lo):
        return (proto, int(lo))
    return ("ports", proto, int(lo), int(hi))


@lru_cache(maxsize=256)
def index(kind: str, members: str, complete: bool = True) -> IpSet:
    """An `ipset` fact's type and members, indexed for the walk: once for all the nodes that
    hold the same set (kube-proxy's KUBE-CLUSTER-IP is alike on every node in sync), since an
    IpSet is immutable."""
    dims = _dims(kind)
    if dims is None:
        return IpSet(None, frozenset(), complete=False)
    bitmap = kind.startswith("bitmap:")
    exact, scan, nomatch, odd = set(), [], [], False
    for member in members.split():
        negated = member.startswith("!")
        values = member.lstrip("!").split(",")
        if len(values) != len(dims):
            odd = True
            continue
        parts = tuple(_port_part(v, bitmap) if d == "port" else _address_part(v)
                      for d, v in zip(dims, values, strict=True))
        if any(p is None for p in parts):
            odd = True
        elif negated:
            nomatch.append(parts)
        elif all(map(_exact, parts)):
            exact.add(parts)
        else:
            scan.append(parts)
    return IpSet(dims, frozenset(exact), tuple(scan), tuple(nomatch), complete, odd, bitmap)


def _exact(part: Part) -> bool:
    """An address as int or a (proto, port): one value, looked up in a hash."""
    return isinstance(part, int) or (isinstance(part, tuple) and len(part) == 2)


def _covers(part: Part, value: object) -> bool:
    if _exact(part):
        return part == value
    kind = part[0]  # type: ignore[index]
    if kind == "net":
        return isinstance(value, int) and (value & part[2]) == part[1]  # type: ignore[index]
    if kind == "range":
        return isinstance(value, int) and part[1] <= value <= part[2]  # type: ignore[index]
    # ("ports", proto, lo, hi) against (proto, port)
    return isinstance(value, tuple) and value[0] == part[1] and \
        part[2] <= value[1] <= part[3]  # type: ignore[index]


def lookup(s: IpSet, flags: list[str], p: Packet) -> Tri:
    """Whether the packet's fields, taken as `flags` say, are a member of the set."""
    if s.dims is None or len(flags) < len(s.dims):
        return None
    key: list[object] = []
    for dim, side in zip(s.dims, flags, strict=False):
        if side not in ("src", "dst"):
            return None
        if dim in ("ip", "net"):
            key.append(p.src if side == "src" else p.dst)
            continue
        port = p.sport if side == "src" else p.dport
        if p.proto not in _PORT_PROTOS:
            # no port: only an ICMP member could match, one the walk cannot read (odd) or one
            # among those not read
            return None if s.odd or not s.complete else False
        if port is None:
            return None
        key.append(("*" if s.bitmap else p.proto, port))
    k = tuple(key)

    def covered(members: tuple[tuple, ...]) -> bool:
        return any(all(map(_covers, m, k)) for m in members)

    if covered(s.nomatch):
        return False
    if k in s.exact or covered(s.scan):
        return True
    return False if s.complete and not s.odd else None
