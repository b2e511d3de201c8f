"""Each node's kube-proxy rules against the API's Services: is every node in sync?

kube-proxy turns the API's Services and EndpointSlices into rules on every node, and a
kube-proxy that stopped syncing (hung, crash-looping, cut off from the API) leaves the last
rules it wrote: a Service created since is missing on that node, a deleted one is still there,
and a pod that moved is still the DNAT target while the new one gets nothing. Each node alone
looks healthy; only the comparison with the API shows it, and naming the node needs the
comparison with the other nodes too (docs/runbooks.md#runbook-000, the Service path).

What a node programs is read from its rules as kube-proxy writes them:

* iptables mode: nat KUBE-SERVICES holds one rule per Service port, commented
  `ns/name:port cluster IP`, jumping to its KUBE-SVC- (or KUBE-SVL-) chain, whose rules jump to
  one KUBE-SEP- chain per endpoint, each a DNAT `--to-destination ip:port`; a port with no
  endpoint is a REJECT in filter KUBE-SERVICES, commented `ns/name:port has no endpoints`;
* ipvs mode: one virtual server per VIP:port, its real servers the endpoints (weight 0 is a
  terminating endpoint kube-proxy keeps for its open connections: not counted);
* nftables mode: kube-proxy's own table `ip kube-proxy` (`ip6` for IPv6): its verdict map
  service-ips sends each `VIP . proto . port` to the Service port's chain, named
  `service-<hash>-<ns>/<name>/<proto>/<port name>` (`local-` under internalTrafficPolicy
  Local), whose rule DNATs to the endpoints, `dnat ip to numgen random mod N map { 0 : ip .
  port, ... }` (or, with session affinity, a numgen vmap to one `endpoint-...` chain per
  endpoint, each a `dnat ip to ip:port`); a port with no endpoint is an element of the
  no-endpoint-services map instead, commented `ns/name:port`.

In ipvs mode kube-proxy also holds every NodePort as one virtual server per node address. For
a Service with externalTrafficPolicy Local, a node without a ready endpoint of its own sends
that NodePort to the other nodes' endpoints and leaves it out of the masquerade (ipset
KUBE-NODE-PORT-LOCAL-*): its own pods may use it, and a client from outside gets its reply
from the endpoint's node with the pod's address, never through this node, so the connection
never opens. One `ipvs_local_nodeport` per such node and port says what IPVS holds for it.

A node whose KUBE-SERVICES chain is empty is left to its own rule (the chain flushed), and one
with none of these (kube-proxy replaced by the CNI) is not compared. The API side is
`service_port` (facts/cluster.py). Pure functions of facts: one `service_sync` per node and
Service port that differs from the API, one `kube_proxy_sync` per node compared, and the
`ipvs_local_nodeport` facts (kinds/services.yaml).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from kubenetdiag.facts.model import Fact, Source, by_kind

PROBE = "services"  # the evidence's source: facts computed here, from other facts
INPUTS: tuple[str, ...] = ("service_port", "iptables_rule", "ipvs_service", "nft_set",
                           "nft_element", "nft_rule")
CONTEXT: tuple[str, ...] = ()
PRODUCES: tuple[str, ...] = ("service_sync", "kube_proxy_sync", "ipvs_local_nodeport")
SHOWN = 5  # differences named in a node's summary
SHOWN_BACKENDS = 50  # real servers named in an ipvs_local_nodeport fact
# A Service port whose endpoints changed less than this before the API was read may still be
# on its way into a healthy node's rules (kube-proxy batches changes, and a large ruleset takes
# seconds to restore): such a difference is `settling`, not counted against the node. Kept
# below the 30 s that Kubernetes' network-programming SLO allows at the 99th percentile, so
# a node lagging that far is still named.
SETTLE_S = 15
_TO_DEST = re.compile(r"--to-destination\s+(\S+)")
_NO_ENDPOINTS = " has no endpoints"
_CLUSTER_IP = " cluster IP"
NFT_TABLE = "kube-proxy"
# a Service port's chain: service-<hash>-<ns>/<name>/<proto>/<port name> (local- for
# internalTrafficPolicy Local); the hash is 8 base32 characters
_NFT_SVC_CHAIN = re.compile(r"^(?:service|local)-[A-Z2-7]{8}-([^/\s]+)/([^/\s]+)/([a-z]+)/(\S*)$")
_NFT_GOTO = re.compile(r"^(?:goto|jump)\s+(\S+)$")
_NFT_DNAT = re.compile(r"\bdnat\s+(?:ip6?\s+)?(?:addr\s+\.\s+port\s+)?to\s+(.+)$")
_NFT_PAIR = re.compile(r"(?:^|[{,])\s*\d+\s*:\s*([0-9A-Fa-f.:]+)\s+\.\s+(\d+)\s*(?=[,}]|$)")
_NFT_VMAP = re.compile(r"\b(?:goto|jump)\s+(endpoint-\S+?)(?=[\s,}]|$)")


@dataclass
class _Programmed:
    """One Service port as a node's rules have it."""

    vip: str
    port: int
    proto: str
    endpoints: set[str] = field(default_factory=set)


@dataclass
class _NodeRules:
    backend: str
    # Service port name (ns/name:port) or, in ipvs mode, VIP:port/proto -> what is programmed
    ports: dict[str, _Programmed] = field(default_factory=dict)


def _key(ns: str, name: str, port_name: str) -> str:
    """kube-proxy's own name for a Service port, as its rule comments carry it."""
    return f"{ns}/{name}:{port_name}" if port_name else f"{ns}/{name}"


def _ipt_node(rules: Sequence[Fact]) -> _NodeRules | None:
    chains: dict[tuple[str, str], list[Fact]] = defaultdict(list)
    for f in rules:
        chains[(str(f.attrs.get("table")), str(f.attrs.get("chain")))].append(f)
    entry = chains.get(("nat", "KUBE-SERVICES"))
    rejects = chains.get(("filter", "KUBE-SERVICES"), [])
    if not entry:
        # no kube-proxy rules here, or its chain was flushed (even with no endpoint anywhere
        # the chain keeps its jump to KUBE-NODEPORTS): not compared
        return None
    out = _NodeRules("iptables")

    def programmed(f: Fact, suffix: str) -> tuple[str, _Programmed] | None:
        comment = str(f.attrs.get("comment") or "")
        try:
            port = int(str(f.attrs.get("dport")))
        except ValueError:
            return None
        if not comment.endswith(suffix) or not f.attrs.get("dst"):
            return None
        vip = str(f.attrs["dst"]).split("/")[0]
        return comment.removesuffix(suffix), _Programmed(vip, port, str(f.attrs.get("proto")
                                                                         or "tcp").upper())

    for f in entry or []:
        found = programmed(f, _CLUSTER_IP)
        if found is None:
            continue
        key, prog = found
        svc_chain = str(f.attrs.get("target") or "")
        for hop in chains.get(("nat", svc_chain), []):
            for dnat in chains.get(("nat", str(hop.attrs.get("target") or "")), []):
                m = _TO_DEST.search(str(dnat.attrs.get("spec") or ""))
                if m and str(dnat.attrs.get("target")) == "DNAT":
                    prog.endpoints.add(m.group(1))
        out.ports[key] = prog
    for f in rejects:
        found = programmed(f, _NO_ENDPOINTS)
        if found is not None and found[0] not in out.ports:
            out.ports[found[0]] = found[1]
    return out


def _ipvs_node(services: Sequence[Fact]) -> _NodeRules:
    out = _NodeRules("ipvs")
    for f in services:
        a = f.attrs
        if a.get("proto") == "FWM" or a.get("port") is None:
            continue
        backends = _split(a.get("backends"))
        key = f"{a['address']}:{a['port']}/{a['proto']}"
        out.ports[key] = _Programmed(str(a["address"]), int(a["port"]), str(a["proto"]),
                                     backends)
    return out


def _nft_dnat(text: str) -> set[str]:
    """The ip:port endpoints one nft rule DNATs to: `dnat ip to 10.244.2.3:8080`, or a numgen
    map of them `dnat ip to numgen random mod 2 map { 0 : 10.244.2.3 . 8080, 1 : ... }`."""
    m = _NFT_DNAT.search(text)
    if not m:
        return set()
    to = m.group(1).strip()
    if "map" in to and "{" in to:
        return {f"{ip}:{port}" for ip, port in _NFT_PAIR.findall(to[to.index("{"):])}
    first = to.split()[0] if to.split() else ""
    host, sep, port = first.rpartition(":")
    return {first} if sep and host and port.isdigit() else set()


def _nft_node(sets: Sequence[Fact], elements: Sequence[Fact], rules: Sequence[Fact]
              ) -> _NodeRules | None:
    """kube-proxy's nftables table on one node; None when the node has none (or its
    service-ips map was not listed)."""
    mine = {(str(f.attrs.get("family")), str(f.attrs.get("set"))) for f in sets
            if f.attrs.get("table") == NFT_TABLE}
    families = [fam for fam in ("ip", "ip6") if (fam, "service-ips") in mine]
    if not families:
        return None
    chains: dict[str, list[str]] = defaultdict(list)
    for f in sorted((f for f in rules if f.attrs.get("table") == NFT_TABLE
                     and f.attrs.get("family") in families),
                    key=lambda f: int(f.attrs.get("position") or 0)):
        chains[str(f.attrs.get("chain"))].append(str(f.attrs.get("text") or ""))
    out = _NodeRules("nftables")
    for f in elements:
        a = f.attrs
        if a.get("table") != NFT_TABLE or a.get("family") not in families:
            continue
        parts = [p.strip() for p in str(a.get("key") or "").split(" . ")]
        if len(parts) != 3 or not parts[2].split()[0:1] or not parts[2].split()[0].isdigit():
            continue
        vip, proto, port = parts[0], parts[1].upper(), int(parts[2].split()[0])
        if a.get("set") == "service-ips":
            goto = _NFT_GOTO.match(str(a.get("value") or "").strip())
            m = _NFT_SVC_CHAIN.match(goto.group(1)) if goto else None
            if not m:
                continue  # external- (external IPs, load balancers) or not kube-proxy's
            ns, name, _proto, port_name = m.groups()
            prog = _Programmed(vip, port, proto)
            for text in chains.get(goto.group(1), []):  # type: ignore[union-attr]
                prog.endpoints |= _nft_dnat(text)
                for ep_chain in _NFT_VMAP.findall(text):  # session affinity: one per endpoint
                    for ep_text in chains.get(ep_chain, []):
                        prog.endpoints |= _nft_dnat(ep_text)
            out.ports[_key(ns, name, port_name)] = prog
        elif a.get("set") == "no-endpoint-services" and a.get("comment"):
            out.ports.setdefault(str(a["comment"]), _Programmed(vip, port, proto))
    return out


def _node_rules(ipt: Sequence[Fact], ipvs: Sequence[Fact], nft: Sequence[Sequence[Fact]] = ()
                ) -> _NodeRules | None:
    # ipvs mode keeps nat KUBE-SERVICES too (ipset matches, no per-Service comments): the
    # virtual servers are what serves the VIPs there. nftables mode removes kube-proxy's
    # iptables chains, and iptables mode its nftables table: at most one is there.
    if ipvs:
        return _ipvs_node(ipvs)
    if nft:
        found = _nft_node(*nft)
        if found is not None:
            return found
    return _ipt_node(ipt)


@dataclass(frozen=True)
class _Want:
    key: str
    fact: Fact

    @property
    def lookup(self) -> dict[str, str]:
        a = self.fact.attrs
        return {"iptables": self.key, "nftables": self.key,
                "ipvs": f"{a['cluster_ip']}:{a['port']}/{str(a['protocol']).upper()}"}

    @property
    def endpoints(self) -> set[str] | None:
        """The ready endpoints; None when the fact keeps only some of them (too many to
        compare one by one)."""
        listed = _split(self.fact.attrs.get("endpoints"))
        return listed if len(listed) == self.fact.attrs.get("ready_endpoints") else None

    @property
    def known(self) -> set[str]:
        """Every endpoint the API lists, ready or not: one a node still sends to while it
        terminates is not stale."""
        return (self.endpoints or set()) | _split(self.fact.attrs.get("not_ready_endpoints"))


def _split(value: object) -> set[str]:
    return {e for e in str(value or "").split(",") if e}


def _wanted(ports: Iterable[Fact]) -> list[_Want]:
    out = []
    for f in ports:
        a = f.attrs
        if not a.get("cluster_ip") or a.get("port") is None:
            continue
        out.append(_Want(_key(str(a["namespace"]), str(a["name"]), str(a.get("port_name")
                                                                         or "")), f))
    return sorted(out, key=lambda w: w.key)


def _diff(want: _Want, rules: _NodeRules) -> dict | None:
    """How a node's rules for one Service port differ from the API; None when they agree."""
    changed = want.fact.attrs.get("changed_s")
    settling = isinstance(changed, int) and changed < SETTLE_S
    found = _compare(want, rules)
    return None if found is None else {**found, "settling": settling}


def _compare(want: _Want, rules: _NodeRules) -> dict | None:
    have = rules.ports.get(want.lookup[rules.backend])
    if have is None:
        return {"state": "missing", "missing": "", "stale": ""}
    expected = want.endpoints
    if expected is None:
        return None
    # a node given only its own or its zone's endpoints lacks the others by design
    missing = [] if want.fact.attrs.get("per_node_endpoints") else sorted(
        expected - have.endpoints)
    stale = sorted(have.endpoints - want.known)
    if not missing and not stale:
        return None
    return {"state": "endpoints_differ", "missing": ",".join(missing), "stale": ",".join(stale)}


def service_sync_facts(facts: list[Fact]) -> list[Fact]:
    kinds = by_kind(facts, INPUTS)
    if not kinds["service_port"]:
        return []  # the API was not read: nothing to compare with
    wanted = _wanted(kinds["service_port"])
    ipt: dict[str, list[Fact]] = defaultdict(list)
    ipvs: dict[str, list[Fact]] = defaultdict(list)
    for f in kinds["iptables_rule"]:
        if f.attrs.get("table") in ("nat", "filter"):
            ipt[f.node].append(f)
    for f in kinds["ipvs_service"]:
        ipvs[f.node].append(f)
    nft: dict[str, tuple[list[Fact], list[Fact], list[Fact]]] = defaultdict(
        lambda: ([], [], []))
    for i, kind in enumerate(("nft_set", "nft_element", "nft_rule")):
        for f in kinds[kind]:
            if f.attrs.get("table") == NFT_TABLE:
                nft[f.node][i].append(f)
    nodes = {}
    for n in sorted(set(ipt) | set(ipvs) | set(nft)):
        rules = _node_rules(ipt.get(n, []), ipvs.get(n, []), nft.get(n, ()))
        if rules is not None:
            nodes[n] = rules
    known = {k for w in wanted for k in w.lookup.values()}
    vips = {str(w.fact.attrs["cluster_ip"]) for w in wanted}
    diffs: dict[str, list[tuple[str, dict]]] = {}
    for n, rules in nodes.items():
        mine = [(w.key, d) for w in wanted if (d := _diff(w, rules)) is not None]
        # a Service port the node still has and the API no longer does (ipvs mode also holds
        # NodePorts and external IPs by address: only VIPs of the API's Services count there)
        for key, prog in sorted(rules.ports.items()):
            if key in known or (rules.backend == "ipvs"
                                and not _service_address(prog.vip, vips)):
                continue
            mine.append((key, {"state": "stale_service", "missing": "", "settling": False,
                               "stale": ",".join(sorted(prog.endpoints))}))
        diffs[n] = mine
    out: list[Fact] = []
    for n, rules in nodes.items():
        for key, d in diffs[n]:
            out.append(Fact("service_sync", n, {"service": key, "backend": rules.backend, **d},
                            _source(f"{key}: {d['state']}" + (
                                f"; not programmed: {d['missing']}" if d["missing"] else "")
                                + (f"; programmed, gone from the API: {d['stale']}"
                                   if d["stale"] else ""))))
        peers = [p for p in nodes if p != n]
        in_sync = [p for p in peers if not _counted(diffs[p])]
        counted = _counted(diffs[n])
        shown = "; ".join(f"{k} {d['state']}" for k, d in counted[:SHOWN])
        out.append(Fact("kube_proxy_sync", n, {
            "backend": rules.backend,
            "service_ports": len(wanted),
            "differing": len(counted),
            "settling": len(diffs[n]) - len(counted),
            "missing_services": sum(1 for _, d in counted if d["state"] == "missing"),
            "stale_services": sum(1 for _, d in counted if d["state"] == "stale_service"),
            "endpoints_differ": sum(1 for _, d in counted if d["state"] == "endpoints_differ"),
            "differences": shown + (f"; and {len(counted) - SHOWN} more"
                                    if len(counted) > SHOWN else ""),
            "peers": len(peers),
            "peers_in_sync": len(in_sync),
            "peer_in_sync": in_sync[0] if in_sync else None,
        }, _source(f"{len(wanted)} Service ports in the API, {len(counted)} programmed "
                   f"differently here ({rules.backend}); {len(in_sync)} of {len(peers)} other "
                   f"nodes in sync" + (f": {shown}" if shown else ""))))
    return out + _local_nodeports(wanted, ipvs, vips)


def _local_nodeports(wanted: Sequence[_Want], ipvs: dict[str, list[Fact]],
                     vips: set[str]) -> list[Fact]:
    """ipvs mode: each externalTrafficPolicy Local NodePort as each node's IPVS holds it at the
    node's own addresses (every virtual server on its port that is not a Service VIP)."""
    local = [w.fact.attrs for w in wanted
             if w.fact.attrs.get("external_traffic_policy") == "Local"
             and w.fact.attrs.get("node_port")]
    out: list[Fact] = []
    for n, services in sorted(ipvs.items()) if local else ():
        # a node's virtual servers at its own addresses, by port: one pass, not one per port
        at_node: dict[tuple[object, object], list[dict]] = defaultdict(list)
        for f in services:
            addr = f.attrs.get("address")
            if addr and not _service_address(str(addr), vips):
                at_node[(f.attrs.get("port"), f.attrs.get("proto"))].append(f.attrs)
        for a in local:
            proto = str(a.get("protocol") or "TCP").upper()
            held = at_node.get((a["node_port"], proto), [])
            if not held:
                continue  # not programmed here: service_sync's to say, not this fact's
            mine = n in _split(a.get("endpoint_nodes"))
            backends = sorted(set().union(*(_split(h.get("backends")) for h in held)))
            busy = [h for h in held if h.get("active_conns") or h.get("inactive_conns")]
            key = _key(str(a["namespace"]), str(a["name"]), str(a.get("port_name") or ""))
            active = sum(int(h.get("active_conns") or 0) for h in held)
            inactive = sum(int(h.get("inactive_conns") or 0) for h in held)
            out.append(Fact("ipvs_local_nodeport", n, {
                "service": key,
                "node_port": a["node_port"],
                "protocol": proto,
                "local_endpoint": mine,
                "backends": ",".join(backends[:SHOWN_BACKENDS]),
                "active_conns": active,
                "inactive_conns": inactive,
                "addresses": ",".join(sorted(str(h["address"]) for h in busy)),
            }, _source(f"{key} (externalTrafficPolicy Local), NodePort {a['node_port']}/{proto}: "
                       + ("a ready endpoint on this node" if mine else
                          "no ready endpoint on this node (the API's are on "
                          f"{a.get('endpoint_nodes') or 'no node'})")
                       + "; IPVS at the node's addresses sends to "
                       + (",".join(backends[:5]) or "none")
                       + f", {active} active and {inactive} inactive connections")))
    return out


def _counted(diffs: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    return [(k, d) for k, d in diffs if not d["settling"]]


def _service_address(addr: str, vips: set[str]) -> bool:
    """An API Service's VIP, or an address in the /16 of the API's VIPs (a deleted Service's
    VIP): not a node's own address (its NodePorts) or an external IP, as ipvs mode holds those
    too."""
    prefix = ".".join(addr.split(".")[:2]) + "."
    return addr in vips or any(v.startswith(prefix) for v in vips)


def _source(text: str) -> Source:
    return Source(PROBE, "each node's kube-proxy rules against the API's Services", None, text)
