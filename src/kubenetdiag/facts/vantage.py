"""Vantage-point reasoning: where the active checks' failures localize, before any rule runs.

Every node probes its peers (`reach`), the CoreDNS pods and the DNS VIP (`dns_check`,
`http_check`) and the declared endpoints (`tcp_check`), from itself and from a pod on it. One
broken node then shows up in every other node's results: its peers fail to reach it, and the
targets it fails to reach answer everyone else. Reading the results one at a time, a rule
blames each target and each pair; read together they have a smaller explanation, which this
module computes (docs/facts.md, kinds/vantage.yaml):

* `cut_off`: one node that every peer fails to reach (inbound), that fails to reach every
  peer (outbound), or both, while those peers reach other nodes;
* `reach_pair`: a failed pair no cut-off node accounts for (one pair, one direction or both);
* `target_failure`: for each failed check, whether the target fails from every vantage point
  that tried (the target is the problem), from some (the failing vantage point's path is), only
  outside the target's own node (the way into that node is), across a cut-off node, or across
  a failed pair (the vantage node and the target's node fail with each other in the matrix);
* `endpoint_split`: for each declared endpoint a node failed to connect to, what the node
  itself and a pod on it each saw, and whether other nodes got through: the order of work of
  docs/runbooks.md#runbook-002 (node -> endpoint, then pod -> endpoint) read off at once;
* `node_checks`: which probes answered on a node where a failure localizes.

A check that was not sent is never a failure: a pair or a vantage point without a result is
unknown and counts on neither side. Pure functions of facts.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from kubenetdiag.facts.model import Fact, Source, by_kind
from kubenetdiag.probes import PROBES

PROBE = "vantage"  # the evidence's source: facts computed here, from other facts
COMMAND = "every node's active checks, read together"
SAMPLE = 10  # names listed in one attribute; the rest are counted
MIN_PEERS = 2  # peers on one side before a node, rather than a pair, can be blamed
EXCERPT_LINES = 24

# The reach layers a check crosses, by where its target's address is: a pod or a Service VIP
# (DNAT to a pod) is reached over the pod network, which rides on the underlay.
LAYERS = {"pod": ("pod", "underlay"), "service": ("pod", "underlay"), "node": ("underlay",)}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# A failure that is an answer: something on the way or at the target replied (a reset, an ICMP
# "port unreachable" read as refused, a DNS error code), or the name never resolved. A cut-off
# node drops traffic and gets no answer, so it never accounts for these.
ANSWERS = ("refused", "reset", "nxdomain", "servfail", "notimp", "formerr", "unresolved", "empty")


def listed(names: Iterable[str]) -> str:
    """Sorted, comma-separated, the first SAMPLE and then how many more."""
    items = sorted(set(names))
    shown = ", ".join(items[:SAMPLE])
    return shown + (f" and {len(items) - SAMPLE} more" if len(items) > SAMPLE else "")


def _source(lines: list[str]) -> Source:
    if len(lines) > EXCERPT_LINES:
        lines = [*lines[:EXCERPT_LINES], f"... and {len(lines) - EXCERPT_LINES} more lines"]
    return Source(PROBE, COMMAND, None, "\n".join(lines))


# ---------------------------------------------------------------- node x node matrix


@dataclass
class Cell:
    """One measured (src, dst) pair at one layer: failed when any probe of it failed (from the
    node or from a pod on it)."""

    ok: bool
    detail: str | None = None


Matrix = dict[tuple[str, str], Cell]


def reach_matrix(reach: Iterable[Fact]) -> dict[str, Matrix]:
    """layer -> (src, dst) -> Cell, from `reach` facts; pairs with no fact are not in it."""
    layers: dict[str, Matrix] = defaultdict(dict)
    for f in reach:
        a = f.attrs
        src, dst, layer, ok = a.get("src") or f.node, a.get("dst"), a.get("layer"), a.get("ok")
        if not (isinstance(src, str) and isinstance(dst, str) and isinstance(layer, str)):
            continue
        if type(ok) is not bool or src == dst:
            continue
        detail = a.get("detail") if isinstance(a.get("detail"), str) else None
        cell = layers[layer].get((src, dst))
        if cell is None:
            layers[layer][(src, dst)] = Cell(ok, None if ok else detail or "failed")
        elif not ok and cell.ok:
            cell.ok, cell.detail = False, detail or "failed"
    return dict(layers)


@dataclass(frozen=True)
class CutOff:
    node: str
    layer: str
    direction: str  # inbound, outbound or both
    inbound: str  # all_failed, some_failed, ok, unmeasured
    outbound: str
    failing: tuple[str, ...]
    witnesses: tuple[str, ...]

    def blocks_from(self) -> bool:
        """Traffic this node starts fails."""
        return self.direction in ("outbound", "both")

    def blocks_to(self) -> bool:
        """Traffic other nodes start towards it fails."""
        return self.direction in ("inbound", "both")


def _side(oks: Iterable[bool]) -> str:
    seen = list(oks)
    if not seen:
        return "unmeasured"
    if all(seen):
        return "ok"
    return "some_failed" if any(seen) else "all_failed"


def cut_offs(matrix: Matrix, layer: str) -> dict[str, CutOff]:
    """The nodes of one layer that are cut off, by node.

    Inbound: at least MIN_PEERS peers probed the node, all failed, and at least one of them
    reached another node (so the senders work). Outbound: the node probed at least MIN_PEERS
    peers, all failed, and another node reached at least one of them (so the receivers work).
    Two nodes failing only with each other are no cut-off on either side: that is a tie, and
    the pair stays a pair.
    """
    out: dict[str, dict[str, bool]] = defaultdict(dict)
    into: dict[str, dict[str, bool]] = defaultdict(dict)
    for (s, d), cell in matrix.items():
        out[s][d] = cell.ok
        into[d][s] = cell.ok
    sends = {s for s, ds in out.items() if any(ds.values())}  # reached somebody
    receives = {d for d, ss in into.items() if any(ss.values())}  # reached by somebody
    found: dict[str, CutOff] = {}
    for x in sorted(set(out) | set(into)):
        ins, outs = into.get(x, {}), out.get(x, {})
        inbound, outbound = _side(ins.values()), _side(outs.values())
        # x failed with all of them, so a sender that reached somebody reached another node
        in_witness = sorted(s for s in ins if s in sends)
        out_witness = sorted(d for d in outs if d in receives)
        cut_in = inbound == "all_failed" and len(ins) >= MIN_PEERS and bool(in_witness)
        cut_out = outbound == "all_failed" and len(outs) >= MIN_PEERS and bool(out_witness)
        if not (cut_in or cut_out):
            continue
        direction = "both" if cut_in and cut_out else "inbound" if cut_in else "outbound"
        failing = {s for s, ok in ins.items() if not ok} | {d for d, ok in outs.items() if not ok}
        witnesses = (in_witness if cut_in else []) + (out_witness if cut_out else [])
        found[x] = CutOff(x, layer, direction, inbound, outbound, tuple(sorted(failing)),
                          tuple(sorted(set(witnesses))))
    return found


def _covered(cut: dict[str, CutOff], s: str, d: str) -> bool:
    return (d in cut and cut[d].blocks_to()) or (s in cut and cut[s].blocks_from())


def reach_facts(matrices: dict[str, Matrix]
                ) -> tuple[dict[str, dict[str, CutOff]], list[Fact]]:
    """Cut-offs per layer, and the `cut_off` and `reach_pair` facts of every layer."""
    cuts: dict[str, dict[str, CutOff]] = {}
    facts: list[Fact] = []
    for layer in sorted(matrices):
        matrix = matrices[layer]
        cut = cuts[layer] = cut_offs(matrix, layer)
        for x, c in cut.items():
            lines = [f"{layer} layer: {x} cut off {c.direction} "
                     f"(probes to it: {c.inbound}; its own probes: {c.outbound})"]
            lines += [f"{s} -> {d}: {cell.detail}" for (s, d), cell in sorted(matrix.items())
                      if not cell.ok and x in (s, d)]
            lines.append(f"succeeded elsewhere at this layer: {listed(c.witnesses)}")
            facts.append(Fact("cut_off", x, {
                "layer": layer, "direction": c.direction, "inbound": c.inbound,
                "outbound": c.outbound, "peers": len(c.failing), "failing": listed(c.failing),
                "witnesses": listed(c.witnesses)}, _source(lines)))
        for (s, d), cell in sorted(matrix.items()):
            if cell.ok or _covered(cut, s, d):
                continue
            back = matrix.get((d, s))
            reverse = "unmeasured" if back is None else "ok" if back.ok else "failed"
            facts.append(Fact("reach_pair", s, {
                "layer": layer, "dst": d, "reverse": reverse, "detail": cell.detail},
                _source([f"{layer} layer: {s} -> {d}: {cell.detail}",
                         f"{d} -> {s}: {reverse if back is None or back.ok else back.detail}"])))
    return cuts, facts


# ---------------------------------------------------------------- where an address lives


def _ip(text: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not isinstance(text, str):
        return None
    try:
        return ipaddress.ip_address(text.strip().split("/", 1)[0])
    except ValueError:
        return None


def _net(text: object, *, interface: bool = False) -> Network | None:
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        if interface:  # "10.244.2.1/24", the way subnet.env and `ip addr` write it
            return ipaddress.ip_interface(text.strip()).network
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


def _split(text: object) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()] if isinstance(text, str) else []


class AddressBook:
    """Which node holds an address, from the facts at hand: a node's own address, a Service
    VIP, a CoreDNS pod, a node's pod CIDR (API, flannel's subnet.env), a pod's /32 route on a
    pod veth (Calico), the pod bridge's network (cni0), a Calico block's blackhole route, an
    address on one node's device, the cluster's pod network. Each source answers only when
    exactly one node matches; two nodes claiming one address name none."""

    POD_DEVICE_PREFIXES = ("cali", "veth")

    def __init__(self, picked: dict[str, list[Fact]]) -> None:
        self.node_address: dict[str, set[str]] = defaultdict(set)
        self.vips: set[str] = set()
        self.pod_ip: dict[str, set[str]] = defaultdict(set)
        self.host_route: dict[str, set[str]] = defaultdict(set)
        self.device_address: dict[str, set[str]] = defaultdict(set)
        # (networks with their node) per source, in the order they are believed
        self.cidrs: list[list[tuple[Network, str]]] = [[], [], [], []]
        self.cluster_nets: list[Network] = []
        for f in picked.get("node_status", ()):
            if f.attrs.get("address") and _ip(f.attrs["address"]):
                self.node_address[str(f.attrs["address"])].add(f.node)
        for f in picked.get("k8s_node", ()):
            if _ip(f.attrs.get("internal_ip")):
                self.node_address[str(f.attrs["internal_ip"])].add(f.node)
            for cidr in {*_split(f.attrs.get("pod_cidr")), *_split(f.attrs.get("pod_cidrs"))}:
                net = _net(cidr)
                if net is not None:
                    self.cidrs[0].append((net, f.node))
        for f in picked.get("node_match", ()):
            if f.attrs.get("in_inventory") and _ip(f.attrs.get("address")):
                self.node_address[str(f.attrs["address"])].add(f.node)
        for f in (*picked.get("service_endpoints", ()), *picked.get("dns_service", ())):
            if _ip(f.attrs.get("cluster_ip")):
                self.vips.add(str(f.attrs["cluster_ip"]))
        for f in picked.get("dns_pod", ()):
            if _ip(f.attrs.get("ip")):
                self.pod_ip[str(f.attrs["ip"])].add(f.node)
        for f in picked.get("flannel_subnet", ()):
            net = _net(f.attrs.get("subnet"), interface=True)
            if net is not None:
                self.cidrs[1].append((net, f.node))
            net = _net(f.attrs.get("network"))
            if net is not None:
                self.cluster_nets.append(net)
        for f in picked.get("flannel_config", ()):
            net = _net(f.attrs.get("network"))
            if net is not None:
                self.cluster_nets.append(net)
        for f in picked.get("calico_ippool", ()):
            net = _net(f.attrs.get("cidr"))
            if net is not None and not f.attrs.get("disabled"):
                self.cluster_nets.append(net)
        for f in picked.get("route", ()):
            a = f.attrs
            dst, dev = str(a.get("dst") or ""), str(a.get("dev") or "")
            if a.get("type", "unicast") == "blackhole":
                net = _net(dst)
                if net is not None and net.num_addresses > 1:
                    self.cidrs[3].append((net, f.node))  # Calico: the node's own block
            elif dev.startswith(self.POD_DEVICE_PREFIXES) and not a.get("linkdown"):
                address, _, length = dst.partition("/")
                if length in ("", "32") and _ip(address):
                    self.host_route[address].add(f.node)
        for f in picked.get("interface", ()):
            for held in _split(f.attrs.get("addresses")):
                ip = _ip(held)
                if ip is None or ip.is_loopback:
                    continue
                self.device_address[str(ip)].add(f.node)
                if f.attrs.get("kind") == "bridge":  # cni0 holds its pods' gateway
                    net = _net(held, interface=True)
                    if net is not None and net.num_addresses > 1:
                        self.cidrs[2].append((net, f.node))

    @staticmethod
    def _one(nodes: Iterable[str]) -> str | None:
        found = set(nodes)
        return found.pop() if len(found) == 1 else None

    def place(self, address: str | None) -> tuple[str, str | None]:
        """(place, host) of an address: place is node, pod, service or outside; host is the
        node holding it, or None when no fact names exactly one."""
        ip = _ip(address)
        if ip is None:
            return "outside", None
        text = str(ip)
        if text in self.node_address:
            return "node", self._one(self.node_address[text])
        if text in self.vips:
            return "service", None
        if text in self.pod_ip:
            return "pod", self._one(self.pod_ip[text])
        for source in self.cidrs[:2]:
            holders = [node for net, node in source if ip in net]
            if holders:
                return "pod", self._one(holders)
        if text in self.host_route:
            return "pod", self._one(self.host_route[text])
        for source in self.cidrs[2:]:
            holders = [node for net, node in source if ip in net]
            if len(set(holders)) == 1:
                return "pod", holders[0]
        if text in self.device_address:
            host = self._one(self.device_address[text])
            if host is not None:
                return "node", host
        if any(ip in net for net in self.cluster_nets):
            return "pod", None
        return "outside", None


# ---------------------------------------------------------------- targets


@dataclass
class Target:
    """One target of the active checks and what each vantage point saw of it."""

    check: str
    about: str
    target: str
    kind: str
    address: str | None = None
    pod: str | None = None
    place: str = "outside"
    host: str | None = None
    # A Service's VIP: the nodes its backends run on (CoreDNS's pods for the DNS Service),
    # where a call to it crosses the pod network to
    behind: frozenset[str] = frozenset()
    # (node, vantage) -> (ok, detail); vantage is "node" or a pod's network namespace
    results: dict[tuple[str, str], tuple[bool, str | None]] = field(default_factory=dict)

    def see(self, node: str, vantage: object, ok: bool, detail: object) -> None:
        where = (node, vantage if isinstance(vantage, str) and vantage else "node")
        text = detail if isinstance(detail, str) else None
        before = self.results.get(where)
        if before is None or (before[0] and not ok):
            self.results[where] = (ok, None if ok else text or "failed")


def _point(vp: tuple[str, str]) -> str:
    node, vantage = vp
    return node if vantage == "node" else f"{node} (pod {vantage})"


def targets(picked: dict[str, list[Fact]]) -> list[Target]:
    """Every target with at least one result, from dns_check, http_check and tcp_check."""
    found: dict[tuple[str, str], Target] = {}
    pods = {str(f.attrs["ip"]): str(f.attrs.get("pod") or "") or None
            for f in picked.get("dns_pod", ()) if isinstance(f.attrs.get("ip"), str)}

    def get(check: str, target: str, about: str, kind: str) -> Target:
        t = found.get((check, target))
        if t is None:
            t = found[(check, target)] = Target(check, about, target, kind)
        return t

    for f in picked.get("dns_check", ()):
        a = f.attrs
        if not isinstance(a.get("server"), str) or type(a.get("ok")) is not bool:
            continue
        kind = str(a.get("server_kind") or "pod")
        t = get("dns", a["server"], "dns", kind)
        t.address = a["server"]
        t.pod = pods.get(a["server"]) if kind == "pod" else None
        t.see(f.node, a.get("vantage"), a["ok"], a.get("detail"))
    for f in picked.get("http_check", ()):
        a = f.attrs
        if not isinstance(a.get("url"), str) or type(a.get("ok")) is not bool:
            continue
        kind = str(a.get("target") or "url")
        t = get("http", a["url"], "dns" if kind == "coredns_metrics" else "endpoint", kind)
        try:
            host = urlsplit(a["url"]).hostname
        except ValueError:
            host = None
        t.address = host if _ip(host) else t.address
        t.pod = a.get("target_pod") if isinstance(a.get("target_pod"), str) else t.pod
        t.see(f.node, None, a["ok"], a.get("detail"))
    for f in picked.get("tcp_check", ()):
        a = f.attrs
        if not isinstance(a.get("target"), str) or type(a.get("ok")) is not bool:
            continue
        t = get("tcp", a["target"], "endpoint", str(a.get("by") or "ip"))
        if t.address is None and _ip(a.get("address")):
            t.address = str(a["address"])
        t.see(f.node, a.get("vantage"), a["ok"], a.get("detail"))
    return [found[k] for k in sorted(found)]


def localize(t: Target, cuts: dict[str, dict[str, CutOff]],
             broken: dict[str, set[frozenset[str]]] | None = None,
             ) -> list[tuple[tuple[str, str], str, str]]:
    """(vantage point, localized, node it localizes to) for each failed result of a target.

    A failure across a layer on which the vantage node cannot send, or the target's node
    cannot be reached, is that cut-off's; one across a layer on which the vantage node and the
    target's node fail with each other (`broken`: the failed pairs of each layer, either way)
    is that pair's (unless it got an answer of some kind, a refusal, which neither gives). Of
    the rest: every vantage point failed -> the target (its node, or "cluster"); only the
    target's own node got an answer while at least MIN_PEERS other nodes failed -> the way into
    that node (a pod there failing too is on that way); others got an answer -> the failing
    vantage point.
    """
    layers = LAYERS.get(t.place, ())
    pairs = set().union(*((broken or {}).get(layer, set()) for layer in layers))
    found = [cuts[layer] for layer in layers if layer in cuts]
    sends_cut = {n for cut in found for n, c in cut.items() if c.blocks_from()}
    host_cut = t.host is not None and any(
        t.host in cut and cut[t.host].blocks_to() for cut in found)
    out: list[tuple[tuple[str, str], str, str]] = []
    answered = [vp for vp, (ok, _) in t.results.items() if ok]
    open_: list[tuple[str, str]] = []
    for vp, (ok, detail) in sorted(t.results.items()):
        if ok:
            continue
        node = vp[0]
        silent = not any(word in (detail or "").lower() for word in ANSWERS)
        if silent and node != t.host and node in sends_cut:
            out.append((vp, "vantage_cut_off", node))
        elif silent and host_cut and node != t.host:
            out.append((vp, "host_cut_off", t.host))
        elif silent and t.host and frozenset((node, t.host)) in pairs:
            out.append((vp, "pair", node))
        elif silent and t.behind and node not in t.behind and \
                all(frozenset((node, h)) in pairs for h in t.behind):
            # whichever backend the VIP picks, the call crosses a failed pair
            out.append((vp, "pair", node))
        else:
            open_.append(vp)
    if not open_:
        return out
    if not answered:
        out += [(vp, "target", t.host or "cluster") for vp in open_]
    elif t.host and all(vp[0] == t.host for vp in answered) and \
            len({vp[0] for vp in open_} - {t.host}) >= MIN_PEERS:
        # Several other nodes fail and only the target's node gets through: the way into that
        # node (its forward path, which a pod there crosses too when it fails as well).
        out += [(vp, "host_path", t.host) for vp in open_]
    else:
        out += [(vp, "vantage", vp[0]) for vp in open_]
    return sorted(out)


def target_facts(picked: dict[str, list[Fact]], cuts: dict[str, dict[str, CutOff]],
                 matrices: dict[str, Matrix] | None = None, *,
                 book: AddressBook | None = None,
                 found: list[Target] | None = None) -> list[Fact]:
    book = AddressBook(picked) if book is None else book
    broken = {layer: {frozenset(pair) for pair, cell in matrix.items() if not cell.ok}
              for layer, matrix in (matrices or {}).items()}
    facts: list[Fact] = []
    for t in targets(picked) if found is None else found:
        if all(ok for ok, _ in t.results.values()):
            continue
        t.place, t.host = book.place(t.address)
        if t.check == "dns" and t.kind == "service":
            t.place, t.host = "service", None
            t.behind = frozenset(f.node for f in picked.get("dns_pod", ()))
        pod_host = {f.node for f in picked.get("dns_pod", ()) if f.attrs.get("pod") == t.pod}
        if t.pod and len(pod_host) == 1 and t.host is None:
            t.place, t.host = "pod", pod_host.pop()
        answered = [_point(vp) for vp, (ok, _) in t.results.items() if ok]
        placed = f" ({t.place}" + (f" on {t.host}" if t.host else "") + ")"
        lines = [f"{t.check} {t.target}{placed}:"]
        lines += [f"  from {_point(vp)}: {'ok' if ok else detail}"
                  for vp, (ok, detail) in sorted(t.results.items())]
        failed = sum(1 for ok, _ in t.results.values() if not ok)
        for vp, localized, node in localize(t, cuts, broken):
            # a Service's failure that a pair accounts for names the nodes behind it
            host = t.host or (listed(t.behind) if localized == "pair" else None)
            facts.append(Fact("target_failure", node, {
                "check": t.check, "about": t.about, "target": t.target, "kind": t.kind,
                "address": t.address, "place": t.place, "host": host, "pod": t.pod,
                "src": vp[0], "vantage": vp[1], "detail": t.results[vp][1],
                "localized": localized, "tried": len(t.results), "failed": failed,
                "answering": listed(answered)},
                _source([*lines, f"localized: {localized} ({node})"])))
    return facts


# ---------------------------------------------------------------- node vs pod, per endpoint


def _side_of(results: dict[tuple[str, str], tuple[bool, str | None]], node: str, pod: bool
             ) -> tuple[str, str | None]:
    """("ok" | "failed" | "unmeasured", detail) of one node's own connect (pod=False) or of
    its pods' (pod=True; any failed pod counts)."""
    seen = [(ok, detail) for (n, v), (ok, detail) in results.items()
            if n == node and (v != "node") == pod]
    if not seen:
        return "unmeasured", None
    failed = [detail for ok, detail in seen if not ok]
    return ("failed", failed[0]) if failed else ("ok", None)


def endpoint_split_facts(picked: dict[str, list[Fact]], *, book: AddressBook | None = None,
                         found: list[Target] | None = None) -> list[Fact]:
    """One `endpoint_split` per (node, declared endpoint) where the node's own connect or its
    pod's failed: the two sides side by side, and what the other nodes saw.

    The runbook's tree reads: the node gets through and its pod does not -> the pod's way out
    on that node (the CNI's forwarding and masquerade); neither gets through while other nodes
    do -> that node's own network, or the endpoint refusing that node's address; nobody gets
    through -> the endpoint or the network in front of it. Which branch a failure is on is
    plain from the results; the rules only have to name it.
    """
    book = AddressBook(picked) if book is None else book
    out: list[Fact] = []
    for t in targets(picked) if found is None else found:
        if t.check != "tcp" or t.about != "endpoint":
            continue
        if all(ok for ok, _ in t.results.values()):
            continue
        place, host = book.place(t.address)
        for node in sorted({n for n, _ in t.results}):
            node_side, node_detail = _side_of(t.results, node, pod=False)
            pod_side, pod_detail = _side_of(t.results, node, pod=True)
            if "failed" not in (node_side, pod_side):
                continue
            if node_side == "ok":
                branch = "pod_only"
            elif pod_side == "failed":
                branch = "both"
            elif pod_side == "ok":
                branch = "node_only"
            else:
                branch = "unpaired"
            others = {n: ok for (n, _), (ok, _) in t.results.items() if n != node and ok}
            tried = {n for n, _ in t.results if n != node}
            elsewhere = "none" if not tried else "ok" if others else "failed"
            detail = pod_detail if pod_side == "failed" else node_detail
            lines = [f"tcp {t.target} ({place}" + (f" on {host}" if host else "") + "):",
                     f"  from {node}: {node_side}" + (f" ({node_detail})" if node_detail else ""),
                     f"  from a pod on {node}: {pod_side}"
                     + (f" ({pod_detail})" if pod_detail else ""),
                     f"  other nodes: {elsewhere}"
                     + (f" ({listed(others)} got through)" if others else "")]
            out.append(Fact("endpoint_split", node, {
                "target": t.target, "address": t.address, "place": place, "host": host,
                "from_node": node_side, "from_pod": pod_side, "node_detail": node_detail,
                "pod_detail": pod_detail, "detail": detail, "branch": branch,
                "elsewhere": elsewhere, "answering": listed(others)}, _source(lines)))
    return out


# ---------------------------------------------------------------- checks done on a node


def node_check_facts(facts: Sequence[Fact], nodes: Iterable[str],
                     status: dict[str, bool]) -> list[Fact]:
    """`node_checks` for each of these nodes the collector reached: the passive probes with
    facts from it, and those that gave no answer there."""
    wanted = {n for n in nodes if status.get(n) is True}
    if not wanted:
        return []
    passive = {p.name for p in PROBES}
    answered: dict[str, set[str]] = defaultdict(set)
    missing: dict[str, dict[str, str]] = defaultdict(dict)
    for f in facts:
        if f.node not in wanted:
            continue
        if f.kind == "probe_status":
            if f.attrs.get("probe") in passive:
                missing[f.node][str(f.attrs["probe"])] = str(f.attrs.get("status") or "failed")
        elif f.source is not None and f.source.probe in passive:
            answered[f.node].add(f.source.probe)
    out = []
    for n in sorted(wanted):
        done = sorted(answered[n] - set(missing[n]))
        gaps = [f"{p} ({s})" for p, s in sorted(missing[n].items())]
        out.append(Fact("node_checks", n, {
            "checked": ", ".join(done), "unanswered": ", ".join(gaps)},
            _source([f"answered on {n}: {', '.join(done) or 'none'}",
                     f"no answer on {n}: {', '.join(gaps) or 'none'}"])))
    return out


# ---------------------------------------------------------------- the parse stage's hook


KINDS = ("reach", "dns_check", "http_check", "tcp_check", "node_status", "k8s_node",
         "node_match", "dns_pod", "dns_service", "service_endpoints", "flannel_subnet",
         "flannel_config", "calico_ippool", "route", "interface")
# Declared for kubenetdiag.facts.producers. A rule on a vantage fact needs the checks' results
# (INPUTS); the API's and the nodes' own facts (CONTEXT) only name the targets and pods, and
# node_checks also names the probes that answered, which is text, not a condition.
INPUTS: tuple[str, ...] = ("reach", "dns_check", "http_check", "tcp_check", "node_status")
CONTEXT: tuple[str, ...] = tuple(k for k in KINDS if k not in INPUTS)
PRODUCES: tuple[str, ...] = ("cut_off", "reach_pair", "target_failure", "node_checks",
                             "endpoint_split")


def vantage_facts(facts: Sequence[Fact]) -> list[Fact]:
    """The vantage facts of a run's facts (kinds/vantage.yaml); empty when no active check
    failed."""
    picked = by_kind(facts, KINDS)
    if not any(f.attrs.get("ok") is False
               for k in ("reach", "dns_check", "http_check", "tcp_check") for f in picked[k]):
        return []
    matrices = reach_matrix(picked["reach"])
    cuts, out = reach_facts(matrices)
    # one address book and one reading of the checks for both: at thousands of nodes each
    # costs as much as the rest of this module
    book, found = AddressBook(picked), targets(picked)
    out += target_facts(picked, cuts, matrices, book=book, found=found)
    out += endpoint_split_facts(picked, book=book, found=found)
    status = {f.node: bool(f.attrs.get("reachable")) for f in picked["node_status"]}
    named = {f.node for f in out if f.kind == "cut_off"} | {
        f.node for f in out
        if f.kind == "target_failure" and f.attrs["localized"] in ("vantage", "host_path")}
    return out + node_check_facts(facts, named, status)
