"""kube-proxy's ipvs mode in the packet-path walk: ipset matches decided from the node's sets,
and a Service's packets followed into IPVS (bound VIP, input hook, real server, output hook)."""

from __future__ import annotations

import pytest

from kubenetdiag.facts.paths import path_facts
from kubenetdiag.facts.paths.ipsets import index, lookup
from kubenetdiag.facts.paths.packet import Packet, addr
from test_paths import chain, f, iface, ipt, node

DNS_VIP = "10.96.0.10"
BACKEND = "10.244.2.5"


def _pkt(src: str, dst: str, proto: str = "udp", dport: int | None = 53,
         sport: int | None = None) -> Packet:
    return Packet(addr(src), addr(dst), proto, sport, dport, "cni0")


@pytest.mark.parametrize(("kind", "members", "flags", "pkt", "want"), [
    # kube-proxy's KUBE-CLUSTER-IP: VIP and protocol:port of the destination
    ("hash:ip,port", "10.96.0.10,udp:53 10.96.0.20,tcp:80", "dst,dst",
     _pkt("10.244.1.2", DNS_VIP), True),
    ("hash:ip,port", "10.96.0.10,udp:53", "dst,dst", _pkt("10.244.1.2", DNS_VIP, "tcp"), False),
    ("hash:ip,port", "10.96.0.10,udp:53", "dst,dst", _pkt("10.244.1.2", DNS_VIP, dport=54),
     False),
    # a bitmap:port holds ports of any protocol (KUBE-NODE-PORT-TCP)
    ("bitmap:port", "30085", "dst", _pkt("198.18.0.12", "198.18.0.11", "tcp", 30085), True),
    # KUBE-LOOP-BACK: endpoint, port, and the source being that endpoint (hairpin)
    ("hash:ip,port,ip", "10.244.1.3,udp:53,10.244.1.3", "dst,dst,src",
     _pkt("10.244.1.3", "10.244.1.3"), True),
    ("hash:ip,port,ip", "10.244.1.3,udp:53,10.244.1.3", "dst,dst,src",
     _pkt("10.244.1.4", "10.244.1.3"), False),
    # Calico's hash:net pools, with an exception that wins over the wider member
    ("hash:net", "!10.244.7.0/24 10.244.0.0/16", "src", _pkt("10.244.3.9", DNS_VIP), True),
    ("hash:net", "!10.244.7.0/24 10.244.0.0/16", "src", _pkt("10.244.7.9", DNS_VIP), False),
    ("hash:net", "198.18.0.11", "dst", _pkt("10.244.1.2", "198.18.0.11"), True),
    # more flags than dimensions: the extra ones are not used, as the kernel does
    ("hash:ip", "10.96.0.10", "dst,dst", _pkt("10.244.1.2", DNS_VIP), True),
    # what the walk cannot know stays undecided: a source port it does not pick, fewer flags
    # than dimensions, a type it does not model
    ("hash:ip,port", "10.244.1.2,udp:40000", "src,src", _pkt("10.244.1.2", DNS_VIP), None),
    ("hash:ip,port", "10.96.0.10,udp:53", "dst", _pkt("10.244.1.2", DNS_VIP), None),
    ("hash:mac", "00:11:22:33:44:55", "src", _pkt("10.244.1.2", DNS_VIP), None),
    ("list:set", "KUBE-CLUSTER-IP", "dst,dst", _pkt("10.244.1.2", DNS_VIP), None),
    # ICMP against a port set: no port, no member
    ("hash:ip,port", "10.96.0.10,udp:53", "dst,dst", _pkt("10.244.1.2", DNS_VIP, "icmp", None),
     False),
])
def test_an_ipset_lookup_answers_as_the_kernel_would(kind, members, flags, pkt, want):
    assert lookup(index(kind, members), flags.split(","), pkt) is want


def test_a_miss_in_a_set_not_read_in_full_is_not_a_sure_miss():
    cut = index("hash:ip,port", "10.96.0.1,tcp:443", complete=False)
    assert lookup(cut, ["dst", "dst"], _pkt("10.244.1.2", DNS_VIP)) is None
    assert lookup(cut, ["dst", "dst"], _pkt("10.244.1.2", "10.96.0.1", "tcp", 443)) is True


# ---- the walk -------------------------------------------------------------------------------

def _ipset(node_name: str, name: str, kind: str, members: str) -> object:
    return f("ipset", node_name, name=name, type=kind, family="inet",
             entries=len(members.split()), complete=True, members=members)


def _cluster(*, reals: str = f"{BACKEND}:53", bound: bool = True, sets: bool = True,
             extra: tuple = (), protos: tuple[str, ...] = ("UDP", "TCP"),
             ipvs_filter: bool = True) -> list:
    """n1 and n2 in ipvs mode (kube-proxy's KUBE-IPVS-FILTER in filter INPUT), the DNS
    Service's VIP bound to kube-ipvs0 on n2 always and on n1 when `bound`."""
    facts = [*node("n1"), *node("n2"),
             f("dns_service", "cluster", namespace="kube-system", name="kube-dns",
               cluster_ip=DNS_VIP)]
    for name in ("n1", "n2"):
        vip = f"{DNS_VIP}/32" if bound or name == "n2" else None
        facts += [
            iface(name, "kube-ipvs0", "dummy", 1500, vip, state="DOWN", admin_up=False,
                  lower_up=False),
            *(f("ipvs_service", name, proto=proto, address=DNS_VIP, port=53, fwmark=None,
                scheduler="rr", real_servers=len(reals.split(",")) if reals else 0,
                active_conns=0, inactive_conns=0, backends=reals) for proto in protos),
        ]
        if not ipvs_filter:
            continue
        facts += [
            chain(name, "filter", "KUBE-IPVS-FILTER", None),
            ipt(name, "filter", "-A INPUT -m comment --comment \"kubernetes ipvs access "
                "filter\" -j KUBE-IPVS-FILTER", 1),
            ipt(name, "filter", "-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP "
                "dst,dst -j RETURN", 1),
            ipt(name, "filter", "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set "
                "--match-set KUBE-IPVS-IPS dst -j REJECT", 2),
        ]
        if sets:
            facts += [_ipset(name, "KUBE-CLUSTER-IP", "hash:ip,port",
                             " ".join(f"{DNS_VIP},{p.lower()}:53" for p in protos)),
                      _ipset(name, "KUBE-IPVS-IPS", "hash:ip", DNS_VIP)]
    return facts + list(extra)


def _service_paths(facts: list, node_name: str = "n1", proto: str = "udp") -> list[dict]:
    """The verdicts of the DNS Service's flow on the node (UDP; its TCP one goes alike)."""
    return [p.attrs for p in path_facts(facts) if p.kind == "path" and p.node == node_name
            and p.attrs["flow"] == "service" and p.attrs["proto"] == proto]


def test_a_service_that_ipvs_serves_passes_through_ipvs_to_its_real_server():
    facts = _cluster()
    assert _service_paths(facts) == []
    walked = next(p for p in path_facts(facts) if p.kind == "path_walk" and p.node == "n1")
    assert "service" in walked.attrs["kinds"] and walked.attrs["unknown"] == 0


def test_the_real_server_leg_leaves_by_the_output_hook_not_forward():
    # IPVS sends the packet on from the input hook: FORWARD never sees it, OUTPUT does
    forward_drop = ipt("n1", "filter", f"-A FORWARD -d {BACKEND}/32 -j DROP", 1)
    assert _service_paths(_cluster(extra=(forward_drop,))) == []
    output_drop = ipt("n1", "filter", f"-A OUTPUT -d {BACKEND}/32 -j DROP", 1)
    [p] = _service_paths(_cluster(extra=(output_drop,)))
    assert (p["verdict"], p["chain"], p["dst"], p["dport"]) == ("drop", "OUTPUT", DNS_VIP, 53)
    assert "IPVS to 10.244.2.5:53" in p["detail"]


def test_a_virtual_server_with_no_real_server_is_refused_by_ipvs():
    [p] = _service_paths(_cluster(reals=""))
    assert (p["verdict"], p["stage"], p["owner"]) == ("reject", "ipvs", "kube-proxy")
    assert "no real server" in p["at"]


def test_a_vip_missing_from_kube_ipvs0_never_reaches_ipvs():
    [p] = _service_paths(_cluster(bound=False))
    assert (p["verdict"], p["stage"], p["owner"]) == ("drop", "ipvs", "kube-proxy")
    assert "not an address of this node" in p["detail"] or "not a local address" in p["rule"]
    assert _service_paths(_cluster(bound=False), "n2") == []  # n2 binds it


def test_without_the_ipsets_the_walk_names_the_set_it_could_not_read():
    [p] = _service_paths(_cluster(sets=False))
    assert p["verdict"] == "unknown"
    assert "-m set --match-set KUBE-" in p["at"]


def test_a_bound_vip_without_the_virtual_server_for_that_port_is_refused_or_unanswered():
    # the VIP is bound (its UDP port is served) but IPVS has nothing on TCP 53: kube-proxy's
    # own input filter refuses new connections to its VIPs that no virtual server takes
    [p] = _service_paths(_cluster(protos=("UDP",)), proto="tcp")
    assert (p["verdict"], p["chain"], p["owner"]) == ("reject", "KUBE-IPVS-FILTER", "kube-proxy")
    # without that filter the packet is delivered to the node, where nothing listens
    [p] = _service_paths(_cluster(protos=("UDP",), ipvs_filter=False), proto="tcp")
    assert (p["verdict"], p["owner"]) == ("drop", "kube-proxy")
    assert "nothing translates 10.96.0.10:53" in p["at"]


def test_an_icmp_packet_against_a_port_set_not_read_in_full_is_undecided():
    cut = index("hash:ip,port", "10.96.0.10,udp:53", complete=False)
    assert lookup(cut, ["dst", "dst"], _pkt("10.244.1.2", DNS_VIP, "icmp", None)) is None
