"""A name looked up as a pod looks it up: inside the pod's network namespace, with the pod's
own resolv.conf (the nameserver, search list and ndots the kubelet wrote for it), not the
node's. The node's DNS checks ask the cluster DNS by address; this one asks whatever the pod
was told to ask, so a kubelet that writes the wrong nameserver (its clusterDNS) or the wrong
search path (its clusterDomain) into every pod of its node shows here and nowhere else.

The name is `kubernetes.default`, the API server's Service: every cluster has it, and as a
short name it resolves only through the search list, as the names pods use every day do.

>>> from kubenetdiag.probes.active.common import example, section
>>> out = ("resolver: pod 10.96.0.10\\nsearch: default.svc.cluster.local svc.cluster.local "
...        "cluster.local\\nresolved: kubernetes.default 10.96.0.1\\n")
>>> [fact] = POD_DNS.parse(section("active.pod.dns", out), NAME, example("cni-4f1a"))
>>> fact.kind, fact.attrs["nameserver"], fact.attrs["ok"], fact.attrs["answer"]
('pod_dns_check', '10.96.0.10', True, '10.96.0.1')
>>> out = ("resolver: pod 10.96.0.11\\nsearch: default.svc.cluster.local\\n"
...        "unresolved: kubernetes.default\\n")
>>> [fact] = POD_DNS.parse(section("active.pod.dns", out, 3), NAME, example("cni-4f1a"))
>>> fact.attrs["ok"], fact.attrs["detail"], fact.attrs["nameserver"], fact.attrs["vantage"]
(False, 'no address', '10.96.0.11', 'cni-4f1a')

A pod without the cluster's search list (dnsPolicy Default: the node's resolver) is no
vantage point for this check, and the check says so:

>>> out = "resolver: pod 198.18.0.250\\nsearch: \\nunresolved: kubernetes.default\\n"
>>> [st] = POD_DNS.parse(section("active.pod.dns", out, 3), NAME, example("cni-4f1a"))
>>> st.kind, st.attrs["status"], "dnsPolicy ClusterFirst" in st.attrs["reason"]
('probe_status', 'not_queried', True)
"""

from __future__ import annotations

import re
from typing import Any

from kubenetdiag.facts.model import Fact
from kubenetdiag.probes.active.common import IN_POD, IPV4, no_tool, source, status, vantage
from kubenetdiag.probes.active.plan import NodePlan
from kubenetdiag.probes.base import ActiveCheck, CheckContext, Section, quoted

NAME = "kubernetes.default"
_DOMAIN = re.compile(r"^[A-Za-z0-9_.-]{1,253}$")


def parse_pod_dns(text: str) -> dict[str, Any] | None:
    """{nameserver, search, ok, answer, detail} from the script's resolver helper; None when
    it said nothing it could have said (an older or foreign script).

    >>> parse_pod_dns("resolver: pod 169.254.20.10\\nsearch: a.svc.cluster.local\\n"
    ...               "unresolved: kubernetes.default (no answer from 169.254.20.10)\\n")["detail"]
    'no answer'
    >>> parse_pod_dns("unresolved: kubernetes.default (the pod's resolv.conf names no "
    ...               "nameserver)\\n")["detail"], parse_pod_dns("garbage") is None
    ('no nameserver', True)
    """
    server = re.search(rf"^resolver: pod ({IPV4})$", text, re.M)
    search = re.search(r"^search: ?(.*)$", text, re.M)
    resolved = re.search(rf"^resolved: \S+ ({IPV4})$", text, re.M)
    unresolved = re.search(r"^unresolved: \S+(?: \((.*)\))?$", text, re.M)
    if not resolved and not unresolved:
        return None
    domains = [d for d in (search.group(1).split() if search else []) if _DOMAIN.match(d)]
    why = (unresolved.group(1) or "") if unresolved else ""
    detail = (None if resolved else "no answer" if why.startswith("no answer")
              else "no nameserver" if "no nameserver" in why
              else "no tool" if why.startswith("no unshare") else "no address")
    return {"nameserver": server.group(1) if server else None, "search": " ".join(domains[:6]),
            "ok": bool(resolved), "answer": resolved.group(1) if resolved else None,
            "detail": detail}


def _parse(section: Section, name: Any, ctx: CheckContext) -> list[Fact]:
    blocks = _blocks(name)
    if no_tool(section):
        return [status(ctx, section, "missing_tool", section.stdout.strip()[:200]
                       or "no pod namespace entered", blocks)]
    result = parse_pod_dns(section.stdout)
    if result is None or result["detail"] == "no tool":
        return [status(ctx, section, "failed", section.stdout.strip()[:200]
                       or f"no answer from the resolver helper (exit {section.exit_code})",
                       blocks)]
    if "svc." not in result["search"]:
        # the script found no pod told the cluster DNS (ClusterFirst): the one it asked in
        # carries the node's resolver, and its answer says nothing about what pods are told
        return [status(ctx, section, "not_queried",
                       "no pod on this node (of the first 8) has the cluster's search list "
                       f"(dnsPolicy ClusterFirst): the pod asked in, {vantage(ctx, True)}, has "
                       f"the node's resolver (nameserver {result['nameserver'] or 'none'}, "
                       f"search {result['search'] or 'none'})", _blocks(name))]
    return [Fact("pod_dns_check", ctx.node, {
        **result, "name": str(name), "vantage": vantage(ctx, True)}, source(section))]


def _targets(plan: NodePlan) -> list[tuple[str, Any]]:
    # only in a cluster: a node list without an API has no cluster DNS to compare with
    return [("", NAME)] if plan.get("dns") else []


def _blocks(name: Any) -> str:
    return f"the pod's own DNS resolver (its resolv.conf) for {name}"


POD_DNS = ActiveCheck(
    name="pod.dns",
    kinds=("pod_dns_check",),
    targets=_targets,
    resolve=lambda plan, suffix: NAME,
    command=lambda plan, name: f'{IN_POD}sh -c "$__RES" _ {quoted(str(name))}',
    parse=_parse,
    blocks=_blocks,
    order=640,
)
CHECKS = (POD_DNS,)
