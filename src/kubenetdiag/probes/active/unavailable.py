"""`active.unavailable.<what>`: a check a collector could not send at all, with the reason as
its output. Nothing in the plan names it, so it has no targets and no command; its suffix says
what it blocks.

>>> from kubenetdiag.probes.active.common import example, section
>>> out = "kubenetdiag: no pod network namespace on this node\\n"
>>> [fact] = UNAVAILABLE.parse(section("active.unavailable.pod_view", out, 127), "pod_view",
...                            example())
>>> fact.kind, fact.attrs["status"], fact.attrs["blocks"]
('probe_status', 'missing_tool', 'pod_view')
"""

from __future__ import annotations

from kubenetdiag.facts.model import Fact
from kubenetdiag.probes.active.common import status
from kubenetdiag.probes.base import ActiveCheck, CheckContext, Section


def parse(section: Section, what: str, ctx: CheckContext) -> list[Fact]:
    return [status(ctx, section, "missing_tool", section.stdout.strip()[:300], what)]


UNAVAILABLE = ActiveCheck(
    name="unavailable",
    targets=lambda plan: [],
    # only the first word: what older versions read as the blocked check
    resolve=lambda plan, suffix: suffix.split(".")[0] if suffix else "active check",
    parse=parse,
    blocks=lambda what: what,
    order=900,
)
CHECKS = (UNAVAILABLE,)
