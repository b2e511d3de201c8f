"""The neighbour (ARP) entries nobody answered, read once every node's checks are done.

A route through a gateway that no longer answers ARP (a retired router, a typo) looks like
any route: only the neighbour table says the node asked for the gateway's MAC and got none
(INCOMPLETE while it asks, FAILED once it gave up). A quiet node may not have sent anything
that way before the passive read; the checks have by now (each node pings its peers), so the
entries are read after them. Dynamic entries that resolved are left out: they say nothing.

>>> from kubenetdiag.probes.active.common import example, section
>>> out = ("198.18.0.248 dev eth0 FAILED\\n10.244.2.9 dev cni0 INCOMPLETE\\n"
...        "198.18.0.13 dev eth0 lladdr 6e:cd:35:7d:19:73 STALE\\nknd-done\\n")
>>> facts = NEIGH_AFTER.parse(section("active.neigh_after", out), None, example())
>>> [(f.kind, f.attrs["ip"], f.attrs["dev"], f.attrs["state"]) for f in facts]
[('neighbor_unanswered', '198.18.0.248', 'eth0', 'FAILED'), \
('neighbor_unanswered', '10.244.2.9', 'cni0', 'INCOMPLETE')]
"""

from __future__ import annotations

from typing import Any

from kubenetdiag.facts.model import Fact
from kubenetdiag.probes.active.common import ip_listed, ip_listing, source
from kubenetdiag.probes.active.plan import NodePlan
from kubenetdiag.probes.base import ActiveCheck, CheckContext, Section
from kubenetdiag.probes.text import clip

MAX_ENTRIES = 1000  # a node scanned by something, or with thousands of gone pods, stays small
UNANSWERED = frozenset({"FAILED", "INCOMPLETE"})


def _command(plan: NodePlan) -> str:
    return ip_listing("-4 neigh show nud failed nud incomplete", f"head -n {MAX_ENTRIES}")


def parse(section: Section, target: Any, ctx: CheckContext) -> list[Fact]:
    lines, problem = ip_listed(section, ctx, _blocks(target))
    if problem:
        return problem
    facts = []
    for line in lines:
        words = line.split()
        # "ADDR dev DEV [router] STATE": an old ip prints no filter, so the state is checked
        if (len(words) < 4 or words[1] != "dev" or words[0].count(".") != 3
                or words[-1] not in UNANSWERED):
            continue
        facts.append(Fact("neighbor_unanswered", ctx.node, {
            "ip": clip(words[0], 60), "dev": clip(words[2], 64), "state": words[-1],
        }, source(section)))
    return facts


def _blocks(target: Any) -> str:
    return "which addresses the node asked ARP for in vain during the checks"


NEIGH_AFTER = ActiveCheck(
    name="neigh_after",
    targets=lambda plan: [("", None)],
    after_command=_command,
    parse=parse,
    blocks=_blocks,
    kinds=("neighbor_unanswered",),
    order=970,
)
CHECKS = (NEIGH_AFTER,)
