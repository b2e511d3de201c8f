"""A tcpdump of the VXLAN port on the underlay (or VXLAN) device while the other checks run:
which peers this node sent encapsulated packets to and received them from. A direction that
stays at zero while the pings cross is where VXLAN is dropped.

It runs around the jobs rather than as one (`window_command`), for as long as they take at
most; its section is `active.capture`.

>>> from kubenetdiag.probes.active.common import example, section
>>> ctx = example()
>>> out = ("listening on eth0, link-type EN10MB (Ethernet), snapshot length 262144 bytes\\n"
...        "10:56:22.091012 IP 198.18.0.12.54287 > 198.18.0.11.8472: OTV, flags [I] (0x08)\\n"
...        "10:56:22.091101 IP 198.18.0.12.54287 > 198.18.0.11.8472: OTV, flags [I] (0x08)\\n"
...        "rc=143\\n")
>>> [fact] = CAPTURE.parse(section("active.capture", out, 0, 1.2), ctx.plan["vxlan"], ctx)
>>> fact.kind, fact.attrs
('vxlan_flow', {'peer': 'node2', 'port': 8472, 'sent': 0, 'received': 2, 'window_s': 1.2})
"""

from __future__ import annotations

import re
from typing import Any

from kubenetdiag.facts.model import Fact
from kubenetdiag.probes.active.common import IPV4, source, status
from kubenetdiag.probes.active.plan import NodePlan
from kubenetdiag.probes.base import ActiveCheck, CheckContext, Section, quoted

CAPTURE_PACKETS = 4000  # tcpdump -c: a bound on output even on a busy underlay
BLOCKS = "VXLAN direction (tcpdump)"

_TCPDUMP = re.compile(rf"\bIP ({IPV4})\.\d+ > ({IPV4})\.(\d+):")


def count_vxlan(text: str, me: str | None, peers: dict[str, str], port: int
                ) -> dict[str, tuple[int, int]]:
    """peer name -> (sent to it, received from it) from `tcpdump -nn` lines."""
    counts = {name: [0, 0] for name in peers.values()}
    for packet in _TCPDUMP.finditer(text):
        src, dst = packet.group(1), packet.group(2)
        if dst in peers and (me is None or src == me):
            counts[peers[dst]][0] += 1
        elif src in peers and (me is None or dst == me):
            counts[peers[src]][1] += 1
    return {k: (v[0], v[1]) for k, v in counts.items()}


def parse(section: Section, vxlan: Any, ctx: CheckContext) -> list[Fact]:
    text = section.stdout
    if section.exit_code == 127 or "command not found" in text:
        return [status(ctx, section, "missing_tool", text.strip()[:200], BLOCKS)]
    if re.search(r"permission denied|Operation not permitted|don't have permission", text,
                 re.I):
        return [status(ctx, section, "permission_denied", text.strip()[:200], BLOCKS)]
    if "listening on" not in text:
        return [status(ctx, section, "failed", text.strip()[:200] or "no output", BLOCKS)]
    peers = ctx.plan["peers"]
    addresses = {p["address"]: p["name"] for p in peers if p.get("address")}
    counts = count_vxlan(text, ctx.plan.get("address"), addresses, int(vxlan.get("port") or 0))
    return [Fact("vxlan_flow", ctx.node, {"peer": name, "port": int(vxlan["port"]),
                                          "sent": sent, "received": received,
                                          "window_s": section.duration_s}, source(section))
            for name, (sent, received) in counts.items()]


def _targets(plan: NodePlan) -> list[tuple[str, Any]]:
    return [("", plan["vxlan"])] if plan.get("vxlan") else []


CAPTURE = ActiveCheck(
    name="capture",
    kinds=("vxlan_flow",),
    targets=_targets,
    resolve=lambda plan, suffix: plan.get("vxlan") or {},
    command=lambda plan, vxlan: f"tcpdump -nni {vxlan['dev']} udp port {vxlan['port']}",
    window_command=lambda vxlan, window_s: (
        f"timeout {window_s} tcpdump -l -nni {quoted(vxlan['dev'])} -c {CAPTURE_PACKETS} "
        f"udp port {int(vxlan['port'])}"),
    tools=("tcpdump", "timeout"),
    parse=parse,
    blocks=lambda vxlan: BLOCKS,
    order=800,
)
CHECKS = (CAPTURE,)
