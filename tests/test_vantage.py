"""Vantage-point reasoning (facts/vantage.py): from the active results, the smallest explanation
of what failed, before any rule runs. Each case is what an SRE would conclude from the same
matrix: which node to blame, or that no single node can be blamed."""

from __future__ import annotations

import itertools

import pytest

from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.facts.registry import validate_fact
from kubenetdiag.facts.vantage import AddressBook, vantage_facts


def fact(fact_kind: str, node: str, **attrs: object) -> Fact:
    return Fact(fact_kind, node, dict(attrs))


def nodes(n: int) -> list[str]:
    return [f"n{i}" for i in range(1, n + 1)]


def cluster(n: int, *, unreachable: tuple[str, ...] = ()) -> list[Fact]:
    """node_status, API nodes with pod CIDRs, one CoreDNS pod on n1, the DNS Service."""
    out = []
    for i, name in enumerate(nodes(n), start=1):
        out.append(fact("node_status", name, reachable=name not in unreachable,
                        address=f"10.0.0.{i}", reason=None))
        out.append(fact("k8s_node", name, name=name, internal_ip=f"10.0.0.{i}",
                        pod_cidr=f"10.244.{i}.0/24"))
    out.append(fact("dns_pod", "n1", pod="coredns-0", ip="10.244.1.3", ready=True, restarts=0))
    out.append(fact("dns_service", "cluster", name="kube-dns", namespace="kube-system",
                    cluster_ip="10.96.0.10", cluster_domain="cluster.local"))
    return out


def reach(src: str, dst: str, ok: bool, layer: str = "pod", vantage: str | None = None) -> Fact:
    return fact("reach", src, src=src, dst=dst, layer=layer, ok=ok, rtt_ms=None,
                detail=None if ok else "timeout", vantage=vantage)


def matrix(names: list[str], fails: set[tuple[str, str]], layer: str = "pod",
           skip: set[tuple[str, str]] = frozenset()) -> list[Fact]:
    """Every ordered pair measured at `layer` (but `skip`), failing where `fails` says."""
    return [reach(s, d, (s, d) not in fails, layer) for s, d in itertools.permutations(names, 2)
            if (s, d) not in skip]


def cut(x: str, names: list[str], inbound: bool = True, outbound: bool = True
        ) -> set[tuple[str, str]]:
    return ({(s, x) for s in names if s != x} if inbound else set()) | (
        {(x, d) for d in names if d != x} if outbound else set())


def by_kind(facts: list[Fact], kind: str) -> list[Fact]:
    return [f for f in facts if f.kind == kind]


def cut_offs(facts: list[Fact]) -> dict[tuple[str, str], str]:
    """(node, layer) -> direction."""
    return {(f.node, str(f.attrs["layer"])): str(f.attrs["direction"])
            for f in by_kind(facts, "cut_off")}


def pairs(facts: list[Fact]) -> set[tuple[str, str, str]]:
    return {(f.node, str(f.attrs["dst"]), str(f.attrs["reverse"]))
            for f in by_kind(facts, "reach_pair")}


# ---------------------------------------------------------------- the node x node matrix


def test_three_nodes_one_cut_off_both_ways_is_that_node_alone() -> None:
    names = nodes(3)
    out = vantage_facts(cluster(3) + matrix(names, cut("n3", names)))
    assert cut_offs(out) == {("n3", "pod"): "both"}
    assert pairs(out) == set()  # not "n1, n2, n3 cannot reach n1, n2, n3"
    (c,) = by_kind(out, "cut_off")
    assert c.attrs["failing"] == "n1, n2" and c.attrs["witnesses"] == "n1, n2"
    assert c.attrs["peers"] == 2
    assert "n1 -> n3: timeout" in c.source.excerpt and "n3 -> n2: timeout" in c.source.excerpt


@pytest.mark.parametrize("inbound,outbound,direction,seen_in,seen_out", [
    (True, False, "inbound", "all_failed", "ok"),
    (False, True, "outbound", "ok", "all_failed"),
    (True, True, "both", "all_failed", "all_failed"),
])
def test_five_nodes_one_direction(inbound: bool, outbound: bool, direction: str, seen_in: str,
                                  seen_out: str) -> None:
    names = nodes(5)
    out = vantage_facts(cluster(5) + matrix(names, cut("n4", names, inbound, outbound)))
    assert cut_offs(out) == {("n4", "pod"): direction}
    (c,) = by_kind(out, "cut_off")
    assert (c.attrs["inbound"], c.attrs["outbound"]) == (seen_in, seen_out)
    assert c.attrs["peers"] == 4 and pairs(out) == set()


def test_two_of_five_cut_off_are_both_named_and_their_pair_is_theirs() -> None:
    names = nodes(5)
    out = vantage_facts(cluster(5) + matrix(names, cut("n2", names) | cut("n5", names)))
    assert cut_offs(out) == {("n2", "pod"): "both", ("n5", "pod"): "both"}
    assert pairs(out) == set()


def test_one_pair_one_direction_is_a_pair_not_a_node() -> None:
    names = nodes(3)
    out = vantage_facts(cluster(3) + matrix(names, {("n1", "n2")}))
    assert cut_offs(out) == {}
    assert pairs(out) == {("n1", "n2", "ok")}


def test_a_pair_failing_both_ways_is_a_tie_and_names_neither_node_alone() -> None:
    names = nodes(3)
    out = vantage_facts(cluster(3) + matrix(names, {("n1", "n2"), ("n2", "n1")}))
    assert cut_offs(out) == {}
    assert pairs(out) == {("n1", "n2", "failed"), ("n2", "n1", "failed")}


def test_two_nodes_that_cannot_reach_each_other_are_a_tie() -> None:
    names = nodes(2)
    out = vantage_facts(cluster(2) + matrix(names, {("n1", "n2"), ("n2", "n1")}))
    assert cut_offs(out) == {}  # nothing says which end is broken
    assert pairs(out) == {("n1", "n2", "failed"), ("n2", "n1", "failed")}


def test_two_halves_of_four_nodes_are_a_tie_too() -> None:
    names = nodes(4)
    split = {(a, b) for a in ("n1", "n2") for b in ("n3", "n4")}
    out = vantage_facts(cluster(4) + matrix(names, split | {(b, a) for a, b in split}))
    assert cut_offs(out) == {} and len(pairs(out)) == 8


def test_a_layer_that_fails_everywhere_blames_no_node() -> None:
    names = nodes(3)
    out = vantage_facts(cluster(3) + matrix(names, set(itertools.permutations(names, 2))))
    assert cut_offs(out) == {} and len(pairs(out)) == 6


def test_not_measured_is_not_failed() -> None:
    names = nodes(4)
    # n3 never probed n4 (e.g. no pod address known there): n4 is still cut off from the two
    # that did, and n3 appears nowhere as failing
    out = vantage_facts(cluster(4) + matrix(names, cut("n4", names, outbound=False),
                                            skip={("n3", "n4")}))
    assert cut_offs(out) == {("n4", "pod"): "inbound"}
    (c,) = by_kind(out, "cut_off")
    assert c.attrs["failing"] == "n1, n2"
    # a pair nobody measured gets no fact at all
    assert all(f.attrs["dst"] != "n4" or f.node != "n3" for f in by_kind(out, "reach_pair"))


def test_one_peer_alone_cannot_blame_a_node() -> None:
    names = nodes(3)
    # only n1 measured n3, and failed: n1's path is as likely as n3
    out = vantage_facts(cluster(3) + matrix(names, {("n1", "n3")}, skip={("n2", "n3")}))
    assert cut_offs(out) == {} and pairs(out) == {("n1", "n3", "ok")}


def test_a_node_unreachable_by_ssh_sent_nothing_and_is_still_seen_from_its_peers() -> None:
    names = nodes(3)
    facts = cluster(3, unreachable=("n3",)) + [
        f for f in matrix(names, cut("n3", names)) if f.node != "n3"]
    out = vantage_facts(facts)
    assert cut_offs(out) == {("n3", "pod"): "inbound"}
    (c,) = by_kind(out, "cut_off")
    assert (c.attrs["inbound"], c.attrs["outbound"]) == ("all_failed", "unmeasured")
    # nothing was read on it, so no list of checks done there
    assert [f.node for f in by_kind(out, "node_checks")] == []


def test_a_failure_from_inside_a_pod_fails_the_pair() -> None:
    names = nodes(3)
    facts = cluster(3) + matrix(names, set()) + [reach("n1", "n2", False, vantage="cni-a")]
    assert pairs(vantage_facts(facts)) == {("n1", "n2", "ok")}


def test_layers_are_judged_apart() -> None:
    names = nodes(3)
    facts = cluster(3) + matrix(names, cut("n2", names), "underlay") + matrix(names, set())
    assert cut_offs(vantage_facts(facts)) == {("n2", "underlay"): "both"}


def test_healthy_gives_nothing() -> None:
    names = nodes(5)
    facts = cluster(5) + matrix(names, set()) + matrix(names, set(), "underlay")
    assert vantage_facts(facts) == []


# ---------------------------------------------------------------- targets


def dns(node: str, server: str, ok: bool, kind: str = "pod", detail: str = "timeout") -> Fact:
    return fact("dns_check", node, server=server, server_kind=kind,
                name="kubernetes.default.svc.cluster.local", ok=ok,
                answer="10.96.0.1" if ok else None, detail=None if ok else detail,
                rtt_ms=None, vantage=None)


def tcp(node: str, target: str, ok: bool, detail: str = "timeout",
        vantage: str | None = None) -> Fact:
    host = target.rsplit(":", 1)[0]
    return fact("tcp_check", node, target=target, address=host, by="ip", ok=ok,
                detail=None if ok else detail, rtt_ms=None, vantage=vantage)


def failures(facts: list[Fact]) -> set[tuple[str, str, str, str]]:
    """(node it localizes to, target, src, localized)."""
    return {(f.node, str(f.attrs["target"]), str(f.attrs["src"]), str(f.attrs["localized"]))
            for f in by_kind(facts, "target_failure")}


def test_coredns_that_answers_two_nodes_is_not_down() -> None:
    facts = cluster(3) + [dns("n1", "10.244.1.3", True), dns("n2", "10.244.1.3", True),
                          dns("n3", "10.244.1.3", False)]
    out = vantage_facts(facts)
    assert failures(out) == {("n3", "10.244.1.3", "n3", "vantage")}
    (f,) = by_kind(out, "target_failure")
    assert f.attrs["answering"] == "n1, n2" and f.attrs["host"] == "n1"
    assert (f.attrs["tried"], f.attrs["failed"]) == (3, 1)
    # the node the failure localizes to gets the list of what was read there
    assert [c.node for c in by_kind(out, "node_checks")] == ["n3"]


def test_coredns_that_answers_nobody_is_the_target() -> None:
    facts = cluster(3) + [dns(n, "10.244.1.3", False) for n in nodes(3)]
    out = vantage_facts(facts)
    assert {(n, loc) for n, _, _, loc in failures(out)} == {("n1", "target")}
    assert {src for _, _, src, _ in failures(out)} == {"n1", "n2", "n3"}


def test_the_cut_off_node_explains_its_own_failures_and_those_into_it() -> None:
    names = nodes(3)
    facts = cluster(3) + matrix(names, cut("n1", names)) + matrix(names, set(), "underlay") + [
        # CoreDNS runs on n1, which is cut off: n2 and n3 fail to reach it, n1 answers itself
        dns("n1", "10.244.1.3", True), dns("n2", "10.244.1.3", False),
        dns("n3", "10.244.1.3", False),
        # the VIP: n1's query crosses the pod network it is cut off from
        dns("n1", "10.96.0.10", False, "service"), dns("n2", "10.96.0.10", True, "service"),
        dns("n3", "10.96.0.10", True, "service")]
    assert failures(vantage_facts(facts)) == {
        ("n1", "10.244.1.3", "n2", "host_cut_off"), ("n1", "10.244.1.3", "n3", "host_cut_off"),
        ("n1", "10.96.0.10", "n1", "vantage_cut_off")}


def test_a_failure_between_two_nodes_that_fail_with_each_other_is_that_pairs() -> None:
    # node2 has no route back to node1's pods: the pair fails both ways in the matrix, and
    # node1's connect to the web pod on node2 fails with it; node3 and node2 connect
    names = nodes(3)
    facts = cluster(3) + matrix(names, {("n1", "n2"), ("n2", "n1")}) + [
        tcp("n1", "10.244.2.5:8080", False), tcp("n2", "10.244.2.5:8080", True),
        tcp("n3", "10.244.2.5:8080", True)]
    out = vantage_facts(facts)
    assert failures(out) == {("n1", "10.244.2.5:8080", "n1", "pair")}
    # it is not n1's own failure: nothing is listed as read there
    assert by_kind(out, "node_checks") == []


def test_the_dns_vip_behind_a_failed_pair_is_that_pairs() -> None:
    # n2 and n1 fail with each other; the only CoreDNS pod runs on n1, so n2's query to the
    # VIP crosses that pair whichever endpoint kube-proxy picks: not n2's own failure
    names = nodes(3)
    facts = cluster(3) + matrix(names, {("n1", "n2"), ("n2", "n1")}, "underlay") + [
        dns("n1", "10.96.0.10", True, "service"), dns("n2", "10.96.0.10", False, "service"),
        dns("n3", "10.96.0.10", True, "service")]
    out = vantage_facts(facts)
    assert failures(out) == {("n2", "10.96.0.10", "n2", "pair")}
    (f,) = by_kind(out, "target_failure")
    assert f.attrs["host"] == "n1" and f.attrs["place"] == "service"
    # with a second CoreDNS pod on n3, which n2 reaches, the VIP's failure is n2's own
    facts.append(fact("dns_pod", "n3", pod="coredns-1", ip="10.244.3.3", ready=True,
                      restarts=0))
    assert failures(vantage_facts(facts)) == {("n2", "10.96.0.10", "n2", "vantage")}


def test_a_refusal_is_an_answer_a_cut_off_node_does_not_account_for() -> None:
    names = nodes(3)
    facts = cluster(3) + matrix(names, cut("n3", names)) + [
        tcp(n, "10.244.2.5:8080", False, "refused") for n in names]
    out = vantage_facts(facts)
    assert {(n, src, loc) for n, _, src, loc in failures(out)} == {
        ("n2", "n1", "target"), ("n2", "n2", "target"), ("n2", "n3", "target")}


def test_only_the_targets_own_node_gets_through_localizes_to_the_way_into_it() -> None:
    facts = cluster(3) + [tcp("n1", "10.244.2.5:8080", False, "refused"),
                          tcp("n3", "10.244.2.5:8080", False, "refused"),
                          tcp("n2", "10.244.2.5:8080", True)]
    assert failures(vantage_facts(facts)) == {
        ("n2", "10.244.2.5:8080", "n1", "host_path"), ("n2", "10.244.2.5:8080", "n3", "host_path")}


def test_a_pod_on_the_targets_node_failing_too_is_on_the_way_into_that_node() -> None:
    # a REJECT in node2's FORWARD chain: only node2 itself reaches its pod; node1, node3 and
    # a pod on node2 (bridged through FORWARD) are refused. Not node1's or node3's fault.
    facts = cluster(3) + [tcp("n2", "10.244.2.5:8080", True)] + [
        tcp(n, "10.244.2.5:8080", False, "refused", vantage=v)
        for n in nodes(3) for v in (None, f"cni-{n}") if (n, v) != ("n2", None)]
    assert {(n, loc) for n, _, _, loc in failures(vantage_facts(facts))} == {("n2", "host_path")}


def test_one_sender_against_the_targets_own_node_is_a_tie_left_with_the_sender() -> None:
    # n1 fails, only n2 (where the pod runs) gets through: n1's way out is as likely as the way
    # into n2, so it is not blamed on n2
    facts = cluster(2) + [tcp("n1", "10.244.2.5:8080", False), tcp("n2", "10.244.2.5:8080", True)]
    assert failures(vantage_facts(facts)) == {("n1", "10.244.2.5:8080", "n1", "vantage")}


def test_a_pod_that_fails_where_its_node_connects_localizes_to_that_node() -> None:
    facts = cluster(3) + [tcp(n, "203.0.113.10:3306", True) for n in nodes(3)] + [
        tcp("n2", "203.0.113.10:3306", False, vantage="cni-b")]
    out = vantage_facts(facts)
    assert failures(out) == {("n2", "203.0.113.10:3306", "n2", "vantage")}
    (f,) = by_kind(out, "target_failure")
    assert f.attrs["vantage"] == "cni-b" and f.attrs["place"] == "outside"


def test_an_outside_endpoint_refused_everywhere_is_the_clusters_not_each_nodes() -> None:
    facts = cluster(3) + [tcp(n, "203.0.113.10:3306", False, "refused") for n in nodes(3)]
    assert {(n, loc) for n, _, _, loc in failures(vantage_facts(facts))} == {
        ("cluster", "target")}


def test_a_target_with_one_unreachable_vantage_point_counts_only_those_that_tried() -> None:
    facts = cluster(3, unreachable=("n3",)) + [dns("n1", "10.244.1.3", True),
                                               dns("n2", "10.244.1.3", False)]
    (f,) = by_kind(vantage_facts(facts), "target_failure")
    assert (f.node, f.attrs["localized"], f.attrs["tried"]) == ("n2", "vantage", 2)


def splits(facts: list[Fact]) -> dict[str, tuple[str, str, str]]:
    """node -> (branch, elsewhere, detail) of the endpoint_split facts."""
    return {f.node: (str(f.attrs["branch"]), str(f.attrs["elsewhere"]), str(f.attrs["detail"]))
            for f in by_kind(facts, "endpoint_split")}


DB = "203.0.113.10:3306"


def test_the_node_connects_and_its_pod_times_out_is_the_pods_way_out_on_that_node() -> None:
    facts = cluster(3) + [tcp(n, DB, True) for n in nodes(3)] + [
        tcp("n1", DB, True, vantage="cni-a"), tcp("n2", DB, False, vantage="cni-b"),
        tcp("n3", DB, True, vantage="cni-c")]
    assert splits(vantage_facts(facts)) == {"n2": ("pod_only", "ok", "timeout")}


def test_node_and_pod_both_time_out_while_the_others_connect_names_that_node_alone() -> None:
    facts = cluster(3) + [tcp("n1", DB, True), tcp("n2", DB, True),
                          tcp("n3", DB, False, "unreachable"),
                          tcp("n1", DB, True, vantage="cni-a"),
                          tcp("n3", DB, False, vantage="cni-c")]
    out = vantage_facts(facts)
    assert splits(out) == {"n3": ("both", "ok", "timeout")}
    (f,) = by_kind(out, "endpoint_split")
    assert (f.attrs["node_detail"], f.attrs["answering"]) == ("unreachable", "n1, n2")


def test_nobody_getting_through_is_said_on_every_node_as_failed_elsewhere() -> None:
    facts = cluster(2) + [tcp(n, DB, False) for n in nodes(2)] + [
        tcp(n, DB, False, vantage=f"cni-{n}") for n in nodes(2)]
    assert splits(vantage_facts(facts)) == {"n1": ("both", "failed", "timeout"),
                                            "n2": ("both", "failed", "timeout")}


def test_a_node_whose_pod_was_not_tried_is_unpaired_not_both() -> None:
    facts = cluster(2) + [tcp("n1", DB, False), tcp("n2", DB, True)]
    assert splits(vantage_facts(facts)) == {"n1": ("unpaired", "ok", "timeout")}


def test_endpoints_every_vantage_point_reaches_give_no_split() -> None:
    facts = cluster(2) + [tcp(n, DB, True) for n in nodes(2)] + [
        tcp("n1", DB, True, vantage="cni-a"), dns("n1", "10.244.1.3", False),
        dns("n2", "10.244.1.3", True)]
    assert by_kind(vantage_facts(facts), "endpoint_split") == []


def test_every_fact_conforms_to_the_registry() -> None:
    names = nodes(5)
    facts = cluster(5) + matrix(names, cut("n4", names) | {("n1", "n2")}) + [
        dns("n1", "10.244.1.3", False), dns("n2", "10.244.1.3", True),
        dns("n3", "10.96.0.10", False, "service"),
        tcp("n1", "10.244.2.5:8080", False, "refused"), tcp("n2", "10.244.2.5:8080", True),
        fact("http_check", "n1", url="http://10.244.1.3:9153/metrics", target="coredns_metrics",
             target_pod="coredns-0", status=None, ok=False, detail="timeout")]
    out = vantage_facts(facts)
    assert {f.kind for f in out} == {"cut_off", "reach_pair", "target_failure", "node_checks",
                                     "endpoint_split"}
    for f in out:
        assert validate_fact(f) == [], f


def test_node_checks_list_the_probes_that_answered_and_those_that_did_not() -> None:
    facts = cluster(3) + [dns("n1", "10.244.1.3", True), dns("n2", "10.244.1.3", False),
                          Fact("sysctl", "n2", {"key": "k"}, Source("sysctl")),
                          Fact("route", "n2", {"dst": "x"}, Source("routes")),
                          Fact("iptables_rule", "n2", {}, Source("iptables")),
                          fact("probe_status", "n2", probe="iptables", status="timeout",
                               reason="slow", blocks="x"),
                          fact("probe_status", "n2", probe="nftables", status="missing_tool",
                               reason="no nft", blocks="x")]
    (c,) = by_kind(vantage_facts(facts), "node_checks")
    assert c.node == "n2"
    assert c.attrs == {"checked": "routes, sysctl",
                       "unanswered": "iptables (timeout), nftables (missing_tool)"}


# ---------------------------------------------------------------- where an address lives


def book(*facts: Fact) -> AddressBook:
    picked: dict[str, list[Fact]] = {}
    for f in facts:
        picked.setdefault(f.kind, []).append(f)
    return AddressBook(picked)


def test_addresses_are_placed_from_whatever_facts_say_so() -> None:
    b = book(*cluster(3),
             fact("service_endpoints", "cluster", namespace="default", name="web",
                  cluster_ip="10.96.0.20", ready_endpoints=1, endpoints=1, zones=1,
                  zone_list="a", topology_aware=False))
    assert b.place("10.0.0.2") == ("node", "n2")
    assert b.place("10.244.3.7") == ("pod", "n3")  # n3's podCIDR
    assert b.place("10.244.1.3") == ("pod", "n1")  # the CoreDNS pod
    assert b.place("10.96.0.20") == ("service", None)
    assert b.place("203.0.113.10") == ("outside", None)
    assert b.place(None) == ("outside", None)


def test_without_the_api_flannel_calico_and_cni0_still_place_a_pod() -> None:
    flannel = book(fact("flannel_subnet", "n2", network="10.244.0.0/16",
                        subnet="10.244.2.1/24", mtu=1450, ipmasq=True))
    assert flannel.place("10.244.2.9") == ("pod", "n2")
    assert flannel.place("10.244.7.9") == ("pod", None)  # the cluster's, nobody's in particular
    calico = book(fact("route", "n3", table="main", type="unicast", dst="10.244.130.7",
                       gateway=None, dev="cali12ab", protocol="boot", scope="link",
                       onlink=False, linkdown=False),
                  fact("route", "n1", table="main", type="unicast", dst="10.244.130.0/26",
                       gateway="10.0.0.3", dev="eth0", protocol="bird", scope="global",
                       onlink=False, linkdown=False))
    assert calico.place("10.244.130.7") == ("pod", "n3")
    bridge = book(fact("interface", "n2", name="cni0", kind="bridge", addresses="10.244.2.1/24"),
                  fact("interface", "n1", name="docker0", kind="bridge",
                       addresses="172.17.0.1/16"),
                  fact("interface", "n2", name="docker0", kind="bridge",
                       addresses="172.17.0.1/16"))
    assert bridge.place("10.244.2.8") == ("pod", "n2")
    # every node's docker0 holds that network: it names no node
    assert bridge.place("172.17.0.5") == ("outside", None)


def test_two_nodes_claiming_one_range_name_neither() -> None:
    b = book(fact("k8s_node", "n1", name="n1", pod_cidr="10.244.1.0/24"),
             fact("k8s_node", "n2", name="n2", pod_cidr="10.244.1.0/24"))
    assert b.place("10.244.1.5") == ("pod", None)
