"""IPsec (xfrm) policy lookup, as the kernel makes it for one packet and one direction.

Of the main policies of the direction whose selector covers the packet, the one with the
lowest priority decides: block drops the packet; allow lets it go on, through an IPsec
security association when the policy has a template. A template with no SA to serve it
drops the packet as surely as a block (the probe tells which templates have one): going
out, nothing can encrypt it; coming in or forwarded, the policy takes only what was
decrypted through such an SA, and there is none. Where the SA exists, whether the peer
encrypted what it sent is its own walk's business: the packet passes. Among
policies of equal priority the kernel takes the one inserted first, which the listing does not
show: where they disagree, the walk says it cannot decide. A policy limited
to a mark is left out: the packet's mark at that point is not known to the walk.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, replace

from kubenetdiag.facts.model import Fact
from kubenetdiag.facts.paths.packet import Packet, in_net, network
from kubenetdiag.probes.xfrm import asked_for


@dataclass(frozen=True)
class Policy:
    dir: str
    src: str  # IPv4 prefixes
    dst: str
    proto: str | None
    sport: int | None
    dport: int | None
    dev: str | None
    action: str
    priority: int
    text: str
    sa: str | None = None  # present, missing, acquire, on_demand, unread; None: no template
    missing: str | None = None  # the template with no SA, when sa is missing

    def selector(self) -> str:
        """`dir D src S dst D ...`: the words `ip xfrm policy delete` takes to name it."""
        words = ["dir", self.dir, "src", self.src, "dst", self.dst]
        if self.dev:
            words += ["dev", self.dev]
        if self.proto:
            words += ["proto", self.proto]
            for key in ("sport", "dport"):
                if getattr(self, key) is not None:
                    words += [key, str(getattr(self, key))]
        return shlex.join(words)

    def covers(self, pkt: Packet, dev: str | None) -> bool:
        if not (in_net(pkt.src, self.src) and in_net(pkt.dst, self.dst)):
            return False
        if self.proto is not None and self.proto != pkt.proto:
            return False
        if self.sport is not None and self.sport != pkt.sport:
            return False
        if self.dport is not None and self.dport != pkt.dport:
            return False
        return self.dev is None or self.dev == dev


def from_fact(f: Fact) -> Policy | None:
    """The walk's policy from an `xfrm_policy` fact; None for one it leaves out (IPv6, a sub
    policy, a mark, an XFRM interface's, a direction or action it does not know)."""
    a = f.attrs
    if a.get("mark") or a.get("if_id") or a.get("main") is False \
            or a.get("dir") not in ("in", "out", "fwd") \
            or a.get("action") not in ("allow", "block"):
        return None
    src, dst = str(a.get("src")), str(a.get("dst"))
    if network(src) is None or network(dst) is None:
        return None  # IPv6, or not a prefix
    proto = a.get("proto")
    return Policy(str(a["dir"]), src, dst, str(proto) if proto else None,
                  _port(a.get("sport")), _port(a.get("dport")),
                  str(a["dev"]) if a.get("dev") else None, str(a["action"]),
                  a["priority"] if isinstance(a.get("priority"), int) else 0,
                  str(a.get("text") or ""),
                  str(a["sa"]) if a.get("sa") else None,
                  str(a["missing"]) if a.get("missing") else None)


def _port(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def lookup(policies: list[Policy], direction: str, pkt: Packet, dev: str | None
           ) -> list[Policy]:
    """The policies that decide the packet in `direction` (dev: the device of its route):
    those of the lowest priority among the ones that cover it; empty when none does."""
    covering = [p for p in policies if p.dir == direction and p.covers(pkt, dev)]
    if not covering:
        return []
    best = min(p.priority for p in covering)
    return [p for p in covering if p.priority == best]


def _template(text: str) -> dict | None:
    """The template a policy's `missing` holds (`src A dst B proto P [spi S] reqid R mode M`,
    as the probe writes it); None in another form."""
    words = text.split()
    if len(words) % 2:
        return None
    out: dict = dict(zip(words[::2], words[1::2], strict=True))
    if not {"src", "dst", "proto", "reqid", "mode"} <= set(out) or not out["reqid"].isdigit():
        return None
    out["reqid"] = int(out["reqid"])
    return out


def unanswered(p: Policy, asked: list[Fact]) -> Policy:
    """The policy as `acquire` where it was `on_demand` and one of the kernel's larval entries
    read after the checks (xfrm_acquire facts) is for its template: the checks' packets made
    the kernel ask, and no SA came. Otherwise the policy as it was."""
    t = _template(p.missing or "") if p.sa == "on_demand" else None
    if t is not None and any(asked_for(t, f.attrs) for f in asked):
        return replace(p, sa="acquire")
    return p
