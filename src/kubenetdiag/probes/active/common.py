"""What the active checks' parsers share: the section's provenance, the "could not check"
fact, and a small plan for their doctests."""

from __future__ import annotations

from typing import Any

from kubenetdiag.facts.model import Fact, Source, excerpt
from kubenetdiag.probes.active.plan import NodePlan
from kubenetdiag.probes.base import CheckContext, Section

IPV4 = r"\d{1,3}(?:\.\d{1,3}){3}"
# ping's options for every ping check: $__pi is the interval the script found ping accepts
# (iputils takes 0.2 s, busybox has no -i)
PING = "ping -c 2 -W 1 $__pi"
# The underlay ping counts loss too: 20 echoes 20 ms apart, so a link that loses one packet
# in ten shows it in half a second (iputils only: busybox's one echo a second would take 20 s,
# and an old iputils refuses an interval under 0.2 s to a user who is not root, so it gets the
# plain ping). A deadline, not a wait per echo: ping stops when every reply is in or at 2 s, so
# a reply late on a loaded node still counts (with -W it would stop waiting twice the slowest
# round trip after the last echo). ADDR is replaced by the quoted address.
BURST_COUNT = 20
BURST = f"-c {BURST_COUNT} -i 0.02"
LOSS_PING = ('if [ -n "$__pi" ]; then o=$(ping ' + BURST + ' -w 2 ADDR 2>&1); r=$?; '
             'case $o in *"minimal interval"*|*"cannot flood"*) '
             f'o=$({PING} ADDR 2>&1); r=$?;; esac; '
             'printf "%s\\n" "$o"; exit $r; fi; ' + PING + ' ADDR')
LOSS_SENT = 10  # echoes sent before a count of lost ones says anything
# Prefix of a check run from inside the pod network namespace; exit 127 when the script found
# none, so the parser reports a missing vantage point rather than a failure.
IN_POD = '[ -n "$__inpod" ] || exit 127; $__inpod '


def source(section: Section) -> Source:
    return Source(section.probe, section.command, section.exit_code,
                  excerpt(section.stdout, 1000))


def status(ctx: CheckContext, section: Section, state: str, reason: str, blocks: str) -> Fact:
    """A probe_status fact: this check could not give an answer, and what that leaves open."""
    return Fact("probe_status", ctx.node,
                {"probe": section.probe, "status": state, "reason": reason[:300],
                 "blocks": blocks},
                source(section))


def ip_listing(args: str, keep: str, in_pod: bool = False) -> str:
    """A node script: `ip ARGS` (inside the pod's namespace with `in_pod`) piped through `keep`
    (a filter that bounds what is printed), ended by a mark so a cut output is not read as an
    empty listing. Exit 127 without ip or pod; on ip's own failure, the first line of its
    complaint as `msg ...`."""
    return (
        (IN_POD.replace("$__inpod ", "") if in_pod else "")
        + "command -v ip >/dev/null 2>&1 || { echo 'kubenetdiag: ip: command not found'; "
        "exit 127; }; "
        f"s=$({'$__inpod ' if in_pod else ''}ip {args} 2>&1) || "
        "{ printf 'msg %s\\n' \"$(printf %s \"$s\" | head -n 1)\"; exit 1; }; "
        f"printf '%s\\n' \"$s\" | {keep}; echo knd-done"
    )


def ip_listed(section: Section, ctx: CheckContext, blocks: str) -> tuple[list[str], list[Fact]]:
    """The lines an ip_listing printed before its end mark, or none and the probe_status that
    says why: no ip, ip's complaint, or an output cut short."""
    text = section.stdout
    if section.exit_code == 127:
        return [], [status(ctx, section, "missing_tool", text.strip()[:300], blocks)]
    lines = text.splitlines()
    if section.exit_code != 0 or "knd-done" not in lines:
        reason = next((x[4:] for x in lines if x.startswith("msg ")),
                      (text.strip().splitlines() or ["no output"])[0])
        return [], [status(ctx, section, "failed", reason[:300], blocks)]
    return lines[:lines.index("knd-done")], []


def no_tool(section: Section) -> bool:
    """The node had no tool for the check (the script's exit 127)."""
    return section.exit_code == 127


def vantage(ctx: CheckContext, in_pod: bool) -> str | None:
    """Where a check was sent from: None for the node, the pod namespace's name otherwise."""
    return (ctx.podns or "pod") if in_pod else None


def peer_at(plan: NodePlan, index: str) -> Any:
    return plan["peers"][int(index)]


def example(podns: str | None = None) -> CheckContext:
    """node1's context with one peer, node2, for the checks' doctests."""
    plan: NodePlan = {
        "node": "node1", "address": "198.18.0.11",
        "peers": [{"name": "node2", "address": "198.18.0.12", "pod_cidr": "10.244.2.0/24",
                   "pod_gateway": "10.244.2.1", "pod_target": "10.244.2.1",
                   "pod_target_source": "interface"}],
        "mtu": [{"layer": "pod", "size": 1422}, {"layer": "underlay", "size": 1472}],
        "vxlan": {"port": 8472, "dev": "eth0"},
        "dns": [{"server": "10.96.0.10", "kind": "service", "pod": None}],
        "dns_name": "kubernetes.default.svc.cluster.local",
        "http": [{"url": "http://10.244.2.3:9153/metrics", "target": "coredns_metrics",
                  "pod": "coredns-0"}],
        "endpoints": [{"target": "db.example.invalid:5432", "host": "db.example.invalid",
                       "port": 5432, "by": "name"}],
        "nodeports": [{"service": "default/web:http", "node_port": 30080, "dst": "node2",
                       "address": "198.18.0.12", "own": False}],
    }
    return CheckContext("node1", plan, podns)


def section(probe: str, stdout: str, exit_code: int | None = 0, duration_s: float = 0.0
            ) -> Section:
    """A section as the runner records it, for doctests."""
    return Section(probe, "", exit_code, duration_s, stdout, "")
