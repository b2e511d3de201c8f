"""Which producer makes each fact kind, and which kinds each rule needs: the map behind the
report's "not evaluated" list. Every declaration is checked against what the code makes, so a
probe that starts making a kind it does not declare fails here rather than letting a rule's
silence pass for "healthy" when that probe fails."""

from __future__ import annotations

import ast
import copy
import inspect
import json
import textwrap
from pathlib import Path

import pytest

from kubenetdiag.bundle import Bundle
from kubenetdiag.engine import load_ruleset
from kubenetdiag.engine.needs import rule_needs
from kubenetdiag.facts import bridges, census, paths, producers, vantage, vxlan_peers
from kubenetdiag.facts.cluster import CALL_KINDS, cluster_facts
from kubenetdiag.facts.parse import facts_from_records
from kubenetdiag.facts.registry import registry
from kubenetdiag.probes import PROBES
from kubenetdiag.probes.active import checks
from probe_sections import FIX, section

BUNDLES = Path(__file__).parent / "fixtures" / "bundles"


def _fact_kinds_in_source(module) -> set[str]:
    """Kinds a module builds with `Fact("kind", ...)`: what its parser can make even where no
    fixture shows it."""
    found = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Fact"
                and node.args and isinstance(node.args[0], ast.Constant)):
            found.add(node.args[0].value)
    return found


@pytest.mark.parametrize("probe", PROBES, ids=lambda p: p.name)
def test_each_probe_declares_every_kind_its_parser_makes(probe):
    made: set[str] = set()
    for fixture in (FIX / probe.name).glob("*.txt"):
        made |= {f.kind for f in probe.parse(section(probe.name, fixture.stem), "node1")}
    made |= _fact_kinds_in_source(inspect.getmodule(probe.parse))
    undeclared = made - set(probe.kinds) - {"probe_status"}
    assert not undeclared, (
        f"probe {probe.name} makes {sorted(undeclared)} but its Probe(kinds=...) does not say "
        "so: a failure of this probe would not name the rules that read them")


def test_each_active_check_declares_the_kinds_its_module_makes():
    by_module: dict[object, set[str]] = {}
    for check in checks():
        by_module.setdefault(inspect.getmodule(check.parse), set()).update(check.kinds)
    for module, declared in by_module.items():
        undeclared = _fact_kinds_in_source(module) - declared - {"probe_status"}
        assert not undeclared, f"{module.__name__} makes {sorted(undeclared)} undeclared"


def test_declared_kinds_are_registered_and_every_kind_has_a_producer():
    kinds = registry()
    declared = (
        {k for p in PROBES for k in p.kinds}
        | producers.active_kinds()
        | producers.api_kinds()
        | set(producers.derived_inputs())
    )
    assert declared <= set(kinds), declared - set(kinds)
    for module in producers.DERIVERS:
        assert set(module.INPUTS) | set(module.CONTEXT) <= set(kinds)
    asserted = {name for name, spec in kinds.items() if spec.derived}
    orphans = set(kinds) - declared - asserted - producers.COLLECTION
    assert not orphans, (
        f"no producer declares {sorted(orphans)}: add it to the kinds of the probe, active "
        "check or API call that makes it, or to PRODUCES of the module that derives it")


def _lab(name: str) -> Bundle:
    return Bundle.read(BUNDLES / name)


def _canon(facts, kind: str) -> list[str]:
    return sorted(json.dumps([f.node, f.attrs], sort_keys=True, default=str)
                  for f in facts if f.kind == kind)


def test_a_failed_api_call_changes_only_the_kinds_it_declares():
    bundle = _lab("lab-conntrack-full")
    inventory = [(r["name"], r["address"]) for r in bundle.records]
    full = cluster_facts(bundle.cluster, inventory)
    made = {f.kind for f in full}
    # every kind the API's facts module can make is declared by some call
    from kubenetdiag.facts import cluster as cluster_module
    api_made = _fact_kinds_in_source(cluster_module) - producers.COLLECTION
    assert api_made <= producers.api_kinds(), api_made - producers.api_kinds()
    calls = {c["name"].split("/")[0] for c in bundle.cluster["calls"]}
    assert calls <= set(CALL_KINDS), calls - set(CALL_KINDS)
    for call in sorted(calls):
        doc = copy.deepcopy(bundle.cluster)
        for c in doc["calls"]:
            if c["name"].split("/")[0] == call:
                c.update(status="error", reason="boom", items=None, object=None)
        broken = cluster_facts(doc, inventory)
        changed = {k for k in made | {f.kind for f in broken}
                   if _canon(full, k) != _canon(broken, k)} - producers.COLLECTION
        assert changed <= set(CALL_KINDS[call]), (call, changed - set(CALL_KINDS[call]))
        # and what a failed call blocks is what the report will name
        assert producers.blocked_kinds(f"api:{call}") == frozenset(CALL_KINDS[call])


@pytest.mark.parametrize("module, derive", [
    (paths, paths.path_facts),
    (vantage, vantage.vantage_facts),
    (census, census.census_facts),
    (bridges, bridges.pod_bridge_facts),
    (vxlan_peers, vxlan_peers.vxlan_peer_facts),
], ids=["paths", "vantage", "census", "bridges", "vxlan_peers"])
def test_derived_facts_are_made_from_the_kinds_they_declare(module, derive):
    # a bundle with a node cut off: every deriving module has something to say about it
    bundle = _lab("lab-netdev-vxlan-drop")
    facts = facts_from_records(bundle.records, bundle.cluster, probes=bundle.meta.get("probes"))
    base = [f for f in facts if f.kind not in producers.derived_inputs()]
    allowed = set(module.INPUTS) | set(module.CONTEXT) | producers.COLLECTION
    full, only_declared = derive(base), derive([f for f in base if f.kind in allowed])
    assert full, "the fixture should give this module something to derive"
    for kind in module.PRODUCES:
        if kind == "node_checks":  # text naming the probes that answered: every kind counts
            assert {f.node for f in full if f.kind == kind} == {
                f.node for f in only_declared if f.kind == kind}
            continue
        assert _canon(full, kind) == _canon(only_declared, kind), kind


def test_a_partial_answer_blocks_only_the_kinds_it_names():
    assert producers.blocked_kinds("sockets", "socket_queue,udp_socket") == {
        "socket_queue", "udp_socket"}
    assert producers.blocked_kinds("conntrack", "") == frozenset()
    assert producers.blocked_kinds("conntrack") == {"conntrack"}
    assert producers.blocked_kinds("active.pod.ping.pod.0") == {"reach"}
    assert producers.blocked_kinds("active.ping.underlay.0") == {"reach", "ping_loss"}
    assert "route" in producers.blocked_kinds("all")
    assert producers.blocked_kinds("from-a-newer-version") == frozenset()


RULES = """
rules:
  - id: on-sysctl
    fault: somaxconn_low
    severity: warning
    title: "t"
    when:
      - sysctl: {node: $node, key: net.core.somaxconn, number: {lt: 1024}}
  - id: route-absent
    fault: pod_cidr_route_missing
    severity: error
    title: "t"
    when:
      - interface: {node: $node, name: $dev}
      - not: {route: {node: $node, dev: $dev}}
  - id: symptom-from-path
    when:
      - path: {node: $node, verdict: drop}
    assert:
      - symptom: {node: $node, name: flow_dies}
  - id: symptom-from-conntrack
    when:
      - conntrack: {node: $node, drop: {gt: 0}}
    assert:
      - symptom: {node: $node, name: other_symptom}
  - id: reports-symptom
    fault: iptables_drop_rule
    severity: error
    title: "t"
    when:
      - symptom: {node: $node, name: flow_dies}
  - id: unexplained
    fault: iptables_drop_rule
    severity: error
    title: "t"
    when:
      - sysctl: {node: $node, key: net.ipv4.ip_forward}
      - not: {symptom: {node: $node, name: flow_dies}}
"""


def test_rule_needs_follow_patterns_derived_kinds_and_asserting_rules(tmp_path):
    (tmp_path / "rules.yaml").write_text(textwrap.dedent(RULES), encoding="utf-8")
    needs = rule_needs(load_ruleset([tmp_path], shipped=False).rules)
    assert needs["on-sysctl"] == {"sysctl"}
    # a rule on the absence of a route means nothing when the routes were not read
    assert needs["route-absent"] == {"interface", "route"}
    # through the symptom to the rule asserting it, and through path to what the walk reads;
    # the symptom of another name (asserted from conntrack) is not a way to this rule
    assert needs["reports-symptom"] == needs["symptom-from-path"] == frozenset(paths.INPUTS) - {
        "node_status"}
    assert "conntrack" not in needs["reports-symptom"]
    # a missing symptom can only make `unexplained` fire, never hide it
    assert needs["unexplained"] == {"sysctl"}


def test_every_shipped_reporting_rule_needs_something_collected():
    rules = load_ruleset().rules
    needs = rule_needs(rules)
    empty = [r.id for r in rules if r.fault and not needs[r.id]]
    assert not empty, f"rules that no probe failure could ever block: {empty}"
