"""Every remediation command is rendered from the cluster's own facts (issue 16 §2).

Each rule's own tests are one cluster: the lab's names (kube-flannel, 10.244.0.0/16, flannel.1,
cni0, eth0, UDP 8472, nodes n1..n5). A systematic rename of every lab value in those facts gives
a second cluster with other names (calico-system, 172.16.0.0/16, vxlan.calico, br-pods, ens5,
UDP 4789, nodes w-alpha...). A command rendered from the second cluster that still shows a lab
value was written into the rule instead of taken from the facts; a `{placeholder}` left in any
command would reach the operator's shell as written.
"""

from __future__ import annotations

import re
from dataclasses import replace
from functools import cache

import pytest

from kubenetdiag.engine import infer, load_ruleset
from kubenetdiag.engine.model import PLACEHOLDER_RE, Rule, RuleTest
from kubenetdiag.engine.ruleset import RuleSet
from kubenetdiag.facts.model import Fact, Scalar

# lab value -> the other cluster's, applied to every string attribute (longest first) and to
# the node names; ints are renamed by the same table
RENAME_TEXT = {
    "kube-flannel": "calico-system",
    "app=flannel": "k8s-app=calico-node",
    "10.244.": "172.16.",
    "flannel.1": "vxlan.calico",
    "cni0": "br-pods",
    "eth0": "ens5",
    "eth1": "ens6",
    "198.18.0.": "100.64.7.",
}
RENAME_INT = {8472: 4789}
NODE = re.compile(r"(?<![\w.-])(n[1-9]|node[1-9])(?![\w.-])")
NODE_NEW = {f"n{i}": f"w-{name}" for i, name in enumerate(
    ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"), 1)}
NODE_NEW.update({f"node{i}": f"worker-{i}a" for i in range(1, 10)})

# What must not appear in a command rendered from the other cluster. flannel's own ConfigMap
# name (kube-flannel-cfg) is flannel's, not the lab's, and a command may look for it.
LEAKS = [
    re.compile(r"kube-flannel(?!-cfg)"),
    re.compile(r"app=flannel"),
    re.compile(r"10\.244\."),
    re.compile(r"flannel\.1"),
    re.compile(r"\bcni0\b"),
    re.compile(r"\beth0\b"),
    re.compile(r"\b8472\b"),
    re.compile(r"198\.18\.0\."),
    NODE,
]


def _rename_text(value: str) -> str:
    for old in sorted(RENAME_TEXT, key=len, reverse=True):
        value = value.replace(old, RENAME_TEXT[old])
    value = re.sub(r"\b8472\b", "4789", value)
    return NODE.sub(lambda m: NODE_NEW[m.group(1)], value)


def _rename(value: Scalar) -> Scalar:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return RENAME_INT.get(value, value)
    if isinstance(value, str):
        return _rename_text(value)
    return value


def other_cluster(facts: tuple[Fact, ...]) -> list[Fact]:
    """The same facts with every lab value renamed."""
    return [
        replace(f, node=_rename_text(f.node), attrs={k: _rename(v) for k, v in f.attrs.items()})
        for f in facts
    ]


@cache
def ruleset() -> RuleSet:
    return load_ruleset()


def _names_a_lab_value(rule: Rule) -> bool:
    """The rule's conditions name a lab value themselves (flannel.1 by name): renamed facts
    cannot fire it, and that is the rule's meaning, not a leak."""
    when = repr(rule.raw.get("when", []))
    return any(old in when for old in RENAME_TEXT) or "8472" in when


def _firing_cases() -> list[tuple[str, str]]:
    return [
        (rule.id, test.name)
        for rule in ruleset().rules
        if rule.fault and any(step.command for step in rule.remediate)
        for test in rule.tests
        if test.expect and not test.problem
    ]


def _commands(rule: Rule, test: RuleTest, facts: list[Fact]) -> list[list[str]]:
    return [
        [step["command"] for step in f["remediation"] if step["command"]]
        for f in infer(ruleset(), facts)
        if f["rule"] == rule.id
    ]


def _unfilled(command: str) -> list[str]:
    # {node} stays as written only on a cluster-wide finding; the rules below are node ones
    return PLACEHOLDER_RE.findall(command)


@pytest.mark.parametrize(("rule_id", "test_name"), _firing_cases())
def test_commands_come_from_the_clusters_facts(rule_id: str, test_name: str) -> None:
    rule = ruleset().by_id(rule_id)
    assert rule is not None
    test = next(t for t in rule.tests if t.name == test_name)

    lab = _commands(rule, test, list(test.facts))
    assert lab, f"{rule_id}: its test {test_name!r} expects a finding"
    for commands in lab:
        for command in commands:
            assert not _unfilled(command), f"{rule_id}: unfilled placeholder in {command!r}"

    other = _commands(rule, test, other_cluster(test.facts))
    if not other:
        assert _names_a_lab_value(rule), (
            f"{rule_id} fires on the lab's facts but not on the same facts renamed, and its "
            "conditions name no lab value"
        )
        return
    assert len(other) == len(lab)
    for commands in other:
        for command in commands:
            assert not _unfilled(command), f"{rule_id}: unfilled placeholder in {command!r}"
            for leak in LEAKS:
                m = leak.search(command)
                assert m is None, (
                    f"{rule_id}: the lab's {m.group(0)!r} in a command rendered from another "
                    f"cluster's facts: {command!r}"
                )


def test_the_rename_leaves_no_lab_value_in_the_facts() -> None:
    # the test above proves something only if the second cluster holds no lab value itself
    for rule in ruleset().rules:
        for test in rule.tests:
            for f in other_cluster(test.facts):
                text = repr((f.node, f.attrs))
                for leak in LEAKS:
                    assert not leak.search(text), (rule.id, test.name, text)


def test_every_shipped_command_is_rendered_by_a_case() -> None:
    # a rule with commands and no firing test would escape the check above
    covered = {rule_id for rule_id, _ in _firing_cases()}
    missing = [
        r.id for r in ruleset().rules
        if r.fault and any(s.command for s in r.remediate) and r.id not in covered
    ]
    assert not missing


def test_a_command_line_value_goes_in_as_built_and_anything_else_as_one_word() -> None:
    from kubenetdiag.engine.inference import render

    undo = "iptables -t filter -D INPUT -p udp --dport 4789 -m comment --comment 'a; b' -j DROP"
    got = render("{undo}", {"undo": [undo]}, ["w-alpha"], "en", shell=True,
                 verbatim=frozenset({"undo"}))
    assert got == undo
    # a value that is not a command line as shlex.join builds it is never run as one
    hostile = "true; rm -rf /"
    got = render("{undo}", {"undo": [hostile]}, ["w-alpha"], "en", shell=True,
                 verbatim=frozenset({"undo"}))
    assert got == "'true; rm -rf /'"
    # other values are one word each, whatever they hold
    assert render("ip link show {dev}", {"dev": ["x; reboot"]}, [], "en", shell=True) == \
        "ip link show 'x; reboot'"


def test_a_command_with_an_unknown_value_is_printed_commented_out() -> None:
    from kubenetdiag.engine.inference import render

    got = render("f={persist_to}; echo x >> \"$f\"", {"persist_to": [None]}, ["w-alpha"], "en",
                 shell=True)
    assert all(line.startswith("#") for line in got.splitlines())
    assert "<persist_to unknown>" in got
    # texts still say "unknown" in words
    assert render("in {persist_to}", {"persist_to": [None]}, [], "en") == "in unknown"


def test_the_parse_stage_helpers_hold_their_documented_examples() -> None:
    import doctest

    from kubenetdiag.facts import paths, persist

    for module in (paths, persist):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0 and result.attempted > 0, module.__name__
