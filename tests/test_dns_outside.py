"""CoreDNS's way out: where the Corefile forwards, the .invalid name asked of each CoreDNS
pod, what its answers mean, and the rule that names a CoreDNS that answers the cluster's names
and no other.

The dig outputs are the ones test_active.py reads (recorded against a CoreDNS); the channel
lines are what kubenetdiag's own DNS-over-SSH client prints (collect/channel.py)."""

from __future__ import annotations

import copy

import pytest

from kubenetdiag.engine import infer, load_ruleset
from kubenetdiag.facts.cluster import cluster_facts
from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.probes.active import check_for, dns, plan
from kubenetdiag.probes.active.common import example, section
from test_active import _facts, _hosts, fx
from test_cluster_facts import good_doc


def _with_corefile(text: str) -> dict:
    doc = copy.deepcopy(good_doc())
    call = next(c for c in doc["calls"] if c["name"] == "coredns_config")
    call["object"]["data"]["Corefile"] = text
    return doc


def _upstream(doc: dict) -> str | None:
    (svc,) = [f for f in cluster_facts(doc, [("node1", "198.18.0.11")])
              if f.kind == "dns_service"]
    return svc.attrs["upstream"]


@pytest.mark.parametrize("corefile,upstream", [
    # kubeadm's and the upstream manifest's default
    (".:53 {\n    kubernetes cluster.local in-addr.arpa ip6.arpa\n"
     "    forward . /etc/resolv.conf {\n       max_concurrent 1000\n    }\n}\n",
     "/etc/resolv.conf"),
    # addresses, with a comment after them
    (".:53 {\n    forward . 10.0.0.2  10.0.0.3 # site resolvers\n}\n", "10.0.0.2 10.0.0.3"),
    # a stub zone forwarded elsewhere is not the way out for every name
    ("corp.example:53 {\n    forward . 10.1.1.1\n}\n.:53 {\n    forward . 10.0.0.2\n}\n",
     "10.0.0.2"),
    # the root block named without a port, or with a scheme
    (". {\n    forward . tls://9.9.9.9 {\n       tls_servername dns.quad9.net\n    }\n}\n",
     "tls://9.9.9.9"),
    ("dns://.:53 {\n    forward . 10.0.0.2\n}\n", "10.0.0.2"),
    # an air-gapped cluster: nothing is forwarded, so nothing outside is asked
    (".:53 {\n    kubernetes cluster.local\n    cache 30\n}\n", None),
])
def test_the_corefiles_forward_target_is_the_upstream(corefile: str, upstream: str | None):
    assert _upstream(_with_corefile(corefile)) == upstream


def test_the_outside_name_is_asked_of_each_coredns_pod_only_where_coredns_forwards():
    facts = _facts(2)
    forwarding = [Fact(f.kind, f.node, {**f.attrs, "upstream": "/etc/resolv.conf"})
                  if f.kind == "dns_service" else f for f in facts]
    p = plan.plan(forwarding, _hosts(2), outside_name="kubenetdiag-0a1b2c3d.invalid")["node2"]
    assert p["dns_outside_name"] == "kubenetdiag-0a1b2c3d.invalid"
    targets = dns.DNS_OUTSIDE.targets(p)
    assert [t[1]["server"] for t in targets] == ["10.244.1.3"]  # the pod, not the VIP
    assert "kubenetdiag-0a1b2c3d.invalid" in dns.DNS_OUTSIDE.command(p, targets[0][1])
    # its section is this check's, not the cluster-name check's
    assert check_for("active.dns.outside.0")[0] is dns.DNS_OUTSIDE
    assert check_for("active.dns.0")[0] is dns.DNS
    # no upstream known: no outside name, no target
    p = plan.plan(facts, _hosts(2))["node2"]
    assert p["dns_outside_name"] is None and dns.DNS_OUTSIDE.targets(p) == []


@pytest.mark.parametrize("out,rc,ok,detail", [
    (fx("dig_nxdomain.txt"), 0, True, "NXDOMAIN"),
    (fx("dig_timeout.txt"), 9, False, "timeout"),
    (fx("nslookup_timeout.txt"), 1, False, "timeout"),
    ("dns: rcode=NXDOMAIN answers= rtt_ms=1.2", 0, True, "NXDOMAIN"),
    ("dns: rcode=SERVFAIL answers= rtt_ms=2003.9", 0, False, "SERVFAIL"),
    ("dns: error=timeout", 0, False, "timeout"),
])
def test_only_an_answer_from_outside_counts(out: str, rc: int, ok: bool, detail: str):
    ctx = example()
    ctx.plan["dns_outside_name"] = "kubenetdiag-0a1b2c3d.invalid"
    server = {"server": "10.244.2.3", "kind": "pod", "pod": "coredns-0"}
    (fact,) = dns.DNS_OUTSIDE.parse(section("active.dns.outside.0", out, rc), server, ctx)
    assert (fact.kind, fact.attrs["ok"], fact.attrs["detail"], fact.attrs["pod"]) == (
        "dns_outside_check", ok, detail, "coredns-0")


def _fact(kind: str, node: str, **attrs: object) -> Fact:
    return Fact(kind, node, attrs, Source("test"))


def _cluster(upstream: str | None, outside: str) -> list[Fact]:
    """CoreDNS on node1 answers node2 and node3 the cluster's name; `outside` is what each
    got for the .invalid name."""
    facts = [_fact("dns_service", "cluster", name="kube-dns", namespace="kube-system",
                   cluster_ip="10.96.0.10", cluster_domain="cluster.local", upstream=upstream),
             _fact("dns_pod", "node1", pod="coredns-0", ip="10.244.1.3", ready=True,
                   restarts=0)]
    for asker in ("node2", "node3"):
        facts += [
            _fact("dns_check", asker, server="10.244.1.3", server_kind="pod",
                  name="kubernetes.default.svc.cluster.local", ok=True, answer="10.96.0.1",
                  detail=None, rtt_ms=1.0, vantage=None),
            _fact("dns_outside_check", asker, server="10.244.1.3", pod="coredns-0",
                  name="kubenetdiag-0a1b2c3d.invalid", ok=outside == "NXDOMAIN",
                  detail=outside, rtt_ms=None)]
    return facts


def test_a_coredns_without_its_upstream_is_named_on_its_node():
    ruleset = load_ruleset()
    (found,) = [f for f in infer(ruleset, _cluster("198.18.0.249", "SERVFAIL"))
                if f["fault"] == "coredns_upstream_unreachable"]
    assert found["nodes"] == ["node1"] and found["root_cause"] is True
    assert "198.18.0.249" in found["title"] and "coredns-0" in found["title"]
    assert "Asked by node2, node3 at 10.244.1.3" in found["explain"]
    assert not [f for f in infer(ruleset, _cluster("198.18.0.249", "NXDOMAIN"))
                if f["fault"] == "coredns_upstream_unreachable"]
