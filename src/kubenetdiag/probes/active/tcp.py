"""A TCP connect to each endpoint the inventory declares (`kubenetdiag_endpoints`), from the
node and, as `pod.tcp`, from inside a pod's network namespace. By name, the script resolves
first, so "does not resolve" is told apart from "refused" and "timeout"
(docs/runbooks.md#runbook-002).

>>> from kubenetdiag.probes.active.common import example, section
>>> ctx = example("cni-4f1a")
>>> out = "resolved: db.example.invalid 10.0.0.5\\nbash: connect: Connection refused\\n"
>>> [fact] = POD_TCP.parse(section("active.pod.tcp.0", out, 1), ctx.plan["endpoints"][0], ctx)
>>> fact.kind, fact.attrs["address"], fact.attrs["ok"], fact.attrs["detail"], fact.attrs["vantage"]
('tcp_check', '10.0.0.5', False, 'refused', 'cni-4f1a')
"""

from __future__ import annotations

import re
from typing import Any

from kubenetdiag.facts.model import Fact
from kubenetdiag.probes.active.common import IN_POD, IPV4, no_tool, source, status, vantage
from kubenetdiag.probes.active.plan import NodePlan
from kubenetdiag.probes.base import ActiveCheck, CheckContext, Section, quoted

NC_WAIT_S = 2.0  # the helper's nc -w: a silent failure that took this long waited it out


def parse_tcp(text: str, rc: int | None, seconds: float | None = None) -> dict[str, Any]:
    """{ok, address, detail} from the script's TCP helper (nc -v -z or bash /dev/tcp).

    A connect that gets no answer is a timeout, whichever tool says so; an nc that printed
    nothing (an older script ran it without -v) but waited its full -w did too:

    >>> parse_tcp("nc: connect to 10.0.0.5 port 3306 (tcp) timed out", 1)["detail"]
    'timeout'
    >>> parse_tcp("Ncat: Connection timed out.", 1)["detail"]
    'timeout'
    >>> parse_tcp("", 1, seconds=2.01)["detail"], parse_tcp("", 1, seconds=0.01)["detail"]
    ('timeout', 'failed (exit 1)')
    >>> parse_tcp("resolved: db.corp 10.0.0.5\\n", 1, seconds=2.3)
    {'ok': False, 'address': '10.0.0.5', 'detail': 'timeout', 'resolver': None}

    From a pod, a name is resolved with the pod's own resolv.conf where a process of the pod
    shows it; the helper says which server it asked:

    >>> parse_tcp("resolver: pod 10.96.0.10\\nunresolved: web\\n", 3)["resolver"]
    'pod 10.96.0.10'
    """
    resolved = re.search(rf"^resolved: \S+ ({IPV4})", text, re.M)
    address = resolved.group(1) if resolved else None
    asked = re.search(rf"^resolver: (pod {IPV4})$", text, re.M)
    resolver = asked.group(1) if asked else None
    low = text.lower()
    if "unresolved:" in low or "name or service not known" in low:
        return {"ok": False, "address": None, "detail": "unresolved", "resolver": resolver}
    if rc == 0:
        return {"ok": True, "address": address, "detail": None, "resolver": resolver}
    # what the connect itself printed, the resolver's lines aside
    said = "".join(line for line in low.splitlines()
                   if not line.startswith(("resolved: ", "resolver: ", "search: "))).strip()
    if "refused" in low:
        detail = "refused"
    elif rc == 124 or "timed out" in low or (
            not said and seconds is not None and seconds >= NC_WAIT_S * 0.95):
        detail = "timeout"
    elif "no route" in low or "unreachable" in low:
        detail = "unreachable"
    elif "reset" in low:
        detail = "reset"
    else:
        detail = f"failed (exit {rc})"
    return {"ok": False, "address": address, "detail": detail, "resolver": resolver}


def _targets(plan: NodePlan) -> list[tuple[str, Any]]:
    return [(str(i), endpoint) for i, endpoint in enumerate(plan["endpoints"])]


def _connect(endpoint: Any, where: str = "node") -> str:
    # from a pod, a name goes to the pod's resolver (its resolv.conf), not the node's
    return (f"sh -c \"$__TCP\" _ {quoted(endpoint['host'])} {int(endpoint['port'])} "
            f"{quoted(endpoint['by'])} {where}")


def _blocks(endpoint: Any) -> str:
    return f"TCP connect to {endpoint['target']}"


def _resolver(endpoint: Any, result: dict[str, Any]) -> str | None:
    """Who resolved a name: the pod's nameserver (its resolv.conf), else the node's resolver
    (a pod without a process showing its resolv.conf, or an older script)."""
    if endpoint["by"] != "name":
        return None
    return result["resolver"] or "node"


def _parser(in_pod: bool):  # noqa: ANN202
    def parse(section: Section, endpoint: Any, ctx: CheckContext) -> list[Fact]:
        if no_tool(section):
            return [status(ctx, section, "missing_tool",
                           section.stdout.strip()[:200] or "no nc/bash", _blocks(endpoint))]
        result = parse_tcp(section.stdout, section.exit_code, section.duration_s)
        address = result["address"] or (endpoint["host"] if endpoint["by"] == "ip" else None)
        return [Fact("tcp_check", ctx.node, {
            "target": endpoint["target"], "address": address, "by": endpoint["by"],
            "ok": result["ok"], "detail": result["detail"], "rtt_ms": None,
            "vantage": vantage(ctx, in_pod), "resolver": _resolver(endpoint, result)},
            source(section))]
    return parse


def _resolve(plan: NodePlan, suffix: str) -> Any:
    return plan["endpoints"][int(suffix)]


TCP = ActiveCheck(
    name="tcp",
    kinds=("tcp_check",),
    targets=_targets,
    resolve=_resolve,
    command=lambda plan, endpoint: _connect(endpoint),
    parse=_parser(in_pod=False),
    blocks=_blocks,
    order=500,
)
POD_TCP = ActiveCheck(
    name="pod.tcp",
    kinds=("tcp_check",),
    targets=_targets,
    resolve=_resolve,
    command=lambda plan, endpoint: IN_POD + _connect(endpoint, "pod"),
    parse=_parser(in_pod=True),
    blocks=_blocks,
    order=700,
)
CHECKS = (TCP, POD_TCP)
