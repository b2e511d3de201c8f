"""The kernel's unanswered requests for an IPsec SA, read once every node's checks are done.

An on-demand tunnel (strongSwan's `start_action = trap`, Libreswan's `auto=route`) has policies
and no SA until a packet needs one: the kernel then asks the key manager (an XFRM ACQUIRE) and
holds a larval entry (SPI 0) for the template until the SA is installed, or for
net.core.xfrm_acq_expires seconds (30) when none comes, dropping what the policy covers
meanwhile. The passive read sees an idle tunnel, which is healthy; read again after the
checks sent their packets, a larval entry still there says the kernel asked and the key
manager did not deliver (the peer does not answer IKE, the negotiation failed, the kernel
refused the SA), while a tunnel that came up has its SA by then.

Only nodes whose passive read found such a policy are asked (the plan's `xfrm_on_demand`),
so the others pay no extra login. The node's shell keeps only the larval entries' address and
protocol lines: no key leaves the node, whatever `ip` prints.

>>> from kubenetdiag.probes.active.common import example, section
>>> out = ("src 198.18.0.11 dst 198.18.0.12\\n"
...        "\\tproto esp spi 0x00000000 reqid 1 mode tunnel\\nknd-done\\n")
>>> facts = XFRM_AFTER.parse(section("active.xfrm_after", out), None, example())
>>> [(f.kind, f.attrs["dst"], f.attrs["reqid"]) for f in facts]
[('xfrm_acquire', '198.18.0.12', 1)]
"""

from __future__ import annotations

from typing import Any

from kubenetdiag.facts.model import Fact
from kubenetdiag.probes.active.common import ip_listed, ip_listing, source
from kubenetdiag.probes.active.plan import NodePlan
from kubenetdiag.probes.base import ActiveCheck, CheckContext, Section, quoted
from kubenetdiag.probes.xfrm import read_states

MAX_ENTRIES = 1000

# POSIX awk: an SA's address line, then its proto line; only those whose SPI is 0 (larval)
_AWK = r"""
/^src / { h = $0; next }
/^[ \t]+proto / {
  if (h != "" && $0 ~ / spi 0x0+ / && n < MAX) { print h; print $0; n++ }
  h = ""; next
}
/^[^ \t]/ { h = "" }
"""


def _command(plan: NodePlan) -> str:
    return ip_listing("xfrm state list nokeys",
                      f"awk -v MAX={MAX_ENTRIES} {quoted(_AWK)}")


def parse(section: Section, target: Any, ctx: CheckContext) -> list[Fact]:
    lines, problem = ip_listed(section, ctx, _blocks(target))
    if problem:
        return problem
    states = read_states(lines, [])
    return [Fact("xfrm_acquire", ctx.node, {
        "src": x["src"], "dst": x["dst"], "proto": x["proto"], "reqid": x["reqid"],
        "mode": x["mode"]}, source(section))
        for x in states if "proto" in x and not x.get("spi")]


def _blocks(target: Any) -> str:
    return "whether the IPsec SAs negotiated on demand came up for the checks' traffic"


XFRM_AFTER = ActiveCheck(
    name="xfrm_after",
    targets=lambda plan: [("", None)] if plan.get("xfrm_on_demand") else [],
    after_command=_command,
    parse=parse,
    blocks=_blocks,
    kinds=("xfrm_acquire",),
    order=960,
)
CHECKS = (XFRM_AFTER,)
