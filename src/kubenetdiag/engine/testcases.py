"""Check the test cases written beside a rule and turn them into RuleTests.

Problems here are the linter's: tests are a quality gate, not something a diagnosis needs, so
an SRE adding a site rule mid-outage is not stopped by them. A test whose facts do not match
the registry is kept as one that fails, so that running the tests cannot pass quietly.
"""

from __future__ import annotations

from typing import Any

from kubenetdiag.errors import InputError
from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.facts.registry import registry

from .model import Path_, Rule, RuleTest
from .rulefiles import RuleLocation


def _test_fact(
    location: RuleLocation, item: dict[str, Any], path: Path_, problems: list[InputError]
) -> Fact | None:
    ((kind, attrs),) = item.items()
    spec = registry().get(kind)
    if spec is None:
        problems.append(location.error((*path, kind), f"unknown fact kind {kind!r}"))
        return None
    node = attrs.get("node")
    ok = True
    if not isinstance(node, str):
        problems.append(location.error((*path, kind, "node"), "node must be a string"))
        ok = False
    values = {k: v for k, v in attrs.items() if k != "node"}
    for name, value in values.items():
        attr = spec.attrs.get(name)
        if attr is None:
            problems.append(
                location.error(
                    (*path, kind, name), f"unknown attribute {name!r} of fact kind {kind!r}"
                )
            )
            ok = False
        elif not attr.accepts(value):
            problems.append(
                location.error(
                    (*path, kind, name), f"{kind}.{name}: {value!r} is not a {attr.type}"
                )
            )
            ok = False
    for name, attr in spec.attrs.items():
        if name not in values and not attr.nullable:
            problems.append(location.error((*path, kind), f"{kind} fact needs {name!r}"))
            ok = False
    if not ok:
        return None
    return Fact(kind, node, values, Source(probe="rule-test"))


def read_test_cases(
    location: RuleLocation, raw: dict[str, Any], rule: Rule
) -> tuple[list[RuleTest], list[InputError]]:
    """The rule's tests, and what is wrong with them: a rule with a fault needs a test in which
    it fires and one in which it must not."""
    problems: list[InputError] = []
    out = []
    expects_it = expects_none = False
    for j, case in enumerate(raw.get("tests", [])):
        path = ("tests", j)
        facts = [
            _test_fact(location, item, (*path, "facts", k), problems)
            for k, item in enumerate(case["facts"])
        ]
        expect = []
        for k, expected in enumerate(case["expect"]):
            if rule.fault is None:
                problems.append(
                    location.error(
                        (*path, "expect", k),
                        "this rule has no fault, so it produces no findings to expect",
                    )
                )
            elif expected.get("fault", rule.fault) != rule.fault:
                problems.append(
                    location.error(
                        (*path, "expect", k, "fault"),
                        f"this rule's findings always have fault {rule.fault!r}",
                    )
                )
            else:
                expects_it = True
            expect.append(dict(expected))
        if len(case["expect"]) > 1:
            problems.append(
                location.error(
                    (*path, "expect"),
                    "a rule yields at most one finding per run (its activations merge into one)",
                    hint="expect one finding whose nodes list every node",
                )
            )
        if not case["expect"]:
            expects_none = True
        good = tuple(f for f in facts if f is not None)
        problem = "" if len(good) == len(facts) else "its facts do not match the registry"
        out.append(RuleTest(case["name"], good, tuple(expect), location.line(path), problem))
    if rule.fault is not None:
        where = ("tests",) if "tests" in raw else ("id",)
        if not expects_it:
            problems.append(
                location.error(
                    where,
                    f"rule {rule.id} has no test in which it fires",
                    hint=f"add a test whose expect lists a {rule.fault} finding",
                )
            )
        if not expects_none:
            problems.append(
                location.error(
                    where,
                    f"rule {rule.id} has no test in which it must not fire",
                    hint="add a test with healthy facts and `expect: []`",
                )
            )
    return out, problems
