"""The node and one of its own pods, each pinging the other: the shortest stretch of the pod
network, which no peer-to-peer check crosses (docs/runbooks.md#runbook-002: the node cannot
reach its pods, while other nodes may still reach each other). From the node to the pod's
address (read inside the pod's network namespace, so no pod name or API call is needed), and
from the pod to the node's own address.

>>> from kubenetdiag.probes.active.common import example, section
>>> out = ("pod address: 10.244.1.2\\n"
...        "2 packets transmitted, 0 received, 100% packet loss, time 1010ms\\n")
>>> [fact] = NODE_TO_POD.parse(section("active.own.node_to_pod", out, 1), "node_to_pod",
...                            example("cni-4f1a"))
>>> a = fact.attrs
>>> fact.kind, a["direction"], a["address"], a["ok"], a["detail"]
('own_pod_check', 'node_to_pod', '10.244.1.2', False, 'timeout')
>>> ok = ("2 packets transmitted, 2 received, 0% packet loss\\n"
...       "rtt min/avg/max/mdev = 0.1/0.2/0.3/0.1 ms\\n")
>>> [fact] = POD_TO_NODE.parse(section("active.own.pod_to_node", ok), "pod_to_node",
...                            example("cni-4f1a"))
>>> fact.attrs["direction"], fact.attrs["address"], fact.attrs["ok"], fact.attrs["vantage"]
('pod_to_node', '198.18.0.11', True, 'cni-4f1a')
"""

from __future__ import annotations

import re
from typing import Any

from kubenetdiag.facts.model import Fact
from kubenetdiag.probes.active.common import IN_POD, IPV4, PING, no_tool, source, status, vantage
from kubenetdiag.probes.active.ping import parse_ping, unsupported
from kubenetdiag.probes.active.plan import NodePlan
from kubenetdiag.probes.base import ActiveCheck, CheckContext, Section, quoted

_POD_ADDRESS = re.compile(rf"^pod address: ({IPV4})$", re.M)

# The pod's first global IPv4 address, read inside its namespace; exit 127 (not checked) when
# there is none, so an empty namespace is never reported as a failed ping.
_NODE_TO_POD = (
    IN_POD.replace("$__inpod ", "")
    + "a=$($__inpod ip -4 -o addr show scope global 2>/dev/null"
    + " | awk 'NR == 1 { split($4, x, \"/\"); print x[1] }'); "
    + '[ -n "$a" ] || { echo "no pod address"; exit 127; }; echo "pod address: $a"; '
    + PING + ' "$a"'
)


def _targets(direction: str):  # noqa: ANN202
    def targets(plan: NodePlan) -> list[tuple[str, Any]]:
        return [("", direction)] if plan.get("address") else []
    return targets


def _blocks(direction: Any) -> str:
    return ("the node's reachability of its own pod" if direction == "node_to_pod"
            else "the pod's reachability of its own node")


def _parser(direction: str):  # noqa: ANN202
    def parse(section: Section, target: Any, ctx: CheckContext) -> list[Fact]:
        text = section.stdout
        if no_tool(section) or unsupported(text):
            return [status(ctx, section, "missing_tool",
                           text.strip()[:200] or "no pod namespace entered, or ping missing",
                           _blocks(direction))]
        if direction == "node_to_pod":
            found = _POD_ADDRESS.search(text)
            address = found.group(1) if found else None
        else:
            address = ctx.plan.get("address")
        result = parse_ping(text, section.exit_code)
        return [Fact("own_pod_check", ctx.node, {
            "direction": direction, "address": address, "ok": result["ok"],
            "detail": result["detail"], "rtt_ms": result["rtt_ms"],
            "vantage": vantage(ctx, True)}, source(section))]
    return parse


NODE_TO_POD = ActiveCheck(
    name="own.node_to_pod",
    targets=_targets("node_to_pod"),
    resolve=lambda plan, suffix: "node_to_pod",
    command=lambda plan, target: _NODE_TO_POD,
    parse=_parser("node_to_pod"),
    kinds=("own_pod_check",),
    blocks=lambda target: _blocks("node_to_pod"),
    order=620,
)
POD_TO_NODE = ActiveCheck(
    name="own.pod_to_node",
    targets=_targets("pod_to_node"),
    resolve=lambda plan, suffix: "pod_to_node",
    command=lambda plan, target: f"{IN_POD}{PING} {quoted(str(plan['address']))}",
    parse=_parser("pod_to_node"),
    kinds=("own_pod_check",),
    blocks=lambda target: _blocks("pod_to_node"),
    order=630,
)
CHECKS = (NODE_TO_POD, POD_TO_NODE)
