"""`rules explain`: the tree of rules that can lead to a rule."""

from __future__ import annotations

from kubenetdiag.cli import main
from kubenetdiag.engine import load_ruleset
from kubenetdiag.engine.explain import explain_tree


def test_unexplained_symptom_tree_names_its_producer_and_the_causes():
    text = explain_tree(load_ruleset(), "pod-cross-node-unexplained")
    first, *rest = text.splitlines()
    assert first.startswith("pod-cross-node-unexplained [pod_cross_node_broken, error")
    body = "\n".join(rest)
    assert "needs symptom(name='pod_cross_node_broken'" in body
    assert "pod-cross-node-traffic-fails [asserts only]" in body
    # a failed pair that no cut-off node accounts for (facts/vantage.py)
    assert "needs reach_pair(dst=$dst, layer='pod')" in body
    # every cause rule that can explain the symptom shows up under the negation
    for rule in ("vxlan-blocked-on-path", "ip-forward-disabled",
                 "bgp-session-down", "pod-cidr-route-missing", "cni-pod-not-ready"):
        assert rule in body, rule


def test_cause_rule_lists_what_it_explains(capsys):
    assert main(["rules", "explain", "vxlan-blocked-on-path"]) == 0
    out = capsys.readouterr().out
    assert ("when it fires it explains: "
            "pod_cross_node_broken, dns_resolution_failed, iptables_drop_rule, "
            "coredns_unreachable, endpoint_unreachable") in out


def test_consequence_lists_its_possible_causes():
    text = explain_tree(load_ruleset(), "iptables-drop-rule")
    assert "reported as a consequence when one of these fires" in text
    assert "vxlan-blocked-on-path" in text and "host-firewall-chains" in text


def test_unknown_rule_is_a_usage_error(capsys):
    assert main(["rules", "explain", "no-such-rule"]) == 2
    assert "no rule 'no-such-rule'" in capsys.readouterr().err
