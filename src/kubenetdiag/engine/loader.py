"""Read rule files, check them, and turn them into Rule objects.

Every problem becomes an InputError naming the file and line, because the person who can fix it
is a rule author looking at YAML. Checks run in layers: YAML syntax, then the JSON Schema, then
the facts registry and variable scoping; a rule the schema rejected is not checked further, so
one mistake is reported once.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubenetdiag.errors import InputError
from kubenetdiag.facts.model import Fact, Scalar, Source
from kubenetdiag.facts.registry import AttrSpec, KindSpec, registry
from kubenetdiag.yamlsrc import YamlDoc, load_yaml_file

from .model import (
    LANGS,
    Assertion,
    Op,
    Path_,
    Pattern,
    Remedy,
    Rule,
    RuleTest,
    SlotTest,
    Var,
)
from .schema import check_schema

VAR_RE = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")
PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
NODE_SPEC = AttrSpec("node", "str", "The node the fact is about, or cluster.", False)
INT64 = (-(2**63), 2**63 - 1)
NUMERIC_OPS = {"lt", "le", "gt", "ge"}
STRING_OPS = {"contains", "startswith"}


class RuleErrors(InputError):
    """All the problems found while loading rules; `errors` holds each one with its location."""

    def __init__(self, errors: list[InputError]) -> None:
        self.errors = list(errors)
        first = self.errors[0] if self.errors else None
        super().__init__(
            f"{len(self.errors)} problem(s) in the rules",
            file=first.file if first else None,
            line=first.line if first else None,
            hint="run `kubenetdiag rules lint` for the full list",
        )

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


def shipped_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "rules"


@dataclass
class _Analysis:
    """The result of reading a set of files: rules, plus problems that block loading and
    problems that only the linter reports (tests are a quality gate, not a runtime need)."""

    rules: list[Rule] = field(default_factory=list)
    errors: list[InputError] = field(default_factory=list)
    test_errors: list[InputError] = field(default_factory=list)


class _Bad(Exception):
    pass


def _kind_spec(kind: str) -> KindSpec | None:
    return registry().get(kind)


def _attr_spec(spec: KindSpec, attr: str) -> AttrSpec | None:
    if attr == "node":
        return NODE_SPEC
    return spec.attrs.get(attr)


def coerce(value: Scalar, spec: AttrSpec) -> Scalar:
    """Convert a literal to the attribute's registry type when no information is lost.

    CLIPS compares type and value, so "0" never equals 0: a literal of the wrong type would
    silently never match, which is why anything not convertible exactly is an error.
    """
    if value is None:
        if spec.nullable:
            return None
        raise _Bad(f"{spec.name} is never null, so null never matches")
    if isinstance(value, str) and "\x00" in value:
        raise _Bad("a NUL character is not allowed in a value")
    t = spec.type
    if t == "str":
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    elif t == "int":
        if isinstance(value, bool):
            pass
        elif isinstance(value, int):
            if INT64[0] <= value <= INT64[1]:
                return value
            raise _Bad(f"{value} is out of the 64-bit integer range")
        elif isinstance(value, float) and value.is_integer() and math.isfinite(value):
            return int(value)
        elif isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            return coerce(int(value), spec)
    elif t == "float":
        if isinstance(value, bool):
            pass
        elif isinstance(value, (int, float)):
            if math.isfinite(value):
                return float(value)
            raise _Bad("infinity and NaN are not allowed")
        elif isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                f = None
            if f is not None and math.isfinite(f):
                return f
    elif t == "bool" and isinstance(value, bool):
        return value
    raise _Bad(f"{spec.name} is a {t}; {value!r} is not")


def _number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(f"{value!r} is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise _Bad("infinity and NaN are not allowed")
    if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
        raise _Bad(f"{value} is out of the 64-bit integer range")
    return value


def _as_var(value: Any) -> Var | None | str:
    """A `$name` is a variable; `$$x` is the literal `$x`; other `$...` strings are mistakes."""
    if not isinstance(value, str) or not value.startswith("$"):
        return None
    if value.startswith("$$"):
        return value[1:]
    m = VAR_RE.match(value)
    if not m:
        raise _Bad(f"{value!r} is not a valid variable name (write $name, or $$ for a literal $)")
    return Var(m.group(1))


def _compatible(a: str, b: str) -> bool:
    return a == b or {a, b} <= {"int", "float"}


class _RuleChecker:
    """Checks one schema-valid rule and builds its Rule; problems go to `errors`."""

    def __init__(self, doc: YamlDoc, index: int, raw: dict[str, Any]) -> None:
        self.doc = doc
        self.base: Path_ = ("rules", index)
        self.raw = raw
        self.errors: list[InputError] = []
        self.test_errors: list[InputError] = []
        # variable -> registry type of the attribute that bound it (positive patterns only)
        self.bound: dict[str, str] = {}
        self.order: list[str] = []

    def err(self, path: Path_, message: str, hint: str = "") -> None:
        self.errors.append(self.doc.error((*self.base, *path), message, hint))

    def test_err(self, path: Path_, message: str, hint: str = "") -> None:
        self.test_errors.append(self.doc.error((*self.base, *path), message, hint))

    # -- patterns ---------------------------------------------------------------------------

    def _operand(
        self, raw: Any, spec: AttrSpec, scope: dict[str, str], path: Path_, numeric: bool = False
    ) -> Scalar | Var:
        var = _as_var(raw)
        if isinstance(var, Var):
            if var.name not in scope:
                raise _Bad(f"variable {var} is used before it is bound")
            if not numeric and not _compatible(scope[var.name], spec.type):
                raise _Bad(
                    f"variable {var} holds a {scope[var.name]}, {spec.name} is a {spec.type}"
                )
            return var
        value = var if isinstance(var, str) else raw
        if numeric:
            return _number(value)
        return coerce(value, spec)

    def _slot(
        self, kind: str, spec: KindSpec, attr: str, raw: Any, scope: dict[str, str], path: Path_
    ) -> SlotTest | None:
        a = _attr_spec(spec, attr)
        if a is None:
            self.err(
                path,
                f"unknown attribute {attr!r} of fact kind {kind!r}",
                hint=f"{kind} has: node, {', '.join(spec.attrs)}",
            )
            return None
        try:
            if isinstance(raw, dict):
                return SlotTest(attr, "ops", ops=tuple(self._ops(a, raw, scope, path)))
            var = _as_var(raw)
            if isinstance(var, Var):
                if var.name in scope:
                    if not _compatible(scope[var.name], a.type):
                        raise _Bad(
                            f"variable {var} holds a {scope[var.name]}, {attr} is a {a.type}; "
                            "they can never be equal"
                        )
                else:
                    scope[var.name] = a.type
                return SlotTest(attr, "var", var=var)
            value = var if isinstance(var, str) else raw
            return SlotTest(attr, "literal", literal=coerce(value, a))
        except _Bad as exc:
            self.err(path, f"{kind}.{attr}: {exc}")
            return None

    def _ops(
        self, a: AttrSpec, ops: dict[str, Any], scope: dict[str, str], path: Path_
    ) -> list[Op]:
        out = []
        for op, operand in ops.items():
            if op in NUMERIC_OPS:
                if a.type not in ("int", "float"):
                    raise _Bad(f"{op} compares numbers, but {a.name} is a {a.type}")
                out.append(Op(op, self._operand(operand, a, scope, path, numeric=True)))
            elif op in STRING_OPS:
                if a.type != "str":
                    raise _Bad(f"{op} works on strings, but {a.name} is a {a.type}")
                v = self._operand(operand, a, scope, path)
                out.append(Op(op, v))
            elif op in ("in", "not_in"):
                out.append(Op(op, tuple(self._operand(x, a, scope, path) for x in operand)))
            else:  # eq, ne
                out.append(Op(op, self._operand(operand, a, scope, path)))
        return out

    def _pattern(self, cond: dict[str, Any], path: Path_, negated: bool) -> Pattern | None:
        ((kind, attrs),) = cond.items()
        kpath = (*path, kind)
        spec = _kind_spec(kind)
        if spec is None:
            self.err(
                kpath,
                f"unknown fact kind {kind!r}",
                hint=f"known kinds: {', '.join(sorted(registry()))}",
            )
            return None
        # Variables first bound inside a negation exist only there; positives share one scope.
        scope = dict(self.bound) if negated else self.bound
        tests = []
        ok = True
        for attr, raw in attrs.items():
            before = set(scope)
            t = self._slot(kind, spec, attr, raw, scope, (*kpath, attr))
            if t is None:
                ok = False
                continue
            tests.append(t)
            if not negated:
                self.order.extend(v for v in scope if v not in before)
        return Pattern(kind, negated, tuple(tests), (*self.base, *kpath)) if ok else None

    # -- texts ------------------------------------------------------------------------------

    def _text(self, raw: Any, path: Path_) -> dict[str, str]:
        text = {"en": raw} if isinstance(raw, str) else dict(raw)
        for lang, s in text.items():
            for name in PLACEHOLDER_RE.findall(s):
                if name != "node" and name not in self.bound:
                    self.err(
                        (*path, lang) if isinstance(raw, dict) else path,
                        f"{{{name}}} names no variable bound by the rule's patterns",
                        hint="bind it in a (non-negated) pattern as $" + name,
                    )
        return text

    # -- the rule ---------------------------------------------------------------------------

    def check(self) -> Rule:
        raw = self.raw
        when = []
        for j, cond in enumerate(raw["when"]):
            if "not" in cond:
                p = self._pattern(cond["not"], ("when", j, "not"), negated=True)
            else:
                p = self._pattern(cond, ("when", j), negated=False)
            if p is not None:
                when.append(p)
        if not any(k != "not" for c in raw["when"] for k in c):
            self.err(("when",), "a rule needs at least one pattern that is not negated")
        fault = raw.get("fault")
        if fault is None and "assert" not in raw:
            self.err(
                ("id",),
                "the rule has neither fault nor assert, so it can never conclude anything",
            )

        checked = [self._assert(item, j) for j, item in enumerate(raw.get("assert", []))]
        asserts = [a for a in checked if a is not None]

        on = None
        if "on" in raw:
            v = _as_var(raw["on"])
            if isinstance(v, Var) and v.name in self.bound:
                on = v
                if self.bound[v.name] != "str":
                    self.err(("on",), f"on: {v} holds a {self.bound[v.name]}, not a node name")
            else:
                self.err(("on",), f"on: {raw['on']} is not bound by the rule's patterns")

        texts = {}
        for key in ("title", "explain"):
            if key in raw:
                texts[key] = self._text(raw[key], (key,))
        remediate = []
        for j, r in enumerate(raw.get("remediate", [])):
            remediate.append(
                Remedy(
                    text=self._text(r["text"], ("remediate", j, "text")),
                    command=r.get("command"),
                    changes_state=bool(r.get("changes_state", False)),
                )
            )
        rule = Rule(
            id=raw["id"],
            fault=fault,
            severity=raw.get("severity"),
            confidence=raw.get("confidence", "high"),
            title=texts.get("title", {}).get("en", raw["id"]),
            file=self.doc.file,
            line=self.doc.line_of(self.base),
            texts=texts,
            when=tuple(when),
            asserts=tuple(asserts),
            explains=tuple(raw.get("explains", ())),
            on=on,
            remediate=tuple(remediate),
            raw=raw,
            variables=tuple(self.order),
        )
        rule.tests = tuple(self._tests(rule))
        if fault is not None:
            self._check_langs(rule)
        return rule

    def _check_langs(self, rule: Rule) -> None:
        """Every text an operator sees must exist in every report language (issue 7). A lint
        problem, not a load error: a site rule written in English only still runs."""
        missing: list[tuple[Path_, str]] = []
        for key in ("title", "explain"):
            t = rule.texts.get(key)
            if t is not None:
                missing += [((key,), lang) for lang in LANGS if lang not in t]
        for j, r in enumerate(rule.remediate):
            missing += [(("remediate", j, "text"), lang) for lang in LANGS if lang not in r.text]
        for path, lang in missing:
            self.test_err(
                path,
                f"rule {rule.id} has no {lang} text here",
                hint=f"write the text as a mapping {{en: ..., {lang}: ...}}",
            )

    def _assert(self, item: dict[str, Any], j: int) -> Assertion | None:
        ((kind, attrs),) = item.items()
        path = ("assert", j, kind)
        spec = _kind_spec(kind)
        if spec is None:
            self.err(path, f"unknown fact kind {kind!r}")
            return None
        if not spec.derived:
            self.err(
                path,
                f"{kind} is not a derived kind: rules may not assert it",
                hint="only kinds marked `derived: true` in the facts registry can be asserted",
            )
            return None
        values: dict[str, Scalar | Var] = {}
        ok = True
        for attr, raw in attrs.items():
            a = _attr_spec(spec, attr)
            try:
                if a is None:
                    raise _Bad(f"unknown attribute {attr!r} of fact kind {kind!r}")
                var = _as_var(raw)
                if isinstance(var, Var):
                    if var.name not in self.bound:
                        raise _Bad(f"variable {var} is not bound by the rule's patterns")
                    if not _compatible(self.bound[var.name], a.type):
                        raise _Bad(f"variable {var} holds a {self.bound[var.name]}, not {a.type}")
                    values[attr] = var
                else:
                    values[attr] = coerce(var if isinstance(var, str) else raw, a)
            except _Bad as exc:
                self.err((*path, attr), str(exc))
                ok = False
        for name, a in spec.attrs.items():
            if name not in attrs and not a.nullable:
                self.err(path, f"{kind} needs {name!r}")
                ok = False
        return Assertion(kind, values, (*self.base, *path)) if ok else None

    # -- tests ------------------------------------------------------------------------------

    def _test_fact(self, item: dict[str, Any], path: Path_) -> Fact | None:
        ((kind, attrs),) = item.items()
        spec = _kind_spec(kind)
        if spec is None:
            self.test_err((*path, kind), f"unknown fact kind {kind!r}")
            return None
        node = attrs.get("node")
        ok = True
        if not isinstance(node, str):
            self.test_err((*path, kind, "node"), "node must be a string")
            ok = False
        values = {k: v for k, v in attrs.items() if k != "node"}
        for k, v in values.items():
            a = spec.attrs.get(k)
            if a is None:
                self.test_err((*path, kind, k), f"unknown attribute {k!r} of fact kind {kind!r}")
                ok = False
            elif not a.accepts(v):
                self.test_err((*path, kind, k), f"{kind}.{k}: {v!r} is not a {a.type}")
                ok = False
        for k, a in spec.attrs.items():
            if k not in values and not a.nullable:
                self.test_err((*path, kind), f"{kind} fact needs {k!r}")
                ok = False
        if not ok:
            return None
        return Fact(kind, node, values, Source(probe="rule-test"))

    def _tests(self, rule: Rule) -> list[RuleTest]:
        out = []
        expects_it = expects_none = False
        for j, t in enumerate(self.raw.get("tests", [])):
            path = ("tests", j)
            facts = [self._test_fact(f, (*path, "facts", k)) for k, f in enumerate(t["facts"])]
            expect = []
            for k, e in enumerate(t["expect"]):
                if rule.fault is None:
                    self.test_err(
                        (*path, "expect", k),
                        "this rule has no fault, so it produces no findings to expect",
                    )
                elif e.get("fault", rule.fault) != rule.fault:
                    self.test_err(
                        (*path, "expect", k, "fault"),
                        f"this rule's findings always have fault {rule.fault!r}",
                    )
                else:
                    expects_it = True
                expect.append(dict(e))
            if len(t["expect"]) > 1:
                self.test_err(
                    (*path, "expect"),
                    "a rule yields at most one finding per run (its activations merge into one)",
                    hint="expect one finding whose nodes list every node",
                )
            if not t["expect"]:
                expects_none = True
            line = self.doc.line_of((*self.base, *path))
            good = tuple(f for f in facts if f is not None)
            # Keep a broken test as a failing one: dropping it would let run_tests pass quietly.
            problem = "" if len(good) == len(facts) else "its facts do not match the registry"
            out.append(RuleTest(t["name"], good, tuple(expect), line, problem))
        if rule.fault is not None:
            where = ("tests",) if "tests" in self.raw else ("id",)
            if not expects_it:
                self.test_err(
                    where,
                    f"rule {rule.id} has no test in which it fires",
                    hint=f"add a test whose expect lists a {rule.fault} finding",
                )
            if not expects_none:
                self.test_err(
                    where,
                    f"rule {rule.id} has no test in which it must not fire",
                    hint="add a test with healthy facts and `expect: []`",
                )
        return out


def _restore_on_keys(doc: YamlDoc) -> None:
    """YAML 1.1 reads a bare `on:` key as the boolean true; give rules their `on` back."""
    rules = doc.data.get("rules") if isinstance(doc.data, dict) else None
    if not isinstance(rules, list):
        return
    for i, r in enumerate(rules):
        if isinstance(r, dict) and any(k is True for k in r) and "on" not in r:
            rules[i] = {("on" if k is True else k): v for k, v in r.items()}
            line = doc.lines.get(("rules", i, "True"))
            if line is not None:
                doc.lines[("rules", i, "on")] = line


def _check_file(path: Path) -> _Analysis:
    out = _Analysis()
    try:
        doc = load_yaml_file(path)
    except InputError as exc:
        out.errors.append(exc)
        return out
    _restore_on_keys(doc)
    problems, bad_paths = check_schema(doc)
    out.errors.extend(problems)
    if not isinstance(doc.data, dict) or not isinstance(doc.data.get("rules"), list):
        return out
    broken = {p[1] for p in bad_paths if len(p) >= 2 and p[0] == "rules"}
    for i, raw in enumerate(doc.data["rules"]):
        if i in broken or not isinstance(raw, dict):
            continue
        checker = _RuleChecker(doc, i, raw)
        rule = checker.check()
        out.errors.extend(checker.errors)
        out.test_errors.extend(checker.test_errors)
        if not checker.errors:
            out.rules.append(rule)
    return out


def rule_files(paths: Iterable[Path]) -> tuple[list[Path], list[InputError]]:
    """The rule files under the given files or directories, in a stable order."""
    files: list[Path] = []
    errors: list[InputError] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(
                (f for f in p.rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file()),
                key=lambda f: f.relative_to(p).as_posix(),
            )
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            errors.append(
                InputError(f"rules path not found: {p}", hint="pass a rule file or directory")
            )
    return files, errors


def _check_layer(paths: Iterable[Path]) -> _Analysis:
    files, errors = rule_files(paths)
    out = _Analysis(errors=errors)
    seen: dict[str, Rule] = {}
    done: set[Path] = set()
    for f in files:
        if f.resolve() in done:
            continue
        done.add(f.resolve())
        a = _check_file(f)
        out.errors.extend(a.errors)
        out.test_errors.extend(a.test_errors)
        for r in a.rules:
            first = seen.get(r.id)
            if first is not None:
                out.errors.append(
                    InputError(
                        f"duplicate rule id {r.id!r}",
                        file=r.file,
                        line=r.line,
                        hint=f"first defined at {first.file}:{first.line}",
                    )
                )
                continue
            seen[r.id] = r
            out.rules.append(r)
    return out


def _digest(rules: Sequence[Rule]) -> str:
    h = hashlib.sha256()
    for r in rules:
        h.update(json.dumps(r.raw, sort_keys=True, ensure_ascii=False, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()


def _sorted(errors: Iterable[InputError]) -> list[InputError]:
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
    for rid in disable:
        if rid not in known:
            errors.append(
                InputError(
                    f"--disable {rid}: no such rule",
                    hint="list the rules with `kubenetdiag rules list`",
                )
            )
        drop.add(rid)
    rules = [r for r in rules if r.id not in drop]
    if errors:
        raise RuleErrors(_sorted(errors))
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
