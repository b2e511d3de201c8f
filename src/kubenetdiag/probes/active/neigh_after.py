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
from kubenetdiag.probes.active.common import source, status
from kubenetdiag.probes.active.plan import NodePlan
from kubenetdiag.probes.base import ActiveCheck, CheckContext, Section
from kubenetdiag.probes.text import clip

MAX_ENTRIES = 1000  # a node scanned by something, or with thousands of gone pods, stays small
UNANSWERED = frozenset({"FAILED", "INCOMPLETE"})


def _command(plan: NodePlan) -> str:
    return (
        "command -v ip >/dev/null 2>&1 || { echo 'kubenetdiag: ip: command not found'; "
        "exit 127; }; "
        "s=$(ip -4 neigh show nud failed nud incomplete 2>&1) || "
        "{ printf 'msg %s\\n' \"$(printf %s \"$s\" | head -n 1)\"; exit 1; }; "
        f"printf '%s\\n' \"$s\" | head -n {MAX_ENTRIES}; echo knd-done"
    )


def parse(section: Section, target: Any, ctx: CheckContext) -> list[Fact]:
    text = section.stdout
    if section.exit_code == 127:
        return [status(ctx, section, "missing_tool", text.strip()[:300], _blocks(target))]
    lines = text.splitlines()
    if section.exit_code != 0 or "knd-done" not in lines:
        reason = next((x[4:] for x in lines if x.startswith("msg ")),
                      (text.strip().splitlines() or ["no output"])[0])
        return [status(ctx, section, "failed", reason[:300], _blocks(target))]
    facts = []
    for line in lines[:lines.index("knd-done")]:
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
