"""The routes of the pod whose namespace the active phase entered (`ip -4 route show` inside it).

The CNI plugin's IPAM writes them when the pod is made: under a bridge CNI a default route via
the bridge's address (host-local's `routes`, the bridge plugin's isDefaultGateway), under
Calico one via 169.254.1.1, which proxy ARP answers. A pod made without one reaches its own
subnet and nothing else, not even its node: every ping it sends out gets "Network is
unreachable" from its own kernel, and no node probe can say why.

>>> from kubenetdiag.probes.active.common import example, section
>>> out = "10.244.1.0/24 dev eth0 proto kernel scope link src 10.244.1.2 \\nknd-done\\n"
>>> [fact] = POD_ROUTE.parse(section("active.pod.route", out), None, example("cni-4f1a"))
>>> a = fact.attrs
>>> fact.kind, a["routes"], a["default"], a["gateway"], a["listing"]
('pod_routing', 1, False, None, '10.244.1.0/24 dev eth0')
"""

from __future__ import annotations

from typing import Any

from kubenetdiag.facts.model import Fact
from kubenetdiag.probes.active.common import ip_listed, ip_listing, source, vantage
from kubenetdiag.probes.base import ActiveCheck, CheckContext, Section, unread_lines
from kubenetdiag.probes.routes import from_text
from kubenetdiag.probes.text import clip

MAX_ROUTES = 200  # a pod holds a handful; the listing stays small whatever it holds


def _short(route: dict) -> str:
    """`DST [via GW] [dev DEV]`: what a reader needs of each route, in ip's own words."""
    words = [route["type"]] if route["type"] != "unicast" else []
    words.append(route["dst"])
    if route.get("gateway"):
        words += ["via", route["gateway"]]
    if route.get("dev"):
        words += ["dev", route["dev"]]
    return " ".join(words)


def _blocks(target: Any) -> str:
    return "the pod's own routes (a pod made without a default route)"


def _parse(section: Section, target: Any, ctx: CheckContext) -> list[Fact]:
    lines, problem = ip_listed(section, ctx, _blocks(target))
    if problem:
        return problem
    unread: list[str] = []
    routes = [r for r, _ in from_text(lines, unread) if r["type"] not in ("local", "broadcast")]
    default = next((r for r in routes if r["dst"] == "default"), None)
    # without a default route read, a line not understood may be it: "none" would be a guess
    partial = unread_lines(section, ctx.node, unread, "routes the pod may have",
                           kinds="" if default else None)
    if partial and default is None:
        return partial
    return partial + [Fact("pod_routing", ctx.node, {
        "vantage": vantage(ctx, True),
        "routes": len(routes),
        "default": default is not None,
        "gateway": clip(default["gateway"], 60) if default and default.get("gateway") else None,
        "listing": clip("; ".join(_short(r) for r in routes) or "no route at all", 500),
    }, source(section))]


POD_ROUTE = ActiveCheck(
    name="pod.route",
    kinds=("pod_routing",),
    targets=lambda plan: [("", None)],
    resolve=lambda plan, suffix: None,
    command=lambda plan, target: ip_listing("-4 route show", f"head -n {MAX_ROUTES}", in_pod=True),
    parse=_parse,
    blocks=_blocks,
    order=615,
)
CHECKS = (POD_ROUTE,)
