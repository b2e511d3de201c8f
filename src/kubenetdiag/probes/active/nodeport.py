"""A TCP connect to each NodePort Service port the plan picked (plan.py, MAX_NODEPORTS), on
the node's own address and on a few peers'. kube-proxy programs the same NodePort on every
node, so a port that answers on its own node but not from the others (or the reverse) points
at what differs between the two paths: the packets from a peer arrive on the node's interface
and are forwarded to the endpoint (PREROUTING, FORWARD, the masquerade on the way out), while
the node's own connect leaves through OUTPUT and is never forwarded by it
(docs/runbooks.md#runbook-000, the Service path).

>>> from kubenetdiag.probes.active.common import example, section
>>> ctx = example()
>>> out = "nc: connect to 198.18.0.12 port 30080 (tcp) timed out: Operation now in progress"
>>> [fact] = NODEPORT.parse(section("active.nodeport.0", out, 1), ctx.plan["nodeports"][0], ctx)
>>> a = fact.attrs
>>> fact.kind, a["service"], a["dst"], a["own"], a["ok"], a["detail"]
('nodeport_check', 'default/web:http', 'node2', False, False, 'timeout')
"""

from __future__ import annotations

from typing import Any

from kubenetdiag.facts.model import Fact
from kubenetdiag.probes.active.common import no_tool, source, status
from kubenetdiag.probes.active.plan import NodePlan
from kubenetdiag.probes.active.tcp import parse_tcp
from kubenetdiag.probes.base import ActiveCheck, CheckContext, Section, quoted


def _targets(plan: NodePlan) -> list[tuple[str, Any]]:
    return [(str(i), target) for i, target in enumerate(plan.get("nodeports") or [])]


def _blocks(target: Any) -> str:
    return f"NodePort {target['node_port']} of {target['service']} on {target['dst']}"


def _parse(section: Section, target: Any, ctx: CheckContext) -> list[Fact]:
    if no_tool(section):
        return [status(ctx, section, "missing_tool",
                       section.stdout.strip()[:200] or "no nc/bash", _blocks(target))]
    result = parse_tcp(section.stdout, section.exit_code, section.duration_s)
    return [Fact("nodeport_check", ctx.node, {
        "service": target["service"], "node_port": target["node_port"], "dst": target["dst"],
        "address": target["address"], "own": target["own"], "ok": result["ok"],
        "detail": result["detail"]}, source(section))]


NODEPORT = ActiveCheck(
    name="nodeport",
    kinds=("nodeport_check",),
    targets=_targets,
    resolve=lambda plan, suffix: (plan.get("nodeports") or [])[int(suffix)],
    command=lambda plan, target: (f"sh -c \"$__TCP\" _ {quoted(target['address'])} "
                                  f"{int(target['node_port'])} ip node"),
    parse=_parse,
    blocks=_blocks,
    order=520,
)
CHECKS = (NODEPORT,)
