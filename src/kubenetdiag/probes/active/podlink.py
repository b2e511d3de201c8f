"""The pod's own interfaces as its network namespace shows them (`ip -o link show` inside it).

A pod's eth0 MTU is set inside the pod, where no node probe looks: raised above what the
node's side of the pod network carries (flannel.1's 1450 on VXLAN, forgetting its 50 bytes of
overhead), full-size packets from the pod are dropped while pings and handshakes pass.

>>> from kubenetdiag.probes.active.common import example, section
>>> out = ("1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN\\n"
...        "2: eth0@if7: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP "
...        "mode DEFAULT qlen 1000\\\\    link/ether 5a:3c:16:00:00:01 brd ff:ff:ff:ff:ff:ff\\n")
>>> [fact] = POD_LINK.parse(section("active.pod.link", out), None, example("cni-4f1a"))
>>> a = fact.attrs
>>> fact.kind, a["name"], a["mtu"], a["vantage"], a["peer_ifindex"]
('pod_interface', 'eth0', 1500, 'cni-4f1a', 7)
"""

from __future__ import annotations

import re
from typing import Any

from kubenetdiag.facts.model import Fact
from kubenetdiag.probes.active.common import IN_POD, no_tool, source, status, vantage
from kubenetdiag.probes.base import ActiveCheck, CheckContext, Section

# eth0@if7: the veth's far end is interface 7 of another namespace, the node's
_LINE = re.compile(r"^\d+:\s+([^:@\s]+)(?:@(?:if(\d+)|\S+))?:\s+<([^>]*)>.*?\bmtu (\d+)")


def _parse(section: Section, target: Any, ctx: CheckContext) -> list[Fact]:
    if no_tool(section):
        return [status(ctx, section, "missing_tool", section.stdout.strip()[:200]
                       or "no pod namespace entered, or ip missing", "the pod's interface MTU")]
    out = []
    for line in section.stdout.splitlines():
        m = _LINE.match(line.strip())
        if not m or m.group(1) == "lo":
            continue
        out.append(Fact("pod_interface", ctx.node, {
            "name": m.group(1), "mtu": int(m.group(4)), "up": "UP" in m.group(3).split(","),
            "vantage": vantage(ctx, True),
            "peer_ifindex": int(m.group(2)) if m.group(2) else None}, source(section)))
    return out


POD_LINK = ActiveCheck(
    name="pod.link",
    kinds=("pod_interface",),
    targets=lambda plan: [("", None)],
    resolve=lambda plan, suffix: None,
    command=lambda plan, target: f"{IN_POD}ip -o link show",
    parse=_parse,
    blocks=lambda target: "the pod's interface MTU",
    order=610,
)
CHECKS = (POD_LINK,)
