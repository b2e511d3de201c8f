"""NetworkPolicy semantics (facts/netpol.py): each clause of the API's definition on a flow a
user would write, and invariants that must hold for any policy set."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubenetdiag.facts.netpol import (
    Peer,
    PolicyError,
    check_policy,
    evaluate,
    near_misses,
    policy_types,
    selector_matches,
)


def pol(ns: str, name: str, **spec) -> dict:
    spec.setdefault("podSelector", {})
    return {"metadata": {"namespace": ns, "name": name}, "spec": spec}


def pod(ns: str, name: str, ip: str, node: str = "n1", ns_labels: dict | None = None,
        ports: tuple = (), **labels: str) -> Peer:
    return Peer(ip=ip, namespace=ns, labels=labels,
                ns_labels={"kubernetes.io/metadata.name": ns, **(ns_labels or {})},
                ports=ports, node=node, name=f"{ns}/{name}")


WEB = pod("shop", "web-1", "10.244.1.5", node="n1", app="web", tier="front")
DB = pod("shop", "db-0", "10.244.2.7", node="n2", ports=(("pg", 5432, "TCP"),), app="db")
DNS = pod("kube-system", "coredns-0", "10.244.3.3", node="n3", k8s_app="kube-dns",
          ports=(("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")))
OUTSIDE = Peer(ip="192.0.2.10")


def test_no_policy_allows_everything():
    v = evaluate([], WEB, DB, 5432)
    assert v.allowed is True and not v.egress.isolated and not v.ingress.isolated


def test_default_deny_ingress_names_the_policy_and_the_side():
    v = evaluate([pol("shop", "deny-all", ingress=[])], WEB, DB, 5432)
    assert v.allowed is False
    assert v.denied_on == "ingress"
    assert v.isolating == ("shop/deny-all",)


def test_default_deny_egress_stops_dns_from_the_namespace():
    deny = pol("shop", "deny-egress", policyTypes=["Egress"])
    v = evaluate([deny], WEB, DNS, 53, "UDP")
    assert (v.allowed, v.denied_on, v.isolating) == (False, "egress", ("shop/deny-egress",))


def test_policy_types_default_ingress_and_egress_only_with_egress_rules():
    assert policy_types({"ingress": []}) == ("Ingress",)
    assert policy_types({"egress": [{}]}) == ("Ingress", "Egress")
    assert policy_types({"egress": []}) == ("Ingress",)
    assert policy_types({"policyTypes": ["Egress"]}) == ("Egress",)
    # an egress-only list without policyTypes: ingress is isolated and denied, egress is open
    v = evaluate([pol("shop", "p", egress=[{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}])],
                 DB, WEB, 80)
    assert v.egress.allowed is True and v.ingress.allowed is False


def test_allow_all_rule_and_empty_peer_allow_everything():
    assert evaluate([pol("shop", "open", ingress=[{}])], WEB, DB, 1).allowed is True
    assert evaluate([pol("shop", "open", ingress=[{"from": [{}]}])], OUTSIDE, DB, 1).allowed


def test_pod_selector_peer_is_the_policy_namespace_only():
    p = pol("shop", "from-web", podSelector={"matchLabels": {"app": "db"}},
            ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}])
    assert evaluate([p], WEB, DB, 5432).allowed is True
    other_web = pod("blog", "web-1", "10.244.1.9", app="web")
    v = evaluate([p], other_web, DB, 5432)
    assert v.allowed is False and v.denied_on == "ingress"


def test_namespace_and_pod_selector_in_one_peer_are_and():
    peer = {"namespaceSelector": {"matchLabels": {"team": "blog"}},
            "podSelector": {"matchLabels": {"app": "web"}}}
    p = pol("shop", "blog-web", podSelector={"matchLabels": {"app": "db"}},
            ingress=[{"from": [peer]}])
    blog_web = pod("blog", "web", "10.244.1.9", ns_labels={"team": "blog"}, app="web")
    blog_job = pod("blog", "job", "10.244.1.10", ns_labels={"team": "blog"}, app="job")
    assert evaluate([p], blog_web, DB, 5432).allowed is True
    assert evaluate([p], blog_job, DB, 5432).allowed is False
    # two peers instead of one: OR, so the job gets in through the namespace alone
    p2 = pol("shop", "or", podSelector={"matchLabels": {"app": "db"}},
             ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"team": "blog"}}},
                                {"podSelector": {"matchLabels": {"app": "web"}}}]}])
    assert evaluate([p2], blog_job, DB, 5432).allowed is True


@pytest.mark.parametrize("expr, labels, expected", [
    ({"key": "tier", "operator": "In", "values": ["front", "edge"]}, {"tier": "front"}, True),
    ({"key": "tier", "operator": "In", "values": ["front"]}, {}, False),
    ({"key": "tier", "operator": "NotIn", "values": ["front"]}, {"tier": "front"}, False),
    ({"key": "tier", "operator": "NotIn", "values": ["front"]}, {}, True),  # missing key passes
    ({"key": "tier", "operator": "Exists"}, {"tier": ""}, True),
    ({"key": "tier", "operator": "Exists"}, {}, False),
    ({"key": "tier", "operator": "DoesNotExist"}, {}, True),
    ({"key": "tier", "operator": "DoesNotExist"}, {"tier": "x"}, False),
])
def test_match_expressions(expr, labels, expected):
    assert selector_matches({"matchExpressions": [expr]}, labels) is expected


def test_match_labels_and_expressions_must_all_hold():
    sel = {"matchLabels": {"app": "web"},
           "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]}
    assert selector_matches(sel, {"app": "web", "tier": "front"})
    assert not selector_matches(sel, {"app": "web", "tier": "back"})


def test_ip_block_with_except():
    p = pol("shop", "egress-net", policyTypes=["Egress"],
            egress=[{"to": [{"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.8/29"]}}]}])
    assert evaluate([p], WEB, Peer(ip="192.0.2.20"), 443).allowed is True
    assert evaluate([p], WEB, OUTSIDE, 443).allowed is False  # .10 is in the except
    assert evaluate([p], WEB, Peer(ip="198.51.100.1"), 443).allowed is False


def test_named_port_resolves_on_the_destination_pod():
    p = pol("shop", "pg", podSelector={"matchLabels": {"app": "db"}},
            ingress=[{"ports": [{"port": "pg"}]}])
    assert evaluate([p], WEB, DB, 5432).allowed is True
    assert evaluate([p], WEB, DB, 5433).allowed is False
    # egress by name: an address outside the cluster has no named ports
    e = pol("shop", "e", policyTypes=["Egress"], egress=[{"ports": [{"port": "pg"}]}])
    assert evaluate([e], WEB, DB, 5432).allowed is True
    assert evaluate([e], WEB, Peer(ip="192.0.2.5"), 5432).allowed is False


def test_port_range_protocol_default_and_icmp():
    p = pol("shop", "range", podSelector={"matchLabels": {"app": "db"}},
            ingress=[{"ports": [{"port": 5000, "endPort": 5500}]}])
    assert evaluate([p], WEB, DB, 5432).allowed is True
    assert evaluate([p], WEB, DB, 5501).allowed is False
    assert evaluate([p], WEB, DB, 5432, "UDP").allowed is False  # the default protocol is TCP
    assert evaluate([p], WEB, DB, None, "ICMP").allowed is False  # a ping matches no port
    open_rule = pol("shop", "any", ingress=[{"from": [{"podSelector": {}}]}])
    assert evaluate([open_rule], WEB, DB, None, "ICMP").allowed is True


def test_dns_udp_only_breaks_tcp_fallback():
    p = pol("shop", "dns-udp", policyTypes=["Egress"],
            egress=[{"ports": [{"port": 53, "protocol": "UDP"}]}])
    assert evaluate([p], WEB, DNS, 53, "UDP").allowed is True
    v = evaluate([p], WEB, DNS, 53, "TCP")
    assert (v.allowed, v.denied_on) == (False, "egress")


def test_a_rule_for_dns_by_a_namespace_label_nobody_set_is_the_near_miss():
    # guides written before the API server labelled namespaces itself select `name`
    p = pol("shop", "egress", policyTypes=["Egress"], egress=[
        {"to": [{"podSelector": {"matchLabels": {"app": "db"}}}]},
        {"to": [{"namespaceSelector": {"matchLabels": {"name": "kube-system"}}}],
         "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}])
    assert evaluate([p], WEB, DNS, 53, "UDP").allowed is False
    assert near_misses([p], "egress", WEB, DNS, 53, "UDP", DNS) == (
        "shop/egress egress rule 2: port 53 only to namespaces name=kube-system, which "
        "kube-system is not (kubernetes.io/metadata.name=kube-system)",)
    # selecting by the label the API server sets allows it, and nothing is missed
    fixed = pol("shop", "egress", policyTypes=["Egress"], egress=[
        {"to": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "kube-system"}}}],
         "ports": [{"port": 53, "protocol": "UDP"}]}])
    assert evaluate([fixed], WEB, DNS, 53, "UDP").allowed is True


def test_an_ingress_rule_for_the_port_from_pods_with_other_labels_is_the_near_miss():
    p = pol("shop", "db-in", podSelector={"matchLabels": {"app": "db"}}, ingress=[
        {"from": [{"podSelector": {"matchExpressions": [
            {"key": "app", "operator": "In", "values": ["api", "frontend"]}]}}],
         "ports": [{"port": "pg"}]}])
    assert near_misses([p], "ingress", DB, WEB, 5432, "TCP", DB) == (
        "shop/db-in ingress rule 1: port 5432 only from pods app in (api,frontend), which "
        "shop/web-1 is not (app=web,tier=front)",)
    # a podSelector alone means the policy's own namespace
    other_ns = pod("shop-b", "web-1", "10.244.1.9", app="api")
    assert near_misses([p], "ingress", DB, other_ns, 5432, "TCP", DB) == (
        "shop/db-in ingress rule 1: port 5432 only from pods app in (api,frontend) of shop "
        "only (shop-b/web-1 is in shop-b)",)


def test_an_ip_block_whose_exception_holds_the_endpoint_is_the_near_miss():
    p = pol("shop", "egress-db", policyTypes=["Egress"], egress=[
        {"to": [{"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.0/28"]}}],
         "ports": [{"port": 5432}]}])
    assert evaluate([p], WEB, OUTSIDE, 5432).allowed is False
    assert near_misses([p], "egress", WEB, OUTSIDE, 5432, "TCP", OUTSIDE) == (
        "shop/egress-db egress rule 1: port 5432 only to 192.0.2.0/24 except 192.0.2.0/28, "
        "which holds 192.0.2.10",)
    other = pol("shop", "egress-db", policyTypes=["Egress"], egress=[
        {"to": [{"ipBlock": {"cidr": "198.51.100.0/24"}}], "ports": [{"port": 5432}]}])
    assert near_misses([other], "egress", WEB, OUTSIDE, 5432, "TCP", OUTSIDE) == (
        "shop/egress-db egress rule 1: port 5432 only to 198.51.100.0/24, which does not hold "
        "192.0.2.10",)


@pytest.mark.parametrize("rule", [
    {"to": [{"namespaceSelector": {"matchLabels": {"name": "x"}}}],
     "ports": [{"port": 80}]},  # another port: not meant for this flow
    {"to": [{"namespaceSelector": {"matchLabels": {"name": "x"}}}]},  # every port: no intent
    # the block holds the far end: it matches, the rule is not missed
    {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 53, "protocol": "UDP"}]},
    {"to": [{"namespaceSelector": {"matchLabels": {"name": "x"}}}, {"podSelector": {}}],
     "ports": [{"port": 53, "protocol": "UDP"}]},  # its other peer matches: not missed
])
def test_rules_not_meant_for_the_flow_are_no_near_miss(rule):
    p = pol("kube-system", "p", podSelector={}, policyTypes=["Egress"], egress=[rule])
    me = pod("kube-system", "coredns-1", "10.244.3.4", k8s_app="kube-dns")
    assert near_misses([p], "egress", me, DNS, 53, "UDP", DNS) == ()


def test_both_sides_must_allow():
    egress_ok = pol("shop", "web-out", podSelector={"matchLabels": {"app": "web"}},
                    policyTypes=["Egress"], egress=[{}])
    ingress_no = pol("kube-system", "dns-deny", podSelector={"matchLabels":
                                                              {"k8s_app": "kube-dns"}})
    v = evaluate([egress_ok, ingress_no], WEB, DNS, 53, "UDP")
    assert (v.allowed, v.denied_on, v.isolating) == (False, "ingress",
                                                      ("kube-system/dns-deny",))
    assert v.allowing == ("shop/web-out",)


def test_host_network_and_outside_are_not_isolated_and_matched_by_ip_block_only():
    node = Peer(ip="198.18.0.1", node="n1", name="n1")  # DB runs on n2
    deny = pol("shop", "deny-all", ingress=[])
    assert evaluate([deny], node, DB, 5432).allowed is False
    allow_pods = pol("shop", "pods", ingress=[{"from": [{"namespaceSelector": {}}]}])
    assert evaluate([allow_pods], node, DB, 5432).allowed is False  # a node is not a pod
    by_ip = pol("shop", "nodes", ingress=[{"from": [{"ipBlock": {"cidr": "198.18.0.0/24"}}]}])
    assert evaluate([by_ip], node, DB, 5432).allowed is True


def test_own_node_always_allowed_in_and_unknown_source_address():
    deny = pol("shop", "deny-all", ingress=[])
    assert evaluate([deny], Peer(ip=None, node="n2", name="n2"), DB, 5432).allowed is True
    # the pod's own traffic to its node is its egress: an egress policy listing only pods
    # stops it, as kube-router enforces it
    only_pods = pol("shop", "to-pods", egress=[{"to": [{"podSelector": {}}]}])
    node_ip = Peer(ip="198.18.0.12", node="n2", name="n2")
    assert evaluate([only_pods], DB, node_ip, None, "ICMP").allowed is False
    by_ip = pol("shop", "nodes", ingress=[{"from": [{"ipBlock": {"cidr": "198.18.0.0/24"}}]}])
    # a node's traffic to another node's pod: its address on the wire is not known
    assert evaluate([by_ip], Peer(ip=None, node="n1", name="n1"), DB, 5432).allowed is None
    # but a deny-all does not depend on it
    assert evaluate([deny], Peer(ip=None, node="n1", name="n1"), DB, 5432).allowed is False


def test_a_pod_to_itself_is_allowed():
    assert evaluate([pol("shop", "deny", ingress=[], policyTypes=["Ingress", "Egress"])],
                    DB, DB, 5432).allowed is True


@pytest.mark.parametrize("bad", [
    "not a dict",
    {"spec": "x"},
    {"spec": {"podSelector": []}},
    {"spec": {"ingress": {"from": []}}},
    {"spec": {"ingress": [{"from": [{"podSelector": {"matchExpressions": [
        {"key": "a", "operator": "Like", "values": ["x"]}]}}]}]}},
    {"spec": {"ingress": [{"from": [{"ipBlock": {"cidr": "nonsense"}}]}]}},
    {"spec": {"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"},
                                     "podSelector": {}}]}]}},
    {"spec": {"egress": [{"ports": [{"protocol": "ICMP"}]}]}},
    {"spec": {"egress": [{"ports": [{"port": "dns", "endPort": 60}]}]}},
    {"spec": {"policyTypes": "Ingress"}},
])
def test_malformed_policies_are_refused_with_a_reason(bad):
    with pytest.raises(PolicyError):
        check_policy(bad)


# ---------------------------------------------------------------- invariants

label = st.sampled_from(["app", "tier", "team"])
value = st.sampled_from(["web", "db", "front", "a"])
labels_st = st.dictionaries(label, value, max_size=3)
selector_st = st.one_of(
    st.just({}),
    st.builds(lambda m: {"matchLabels": m}, labels_st),
    st.builds(lambda k, op, vs: {"matchExpressions": [
        {"key": k, "operator": op, **({"values": vs} if op in ("In", "NotIn") else {})}]},
        label, st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]),
        st.lists(value, min_size=1, max_size=2)),
)
peer_st = st.one_of(
    st.builds(lambda s: {"podSelector": s}, selector_st),
    st.builds(lambda s: {"namespaceSelector": s}, selector_st),
    st.builds(lambda a, b: {"podSelector": a, "namespaceSelector": b}, selector_st, selector_st),
    st.builds(lambda c: {"ipBlock": {"cidr": c}},
              st.sampled_from(["10.244.0.0/16", "10.244.1.0/24", "192.0.2.0/24"])),
)
port_st = st.builds(lambda p, proto: {"port": p, "protocol": proto},
                    st.sampled_from([53, 80, 5432, "pg", "dns"]),
                    st.sampled_from(["TCP", "UDP"]))
rule_st = st.builds(lambda peers, ports: {"from": peers, "to": peers, "ports": ports},
                    st.lists(peer_st, max_size=2), st.lists(port_st, max_size=2))
policy_st = st.builds(
    lambda ns, sel, types, ing, eg: pol(ns, "p", podSelector=sel, policyTypes=types,
                                        ingress=ing, egress=eg),
    st.sampled_from(["shop", "kube-system", "blog"]), selector_st,
    st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"]]),
    st.lists(rule_st, max_size=2), st.lists(rule_st, max_size=2))
pod_st = st.builds(
    lambda ns, i, labels: pod(ns, f"p{i}", f"10.244.{i}.{i + 2}", node=f"n{i}",
                              ports=(("pg", 5432, "TCP"), ("dns", 53, "UDP")), **labels),
    st.sampled_from(["shop", "kube-system", "blog"]), st.integers(0, 5), labels_st)
flow_st = st.tuples(pod_st, pod_st, st.sampled_from([53, 80, 5432, None]),
                    st.sampled_from(["TCP", "UDP", "ICMP"]))


@settings(max_examples=300)
@given(st.lists(policy_st, max_size=4), flow_st)
def test_generated_policies_are_valid_and_evaluate(policies, flow):
    for p in policies:
        check_policy(p)
    src, dst, port, proto = flow
    v = evaluate(policies, src, dst, port, proto)
    # a denial always names the side and the policies that isolate it
    if v.allowed is False:
        assert v.denied_on and v.isolating


@settings(max_examples=300)
@given(st.lists(policy_st, max_size=4), flow_st, st.sampled_from(["shop", "kube-system", "blog"]))
def test_an_allow_all_policy_on_both_sides_never_denies(policies, flow, _ns):
    src, dst, port, proto = flow
    opened = policies + [
        pol(src.namespace, "allow-out", policyTypes=["Egress"], egress=[{}]),
        pol(dst.namespace, "allow-in", ingress=[{}]),
    ]
    assert evaluate(opened, src, dst, port, proto).allowed is True


@settings(max_examples=300)
@given(st.lists(policy_st, max_size=4), policy_st, flow_st)
def test_adding_a_policy_only_adds_isolation_and_allows_on_isolated_sides(
        policies, extra, flow):
    # policies are additive allow-lists: a side once isolated stays isolated, and a flow both
    # isolated sides allowed is still allowed (a new policy can only allow more there). A
    # flow allowed because a side was not isolated may well become denied: that is not it.
    src, dst, port, proto = flow
    before = evaluate(policies, src, dst, port, proto)
    after = evaluate(policies + [extra], src, dst, port, proto)
    if before.allowed and before.egress.isolated and before.ingress.isolated:
        assert after.allowed is True
    # and a side that was isolated stays isolated
    assert after.egress.isolated >= before.egress.isolated
    assert after.ingress.isolated >= before.ingress.isolated


@settings(max_examples=300)
@given(st.lists(policy_st, max_size=4), flow_st)
def test_a_flow_no_policy_selects_either_side_of_is_allowed(policies, flow):
    src, dst, port, proto = flow
    v = evaluate(policies, src, dst, port, proto)
    if not v.egress.isolated and not v.ingress.isolated:
        assert v.allowed is True
