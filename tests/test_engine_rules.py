"""The shipped rules, their tests, and how site rules layer over them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kubenetdiag.engine import RuleErrors, infer, load_ruleset, run_tests
from kubenetdiag.engine.loader import shipped_dir
from kubenetdiag.facts.model import Fact

# The rule base grows with every fault tree: take the ids from the files, and pin the first
# rules by name so a lost file still fails here.
SHIPPED_IDS = {
    str(r["id"])
    for f in sorted(shipped_dir().rglob("*.yaml"))
    for r in __import__("yaml").safe_load(f.read_text())["rules"]
}
assert {
    "ip-forward-disabled",
    "bridge-nf-call-iptables-off",
    "br-netfilter-not-loaded",
    "forward-chain-reject",
    "node-unreachable",
} <= SHIPPED_IDS


def test_shipped_rules_load():
    rs = load_ruleset()
    assert {r.id for r in rs.rules} == SHIPPED_IDS
    assert re.fullmatch(r"[0-9a-f]{64}", rs.digest)
    r = rs.by_id("ip-forward-disabled")
    assert r is not None and r.fault == "ip_forward_disabled" and r.severity == "critical"
    assert r.title.startswith("IP forwarding is off")
    assert r.file.endswith("kernel/ip_forward.yaml") and r.line == 5
    assert rs.by_id("nope") is None


def test_shipped_rule_tests_all_pass():
    results = run_tests(load_ruleset())
    assert len(results) >= 20
    failed = [f"{r.file}:{r.line} {r.rule_id} / {r.name}: {r.message}" for r in results
              if not r.passed]
    assert failed == []
    # Rules without a fault only assert derived facts: they have no findings to test.
    assert {r.rule_id for r in results} == {r.id for r in load_ruleset().rules if r.fault}


def test_every_shipped_rule_is_bilingual_and_marks_commands():
    rs = load_ruleset()
    for r in rs.rules:
        if r.fault is None:
            continue  # an inference step with no finding has nothing to show
        assert "zh-CN" in r.texts["title"] and "zh-CN" in r.texts["explain"], r.id
        assert r.remediate, r.id
        for step in r.remediate:
            assert "zh-CN" in step.text, r.id
            if step.command:
                assert isinstance(step.changes_state, bool)


def test_no_state_changing_command_is_offered_as_a_check():
    # The runbook warns that these rewrite every kernel setting: never a diagnostic step.
    rs = load_ruleset()
    for r in rs.rules:
        for step in r.remediate:
            cmd = step.command or ""
            assert "sysctl --system" not in cmd and "sysctl -p" not in cmd, r.id
            if not step.changes_state and cmd:
                writes = (
                    r"sysctl -w|modprobe|iptables -[DAIF]|systemctl (stop|disable)"
                    r"|[^2]>\s*/(?!dev/null)"
                )
                assert not re.search(writes, cmd), (r.id, cmd)


def copy_rule(tmp_path: Path, rel: str, edit=lambda s: s) -> Path:
    text = (shipped_dir() / rel).read_text(encoding="utf-8")
    dest = tmp_path / Path(rel).name
    dest.write_text(edit(text), encoding="utf-8")
    return dest


def test_wrong_expectation_fails(tmp_path):
    site = copy_rule(
        tmp_path,
        "kernel/ip_forward.yaml",
        lambda s: s.replace(
            "- {nodes: [n1], root_cause: true}", "- {nodes: [n2], root_cause: true}"
        ),
    )
    rs = load_ruleset([tmp_path])
    results = run_tests(rs, [site])
    assert results == run_tests(rs, [tmp_path])  # a directory selects its files
    assert {r.rule_id for r in results} == {"ip-forward-disabled"}
    bad = [r for r in results if not r.passed]
    assert [r.name for r in bad] == ["off on one node"]
    assert "expected ip_forward_disabled on [n2]" in bad[0].message
    assert "got ip_forward_disabled on [n1]" in bad[0].message
    assert bad[0].file == str(site)


def test_expecting_nothing_when_it_fires_fails(tmp_path):
    site = copy_rule(
        tmp_path,
        "host/node_unreachable.yaml",
        lambda s: s.replace("          - {nodes: [n3]}", "          []"),
    )
    results = run_tests(load_ruleset([tmp_path]), [site])
    bad = [r for r in results if not r.passed]
    assert [r.name for r in bad] == ["unknown reason still fires"]
    assert bad[0].message.startswith("expected no finding, got node_unreachable on [n3]")


def test_root_cause_expectation_is_checked(tmp_path):
    site = copy_rule(
        tmp_path,
        "kernel/ip_forward.yaml",
        lambda s: s.replace("root_cause: true", "root_cause: false"),
    )
    (bad,) = [r for r in run_tests(load_ruleset([tmp_path]), [site]) if not r.passed]
    assert "root_cause=true" in bad.message


def test_site_rule_replaces_shipped_rule(tmp_path):
    copy_rule(
        tmp_path,
        "kernel/ip_forward.yaml",
        lambda s: s.replace("severity: critical", "severity: warning"),
    )
    rs = load_ruleset([tmp_path])
    assert {r.id for r in rs.rules} == SHIPPED_IDS
    assert rs.by_id("ip-forward-disabled").severity == "warning"
    assert rs.digest != load_ruleset().digest
    fact = Fact("sysctl", "n1", {"key": "net.ipv4.ip_forward", "value": "0", "number": 0,
                                 "present": True})
    (f,) = infer(rs, [fact])
    assert f["severity"] == "warning"


def test_duplicate_ids_within_site_layer_are_errors(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        copy_rule(tmp_path / sub, "kernel/ip_forward.yaml")
    with pytest.raises(RuleErrors, match="duplicate rule id 'ip-forward-disabled'"):
        load_ruleset([tmp_path / "a", tmp_path / "b"])


def test_disable(tmp_path):
    rs = load_ruleset(disable=["forward-chain-reject"])
    assert {r.id for r in rs.rules} == SHIPPED_IDS - {"forward-chain-reject"}
    assert rs.digest != load_ruleset().digest
    with pytest.raises(RuleErrors) as exc:
        load_ruleset(disable=["no-such-rule"])
    assert "no-such-rule" in str(exc.value)


def test_unreachable_node_title_shows_reason():
    rs = load_ruleset()
    facts = [Fact("node_status", "n1", {"reachable": False, "address": "10.0.0.1",
                                        "reason": "auth failed"})]
    (f,) = infer(rs, facts)
    assert f["title"] == "n1 could not be reached: auth failed"
    assert f["i18n"]["zh-CN"]["title"] == "无法连接 n1：auth failed"
    assert all(not r["changes_state"] for r in f["remediation"])


def test_test_with_bad_facts_fails_instead_of_vanishing(tmp_path):
    site = copy_rule(
        tmp_path,
        "host/node_unreachable.yaml",
        lambda s: s.replace("reachable: false, address: 10.0.0.3", "reachable: no_such, adress: 1"),
    )
    results = run_tests(load_ruleset([tmp_path]), [site])
    (bad,) = [r for r in results if not r.passed]
    assert bad.name == "unknown reason still fires"
    assert "do not match the registry" in bad.message
