"""Pings to each peer: a pod address on it (the pod network across nodes: the plan's
`pod_target`, or `pod_gateway` in plans older versions stored) and its underlay address, from
the node and, as `pod.ping`, from inside a pod's network namespace
(docs/runbooks.md#runbook-002: from the node first, then from the container). A peer the plan
knows no pod address on gets no pod ping (plan.not_checked says so). The underlay ping is a
burst of 20 echoes where ping allows a short interval, which also gives `ping_loss`: how many
came back, the measure of a link that loses packets at random (facts/lossy_links.py).

Both iputils' and busybox's output are read. A ping that cannot run (no ping, or an option
this ping lacks) is a missing tool, never a failed reach.

>>> from kubenetdiag.probes.active.common import example, section
>>> node2 = example().plan["peers"][0]
>>> out = ("PING 10.244.2.1 (10.244.2.1) 56(84) bytes of data.\\n"
...        "64 bytes from 10.244.2.1: icmp_seq=1 ttl=64 time=0.085 ms\\n\\n"
...        "--- 10.244.2.1 ping statistics ---\\n"
...        "2 packets transmitted, 2 received, 0% packet loss, time 202ms\\n"
...        "rtt min/avg/max/mdev = 0.079/0.082/0.085/0.003 ms\\n")
>>> [fact] = PING.parse(section("active.ping.pod.0", out), ("pod", node2), example())
>>> fact.kind, fact.attrs["src"], fact.attrs["dst"], fact.attrs["ok"], fact.attrs["rtt_ms"]
('reach', 'node1', 'node2', True, 0.082)
>>> lost = "2 packets transmitted, 0 received, 100% packet loss, time 1010ms\\n"
>>> [(f.attrs["ok"], f.attrs["detail"], f.attrs["vantage"]) for f in POD_PING.parse(
...     section("active.pod.ping.pod.0", lost, 1), ("pod", node2), example("cni-4f1a"))]
[(False, 'timeout', 'cni-4f1a')]
"""

from __future__ import annotations

import re
from typing import Any

from kubenetdiag.facts.model import Fact
from kubenetdiag.probes.active.common import (
    BURST,
    BURST_COUNT,
    IN_POD,
    LOSS_PING,
    LOSS_SENT,
    no_tool,
    peer_at,
    source,
    status,
    vantage,
)
from kubenetdiag.probes.active.common import PING as PING_CMD
from kubenetdiag.probes.active.plan import NodePlan, pod_address
from kubenetdiag.probes.base import ActiveCheck, CheckContext, Section, quoted

_PING_STATS = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received"
                         r"(?:, \+(\d+) errors)?")
_PING_REPLY = re.compile(r"^\d+ bytes from .*? icmp_seq=(\d+)", re.M)
_PING_RTT = re.compile(r"(?:rtt|round-trip) min/avg/max(?:/mdev)? = [\d.]+/([\d.]+)/")
_PING_TOO_LONG = re.compile(r"message too long(?:, mtu[= ](\d+))?", re.I)
_PING_FRAG = re.compile(r"Frag needed and DF set \(mtu = (\d+)\)", re.I)
# iputils' line for an ICMP error: "From 198.18.0.12 icmp_seq=1 Destination Host Prohibited"
# (with a name resolved: "From node2 (198.18.0.12) icmp_seq=1 ...")
_PING_ERROR_FROM = re.compile(r"^From (?:\S+ \()?([0-9a-fA-F.:]+)\)? icmp_seq=\d+ (.+)$", re.M)
# What only a packet filter's REJECT sends back to an echo request: the administratively
# prohibited codes (iptables' icmp-host/net/admin-prohibited, firewalld's default) and a port or
# protocol unreachable (iptables' default REJECT), which no host answers a ping with.
_REJECTED = ("Prohibited", "Packet filtered", "Port Unreachable", "Protocol Unreachable")


def parse_ping(text: str, rc: int | None) -> dict[str, Any]:
    """{ok, rtt_ms, detail, mtu, icmp_from, sent, received, errors} from ping's output
    (iputils or busybox); sent is None when ping printed no statistics.

    >>> r = parse_ping("From 198.18.0.12 icmp_seq=1 Destination Host Prohibited\\n"
    ...                "1 packets transmitted, 0 received, +1 errors, 100% packet loss\\n", 1)
    >>> r["ok"], r["detail"], r["icmp_from"]
    (False, 'rejected', '198.18.0.12')
    """
    stats = _PING_STATS.search(text)
    received = int(stats.group(2)) if stats else 0
    errors = int(stats.group(3)) if stats and stats.group(3) else 0
    rtt = _PING_RTT.search(text)
    too_long = _PING_TOO_LONG.search(text)
    frag = _PING_FRAG.search(text)
    error = _PING_ERROR_FROM.search(text)
    detail = None
    mtu = None
    if error and any(word in error.group(2) for word in _REJECTED):
        detail = "rejected"
    elif too_long:
        mtu = int(too_long.group(1)) if too_long.group(1) else None
        detail = "message too long" + (f", mtu={mtu}" if mtu else "")
    elif frag:
        mtu = int(frag.group(1))
        detail = f"frag needed, mtu={mtu}"
    elif "Destination Host Unreachable" in text or "Destination Net Unreachable" in text:
        detail = "unreachable"
    elif "Network is unreachable" in text:
        detail = "network unreachable"
    elif "Operation not permitted" in text:
        detail = "not permitted"
    elif received == 0:
        detail = "timeout"
    return {
        "ok": received > 0,
        "rtt_ms": float(rtt.group(1)) if rtt and received else None,
        "detail": detail,
        "mtu": mtu,
        "icmp_from": error.group(1) if error else None,
        "sent": int(stats.group(1)) if stats else None,
        "received": received,
        "errors": errors,
    }


_UNSUPPORTED = re.compile(r"command not found|not found$|invalid option|unrecognized option|"
                          r"illegal option|usage: ping|BusyBox v", re.I | re.M)
_UNSUPPORTED_WORDS = ("not found", "option", "usage", "busybox")


def unsupported(text: str) -> bool:
    """The command or an option does not exist here (busybox ping has no -M)."""
    # a case-insensitive alternation over every probe's output was a sixth of parsing; plain
    # substring tests rule out almost every text first
    low = text.lower()
    return any(w in low for w in _UNSUPPORTED_WORDS) and bool(_UNSUPPORTED.search(text))


def _targets(plan: NodePlan) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for i, peer in enumerate(plan["peers"]):
        if pod_address(peer):
            out.append((f"pod.{i}", ("pod", peer)))
        if peer.get("address"):
            out.append((f"underlay.{i}", ("underlay", peer)))
    return out


def _pod_targets(plan: NodePlan) -> list[tuple[str, Any]]:
    return [(suffix, target) for suffix, target in _targets(plan) if target[0] == "pod"]


def _resolve(plan: NodePlan, suffix: str) -> tuple[str, Any]:
    layer, index = suffix.split(".")[:2]
    return layer, peer_at(plan, index)


def rate_limited(got: set[int], sent: int) -> bool:
    """The replies (`got`: their sequence numbers) came back for the first echoes and hardly
    any after: the shape of a rate limit on echo requests (iptables' `-m limit`, a hardening
    script's), not of a link that loses packets at random, whose losses fall anywhere.

    >>> rate_limited({1, 2, 3, 4, 5, 20}, 20)
    True
    >>> rate_limited({i for i in range(1, 21) if i not in (4, 11, 17)}, 20)
    False
    >>> rate_limited({i for i in range(1, 21) if i not in (16, 17, 18, 19)}, 20)
    False
    """
    first_lost = next((n for n in range(1, sent + 1) if n not in got), None)
    # a limit's budget runs out early and leaves a long tail; random loss may cluster late
    if first_lost is None or first_lost <= 3 or first_lost > sent // 2:
        return False
    after = sum(1 for n in got if first_lost < n <= sent)
    return after < 0.3 * (sent - first_lost)


def burst(text: str, transmitted: int, received: int) -> tuple[int, set[int]]:
    """(echoes of the burst, the sequence numbers of those answered). With a deadline ping goes
    on sending until BURST_COUNT replies are in, so only the first BURST_COUNT count; where no
    reply line can be read, the statistics' count stands for them."""
    sent = min(transmitted, BURST_COUNT)
    got = {n for n in map(int, _PING_REPLY.findall(text)) if 1 <= n <= sent}
    if not got and received:
        got = set(range(1, min(received, sent) + 1))
    return sent, got


def _command(plan: NodePlan, target: tuple[str, Any]) -> str:
    address = quoted(_destination(target))
    if target[0] == "underlay":
        return LOSS_PING.replace("ADDR", address)
    return f"{PING_CMD} {address}"


def _destination(target: tuple[str, Any]) -> str:
    layer, peer = target
    return pod_address(peer) if layer == "pod" else peer["address"]


def _blocks(target: tuple[str, Any]) -> str:
    layer, peer = target
    return f"{layer} reachability of {peer['name']}"


def _parser(in_pod: bool):  # noqa: ANN202
    def parse(section: Section, target: tuple[str, Any], ctx: CheckContext) -> list[Fact]:
        layer, peer = target
        text = section.stdout
        if no_tool(section) or unsupported(text):
            return [status(ctx, section, "missing_tool", text.strip()[:200] or "ping missing",
                           _blocks(target))]
        result = parse_ping(text, section.exit_code)
        facts = [Fact("reach", ctx.node, {
            "src": ctx.node, "dst": peer["name"], "layer": layer, "ok": result["ok"],
            "rtt_ms": result["rtt_ms"], "detail": result["detail"],
            "icmp_from": result["icmp_from"], "vantage": vantage(ctx, in_pod)},
            source(section))]
        sent = result["sent"]
        if layer == "underlay" and sent is not None and BURST in section.command:
            # a node whose ping could not burst is said, since its peers' bursts were
            # measured; a bundle of a version that sent no burst says nothing of loss
            if sent < LOSS_SENT:
                facts.append(Fact("probe_status", ctx.node, {
                    "probe": section.probe, "status": "partial",
                    "reason": f"{sent} echoes sent: this ping has no short interval (busybox), "
                              "or allows none to a user that is not root (an old iputils)",
                    "blocks": f"loss on the link to {peer['name']}", "kinds": "ping_loss"},
                    source(section)))
            else:
                sent, got = burst(text, sent, result["received"])
                lost = sent - len(got)
                facts.append(Fact("ping_loss", ctx.node, {
                    "dst": peer["name"], "sent": sent, "received": len(got),
                    "errors": result["errors"], "loss_pct": round(100.0 * lost / sent, 1),
                    "rtt_ms": result["rtt_ms"], "limited": rate_limited(got, sent)},
                    source(section)))
        return facts
    return parse


PING = ActiveCheck(
    name="ping",
    kinds=("reach", "ping_loss"),
    targets=_targets,
    resolve=_resolve,
    command=_command,
    parse=_parser(in_pod=False),
    blocks=_blocks,
    order=100,
)
POD_PING = ActiveCheck(
    name="pod.ping",
    kinds=("reach",),
    targets=_pod_targets,
    resolve=_resolve,
    command=lambda plan, target: f"{IN_POD}{PING_CMD} {quoted(_destination(target))}",
    parse=_parser(in_pod=True),
    blocks=_blocks,
    order=600,
)
CHECKS = (PING, POD_PING)
