"""Load a rule set: read and check every rule file, combine the shipped and site layers,
compile, and gather the problems a rule author must fix.

Checks run in layers, each in its own module: YAML syntax and the JSON Schema (rulefiles),
the facts registry and variable scoping (semantics), then, for the linter only, test cases
(testcases) and translations (translations). A rule is compiled into a scratch CLIPS
environment too, so that one CLIPS would reject is reported here with its file and line rather
than in the middle of a diagnosis.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kubenetdiag.errors import InputError, RuleErrors

from .compiler import CompileError, Program, compile_rules
from .inference import EngineError, build_environment
from .model import Rule
from .rulefiles import read_rule_file, rule_files, shipped_dir
from .ruleset import RuleSet
from .semantics import RuleChecker
from .testcases import read_test_cases
from .translations import missing_translations

__all__ = ["RuleErrors", "lint", "lint_paths", "load_rules", "load_ruleset", "shipped_dir"]


@dataclass
class _Analysis:
    """The result of reading a set of files: rules, plus problems that block loading and
    problems that only the linter reports (tests, and rules that load but say less than their
    author meant, are a quality gate, not a runtime need)."""

    rules: list[Rule] = field(default_factory=list)
    errors: list[InputError] = field(default_factory=list)
    test_errors: list[InputError] = field(default_factory=list)


def _check_file(path: Path) -> _Analysis:
    read = read_rule_file(path)
    out = _Analysis(errors=list(read.errors))
    for location, raw in read.rules:
        checker = RuleChecker(location, raw)
        rule = checker.check()
        tests, test_problems = read_test_cases(location, raw, rule)
        rule.tests = tuple(tests)
        if rule.fault is not None:
            test_problems += missing_translations(location, rule)
        out.errors.extend(checker.errors)
        out.test_errors.extend(checker.lint_errors)
        out.test_errors.extend(test_problems)
        if not checker.errors:
            out.rules.append(rule)
    return out


def _check_layer(paths: Iterable[Path]) -> _Analysis:
    files, errors = rule_files(paths)
    out = _Analysis(errors=errors)
    seen: dict[str, Rule] = {}
    done: set[Path] = set()
    for file in files:
        if file.resolve() in done:
            continue
        done.add(file.resolve())
        analysis = _check_file(file)
        out.errors.extend(analysis.errors)
        out.test_errors.extend(analysis.test_errors)
        for rule in analysis.rules:
            first = seen.get(rule.id)
            if first is not None:
                out.errors.append(
                    InputError(
                        f"duplicate rule id {rule.id!r}",
                        file=rule.file,
                        line=rule.line,
                        hint=f"first defined at {first.file}:{first.line}",
                    )
                )
                continue
            seen[rule.id] = rule
            out.rules.append(rule)
    return out


def _digest(rules: Sequence[Rule]) -> str:
    sha = hashlib.sha256()
    for rule in rules:
        sha.update(json.dumps(rule.raw, sort_keys=True, ensure_ascii=False, default=str).encode())
        sha.update(b"\n")
    return sha.hexdigest()


def _in_file_order(errors: Iterable[InputError]) -> list[InputError]:
    return sorted(errors, key=lambda e: (e.file or "", e.line or 0, e.message))


def load_rules(
    dirs: Sequence[Path] = (), *, shipped: bool = True, disable: Iterable[str] = ()
) -> tuple[list[Rule], str]:
    """The effective rules (shipped, overridden by site rules, minus disabled) and their digest.

    Missing or failing rule tests do not block loading: they are the linter's business, and an
    SRE adding a site rule mid-outage should not be stopped by them.
    """
    errors: list[InputError] = []
    base = _check_layer([shipped_dir()]) if shipped else _Analysis()
    site = _check_layer(dirs) if dirs else _Analysis()
    errors.extend(base.errors)
    errors.extend(site.errors)
    site_ids = {r.id for r in site.rules}
    rules = [r for r in base.rules if r.id not in site_ids] + site.rules
    known = {r.id for r in rules}
    drop = set()
    for rule_id in disable:
        if rule_id not in known:
            errors.append(
                InputError(
                    f"--disable {rule_id}: no such rule",
                    hint="list the rules with `kubenetdiag rules list`",
                )
            )
        drop.add(rule_id)
    rules = [r for r in rules if r.id not in drop]
    if errors:
        raise RuleErrors(_in_file_order(errors))
    return rules, _digest(rules)


def lint(
    paths: Sequence[Path], *, with_shipped: bool = True
) -> tuple[list[Rule], list[InputError]]:
    """Rules read from `paths` (plus the shipped ones) and every problem found in them."""
    given = _check_layer(paths)
    problems = [*given.errors, *given.test_errors]
    rules = list(given.rules)
    if with_shipped:
        given_files = {f.resolve() for f in rule_files(paths)[0]}
        shipped_files, _ = rule_files([shipped_dir()])
        extra = [f for f in shipped_files if f.resolve() not in given_files]
        base = _check_layer(extra) if extra else _Analysis()
        problems += [*base.errors, *base.test_errors]
        ids = {r.id for r in rules}
        rules += [r for r in base.rules if r.id not in ids]
    return rules, problems


def _compile_problems(rules: Sequence[Rule]) -> tuple[Program | None, list[InputError]]:
    """Compile and build into a scratch environment, so a rule CLIPS would reject is reported
    at load time with its file and line rather than in the middle of a diagnosis."""
    problems: list[InputError] = []
    ok: list[Rule] = []
    for rule in rules:
        try:
            build_environment(compile_rules([rule]))
        except (CompileError, EngineError) as exc:
            problems.append(
                InputError(f"rule {rule.id} cannot be compiled: {exc}", file=rule.file,
                           line=rule.line)
            )
            continue
        ok.append(rule)
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
    return _in_file_order(problems + compile_problems)
