"""From fired rules to findings: chaining, root causes, merging, rendering, ordering."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

from kubenetdiag.engine import infer, load_ruleset
from kubenetdiag.facts.model import Fact, Source


def ruleset(tmp_path: Path, text: str):
    (tmp_path / "rules.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    return load_ruleset([tmp_path], shipped=False)


def sysctl(node: str, key: str, number) -> Fact:
    value = None if number is None else str(number)
    return Fact(
        "sysctl",
        node,
        {"key": key, "value": value, "number": number, "present": number is not None},
        Source(probe="sysctl", command="sysctl -a", exit_code=0, excerpt=f"{key} = {value}"),
    )


def by_rule(findings: list[dict]) -> dict[str, dict]:
    return {f["rule"]: f for f in findings}


CHAIN = """
rules:
  # symptom rule: reports, and asserts a symptom other rules may explain
  - id: pods-cannot-forward
    fault: pod_forwarding_broken
    severity: error
    title: "Pods on {node} cannot forward"
    when:
      - sysctl: {node: $node, key: probe.forward_ok, number: 0}
    assert:
      - symptom: {node: $node, name: pod_forwarding_broken, target: $node}
  # intermediate rule: no finding, only a hypothesis
  - id: forwarding-hypothesis
    when:
      - symptom: {node: $node, name: pod_forwarding_broken}
      - sysctl: {node: $node, key: net.ipv4.ip_forward, number: 0}
    assert:
      - symptom: {node: $node, name: kernel_drops_forwarded}
  # cause rule: matches the derived symptom and explains it
  - id: ip-forward-off
    fault: ip_forward_disabled
    severity: critical
    title: "ip_forward off on {node}"
    explains: [pod_forwarding_broken]
    when:
      - symptom: {node: $node, name: kernel_drops_forwarded}
"""


def test_symptom_chain_marks_root_cause_and_expands_evidence(tmp_path):
    rs = ruleset(tmp_path, CHAIN)
    facts = [
        sysctl("n1", "probe.forward_ok", 0),
        sysctl("n1", "net.ipv4.ip_forward", 0),
        sysctl("n2", "probe.forward_ok", 0),  # a symptom nobody explains
        sysctl("n2", "net.ipv4.ip_forward", 1),
    ]
    findings = infer(rs, facts)
    f = by_rule(findings)
    assert set(f) == {"pods-cannot-forward", "ip-forward-off"}
    cause = f["ip-forward-off"]
    assert cause["root_cause"] is True and cause["explained_by"] == []
    assert cause["nodes"] == ["n1"]
    assert cause["explains"] == ["pod_forwarding_broken"]
    # The symptom fired on n1 and n2; only n1's is explained by the cause, so the rule reads
    # as two findings: n2's symptom stays a root cause of its own, not hidden behind n1's.
    symptoms = {tuple(x["nodes"]): x for x in findings if x["rule"] == "pods-cannot-forward"}
    assert set(symptoms) == {("n1",), ("n2",)}
    assert symptoms[("n1",)]["root_cause"] is False
    assert symptoms[("n1",)]["explained_by"] == ["ip-forward-off"]
    assert symptoms[("n2",)]["root_cause"] is True
    assert "n2" in symptoms[("n2",)]["title"] and "n1" not in symptoms[("n2",)]["title"]
    # The cause matched only derived facts; its evidence is the base facts behind them.
    assert [(e["node"], e["attrs"]["key"]) for e in cause["evidence"]] == [
        ("n1", "probe.forward_ok"),
        ("n1", "net.ipv4.ip_forward"),
    ]
    assert all(e["kind"] == "sysctl" and "source" in e for e in cause["evidence"])
    # Root causes come first.
    assert [(x["rule"], x["nodes"]) for x in findings] == [
        ("ip-forward-off", ["n1"]), ("pods-cannot-forward", ["n2"]),
        ("pods-cannot-forward", ["n1"]),
    ]


def test_explained_by_fault_code_on_other_nodes_is_not_enough(tmp_path):
    rs = ruleset(
        tmp_path,
        """
        rules:
          - id: dns-fails
            fault: dns_resolution_failed
            severity: error
            title: "DNS fails on {node}"
            when:
              - sysctl: {node: $node, key: dns_ok, number: 0}
          - id: coredns-down
            fault: coredns_unreachable
            severity: critical
            title: "CoreDNS unreachable from {node}"
            explains: [dns_resolution_failed]
            when:
              - sysctl: {node: $node, key: coredns_ok, number: 0}
        """,
    )
    facts = [
        sysctl("n1", "dns_ok", 0),
        sysctl("n2", "dns_ok", 0),
        sysctl("n2", "coredns_ok", 0),
    ]
    f = by_rule(infer(rs, facts))
    assert f["dns-fails"]["explained_by"] == ["coredns-down"]
    assert f["dns-fails"]["root_cause"] is False
    facts = [sysctl("n1", "dns_ok", 0), sysctl("n2", "coredns_ok", 0)]
    f = by_rule(infer(rs, facts))
    assert f["dns-fails"]["root_cause"] is True
    assert f["dns-fails"]["explained_by"] == []


def test_cyclic_derivations_terminate(tmp_path):
    rs = ruleset(
        tmp_path,
        """
        rules:
          - id: seed
            when:
              - sysctl: {node: $node, key: seed}
            assert:
              - symptom: {node: $node, name: a}
          - id: a-to-b
            when:
              - symptom: {node: $node, name: a}
            assert:
              - symptom: {node: $node, name: b}
          - id: b-to-a
            fault: loop_seen
            severity: info
            title: "loop on {node}"
            when:
              - symptom: {node: $node, name: b}
            assert:
              - symptom: {node: $node, name: a}
        """,
    )
    (f,) = infer(rs, [sysctl("n1", "seed", 1)])
    assert f["nodes"] == ["n1"]
    assert [e["attrs"]["key"] for e in f["evidence"]] == ["seed"]


def test_activations_merge_into_one_finding(tmp_path):
    rs = ruleset(
        tmp_path,
        """
        rules:
          - id: bad-value
            fault: bad_value
            severity: warning
            title:
              en: "{key} is {value} on {node}"
              zh-CN: "{node} 上 {key} 为 {value}"
            explain: "values {value}"
            when:
              - sysctl: {node: $node, key: {startswith: "net."}, number: $value}
              - sysctl: {node: $node, key: $key, number: {gt: 0}}
              - sysctl: {node: $node, key: {eq: $key}, value: {startswith: "1"}}
            remediate:
              - text: {en: "check {key}", zh-CN: "检查 {key}"}
                command: "sysctl {key}"
                changes_state: false
        """,
    )
    facts = [
        sysctl("n2", "net.a", 10),
        sysctl("n1", "net.a", 9),
        sysctl("n1", "net.b", 10),
        sysctl("n3", "other", 5),
    ]
    findings = infer(rs, facts)
    assert len(findings) == 1
    (f,) = findings
    assert f["nodes"] == ["n1", "n2"]
    # Sorted, unique, numeric values in numeric order.
    assert f["title"] == "net.a, net.b is 9, 10 on n1, n2"
    assert f["explain"] == "values 9, 10"
    assert len(f["evidence"]) == 3
    assert f["evidence"][0]["attrs"]["key"] == "net.a"
    # Remediation text and command are both rendered; in a command each value is a shell word.
    assert f["remediation"] == [
        {"text": "check net.a, net.b", "command": "sysctl net.a net.b", "changes_state": False}
    ]
    assert f["i18n"] == {
        "zh-CN": {
            "title": "n1, n2 上 net.a, net.b 为 9, 10",
            "explain": "values 9, 10",
            "remediation": ["检查 net.a, net.b"],
        }
    }


def test_on_variable_and_null_rendering(tmp_path):
    rs = ruleset(
        tmp_path,
        """
        rules:
          - id: peer
            fault: peer_bad
            severity: info
            title: "peer {peer} seen from {node}, value {v}"
            on: $peer
            when:
              - sysctl: {node: $src, key: peer, value: $peer, number: $v}
        """,
    )
    facts = [
        Fact("sysctl", "n1", {"key": "peer", "value": "n9", "number": None, "present": True}),
        Fact("sysctl", "n1", {"key": "peer", "value": "cluster", "number": 1, "present": True}),
    ]
    (f,) = infer(rs, facts)
    assert f["nodes"] == ["n9"]  # from $peer, "cluster" left out
    assert f["title"] == "peer cluster, n9 seen from n9, value 1, unknown"
    assert f["i18n"] == {}


def test_order_root_causes_then_severity_then_id(tmp_path):
    rs = ruleset(
        tmp_path,
        """
        rules:
          - {id: b-info, fault: f1, severity: info, title: t, when: [{sysctl: {key: x}}]}
          - {id: a-info, fault: f2, severity: info, title: t, when: [{sysctl: {key: x}}]}
          - {id: z-crit, fault: f3, severity: critical, title: t, when: [{sysctl: {key: x}}]}
          - {id: c-warn, fault: f4, severity: warning, title: t, when: [{sysctl: {key: x}}]}
          - id: explainer
            fault: f5
            severity: info
            title: t
            explains: [f3]
            when: [{sysctl: {key: x}}]
        """,
    )
    findings = infer(rs, [sysctl("n1", "x", 1)])
    assert [f["rule"] for f in findings] == ["c-warn", "a-info", "b-info", "explainer", "z-crit"]
    assert findings[-1]["root_cause"] is False


def test_finding_has_the_contract_fields(tmp_path):
    rs = ruleset(
        tmp_path,
        """
        rules:
          - id: r
            fault: f
            severity: error
            title: t
            when: [{sysctl: {node: $node, key: x}}]
        """,
    )
    (f,) = infer(rs, [sysctl("n1", "x", 1)])
    assert set(f) == {
        "rule", "fault", "severity", "confidence", "title", "explain", "nodes", "root_cause",
        "explained_by", "explains", "evidence", "remediation", "i18n",
    }
    assert f["confidence"] == "high"
    assert f["explain"] == ""
    assert f["evidence"] == [sysctl("n1", "x", 1).to_dict()]


def test_each_infer_is_independent(tmp_path):
    rs = ruleset(
        tmp_path,
        """
        rules:
          - {id: r, fault: f, severity: error, title: t, when: [{sysctl: {node: $node, key: x}}]}
        """,
    )
    assert infer(rs, [sysctl("n1", "x", 1)])[0]["nodes"] == ["n1"]
    assert infer(rs, [sysctl("n2", "x", 1)])[0]["nodes"] == ["n2"]
    assert infer(rs, []) == []


def test_merges_many_activations_at_scale(tmp_path):
    rs = load_ruleset()
    facts = [sysctl(f"node{i:04d}", "net.ipv4.ip_forward", i % 2) for i in range(2000)]
    facts += [sysctl(f"node{i:04d}", f"net.other.{j}", 0) for i in range(2000) for j in range(5)]
    (f,) = infer(rs, facts)
    assert f["rule"] == "ip-forward-disabled"
    assert len(f["nodes"]) == 1000 and len(f["evidence"]) == 1000



# A cause rule that itself waits for a lower cause ("CoreDNS is at fault unless the asker's own
# path is broken"), and a symptom rule that waits for that cause ("DNS fails and nothing
# explains it"). Both have a negated derived pattern; with one shared 'late' priority the two
# raced and the symptom could be reported beside the cause that explains it.

_SYMPTOM = """
    fault: dns_resolution_failed
    severity: error
    title: "DNS fails on {node}"
    when:
      - sysctl: {node: $node, key: dns_ok, number: 0}
      - not: {cause: {explains: dns_resolution_failed}}
"""
_CAUSE = """
    fault: coredns_unreachable
    severity: critical
    title: "CoreDNS on {node} does not answer"
    explains: [dns_resolution_failed]
    when:
      - sysctl: {node: $node, key: coredns_ok, number: 0}
      - not: {cause: {node: $node, explains: pod_cross_node_broken}}
    assert:
      - cause: {node: $node, fault: coredns_unreachable, explains: dns_resolution_failed}
"""


def test_a_rule_waiting_for_a_cause_runs_after_the_rules_that_can_assert_it(tmp_path):
    facts = [sysctl("n1", "dns_ok", 0), sysctl("n2", "dns_ok", 0), sysctl("n1", "coredns_ok", 0)]
    files = [f"rules:\n  - id: dns-fails{_SYMPTOM}  - id: coredns-down{_CAUSE}",
             f"rules:\n  - id: coredns-down{_CAUSE}  - id: dns-fails{_SYMPTOM}"]
    # Every file order and fact order: CLIPS fires the newest activation of a priority first.
    for text, ordered in itertools.product(files, (facts, facts[::-1])):
        found = infer(ruleset(tmp_path, text), ordered)
        # The cause is reported and the symptom rule never fires.
        assert [(f["rule"], f["nodes"], f["root_cause"]) for f in found] == [
            ("coredns-down", ["n1"], True)
        ]


def test_commands_get_bound_values_shell_quoted(tmp_path):
    # Values come from the nodes' output: one with shell syntax in it must stay one harmless
    # word when the operator pastes the command. Braces that are the command's own are kept.
    rs = ruleset(
        tmp_path,
        """
        rules:
          - id: cmd
            fault: cmd_fault
            severity: warning
            title: "{key} on {node}"
            when:
              - sysctl: {node: $node, key: $key, number: {gt: 0}}
            remediate:
              - text: "read it"
                command: "sysctl {key} # on {node}; echo ${HOME} %{http_code} '{print $1}'"
                changes_state: false
        """,
    )
    (f,) = infer(rs, [sysctl("n1", "net.a; rm -rf /", 1)])
    assert f["title"] == "net.a; rm -rf / on n1"
    assert f["remediation"][0]["command"] == (
        "sysctl 'net.a; rm -rf /' # on n1; echo ${HOME} %{http_code} '{print $1}'"
    )


def test_bind_takes_the_value_from_the_fact_that_passed_the_operators(tmp_path):
    # net.a fails the constraint, net.b passes: written as two patterns, {key} listed both.
    rs = ruleset(
        tmp_path,
        """
        rules:
          - id: bound
            fault: bound_fault
            severity: warning
            title: "{key}={n} on {node}"
            when:
              - sysctl:
                  node: $node
                  key: {startswith: "net.", bind: $key}
                  number: {gt: 5, bind: $n}
              # already bound: an equality join plus the operators
              - sysctl: {node: $node, key: {ne: "x", bind: $key}}
              # bound inside a negation: local to it, so this only says "no other key is 0"
              - not: {sysctl: {node: $node, key: {ne: $key, bind: $other}, number: 0}}
        """,
    )
    facts = [sysctl("n1", "net.a", 1), sysctl("n1", "net.b", 7), sysctl("n1", "vm.c", 9)]
    (f,) = infer(rs, facts)
    assert f["title"] == "net.b=7 on n1"
    assert infer(rs, [*facts, sysctl("n1", "vm.z", 0)]) == []
