"""DF pings that fill a layer's MTU exactly (`ping -M do -s MTU-28`): a path that cannot carry
a full-size packet drops exactly these, while the small pings of the ping check get through.
One per peer and per layer the plan sized (the overlay's MTU for the pod layer, sent to the
peer's pod address as the ping check does; the underlay device's for the underlay).

>>> from kubenetdiag.probes.active.common import example, section
>>> ctx = example()
>>> target = (ctx.plan["mtu"][1], ctx.plan["peers"][0])
>>> out = ("PING 198.18.0.12 (198.18.0.12) 1472(1500) bytes of data.\\n"
...        "ping: local error: message too long, mtu=1400\\n\\n"
...        "--- 198.18.0.12 ping statistics ---\\n"
...        "2 packets transmitted, 0 received, +2 errors, 100% packet loss, time 201ms\\n")
>>> [fact] = MTU.parse(section("active.mtu.1.0", out, 1), target, ctx)
>>> fact.kind, fact.attrs["layer"], fact.attrs["mtu"], fact.attrs["ok"], fact.attrs["detail"]
('mtu_check', 'underlay', 1500, False, 'message too long, mtu=1400')

busybox's ping has no -M: that is a missing tool, not an MTU problem.

>>> busybox = "ping: invalid option -- 'M'\\nBusyBox v1.36.1 multi-call binary.\\n"
>>> [fact] = MTU.parse(section("active.mtu.1.0", busybox, 1), target, ctx)
>>> fact.kind, fact.attrs["status"], fact.attrs["blocks"]
('probe_status', 'missing_tool', 'MTU 1500 towards node2')
"""

from __future__ import annotations

from typing import Any

from kubenetdiag.facts.model import Fact
from kubenetdiag.probes.active.common import PING, no_tool, peer_at, source, status
from kubenetdiag.probes.active.ping import parse_ping, unsupported
from kubenetdiag.probes.active.plan import ICMP_OVERHEAD, NodePlan, pod_address
from kubenetdiag.probes.base import ActiveCheck, CheckContext, Section, quoted


def _destination(layer: str, peer: Any) -> str | None:
    return pod_address(peer) if layer == "pod" else peer.get("address")


def _targets(plan: NodePlan) -> list[tuple[str, Any]]:
    return [
        (f"{m}.{i}", (mtu, peer))
        for i, peer in enumerate(plan["peers"])
        for m, mtu in enumerate(plan["mtu"])
        # a node nothing was read on has no MTU to compare: only its plain ping is sent
        if _destination(mtu["layer"], peer) and peer.get("collected") is not False
    ]


def _resolve(plan: NodePlan, suffix: str) -> tuple[Any, Any]:
    sized, index = suffix.split(".")[:2]
    return plan["mtu"][int(sized)], peer_at(plan, index)


def _command(plan: NodePlan, target: tuple[Any, Any]) -> str:
    mtu, peer = target
    return f"{PING} -M do -s {int(mtu['size'])} {quoted(_destination(mtu['layer'], peer))}"


def _blocks(target: tuple[Any, Any]) -> str:
    mtu, peer = target
    return f"MTU {mtu['size'] + ICMP_OVERHEAD} towards {peer['name']}"


def parse(section: Section, target: tuple[Any, Any], ctx: CheckContext) -> list[Fact]:
    mtu, peer = target
    text = section.stdout
    if no_tool(section) or unsupported(text):
        return [status(ctx, section, "missing_tool",
                       text.strip()[:200] or "ping -M do unsupported", _blocks(target))]
    result = parse_ping(text, section.exit_code)
    return [Fact("mtu_check", ctx.node, {
        "dst": peer["name"], "layer": mtu["layer"], "size": int(mtu["size"]),
        "mtu": int(mtu["size"]) + ICMP_OVERHEAD, "ok": result["ok"],
        "detail": result["detail"]}, source(section))]


MTU = ActiveCheck(
    name="mtu",
    kinds=("mtu_check",),
    targets=_targets,
    resolve=_resolve,
    command=_command,
    parse=parse,
    blocks=_blocks,
    order=200,
)
CHECKS = (MTU,)
