"""The rule set as the rest of the tool sees it: load, lint, compile."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubenetdiag.errors import InputError

from .compiler import CompileError, Program, compile_rules
from .inference import EngineError, build_environment
from .loader import RuleErrors, lint, load_rules
from .model import Rule


@dataclass
class RuleSet:
    rules: list[Rule]
    digest: str
    program: Program

    def by_id(self, rule_id: str) -> Rule | None:
        for r in self.rules:
            if r.id == rule_id:
                return r
        return None

    def __len__(self) -> int:
        return len(self.rules)


def _compile_problems(rules: Sequence[Rule]) -> tuple[Program | None, list[InputError]]:
    """Compile and build into a scratch environment, so a rule CLIPS would reject is reported
    at load time with its file and line rather than in the middle of a diagnosis."""
    problems: list[InputError] = []
    ok: list[Rule] = []
    for r in rules:
        try:
            build_environment(compile_rules([r]))
        except (CompileError, EngineError) as exc:
            problems.append(
                InputError(f"rule {r.id} cannot be compiled: {exc}", file=r.file, line=r.line)
            )
            continue
        ok.append(r)
    if problems:
        return None, problems
    return compile_rules(ok), []


def load_ruleset(
    dirs: Sequence[Path] = (), *, shipped: bool = True, disable: Iterable[str] = ()
) -> RuleSet:
    """Shipped rules, replaced by id by rules from `dirs` (together one site layer), minus the
    `disable`d ids. Raises RuleErrors listing every problem found."""
    rules, digest = load_rules(dirs, shipped=shipped, disable=disable)
    program, problems = _compile_problems(rules)
    if problems or program is None:
        raise RuleErrors(problems)
    return RuleSet(rules, digest, program)


def lint_paths(paths: Sequence[Path], *, with_shipped: bool = True) -> list[InputError]:
    """Every problem in the rule files under `paths` (and in the shipped rules, unless
    with_shipped is False), each with file and line, in file and line order."""
    rules, problems = lint(paths, with_shipped=with_shipped)
    _, compile_problems = _compile_problems(rules)
    problems = problems + compile_problems
    return sorted(problems, key=lambda e: (e.file or "", e.line or 0, e.message))
