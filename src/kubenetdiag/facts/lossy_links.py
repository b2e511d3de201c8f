"""Links that lose packets at random, and the checks that failed only because they cross one.

The underlay ping sends a burst of echoes to each peer (`ping_loss`). On a healthy network
every one comes back; a failing cable, transceiver, NIC or switch port loses some in both
directions while the rest get through, and every other check across that link then fails now
and then: a ping, a DNS query or a connect that happened to lose its packets. Read one at a
time, those failures blame whatever they aimed at, a different component on every run.

Read together, the pairs localize the link as a cut-off node is localized (facts/vantage.py):
a pair is lossy when enough of its echoes (both directions added up) were lost while others
came back, with no sign of another cause: a rate limit on echo requests (the replies stop
after the first few, `ping_loss.limited`, or more than half are lost one way), a filter on one
side (several lost one way and none the other, where a round trip crosses the link both ways)
or a full queue (the pair's round trip many times the clean pairs', as a saturated link's or a
shaper's queue holds packets before it drops them: link_saturated and cross_zone_latency, not
a bad cable). The node in the most lossy pairs is blamed when it loses with at least MIN_PEERS
peers, with at least half the peers it was measured with, and a pair elsewhere shows the rest
of the network carries every echo; its pairs are then set aside and the next node considered.
Lossy pairs no node accounts for stay pairs (`loss_pair`): a two-node cluster, or a network
lossy everywhere.

A node whose firewall lets echo requests in only at a rate (iptables' `-m limit` or
`-m hashlimit`, nftables' `limit` or `meter`: the walk of its INPUT stops there undecided, as
hardening templates write it) answers a few pings and drops the rest, a different few every
time: pings towards it that failed prove nothing, so they are set aside the same way and
listed in its `icmp_rate_limited` fact, and its bursts count in no pair.

A blamed node whose own packet filter has a rule that drops a random share of its traffic
(iptables' `-m statistic --mode random`, nftables' `numgen random`: a chaos experiment's
leftover) says so in `link_loss.random_rule`: the loss is that rule's, not the cable's.

A check that failed without an answer (a timeout, not a refusal) across a blamed node's link
or a lossy pair proves nothing about the rest of its path, so it is taken out of what the rules
read and listed in the `link_loss` or `loss_pair` fact instead (its evidence names each one).
A check that got an answer (refused, rejected, NXDOMAIN) stays: loss does not forge answers.
Pure functions of facts (kinds/lossy_links.yaml).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from kubenetdiag.facts import vantage
from kubenetdiag.facts.model import Fact, Source, by_kind

PROBE = "lossy_links"  # the evidence's source: facts computed here, from other facts
COMMAND = "every node's underlay pings, read together"
INPUTS: tuple[str, ...] = ("ping_loss", "path")
CONTEXT: tuple[str, ...] = vantage.KINDS
PRODUCES: tuple[str, ...] = ("link_loss", "loss_pair", "icmp_rate_limited")
# A rate limit is read from the walk; a lossy link from the bursts (the walk only leaves out
# the bursts towards a rate-limited node)
KIND_INPUTS = {"link_loss": ("ping_loss",), "loss_pair": ("ping_loss",),
               "icmp_rate_limited": ("path",)}
MIN_LOST = 2  # echoes lost on one pair, both directions added up, before it is lossy
MIN_PCT = 5.0  # and at least this share of them
ONE_WAY_LOST = 8  # lost one way while none the other: a filter on one side, not the link
MIN_PEERS = vantage.MIN_PEERS
# A round trip this many times the clean pairs' median, and at least QUEUED_MS, is a queue
# that fills (congestion), not a link that loses frames; a bad cable adds no delay.
QUEUED_TIMES = 5.0
QUEUED_MS = 5.0
LISTED = 12  # set-aside checks listed in one fact's evidence; the rest are counted

# The checks whose failures a lossy link can explain, and how each names where it went: the
# node it aimed at (`dst`), or an address the address book places. own_pod_check never leaves
# its node, and the VXLAN capture and counters are no pass/fail results.
_BY_NODE = ("reach", "mtu_check", "nodeport_check")
_BY_ADDRESS = {"dns_check": "server", "pod_dns_check": "nameserver",
               "dns_outside_check": "server", "tcp_check": "address", "http_check": "url"}
CHECKS = _BY_NODE + tuple(_BY_ADDRESS)
_SILENT = ("timeout", "timed out", "no answer")
# The pings: what a rate limit on a node's echo requests drops
_PINGS = ("reach", "mtu_check", "own_pod_check")
# Where the walk of a node's INPUT stopped on a rate limit: "filter INPUT rule 1 (-m limit)",
# "inet filter input rule 3 (limit)"
_RATE_LIMIT = re.compile(r"\((?:-m )?(?:limit|hashlimit|meter)\)$")
_IN_FLOWS = ("node_in", "pod_node_in", "own_pod_in")
# A rule of the node's own that matches a random share of what the bursts cross (iptables'
# statistic match in random mode, nftables' numgen), as a chaos experiment leaves behind:
# "filter INPUT rule 1 (-m statistic)". kube-proxy's own random matches pick a Service's
# endpoint in nat, on Service flows only.
_RANDOM = re.compile(r"\((?:-m statistic|numgen)\)$")
_LINK_FLOWS = ("node_in", "node_out", "overlay_in", "overlay_out")


@dataclass
class PairLoss:
    """One pair's echoes, both directions added up."""

    sent: int = 0
    received: int = 0
    ways: list[str] = field(default_factory=list)
    rtts: list[float] = field(default_factory=list)
    limited: bool = False  # a direction's replies stopped after the first few
    lost_each: list[int] = field(default_factory=list)  # per direction measured
    queued: bool = False  # set by blame(): its round trip is a filling queue's

    @property
    def lost(self) -> int:
        return max(self.sent - self.received, 0)

    @property
    def pct(self) -> float:
        return round(100.0 * self.lost / self.sent, 1) if self.sent else 0.0

    @property
    def one_way(self) -> bool:
        """Measured both ways, and one way lost several while the other lost none: an echo's
        round trip crosses the link both ways, so a lossy link loses both ways alike; this is a
        filter or a rate limit on one side's echo requests."""
        return len(self.lost_each) >= 2 and min(self.lost_each) == 0 and \
            max(self.lost_each) >= ONE_WAY_LOST

    @property
    def lossy(self) -> bool:
        # all lost is a pair that does not reach, which the reach matrix judges
        return (self.received > 0 and self.lost >= MIN_LOST and self.pct >= MIN_PCT
                and not self.limited and not self.queued and not self.one_way)

    @property
    def clean(self) -> bool:
        return self.lost == 0 and not self.queued


def rate_limited(paths: Iterable[Fact]) -> dict[str, str]:
    """Node -> the rule that lets echo requests in only at a rate, from the walk of its INPUT."""
    out: dict[str, str] = {}
    for f in paths:
        a = f.attrs
        if a.get("proto") == "icmp" and a.get("flow") in _IN_FLOWS and \
                a.get("verdict") == "unknown" and _RATE_LIMIT.search(str(a.get("at") or "")):
            out.setdefault(f.node, str(a["at"]))
    return out


def random_drops(paths: Iterable[Fact]) -> dict[str, str]:
    """Node -> a rule of its packet filter that drops a random share of its own traffic, where
    the walk of the node's traffic stops undecided on it."""
    out: dict[str, str] = {}
    for f in paths:
        a = f.attrs
        at = str(a.get("at") or "")
        if a.get("flow") in _LINK_FLOWS and a.get("verdict") == "unknown" and \
                _RANDOM.search(at) and not at.startswith("nat "):
            out.setdefault(f.node, at)
    return out


def pair_losses(facts: Iterable[Fact], limited: Iterable[str] = ()
                ) -> dict[frozenset[str], PairLoss]:
    """Each pair's bursts; those towards a node that rate-limits echo requests count nowhere."""
    skip = set(limited)
    pairs: dict[frozenset[str], PairLoss] = defaultdict(PairLoss)
    for f in facts:
        a = f.attrs
        dst, sent, received = a.get("dst"), a.get("sent"), a.get("received")
        if not isinstance(dst, str) or dst == f.node or dst in skip:
            continue
        if type(sent) is not int or type(received) is not int or sent <= 0:
            continue
        pair = pairs[frozenset((f.node, dst))]
        pair.sent += sent
        pair.received += min(received, sent)
        # a rate limit drained by other probers shows no leading run, only a few replies: more
        # than half lost one way is a limit, not a cable
        pair.limited = pair.limited or a.get("limited") is True or 2 * received < sent
        pair.lost_each.append(max(sent - received, 0))
        rtt = a.get("rtt_ms")
        if isinstance(rtt, (int, float)) and not isinstance(rtt, bool):
            pair.rtts.append(float(rtt))
        shown = f", {rtt:g} ms" if isinstance(rtt, (int, float)) else ""
        limited = ", rate-limited" if a.get("limited") is True else ""
        pair.ways.append(f"{f.node} -> {dst}: {received} of {sent} echoes came back"
                         f"{shown}{limited}")
    return dict(pairs)


def _mark_queued(pairs: dict[frozenset[str], PairLoss]) -> None:
    clean = sorted(max(p.rtts) for p in pairs.values() if p.lost == 0 and p.rtts)
    # the usual round trip is the quick pairs': a queue may slow pairs that lose nothing (the
    # slow zone's other pairs); with no clean pair to compare (two nodes), QUEUED_MS alone
    usual = clean[len(clean) // 4] if clean else 0.0
    for loss in pairs.values():
        if loss.lost and loss.rtts and max(loss.rtts) >= max(QUEUED_MS, QUEUED_TIMES * usual):
            loss.queued = True


def blame(pairs: dict[frozenset[str], PairLoss]
          ) -> tuple[dict[str, list[frozenset[str]]], list[frozenset[str]]]:
    """({blamed node: its lossy pairs}, lossy pairs no blamed node accounts for).

    A pair that lost an echo or two, too few to be lossy on its own, still counts towards a
    node that has a lossy pair too: at a few percent a burst of 40 echoes can come back whole
    or nearly, and the node is the one whose every pair loses some.
    """
    _mark_queued(pairs)
    left = {p for p, loss in pairs.items() if loss.lossy}
    some = {p for p, loss in pairs.items() if loss.lost and not loss.lossy and not loss.queued
            and not loss.limited and not loss.one_way and loss.received}
    clean = [p for p, loss in pairs.items() if loss.clean]
    blamed: dict[str, list[frozenset[str]]] = {}
    while left:
        count = Counter(n for p in left for n in p)
        losing = Counter(n for p in left | some for n in p)
        node = min(count, key=lambda x: (-losing[x], -count[x], x))
        n = losing[node]
        measured = sum(1 for p in pairs if node in p)
        if n < MIN_PEERS or 2 * n < measured or not any(node not in p for p in clean):
            break
        mine = sorted((p for p in left | some if node in p), key=sorted)
        blamed[node] = mine
        left -= set(mine)
        some -= set(mine)
    return blamed, sorted(left, key=sorted)


def _silent(detail: object) -> bool:
    text = str(detail or "timeout").lower()
    return any(word in text for word in _SILENT)


class _Crossing:
    """Whether a failed check crossed a lossy link: sent from a blamed node, aimed at one, or
    between the two nodes of a lossy pair."""

    def __init__(self, facts: Sequence[Fact], blamed: Iterable[str],
                 pairs: Iterable[frozenset[str]]) -> None:
        self.blamed = set(blamed)
        self.pairs = set(pairs)
        picked = by_kind(facts, vantage.KINDS)
        self.book = vantage.AddressBook(picked)
        # the DNS Service's VIP reaches whichever CoreDNS pod kube-proxy picks
        self.dns_nodes = {f.node for f in picked.get("dns_pod", ())}
        self.dns_vips = {str(f.attrs.get("cluster_ip")) for f in picked.get("dns_service", ())}

    def link(self, f: Fact) -> str | None:
        """The blamed node, or the lossy pair as 'a-b', the check crossed; None for none."""
        src = f.node
        if f.kind in _BY_NODE:
            ends = {str(f.attrs.get("dst") or "")}
        else:
            address = f.attrs.get(_BY_ADDRESS[f.kind])
            if f.kind == "http_check" and isinstance(address, str):
                try:
                    address = urlsplit(address).hostname
                except ValueError:
                    address = None
            _, host = self.book.place(address if isinstance(address, str) else None)
            ends = {host} if host else set()
            if address in self.dns_vips:
                ends |= self.dns_nodes
        if src in self.blamed:
            return src
        for end in sorted(e for e in ends if e):
            if end in self.blamed:
                return end
            if frozenset((src, end)) in self.pairs:
                return "-".join(sorted((src, end)))
        return None


def _source(lines: list[str], aside: list[str],
            heading: str = "failed checks across it, set aside:") -> Source:
    shown = aside[:LISTED]
    more = [f"... and {len(aside) - LISTED} more"] if len(aside) > LISTED else []
    tail = [heading, *shown, *more] if aside else []
    return Source(PROBE, COMMAND, None, "\n".join(lines + tail))


def _describe(f: Fact) -> str:
    a = f.attrs
    what = a.get("dst") or a.get("server") or a.get("nameserver") or a.get("address") \
        or a.get("url") or a.get("target")
    layer = f" ({a['layer']})" if a.get("layer") else ""
    return f"{f.kind}{layer} {f.node} -> {what}: {a.get('detail') or 'failed'}"


def _limited_ping(f: Fact, limited: dict[str, str]) -> str | None:
    """The rate-limited node a failed ping was sent to, if it was."""
    if f.kind == "own_pod_check":
        return f.node if f.attrs.get("direction") == "pod_to_node" and f.node in limited \
            else None
    dst = f.attrs.get("dst")
    return dst if f.kind in _PINGS and isinstance(dst, str) and dst in limited else None


def lossy_link_facts(facts: Sequence[Fact]) -> tuple[list[Fact], set[int]]:
    """(link_loss, loss_pair and icmp_rate_limited facts, the ids of the check facts they set
    aside)."""
    picked = by_kind(facts, INPUTS)
    limited = rate_limited(picked["path"])
    pairs = pair_losses(picked["ping_loss"], limited)
    blamed, left = blame(pairs)
    if not blamed and not left and not limited:
        return [], set()
    crossing = _Crossing(facts, blamed, left) if blamed or left else None
    aside: dict[str, list[Fact]] = defaultdict(list)
    pings: dict[str, list[Fact]] = defaultdict(list)
    for f in facts:
        if (f.kind in CHECKS or f.kind in _PINGS) and f.attrs.get("ok") is False \
                and _silent(f.attrs.get("detail")):
            node = _limited_ping(f, limited)
            link = crossing.link(f) if crossing is not None and f.kind in CHECKS else None
            if node is not None:
                pings[node].append(f)
            elif link is not None:
                aside[link].append(f)
    out: list[Fact] = []
    randomly = random_drops(picked["path"]) if blamed else {}
    for node, at in sorted(limited.items()):
        listed = [_describe(f) for f in pings[node]]
        out.append(Fact("icmp_rate_limited", node, {"at": at, "set_aside": len(listed)},
                        _source([f"{node}'s INPUT lets echo requests in only at a rate: {at}"],
                                listed, "failed pings towards it, set aside:")))
    for node, mine in sorted(blamed.items()):
        losses = [pairs[p] for p in mine]
        sent, lost = sum(x.sent for x in losses), sum(x.lost for x in losses)
        peers = sorted(next(iter(p - {node})) for p in mine)
        each = ", ".join(f"{peer} {pairs[frozenset((node, peer))].pct:g}%" for peer in peers)
        witnesses = sorted({n for p, loss in pairs.items() if loss.clean and node not in p
                            for n in p})
        measured = sum(1 for p in pairs if node in p)
        lines = [f"{node} loses echoes with {len(peers)} of {measured} peers measured: {each}",
                 *(w for p in mine for w in pairs[p].ways),
                 f"no echo lost between {vantage.listed(witnesses)}"]
        mine_aside = [_describe(f) for f in aside[node]]
        out.append(Fact("link_loss", node, {
            "peers": len(peers), "measured": measured,
            "lossy_peers": vantage.listed(peers), "loss_pct": round(100.0 * lost / sent, 1),
            "sent": sent, "lost": lost, "per_peer": each,
            "witnesses": vantage.listed(witnesses), "set_aside": len(mine_aside),
            "random_rule": randomly.get(node)},
            _source(lines + ([f"its packet filter drops at random: {randomly[node]}"]
                             if node in randomly else []), mine_aside)))
    for p in left:
        a, b = sorted(p)
        loss = pairs[p]
        mine_aside = [_describe(f) for f in aside[f"{a}-{b}"]]
        out.append(Fact("loss_pair", a, {
            "dst": b, "loss_pct": loss.pct, "sent": loss.sent, "lost": loss.lost,
            "set_aside": len(mine_aside)},
            _source([f"{a} and {b} lose {loss.pct:g}% of the echoes between them", *loss.ways],
                    mine_aside)))
    return out, {id(f) for fs in (*aside.values(), *pings.values()) for f in fs}
