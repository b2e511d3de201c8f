"""The rule set as the rest of the tool sees it: the rules, their digest and their program."""

from __future__ import annotations

from dataclasses import dataclass

from .compiler import Program
from .model import Rule


@dataclass
class RuleSet:
    rules: list[Rule]
    digest: str
    program: Program

    def by_id(self, rule_id: str) -> Rule | None:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        return None

    def __len__(self) -> int:
        return len(self.rules)
