"""Run the tests that live beside each rule.

Each test runs the whole rule set, not the rule alone: root_cause depends on which other rules
fire, and a rule that is right in isolation can still be wrong next to its neighbours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubenetdiag.errors import InputError

from .inference import EngineError, infer
from .model import Rule, RuleTest
from .rulefiles import rule_files
from .ruleset import RuleSet


@dataclass(frozen=True)
class TestResult:
    __test__ = False  # not a pytest test class, despite the name

    rule_id: str
    name: str
    file: str
    line: int | None
    passed: bool
    message: str = ""


def _matches(exp: dict[str, Any], finding: dict[str, Any], rule: Rule) -> bool:
    if finding["fault"] != exp.get("fault", rule.fault):
        return False
    if set(finding["nodes"]) != set(exp.get("nodes", [])):
        return False
    if "title" in exp and finding["title"] != exp["title"]:
        return False
    return "root_cause" not in exp or finding["root_cause"] == exp["root_cause"]


def _describe(items: Sequence[dict[str, Any]], titles: bool = False) -> str:
    if not items:
        return "no finding"
    parts = []
    for f in items:
        text = f"{f['fault']} on [{', '.join(sorted(f.get('nodes', [])))}]"
        if "root_cause" in f:
            text += f" root_cause={str(f['root_cause']).lower()}"
            if f.get("explained_by"):
                text += f" (explained by {', '.join(f['explained_by'])})"
        if titles and f.get("title"):
            # Only when a test checks titles: the values a title shows are what it tests.
            text += f" titled {f['title']!r}"
        parts.append(text)
    return "; ".join(parts)


def run_test(ruleset: RuleSet, rule: Rule, test: RuleTest) -> TestResult:
    def result(passed: bool, message: str = "") -> TestResult:
        return TestResult(rule.id, test.name, rule.file, test.line, passed, message)

    if test.problem:
        return result(False, f"{test.problem} (run the linter for details)")
    try:
        got = [f for f in infer(ruleset, list(test.facts)) if f["rule"] == rule.id]
    except (EngineError, InputError) as exc:
        return result(False, f"the engine failed: {exc}")
    unused = list(got)
    for exp in test.expect:
        hit = next((f for f in unused if _matches(exp, f, rule)), None)
        if hit is None:
            break
        unused.remove(hit)
    else:
        if not unused:
            return result(True)
    expected = [{**e, "fault": e.get("fault", rule.fault)} for e in test.expect]
    titles = any("title" in e for e in test.expect)
    return result(
        False, f"expected {_describe(expected, titles)}, got {_describe(got, titles)}"
    )


def run_tests(ruleset: RuleSet, files: Sequence[Path] | None = None) -> list[TestResult]:
    """Run the tests of every rule in the set, or only of rules from `files` (rule files, or
    directories of them)."""
    wanted = None if files is None else {f.resolve() for f in rule_files(files)[0]}
    results = []
    for rule in ruleset.rules:
        if wanted is not None and Path(rule.file).resolve() not in wanted:
            continue
        for test in rule.tests:
            results.append(run_test(ruleset, rule, test))
    return results
