"""The fact kinds each rule needs collected before its silence means anything.

Read from the compiled patterns, never from a list kept beside the rules, so a new rule or a
site rule is covered as soon as it loads:

* a pattern on a kind a probe or the API produces needs that kind;
* a pattern on a kind derived in the parse stage (path, vantage, census facts) needs the kinds
  it is derived from (`kubenetdiag.facts.producers`);
* a pattern on a kind rules assert (a symptom, a cause) needs what every rule that could assert
  a matching fact needs: if any of them could not run, the fact it would have asserted may be
  missing, and this rule may be silent for that reason alone.

A `not:` on a kind a probe produces counts like any other pattern: with the probe failed, "no
such fact" was never observed, so neither firing nor silence is a conclusion. A `not:` on a
kind rules assert (`not: cause`) is not followed: a cause that could not be evaluated is listed
under its own rule, and its absence can only make this rule fire ("nothing explains it"), never
hide a finding of it.
"""

from __future__ import annotations

from collections.abc import Sequence

from kubenetdiag.facts.producers import observed
from kubenetdiag.facts.registry import registry

from .explain import could_produce
from .model import Rule


def rule_needs(rules: Sequence[Rule]) -> dict[str, frozenset[str]]:
    """Rule id -> the fact kinds probes and the API must have given for the rule to be
    evaluated, for every rule in `rules`."""
    asserted = {name for name, spec in registry().items() if spec.derived}
    memo: dict[str, frozenset[str]] = {}

    def needs(rule: Rule, path: frozenset[str]) -> frozenset[str]:
        if rule.id in memo:
            return memo[rule.id]
        kinds: set[str] = set()
        for pattern in rule.when:
            if pattern.kind not in asserted:
                kinds |= observed([pattern.kind])
            elif not pattern.negated:
                for other in rules:
                    # a rule chain that comes back to itself adds nothing it did not have
                    if other.id not in path and any(
                        could_produce(a, pattern) for a in other.asserts
                    ):
                        kinds |= needs(other, path | {other.id})
        found = frozenset(kinds)
        if len(path) == 1:  # a result cut short by a cycle guard is not kept for others
            memo[rule.id] = found
        return found

    return {rule.id: needs(rule, frozenset({rule.id})) for rule in rules}
