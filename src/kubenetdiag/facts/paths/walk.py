"""One flow through one node, in the order the kernel handles it.

Arriving for the node: prerouting hooks, the routing decision (local), reverse-path filter,
input hooks, the IPsec policies of direction in. Forwarded: prerouting, the routing decision
(with the interface's forwarding switch and the reverse-path filter), the route against what
the CNI needs, the IPsec policies (fwd, then out), the MTU the packet meets, forward and
postrouting hooks. Sent by the node: the routing decision, the IPsec policies of direction
out, output and postrouting hooks. What leaves by a device then meets that device's netdev
egress chains.

A packet that comes in through a bridge (a pod's frame on cni0, addressed to its gateway) meets
the bridge family's prerouting and input hooks first; one routed out through a bridge (to a pod
behind cni0) meets its output and postrouting hooks last. Which port of the bridge carries the
frame is not known, so a bridge rule that matches on it is undecidable.

Where the node has chains of the arp family (arptables), a packet from or to a neighbour on an
Ethernet link also needs the ARP exchange with it to pass them: the sender's request and the
node's reply before it arrives, the node's request and the reply after it passed the hooks on
its way out. Which MAC a neighbour sends with is not known, so a match on it is undecidable.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace

from kubenetdiag.facts.paths.netfilter import Stop, World, walk_hook
from kubenetdiag.facts.paths.node import NodeView
from kubenetdiag.facts.paths.packet import BRIDGE_PORT, Packet, addr, in_net, show
from kubenetdiag.facts.paths.routing import Decision, Route
from kubenetdiag.facts.paths.ruleset import BRIDGE_HOOK
from kubenetdiag.facts.paths.xfrm import Policy as XfrmPolicy
from kubenetdiag.facts.paths.xfrm import lookup as xfrm_lookup


@dataclass(frozen=True)
class Expect:
    """Where the CNI needs the routing decision to send the packet: out of `dev`, or via
    `gateway`; `what` says it in words for the report. With `only_addresses`, only a
    connected route made from an address on another device contradicts it: how a node
    reaches its peers' node addresses is the network's business (a router, a second NIC),
    but never through docker's bridge."""

    dev: str | None = None
    gateway: str | None = None
    what: str = ""
    only_addresses: bool = False


@dataclass
class Flow:
    name: str
    kind: str  # in, forward, out
    pkt: Packet
    peer: str | None = None
    target: str | None = None
    expect: Expect | None = None
    # (inner MTU of the sender, encapsulation overhead, sender's device, its node): checked
    # against this node's underlay MTU where the packet arrives
    mtu_in: tuple[int, int, str, str] | None = None
    underlay: str | None = None


@dataclass
class Ending:
    verdict: str  # pass, drop, reject, unknown
    stage: str = "none"
    at: str = ""
    hook: str | None = None
    table: str | None = None
    chain: str | None = None
    position: int | None = None
    rule: str | None = None
    owner: str | None = None
    backend: str | None = None
    why: str = ""
    undecided: str = ""
    steps: list[str] = field(default_factory=list)
    handle: int | None = None  # the deciding native nftables rule's handle, when collected
    pkts: int | None = None  # the deciding rule's packet counter, when collected
    # a passing packet that leaves through postrouting with no masquerade or SNAT: (where the
    # nat table let it go, that rule's text or None, its owner); None when translated
    untranslated: tuple[str, str | None, str] | None = None
    # a passing packet handed to a neighbour on an Ethernet link: (its address, the device)
    next_hop: tuple[str, str] | None = None


def _from_stop(s: Stop, undecided: str, steps: list[str]) -> Ending:
    rule = s.rule
    return Ending(
        s.verdict, "netfilter", s.at() if not s.why else f"{s.at()}: {s.why}", s.hook,
        s.table.name, s.chain, rule.position if rule else None,
        rule.text if rule else f"policy {s.verdict.upper()}",
        s.table.owner_of(s.chain, rule), s.table.backend, s.why, undecided, steps,
        rule.handle if rule else None, rule.pkts if rule else None)


def _route_owner(d: Decision) -> str:
    if d.rule is not None and d.rule.action != "lookup":
        return "unknown"
    if d.route is None:
        return "cni"
    return {"bird": "calico", "kernel": "kernel", "dhcp": "dhcp"}.get(d.route.protocol, "unknown")


def _route_ending(d: Decision, pkt: Packet, steps: list[str], verdict: str, why: str = ""
                  ) -> Ending:
    rule_text = d.rule.text if d.rule is not None and d.rule.action != "lookup" else (
        d.route.text() if d.route else None)
    # A decision an `ip rule` made (its own action, or a table only it selects) is policy
    # routing: a different fault, fixed in a different place, from the main table's routes.
    stage = "policy" if d.rule is not None else "route"
    return Ending(verdict, stage, d.at(pkt.dst) + (f" ({why})" if why else ""), rule=rule_text,
                  owner=_route_owner(d), why=why, steps=steps)


def _hooks(v: NodeView, hooks: list[str], worlds: list[World]) -> list[World]:
    for h in hooks:
        worlds = walk_hook(v.chains, h, worlds, v.ctx)
    return worlds


def _is_bridge(v: NodeView, dev: str | None) -> bool:
    return dev is not None and v.ifaces.get(dev, {}).get("kind") == "bridge"


def _bridged(v: NodeView, hooks: tuple[str, str], worlds: list[World], *, into: bool
             ) -> list[World]:
    """Worlds through the bridge family's hooks: `into` the bridge from a port (prerouting,
    input), else out of the bridge to a port (output, postrouting). Inside them the packet's
    device on the port side is some port; outside them it is the bridge again."""
    out = []
    for w in worlds:
        if w.stop is not None:
            out.append(w)
            continue
        inside = w.pkt.but(iif=BRIDGE_PORT, oif=None) if into else \
            w.pkt.but(iif=None, oif=BRIDGE_PORT)
        for w2 in _hooks(v, [BRIDGE_HOOK + h for h in hooks], [World(inside, w.undecided)]):
            out.append(World(w2.pkt.but(iif=w.pkt.iif, oif=w.pkt.oif), w2.undecided, w2.stop))
    return out


def _rp_filter(v: NodeView, pkt: Packet, steps: list[str]) -> Ending | None:
    """Reverse-path filter on the interface the packet came in on: the route back to its
    source must leave by that interface (strict), or exist at all (loose)."""
    if pkt.iif is None:
        return None
    mode_all = v.setting("net.ipv4.conf.all.rp_filter") or 0
    mode_if = v.setting(f"net.ipv4.conf.{pkt.iif}.rp_filter") or 0
    mode = max(mode_all, mode_if)
    if mode == 0:
        return None
    back = v.routing.lookup(Packet(pkt.dst, pkt.src, pkt.proto, None, None, None,
                                   mark=pkt.mark))
    key = (f"net.ipv4.conf.{pkt.iif}.rp_filter={mode_if}" if mode_if >= mode_all
           else f"net.ipv4.conf.all.rp_filter={mode_all}")
    if back.kind == "unknown" or (back.kind == "unicast" and back.route and not back.route.dev):
        return Ending("unknown", "rp_filter", key, rule=key, owner="kernel",
                      why="the route back cannot be decided", steps=steps)
    if back.kind not in ("unicast", "local"):
        return Ending("drop", "rp_filter", key, rule=key, owner="kernel",
                      why=f"no usable route back to {show(pkt.src)}", steps=steps)
    if mode == 1 and back.kind == "unicast" and back.route and back.route.dev != pkt.iif:
        return Ending("drop", "rp_filter", key, rule=key, owner="kernel",
                      why=f"strict: the route back to {show(pkt.src)} leaves by "
                          f"{back.route.dev}, not {pkt.iif}", steps=steps)
    steps.append(f"rp_filter {mode} ok")
    return None


ECHO_IGNORE = "net.ipv4.icmp_echo_ignore_all"


def _echo_answered(v: NodeView, pkt: Packet, end: Ending) -> Ending:
    """A ping delivered to the node (its input hooks passed) that the kernel's ICMP handler
    then ignores: net.ipv4.icmp_echo_ignore_all, which no packet filter listing shows."""
    if end.verdict != "pass" or pkt.proto != "icmp" or pkt.state != "new" \
            or v.setting(ECHO_IGNORE) != 1:
        return end
    key = f"{ECHO_IGNORE}=1"
    return Ending("drop", "icmp_echo", key, rule=key, owner="kernel",
                  why="the node answers no echo request", undecided=end.undecided,
                  steps=[*end.steps, "icmp"])


def _forwarding(v: NodeView, pkt: Packet, steps: list[str]) -> Ending | None:
    glob = v.setting("net.ipv4.ip_forward")
    per = v.setting(f"net.ipv4.conf.{pkt.iif}.forwarding") if pkt.iif else None
    if glob == 0:
        key = "net.ipv4.ip_forward=0"
    elif per == 0:
        key = f"net.ipv4.conf.{pkt.iif}.forwarding=0"
    else:
        if glob is None and per is None:
            steps.append("forwarding not read")
        return None
    # A drop, not a refusal: with forwarding off on the incoming interface the route lookup
    # ends in an error route whose handler (ip_error) only counts the packet (IpInAddrErrors)
    # and sends no ICMP back.
    return Ending("drop", "forwarding", key, rule=key, owner="kernel",
                  why=f"forwarding is off for packets arriving on {pkt.iif}", steps=steps)


def _xfrm(v: NodeView, directions: tuple[str, ...], pkt: Packet, devs: tuple[str | None, ...],
          steps: list[str]) -> Ending | None:
    """The IPsec policy lookups a packet meets, in order (a forwarded packet: fwd, then out);
    a block policy ends it there. A selector's device is compared with the device of the
    packet's route, as the kernel does in every direction: the output device when sent or
    forwarded, the loopback device of a local route when delivered."""
    for direction, dev in zip(directions, devs, strict=True):
        deciding = xfrm_lookup(v.xfrm, direction, pkt, dev)
        actions = {p.action for p in deciding}
        if "block" not in actions:
            end = _xfrm_sa(direction, deciding, steps)
            if end:
                return end
            continue
        p = next(p for p in deciding if p.action == "block")
        at = f"xfrm policy {p.selector()} action block priority {p.priority}"
        if len(actions) > 1:
            return Ending("unknown", "xfrm", at, rule=p.selector(), owner="unknown",
                          why="an allow and a block IPsec policy of equal priority cover it",
                          undecided=at, steps=steps)
        return Ending("drop", "xfrm", at, rule=p.selector(), owner="unknown",
                      why="an IPsec policy blocks it", steps=steps)
    if v.xfrm:
        steps.append("xfrm " + "/".join(directions))
    return None


def _xfrm_sa(direction: str, deciding: list[XfrmPolicy], steps: list[str]) -> Ending | None:
    """Allowed through IPsec, and the SA a template the deciding policy requires is missing:
    going out the kernel drops the packet (XfrmOutNoStates); coming in or forwarded it takes
    only what was decrypted through such an SA, and the node has none to decrypt with, so a
    plain packet (XfrmInTmplMismatch) and an encrypted one (XfrmInNoStates) are both dropped.
    Where a key manager listens and has not been asked yet (`on_demand`), the packet is what
    makes the kernel ask: the tunnel comes up, the walk lets it pass. Undecided where policies
    of equal priority disagree on it."""
    missing = [p for p in deciding if p.sa in ("missing", "acquire")]
    if not missing:
        if any(p.sa == "on_demand" for p in deciding):
            steps.append(f"xfrm {direction}: SA negotiated on demand")
        return None
    p = missing[0]
    needs = "requires" if direction == "out" else "accepts only what arrives through"
    none = ("none, asked of the key manager and not installed" if p.sa == "acquire"
            else "none")
    at = f"xfrm policy {p.selector()} {needs} an IPsec SA {p.missing}: {none}"
    if len(missing) < len(deciding):
        return Ending("unknown", "ipsec", at, rule=p.selector(), owner="unknown",
                      why="IPsec policies of equal priority cover it, not all of whose "
                          "templates lack an SA", undecided=at, steps=steps)
    return Ending("drop", "ipsec", at, rule=p.selector(), owner="unknown",
                  why="an IPsec policy requires a security association the node does not have",
                  steps=steps)


def _delivered(v: NodeView, pkt: Packet, end: Ending) -> Ending:
    """After the input hooks, the policy check of direction in (the transport's own, before
    the socket or ICMP sees the packet)."""
    if end.verdict != "pass":
        return end
    return _xfrm(v, ("in",), pkt, ("lo",), end.steps) or end


def _expectation(v: NodeView, d: Decision, e: Expect | None, pkt: Packet, steps: list[str]
                 ) -> Ending | None:
    if e is None or d.route is None:
        return None
    r = d.route
    if r.dev is None and r.gateway is None:
        steps.append(f"route {r.text()} (multipath, not checked)")
        return None
    # Either way reaches the peer: through the overlay device, or straight to the peer's node
    # address (host-gw, BGP, or a direct route on a shared segment next to an overlay).
    if (e.dev and r.dev == e.dev) or (e.gateway and r.gateway == e.gateway):
        return None
    owned = _address_behind(v, r)
    if e.only_addresses and not owned:
        return None
    ways = " or ".join(w for w in (f"out of {e.dev}" if e.dev else "",
                                   f"via {e.gateway}" if e.gateway else "") if w)
    why = f"{e.what} needs it {ways}"
    if owned:
        # The route is the kernel's own, made from an address someone put on another device
        # (docker's bridge, a VPN): deleting the route helps until the address is set again.
        return Ending("drop", "address", f"address {owned} on {r.dev} (its route {r.text()}: "
                      f"{why})", rule=f"{owned} dev {r.dev}", owner="unknown", why=why,
                      steps=steps)
    return _route_ending(d, pkt, steps, "drop", why)


def _held(v: NodeView, d: Decision, flow: Flow, pkt: Packet, steps: list[str]
          ) -> Ending | None:
    """A packet for a peer node's own address that the routing decision keeps here: this node
    holds the address too (typed in, a cloned network configuration, a VIP set to a node's
    address, a Service externalIP that kube-proxy's IPVS mode binds on kube-ipvs0), and the
    local table is looked up before any other, so nothing sent to the peer there leaves."""
    if d.kind != "local" or flow.peer is None or flow.expect is None:
        return None
    found = v.held_as(pkt.dst)
    # nodes the inventory reaches through one address (port forwards on 127.0.0.1, one NAT
    # address) share it: that says nothing of what the nodes hold
    if found is None or (pkt.dst >> 24) == 127 or pkt.dst == v.address:
        return None
    dev, held = found
    return Ending("drop", "peer_address",
                  f"{show(pkt.dst)} is {flow.peer}'s address and also this node's ({held} on "
                  f"{dev})", rule=f"{held} dev {dev}",
                  owner="kube-proxy" if dev == "kube-ipvs0" else "unknown",
                  why=f"the node holds {flow.peer}'s address, so it delivers what it sends "
                      "there to itself", steps=steps + ["local"])


def _address_behind(v: NodeView, r: Route) -> str | None:
    """The address on the route's device that the kernel made this connected route from (same
    network, same length), or None when the route is not one: a connected route has no
    gateway and the protocol `kernel`."""
    if r.protocol != "kernel" or r.gateway or not r.dev or r.table not in ("main", "254"):
        return None
    try:
        net = ipaddress.ip_network(r.dst, strict=False)
    except ValueError:
        return None
    for a in str(v.ifaces.get(r.dev, {}).get("addresses") or "").split(","):
        try:
            iface = ipaddress.ip_interface(a.strip())
        except ValueError:
            continue
        if iface.network == net:
            return str(iface)
    return None


# Devices the kernel resolves neighbours on by ARP: not tunnels, not loopback
_ARP_KINDS = frozenset({"device", "veth", "bridge", "bond", "vlan", "macvlan", "team"})


def _link_address(v: NodeView, dev: str | None, a: int) -> int | None:
    """The node's own address on `dev` whose network holds `a`: the address it resolves `a`
    from by ARP there; None when `a` is not on that link or the device does no ARP."""
    if dev is None or v.ifaces.get(dev, {}).get("kind") not in _ARP_KINDS \
            or v.ifaces[dev].get("noarp"):
        return None
    for text in str(v.ifaces[dev].get("addresses") or "").split(","):
        if in_net(a, text):  # (cached)
            return addr(text.split("/")[0])
    return None


def _arp_in(v: NodeView, pkt: Packet, steps: list[str]) -> Ending | None:
    """The ARP the packet's sender, on the link it arrives by, needed first."""
    me = _link_address(v, pkt.iif, pkt.src) if v.arp_filtered else None
    return None if me is None else _arp(v, me, pkt.src, str(pkt.iif), True, steps)


def _resolved(v: NodeView, flow: Flow, d: Decision, pkt: Packet, steps: list[str],
              end: Ending) -> Ending:
    """A packet that passed the hooks on its way out still needs its next hop's MAC; the
    node's own connection to a declared endpoint says which neighbour that is."""
    if end.verdict != "pass" or d.route is None or d.route.dev is None \
            or not (v.arp_filtered or flow.name == "endpoint"):
        return end
    gateway = d.route.gateway
    hop = addr(gateway) if gateway and ":" not in gateway else pkt.dst
    me = _link_address(v, d.route.dev, hop)
    if me is None:
        return end
    stopped = _arp(v, me, hop, d.route.dev, False, steps) if v.arp_filtered else None
    return stopped or replace(end, next_hop=(show(hop), d.route.dev))


def _arp(v: NodeView, me: int, neighbour: int, dev: str, asked: bool, steps: list[str]
         ) -> Ending | None:
    """The ARP exchange that must succeed before a packet goes between the node (`me`) and an
    on-link `neighbour` on `dev`, through the arp family's chains: the node's request out and
    the reply in, or, when the neighbour `asked` (its packet arrives), its request in and
    the node's reply out. A drop there ends the flow, and one that depends on a match the
    walk cannot decide (a MAC) makes its verdict unknown."""
    out = Packet(me, neighbour, "arp", None, None, None, dev, arp="reply" if asked else "request")
    into = Packet(neighbour, me, "arp", None, None, dev, arp="request" if asked else "reply")
    for hook, pkt in ((("arp input", into), ("arp output", out)) if asked else
                      (("arp output", out), ("arp input", into))):
        stopped = [w for w in walk_hook(v.chains, hook, [World(pkt, "")], v.ctx, dev)
                   if w.stop is not None and w.stop.verdict in ("drop", "reject")]
        if stopped:
            # stopped only where a match could not be decided (a MAC): unknown, not a drop
            w = next((w for w in stopped if not w.undecided), stopped[0])
            end = _from_stop(w.stop, w.undecided, [*steps, f"{hook} ({pkt.arp})"])
            way = "from" if hook == "arp input" else "to"
            return replace(end, stage="arp", verdict="unknown" if w.undecided else end.verdict,
                           why=f"the ARP {pkt.arp} {way} {show(neighbour)} is dropped, so the "
                               "node and it never learn each other's MAC")
    return None


def _dead_end(d: Decision, pkt: Packet, steps: list[str]) -> Ending | None:
    """The routing decision itself ends the packet, or cannot be made."""
    if d.kind == "unknown":
        return Ending("unknown", "route", d.at(pkt.dst), steps=steps,
                      why=d.why or "a policy rule cannot be decided")
    if d.kind in ("none", "blackhole", "unreachable", "prohibit"):
        return _route_ending(d, pkt, steps, "drop" if d.kind == "blackhole" else "reject")
    return None


def _decide(v: NodeView, flow: Flow, w: World, steps: list[str]) -> Ending:
    pkt = w.pkt
    if flow.kind == "in":
        d = v.routing.lookup(pkt)
        if d.kind != "local":
            undecided = _dead_end(d, pkt, steps) if d.kind == "unknown" else None
            return undecided or _route_ending(d, pkt, steps, "drop",
                                              f"{show(pkt.dst)} is not local")
        steps.append("local")
        end = _rp_filter(v, pkt, steps) or _arp_in(v, pkt, steps)
        if end:
            return end
        return _echo_answered(v, pkt, _delivered(v, pkt, _after(v, ["input"], flow, pkt, w,
                                                                steps)))
    if flow.kind == "forward":
        d = v.routing.lookup(pkt)
        if d.kind == "local":
            steps.append("local")
            end = _rp_filter(v, pkt, steps)
            return end or _echo_answered(v, pkt, _delivered(v, pkt, _after(v, ["input"], flow,
                                                                            pkt, w, steps)))
        end = _forwarding(v, pkt, steps)
        if end:
            return end
        end = _dead_end(d, pkt, steps)
        if end:
            return end
        end = _rp_filter(v, pkt, steps) or _expectation(v, d, flow.expect if not pkt.dnat else None,
                                                         pkt, steps)
        if end:
            return end
        steps.append(d.at(pkt.dst))
        oif = d.route.dev if d.route else None
        end = _xfrm(v, ("fwd", "out"), pkt, (oif, oif), steps) or _arp_in(v, pkt, steps)
        if end:
            return end
        if flow.mtu_in and flow.underlay:
            inner, overhead, dev, sender = flow.mtu_in
            mine = v.ifaces.get(flow.underlay, {}).get("mtu")
            if isinstance(mine, int) and inner + overhead > mine:
                at = (f"mtu {sender} {dev} {inner}" + (f" + {overhead}" if overhead else "")
                      + f" > {v.name} {flow.underlay} {mine}")
                return Ending("drop", "mtu", at, rule=at, owner="kernel",
                              why="full-size packets from the peer are larger than this node's "
                                  "underlay carries", steps=steps)
        return _resolved(v, flow, d, pkt, steps,
                         _after(v, ["forward", "postrouting"], flow, pkt.but(oif=oif), w, steps))
    # sent by the node itself
    d = v.routing.lookup(pkt)
    end = _dead_end(d, pkt, steps) or _held(v, d, flow, pkt, steps) \
        or _expectation(v, d, flow.expect, pkt, steps)
    if end:
        return end
    steps.append(d.at(pkt.dst))
    oif = d.route.dev if d.route else "lo"
    end = _xfrm(v, ("out",), pkt, (oif,), steps)
    if end:
        return end
    return _resolved(v, flow, d, pkt, steps,
                     _after(v, ["output", "postrouting"], flow, pkt.but(oif=oif), w, steps))


def _after(v: NodeView, hooks: list[str], flow: Flow, pkt: Packet, w: World, steps: list[str]
           ) -> Ending:
    endings = []
    worlds = _hooks(v, hooks, [World(pkt, w.undecided)])
    if "postrouting" in hooks and any(b.hook == "egress" for b in v.chains):
        # netdev egress: the chains of the device the packet is queued to, after postrouting
        # (and below tcpdump, which taps what leaves only after them)
        worlds = walk_hook(v.chains, "egress", worlds, v.ctx, pkt.oif)
        hooks = [*hooks, "egress"]
    if _is_bridge(v, pkt.oif):
        worlds = _bridged(v, ("output", "postrouting"), worlds, into=False)
        hooks = [*hooks, "bridge output", "bridge postrouting"]
    for w2 in worlds:
        s = list(steps) + [", ".join(hooks)]
        if w2.stop is not None:
            endings.append(_from_stop(w2.stop, w2.undecided, s))
        elif _snat_away(v, w2.pkt):
            endings.append(_snatted(pkt, w2, s))
        else:
            # only the pods' way out to a declared endpoint is asked what source it leaves
            # with (egress_untranslated): no other flow pays for it
            endings.append(Ending("pass", undecided=w2.undecided, steps=s,
                                  untranslated=_untranslated(w2.pkt)
                                  if flow.name == "endpoint_pod" else None))
    return _combine(endings)


def _untranslated(pkt: Packet) -> tuple[str, str | None, str] | None:
    """Where a packet that leaves with its own source address was let go by the nat table's
    postrouting chains, or None when one masqueraded or SNATed it."""
    if pkt.masq_by is not None or pkt.snat_by is not None:
        return None
    if pkt.untracked_by is not None:
        table, chain, rule = pkt.untracked_by
        return (f"{table.name} {chain} rule {rule.position} exempts it from connection "
                "tracking, so no nat chain sees it", rule.text, table.owner_of(chain, rule))
    if pkt.nat_kept_by is None:
        return "no nat postrouting chain", None, "kernel"
    table, chain, rule = pkt.nat_kept_by
    if rule is None:
        return f"{table.name} {chain}: no rule masquerades it", None, table.owner_of(chain, None)
    verb = "returns" if rule.action.kind == "return" else "accepts"
    return (f"{table.name} {chain} rule {rule.position} {verb} it before any masquerade",
            rule.text, table.owner_of(chain, rule))


def _combine(endings: list[Ending]) -> Ending:
    """One verdict over the worlds: theirs when they all agree, else unknown at the first
    match that could not be decided."""
    if not endings:
        return Ending("unknown", "netfilter", "no world left", why="internal: nothing walked")
    verdicts = {e.verdict for e in endings}
    if len(verdicts) == 1:
        sure = [e for e in endings if not e.undecided]
        one = (sure or endings)[0]
        if one.verdict == "pass" and one.untranslated is not None and (
                len(sure) < len(endings) or any(e.untranslated is None for e in endings)):
            # untranslated in one world only, or hanging on a match the walk cannot decide
            # (an ipset it could not read): nothing is said of the source it leaves with
            one = replace(one, untranslated=None)
        return one
    undecided = next((e.undecided for e in endings if e.undecided), "")
    first = next(e for e in endings if e.verdict != "pass")
    ways = sorted({f"{e.verdict} ({e.at})" if e.at else e.verdict for e in endings})
    return Ending("unknown", first.stage, undecided or first.at, first.hook, first.table,
                  first.chain, first.position, first.rule, first.owner, first.backend,
                  "depends on " + (undecided or "a match the walk cannot decide") + ": "
                  + " or ".join(ways), undecided, first.steps)


def _not_programmed(flow: Flow, pkt: Packet, w: World, steps: list[str]) -> Ending:
    """A Service or NodePort packet that nothing on this node translates."""
    vip = f"{show(pkt.dst)}:{pkt.dport}"
    what = ("the Service VIP is not programmed on this node: the packet keeps an "
            "address nothing answers" if flow.name == "service" else
            "the NodePort is not programmed on this node: the packet is delivered "
            "to the node itself, where nothing listens on that port")
    return Ending("drop", "netfilter", f"nat PREROUTING: nothing translates {vip}", "prerouting",
                  "nat", "KUBE-SERVICES", None, f"no DNAT for {vip} {pkt.proto}", "kube-proxy",
                  None, what, w.undecided, steps)


def _lost_at(by: tuple, stage: str, hook: str, what: str, why: str, w: World,
             steps: list[str]) -> Ending:
    """A flow lost at one rule that drops nothing itself (a NOTRACK, a NAT): `by` is the
    (table, chain, rule) the packet carries for it."""
    table, chain, rule = by
    return Ending("drop", stage, f"{table.name} {chain} rule {rule.position}: {what}", hook,
                  table.name, chain, rule.position, rule.text, table.owner_of(chain, rule),
                  table.backend, why, w.undecided, steps, rule.handle, rule.pkts)


def _untracked(flow: Flow, pkt: Packet, w: World, steps: list[str]) -> Ending:
    """A Service or NodePort packet that a NOTRACK exempted from connection tracking: the nat
    table never sees it, so kube-proxy's DNAT, programmed or not, does not happen."""
    vip = f"{show(pkt.dst)}:{pkt.dport}"
    return _lost_at(w.pkt.untracked_by, "notrack", "prerouting",
                    f"untracked, so nothing translates {vip}",
                    "the packet is exempt from connection tracking, and only tracked "
                    "connections go through the nat table: kube-proxy's DNAT to an endpoint "
                    "never happens, and the packet keeps an address nothing answers", w, steps)


# Whose DNAT is the cluster's own Service translation; flows that must reach one known
# destination (a Service's endpoints, a CoreDNS pod, a pod) and any other DNAT
SERVICE_PROXIES = frozenset({"kube-proxy", "kube-router", "calico", "cilium"})
_AIMED = frozenset({"service", "nodeport_in", "dns_pod", "dns_pod_in", "endpoint_pod",
                    "endpoint_in", "pod_out", "pod_in"})


def _by_proxy(by: tuple) -> bool:
    """Whether the NAT rule (table, chain, rule) is a Service proxy's own translation."""
    table, chain, rule = by
    return table.owner_of(chain, rule) in SERVICE_PROXIES


def _misdirected(flow: Flow, pkt: Packet) -> bool:
    return flow.name in _AIMED and pkt.dnat_by is not None and not _by_proxy(pkt.dnat_by)


def _redirected(flow: Flow, pkt: Packet, w: World, steps: list[str]) -> Ending:
    """A packet a DNAT no Service proxy wrote sent somewhere other than where the flow goes
    (a DNS "interception" rule, a port forward left from a migration): for the flow, it is
    lost at that rule, whatever answers at the new address."""
    to = f"{show(w.pkt.dst)}:{w.pkt.dport}" if w.pkt.dport else show(w.pkt.dst)
    was = f"{show(pkt.dst)}:{pkt.dport}" if pkt.dport else show(pkt.dst)
    return _lost_at(w.pkt.dnat_by, "netfilter", "prerouting", f"DNAT of {was} to {to}",
                    f"a DNAT rule no Service proxy wrote sends {flow.name} traffic for {was} "
                    f"to {to} instead", w, steps)


def _snat_away(v: NodeView, pkt: Packet) -> bool:
    """An SNAT no Service proxy wrote gave the packet a source this node does not hold: the
    reply goes to that address, and no other node's connection tracking can undo a
    translation made here (masquerade always takes an address of the node's own)."""
    return pkt.snat_by is not None and pkt.snat_to is not None \
        and pkt.snat_to not in v.routing.local and not _by_proxy(pkt.snat_by)


def _snatted(pkt: Packet, w: World, steps: list[str]) -> Ending:
    to = show(w.pkt.snat_to)
    return _lost_at(w.pkt.snat_by, "netfilter", "postrouting",
                    f"SNAT of {show(pkt.src)} to {to}",
                    f"an SNAT rule gives the packet the source {to}, an address this node "
                    "does not hold: the reply goes there, and only this node could undo the "
                    "translation", w, steps)


MAX_REALS = 4  # real servers of one virtual server followed


def _ipvs(v: NodeView, flow: Flow, w: World, steps: list[str]) -> Ending:
    """kube-proxy's ipvs mode: IPVS takes a packet for one of its virtual servers at the input
    hook, after the filter table, when the address is the node's own (kube-proxy binds every
    VIP to kube-ipvs0), and sends it on to a real server through the output and postrouting
    hooks (the forward hook never sees it)."""
    pkt = w.pkt
    vip = f"{show(pkt.dst)}:{pkt.dport}"
    d = v.routing.lookup(pkt)
    if d.kind != "local":
        why = (f"{vip} is an IPVS virtual server here, but {show(pkt.dst)} is not an address of "
               "this node (kube-proxy binds each VIP to kube-ipvs0): IPVS never sees the packet")
        return Ending("drop", "ipvs", f"IPVS {vip} {pkt.proto}: {d.at(pkt.dst)}",
                      rule=f"{show(pkt.dst)} is not a local address", owner="kube-proxy",
                      why=why, steps=steps)
    steps = steps + ["local (IPVS virtual server)"]
    end = _rp_filter(v, pkt, steps)
    if end:
        return end
    reals = v.ipvs[(pkt.dst, pkt.dport, pkt.proto)]
    endings = []
    for w2 in _hooks(v, ["input"], [World(pkt.but(oif=None), w.undecided)]):
        s = steps + ["input"]
        if w2.stop is not None:
            endings.append(_from_stop(w2.stop, w2.undecided, s))
            continue
        if not reals:
            at = f"IPVS {vip} {pkt.proto}: no real server"
            endings.append(Ending("reject", "ipvs", at, rule=at, owner="kube-proxy",
                                  why="the virtual server has no real server: IPVS answers "
                                      "port unreachable", undecided=w2.undecided, steps=s))
            continue
        for ip, port in reals[:MAX_REALS]:
            out = w2.pkt.but(dst=ip, dport=port, iif=None, dnat=True)
            endings.append(_decide(v, Flow(flow.name, "out", out, flow.peer, flow.target),
                                   World(out, w2.undecided), s + [f"IPVS to {show(ip)}:{port}"]))
    return _combine(endings)


def walk(v: NodeView, flow: Flow) -> Ending:
    pkt = flow.pkt
    steps = [f"{flow.name} {show(pkt.src)} -> {show(pkt.dst)} {pkt.proto}"
             + (f"/{pkt.dport}" if pkt.dport else "") + f" {pkt.state}"]
    if not v.has_netfilter:
        steps.append("no packet filter read")
    if flow.kind == "out":
        return _decide(v, flow, World(pkt), steps)
    endings = []
    # ingress chains (netdev, or inet with a device) see the packet before anything else
    arrived = walk_hook(v.chains, "ingress", [World(pkt)], v.ctx, pkt.iif)
    if _is_bridge(v, pkt.iif):
        arrived = _bridged(v, ("prerouting", "input"), arrived, into=True)
        steps = [*steps, "bridge prerouting, bridge input"]
    for w in _hooks(v, ["prerouting"], arrived):
        if w.stop is not None:
            endings.append(_from_stop(w.stop, w.undecided, steps + ["prerouting"]))
        elif flow.name in ("service", "nodeport_in") and not w.pkt.dnat and \
                (w.pkt.dst, w.pkt.dport, w.pkt.proto) in v.ipvs:
            endings.append(_ipvs(v, flow, w, steps + ["prerouting"]))
        elif flow.name == "service" and not w.pkt.dnat and v.ipvs and \
                v.routing.lookup(w.pkt).kind == "local":
            # ipvs mode, a VIP bound here but no virtual server on that port: kube-proxy's
            # input filter refuses it; if nothing does, nothing listens either
            end = _decide(v, flow, w, steps + ["prerouting"])
            endings.append(end if end.verdict != "pass" else
                           _not_programmed(flow, pkt, w, steps + ["prerouting"]))
        elif flow.name in ("service", "nodeport_in") and not w.pkt.dnat and \
                w.pkt.untracked_by is not None:
            endings.append(_untracked(flow, pkt, w, steps + ["prerouting"]))
        elif flow.name in ("service", "nodeport_in") and not w.pkt.dnat:
            endings.append(_not_programmed(flow, pkt, w, steps + ["prerouting"]))
        elif _misdirected(flow, w.pkt):
            endings.append(_redirected(flow, pkt, w, steps + ["prerouting"]))
        else:
            endings.append(_decide(v, flow, w, steps + ["prerouting"]))
    return _combine(endings)
