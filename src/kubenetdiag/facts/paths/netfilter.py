"""One netfilter hook walked the way the kernel walks it.

Every base chain attached to the hook runs in priority order, whichever tool made it: the
iptables tables of both backends (legacy and nf_tables hook in at the same fixed priorities) and
native nftables tables of the ip and inet families. An accept ends one base chain only; the
packet then meets the next. A drop or reject anywhere is final. nat chains only see the first
packet of a tracked connection: a packet a NOTRACK exempted from connection tracking is never
translated.

A rule whose match cannot be decided splits the walk in two worlds (matched, not matched); the
caller compares their endings.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubenetdiag.facts.paths.packet import Packet
from kubenetdiag.facts.paths.ruleset import BaseChain, Context, Rule, Table, apply_mark

MAX_DEPTH = 64  # a jump loop the kernel itself would refuse to load
MAX_WORLDS = 256  # undecidable rules multiply the worlds; beyond this the hook is unknown


@dataclass(frozen=True)
class Stop:
    """Where a world's walk ended in a verdict other than accept."""

    verdict: str  # drop, reject or unknown
    hook: str
    table: Table
    chain: str
    rule: Rule | None  # None: the base chain's policy
    why: str = ""

    def at(self) -> str:
        where = f"{self.table.name} {self.chain}"
        if self.rule is None:
            return f"{where} policy {self.verdict.upper()}"
        return f"{where} rule {self.rule.position}"


@dataclass(frozen=True)
class World:
    pkt: Packet
    undecided: str = ""  # the first undecidable rule this world took a side on
    stop: Stop | None = None


@dataclass(frozen=True)
class _Out:
    kind: str  # verdict, return
    verdict: str | None
    pkt: Packet
    undecided: str
    rule: Rule | None
    chain: str
    why: str = ""


CONNTRACK_PRIORITY = -200  # the kernel's connection tracking runs at this hook priority


def _run(table: Table, chain: str, pkt: Packet, ctx: Context, depth: int, undecided: str,
         budget: list[int], untracks: bool = False) -> list[_Out]:
    """`untracks`: the base chain runs before connection tracking (priority below -200, as
    the raw table does), the only place where a NOTRACK takes effect."""
    rules = table.chains.get(chain, [])
    results: list[_Out] = []
    work = [(0, pkt, undecided)]
    while work:
        idx, p, u = work.pop()
        ended = False
        while idx < len(rules):
            r = rules[idx]
            idx += 1
            m = r.matches(p, ctx)
            if m is False:
                continue
            if m is None:
                budget[0] -= 1
                if budget[0] < 0:
                    results.append(_Out("verdict", "unknown", p, u, r, chain,
                                        "too many undecidable rules on the way"))
                    ended = True
                    break
                work.append((idx, p, u))  # the world where it did not match
                u = u or f"{table.name} {chain} rule {r.position} ({r.undecidable or 'match'})"
            a = r.action if r.dispatch is None else r.dispatch(p, ctx)
            if a is not None and a.notrack and untracks and p.untracked_by is None:
                p = p.but(untracked_by=(table, chain, r))
            if a is None or a.kind == "continue":
                continue
            if a.kind == "mark" and a.mark:
                p = p.but(mark=apply_mark(p.mark, a.mark))
                continue
            if a.kind == "dnat" and a.to:
                # a random draw among several: each destination is a world of its own
                drawn = u or (f"{table.name} {chain} rule {r.position} (a random draw)"
                              if a.alternatives else "")
                for dst, port in (a.to, *a.alternatives):
                    results.append(_Out("verdict", "accept",
                                        p.but(dst=dst, dport=port or p.dport, dnat=True,
                                              dnat_by=(table, chain, r)),
                                        drawn, r, chain))
            elif a.kind == "snat" and a.to:
                results.append(_Out("verdict", "accept",
                                    p.but(snat_to=a.to[0], snat_by=(table, chain, r)),
                                    u, r, chain))
            elif a.kind == "masq":
                results.append(_Out("verdict", "accept", p.but(masq_by=(table, chain, r)),
                                    u, r, chain))
            elif a.kind in ("accept", "drop", "reject", "unknown"):
                results.append(_Out("verdict", a.kind, p, u, r, chain, a.why))
            elif a.kind == "return":
                results.append(_Out("return", None, p, u, r, chain))
            elif a.kind in ("jump", "goto") and a.chain:
                if a.chain not in table.chains:
                    results.append(_Out("verdict", "unknown", p, u, r, chain,
                                        f"target {a.chain} is not one the walk knows"))
                elif depth >= MAX_DEPTH:
                    results.append(_Out("verdict", "unknown", p, u, r, chain, "jumps too deep"))
                else:
                    for o in _run(table, a.chain, p, ctx, depth + 1, u, budget, untracks):
                        if o.kind == "verdict":
                            results.append(o)
                        elif a.kind == "goto":
                            results.append(_Out("return", None, o.pkt, o.undecided, r, chain))
                        else:
                            work.append((idx, o.pkt, o.undecided))
            ended = True
            break
        if not ended:
            results.append(_Out("return", None, p, u, None, chain))
    return results


def walk_hook(chains: list[BaseChain], hook: str, worlds: list[World], ctx: Context,
              dev: str | None = None) -> list[World]:
    """Every world through every base chain of `hook`, in priority order (for ingress, the
    chains attached to the device `dev` the packet arrives on; for egress, leaves by)."""
    for base in chains:
        if base.hook != hook or (base.devices and dev not in base.devices):
            continue
        nxt: list[World] = []
        for w in worlds:
            if w.stop is not None or (base.kind == "nat" and (
                    w.pkt.state != "new" or w.pkt.untracked_by is not None)):
                nxt.append(w)
                continue
            budget = [MAX_WORLDS]
            for o in _run(base.table, base.chain, w.pkt, ctx, 0, w.undecided, budget,
                          base.priority < CONNTRACK_PRIORITY):
                if o.kind == "verdict":
                    verdict, rule, why = o.verdict or "unknown", o.rule, o.why
                else:  # fell off the end of the base chain, or returned from it: the policy
                    verdict, rule, why = base.policy, None, ""
                if verdict == "accept":
                    pkt = o.pkt
                    if base.kind == "nat" and hook == "postrouting" and pkt.masq_by is None \
                            and pkt.snat_by is None and pkt.nat_kept_by is None:
                        # o.rule: the ACCEPT, or the RETURN in the base chain (None: its end)
                        pkt = pkt.but(nat_kept_by=(base.table, o.chain if o.rule else
                                                   base.chain, o.rule))
                    nxt.append(World(pkt, o.undecided))
                else:
                    nxt.append(World(o.pkt, o.undecided,
                                     Stop(verdict, hook, base.table, o.chain if rule else
                                          base.chain, rule, why)))
        worlds = nxt[:MAX_WORLDS]
    return worlds
