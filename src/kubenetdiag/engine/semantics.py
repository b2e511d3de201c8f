"""Check one schema-valid rule against the facts registry and build its Rule.

The schema knows the shape of a rule; only the registry knows which fact kinds and attributes
exist and of which type each is, and only the rule as a whole knows which variables its patterns
bind. Problems found here block loading: a rule that names an unknown attribute or compares a
string with a number would never match, silently.
"""

from __future__ import annotations

from typing import Any

import yaml

from kubenetdiag.errors import InputError
from kubenetdiag.facts.model import Scalar
from kubenetdiag.facts.registry import AttrSpec, KindSpec, registry

from .commands import quoted_placeholders, state_changes
from .literals import LiteralError, as_number, as_variable, attr_spec, coerce, types_compatible
from .model import Assertion, Op, Path_, Pattern, Remedy, Rule, SlotTest, Var, placeholders
from .rulefiles import RuleLocation

# Values one `in:` or `not_in:` may list (docs/hardening.md).
MAX_IN_VALUES = 1000

NUMERIC_OPS = {"lt", "le", "gt", "ge"}
STRING_OPS = {"contains", "startswith"}


def _join(t: SlotTest) -> str | None:
    """The variable a test holds its attribute equal to (`$v`, `{bind: $v}`, `{eq: $v}`)."""
    if t.var is not None:
        return t.var.name
    for op in t.ops:
        if op.op == "eq" and isinstance(op.operand, Var):
            return op.operand.name
    return None


def _binds(t: SlotTest, fresh: set[str]) -> bool:
    """Whether a test binds a variable that is new in its pattern."""
    return t.var is not None and t.var.name in fresh


def _constrains(t: SlotTest, other: SlotTest) -> bool:
    """Whether test `t` only narrows its attribute where `other` binds it: a literal, or
    operators that neither join a variable (`{eq: $a}`) nor compare with the one `other`
    binds (`{ne: $a}` against `$a` relates two facts and so tells them apart)."""
    if t.form == "literal":
        return True
    if t.form != "ops" or t.var is not None or _join(t) is not None:
        return False
    return not any(
        x == other.var
        for op in t.ops
        for x in (op.operand if isinstance(op.operand, tuple) else (op.operand,))
    )


def _agree(a: SlotTest, b: SlotTest) -> bool:
    """Whether two tests on one attribute leave it free to be the same attribute of one fact:
    written alike, or both equal to one variable (further operators only narrow that value).
    Different literals or variables, or a `ne`, tell two facts apart."""
    return a == b or (_join(a) is not None and _join(a) == _join(b))


class RuleChecker:
    """Checks one schema-valid rule and builds its Rule; problems go to `errors`."""

    def __init__(self, location: RuleLocation, raw: dict[str, Any]) -> None:
        self.location = location
        self.raw = raw
        self.errors: list[InputError] = []
        # Problems only the linter reports: the rule still loads and runs as written (a site rule
        # added mid-outage is not refused over them), but it says less than its author meant.
        self.lint_errors: list[InputError] = []
        # variable -> registry type of the attribute that bound it (positive patterns only)
        self.bound: dict[str, str] = {}
        self.order: list[str] = []
        # variables bound (positively) to a `command: true` attribute: inserted unquoted
        self.verbatim: set[str] = set()

    def err(self, path: Path_, message: str, hint: str = "") -> None:
        self.errors.append(self.location.error(path, message, hint))

    # -- patterns ---------------------------------------------------------------------------

    def _operand(
        self, raw: Any, spec: AttrSpec, scope: dict[str, str], numeric: bool = False
    ) -> Scalar | Var:
        var = as_variable(raw)
        if isinstance(var, Var):
            if var.name not in scope:
                raise LiteralError(f"variable {var} is used before it is bound")
            if not numeric and not types_compatible(scope[var.name], spec.type):
                raise LiteralError(
                    f"variable {var} holds a {scope[var.name]}, {spec.name} is a {spec.type}"
                )
            return var
        value = var if isinstance(var, str) else raw
        if numeric:
            return as_number(value)
        return coerce(value, spec)

    def _slot(
        self, kind: str, spec: KindSpec, attr: str, raw: Any, scope: dict[str, str], path: Path_
    ) -> SlotTest | None:
        attr_type = attr_spec(spec, attr)
        if attr_type is None:
            self.err(
                path,
                f"unknown attribute {attr!r} of fact kind {kind!r}",
                hint=f"{kind} has: node, {', '.join(spec.attrs)}",
            )
            return None
        try:
            if isinstance(raw, dict):
                ops = {k: v for k, v in raw.items() if k != "bind"}
                # The operators are read before the bind takes effect: `{gt: $x, bind: $x}` with
                # $x unbound compares with nothing, and is reported as used before bound.
                checked = tuple(self._ops(attr_type, ops, scope))
                bind = self._bind(attr_type, raw["bind"], scope) if "bind" in raw else None
                return SlotTest(attr, "ops", var=bind, ops=checked)
            var = as_variable(raw)
            if isinstance(var, Var):
                return SlotTest(attr, "var", var=self._bind(attr_type, raw, scope))
            value = var if isinstance(var, str) else raw
            return SlotTest(attr, "literal", literal=coerce(value, attr_type))
        except LiteralError as exc:
            self.err(path, f"{kind}.{attr}: {exc}")
            return None

    def _bind(self, attr: AttrSpec, raw: Any, scope: dict[str, str]) -> Var:
        """The variable `raw` names, bound here to `attr` unless `scope` holds it already (then
        the attribute must equal it, which needs types that can be equal)."""
        var = as_variable(raw)
        if not isinstance(var, Var):
            raise LiteralError(f"bind: {raw!r} is not a $variable")
        if var.name in scope:
            if not types_compatible(scope[var.name], attr.type):
                raise LiteralError(
                    f"variable {var} holds a {scope[var.name]}, "
                    f"{attr.name} is a {attr.type}; they can never be equal"
                )
        else:
            scope[var.name] = attr.type
            if attr.command and scope is self.bound:
                self.verbatim.add(var.name)
        return var

    def _ops(self, attr: AttrSpec, ops: dict[str, Any], scope: dict[str, str]) -> list[Op]:
        out = []
        for op, operand in ops.items():
            if op in NUMERIC_OPS:
                if attr.type not in ("int", "float"):
                    raise LiteralError(f"{op} compares numbers, but {attr.name} is a {attr.type}")
                out.append(Op(op, self._operand(operand, attr, scope, numeric=True)))
            elif op in STRING_OPS:
                if attr.type != "str":
                    raise LiteralError(f"{op} works on strings, but {attr.name} is a {attr.type}")
                out.append(Op(op, self._operand(operand, attr, scope)))
            elif op in ("in", "not_in"):
                if len(operand) > MAX_IN_VALUES:
                    # CLIPS builds one test per value: 100,000 crashed it (a segfault)
                    raise LiteralError(f"{op} lists {len(operand):,} values; at most "
                                       f"{MAX_IN_VALUES:,}: match on a pattern or a shorter list")
                out.append(Op(op, tuple(self._operand(item, attr, scope) for item in operand)))
            else:  # eq, ne
                out.append(Op(op, self._operand(operand, attr, scope)))
        return out

    def _pattern(self, cond: dict[str, Any], path: Path_, negated: bool) -> Pattern | None:
        ((kind, attrs),) = cond.items()
        kind_path = (*path, kind)
        spec = registry().get(kind)
        if spec is None:
            self.err(
                kind_path,
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
            test = self._slot(kind, spec, attr, raw, scope, (*kind_path, attr))
            if test is None:
                ok = False
                continue
            tests.append(test)
            if not negated:
                self.order.extend(v for v in scope if v not in before)
        if not ok:
            return None
        return Pattern(kind, negated, tuple(tests), (*self.location.path, *kind_path))

    # -- texts ------------------------------------------------------------------------------

    def _text(self, raw: Any, path: Path_) -> dict[str, str]:
        text = {"en": raw} if isinstance(raw, str) else dict(raw)
        for lang, words in text.items():
            for name in placeholders(words):
                if name != "node" and name not in self.bound:
                    self.err(
                        (*path, lang) if isinstance(raw, dict) else path,
                        f"{{{name}}} names no variable bound by the rule's patterns",
                        hint="bind it in a (non-negated) pattern as $" + name,
                    )
        return text

    def _command(self, command: str, path: Path_, changes_state: bool) -> None:
        """A `{name}` in a command is filled by the renderer exactly as in texts (model.
        PLACEHOLDER_RE); one that nothing fills would reach the operator's shell as written.
        A command labelled read-only must not change the node (engine.commands)."""
        if not changes_state:
            for why in state_changes(command):
                self.lint_errors.append(self.location.error(
                    path,
                    f"command: {why}, but the step says changes_state: false",
                    hint="label the step changes_state: true, or give a command that only "
                    "reads: an SRE runs a read-only step without a second thought",
                ))
        for name, quote in quoted_placeholders(command):
            if self.bound.get(name) not in ("int", "float", "bool"):
                self.lint_errors.append(self.location.error(
                    path,
                    f"command: {{{name}}} is inside {quote} quotes; its value is filled in "
                    "shell-quoted, which inside quotes ends them, so a hostile value (an "
                    "interface or pod name from a node) would run as a command",
                    hint=f"put it outside the quotes: printf '...%s...' {{{name}}}, or "
                    f"grep -F -- {{{name}}}",
                ))
        for name in placeholders(command):
            if name != "node" and name not in self.bound:
                self.lint_errors.append(self.location.error(
                    path,
                    f"command: {{{name}}} names no variable bound by the rule's patterns, so it "
                    "would be printed as written",
                    hint=f"bind it in a (non-negated) pattern as ${name}; if the braces belong to "
                    f"the command (awk), write {{ {name} }} with spaces",
                ))

    # -- one fact written twice -------------------------------------------------------------

    def _written_twice(self, positives: list[tuple[int, Pattern]]) -> None:
        """Flag the old idiom: one fact written as two patterns, one constraining an attribute
        and the other binding it.

        Two positive patterns of one kind are read as two facts. When one binds a new variable
        on an attribute the other constrains (a literal, or operators without `bind`), the two
        join on a shared variable, and they say the same on every other attribute both name,
        their author meant one fact; but the variable can be bound from any fact of that kind
        that joins, including one that fails the constraint. A deliberate comparison of two
        facts is told apart on some attribute both name (`node: $node` / `node: $other`,
        `key: a` / `key: b`, `value: {ne: $mine}`), and is not flagged.
        """
        earlier: list[tuple[int, Pattern, set[str]]] = []
        seen: set[str] = set()
        for j, p in positives:
            fresh_p = {t.var.name for t in p.tests if t.var is not None} - seen
            mine = {t.attr: t for t in p.tests}
            for i, q, fresh_q in earlier:
                if q.kind != p.kind:
                    continue
                theirs = {t.attr: t for t in q.tests}
                # (attribute, index of the constraining pattern, index of the binding pattern)
                split: list[tuple[str, int, int]] = []
                for a in mine.keys() & theirs.keys():
                    if _binds(mine[a], fresh_p) and _constrains(theirs[a], mine[a]):
                        split.append((a, i, j))
                    elif _binds(theirs[a], fresh_q) and _constrains(mine[a], theirs[a]):
                        split.append((a, j, i))
                common = [a for a in mine if a in theirs and a not in {x[0] for x in split}]
                joined = any(_join(mine[a]) and _join(mine[a]) == _join(theirs[a])
                             for a in common)
                if split and joined and all(_agree(mine[a], theirs[a]) for a in common):
                    self._idiom(i, j, p.kind, sorted(split))
            seen |= fresh_p
            earlier.append((j, p, fresh_p))

    def _idiom(self, i: int, j: int, kind: str, split: list[tuple[str, int, int]]) -> None:
        when = self.raw["when"]
        merged = []
        names = []
        for a, by, to in split:
            constraint = when[by][kind][a]
            ops = constraint if isinstance(constraint, dict) else {"eq": constraint}
            var = when[to][kind][a]
            bind = var["bind"] if isinstance(var, dict) else var
            names.append(str(bind))
            flow = yaml.safe_dump({**ops, "bind": bind}, default_flow_style=True,
                                  sort_keys=False, allow_unicode=True, width=10**6).strip()
            merged.append(f"{a}: {flow}")
        line = self.location.line(("when", i, kind))
        bound = ", ".join(names)
        self.lint_errors.append(self.location.error(
            ("when", j, kind),
            f"{kind} is written twice: this pattern and the one at line {line} are meant as one "
            f"fact, one binding {bound} and the other constraining it; but two patterns match "
            f"any two {kind} facts that join, so {bound} can come from a fact that fails the "
            "constraint",
            hint=f"write one pattern that constrains and binds, {'; '.join(merged)}, with the "
            "other attributes of both (to compare two different facts, tell them apart on an "
            "attribute both name, e.g. node: $node and node: $other)",
        ))

    # -- the rule ---------------------------------------------------------------------------

    def check(self) -> Rule:
        """The Rule, with no tests yet; it is usable only if `errors` stayed empty."""
        raw = self.raw
        when = []
        positives: list[tuple[int, Pattern]] = []
        for j, cond in enumerate(raw["when"]):
            if "not" in cond:
                pattern = self._pattern(cond["not"], ("when", j, "not"), negated=True)
            else:
                pattern = self._pattern(cond, ("when", j), negated=False)
                if pattern is not None:
                    positives.append((j, pattern))
            if pattern is not None:
                when.append(pattern)
        self._written_twice(positives)
        if not any(k != "not" for cond in raw["when"] for k in cond):
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
            var = as_variable(raw["on"])
            if isinstance(var, Var) and var.name in self.bound:
                on = var
                if self.bound[var.name] != "str":
                    self.err(("on",), f"on: {var} holds a {self.bound[var.name]}, not a node name")
            else:
                self.err(("on",), f"on: {raw['on']} is not bound by the rule's patterns")

        texts = {}
        for key in ("title", "explain"):
            if key in raw:
                texts[key] = self._text(raw[key], (key,))
        remediate = []
        for j, step in enumerate(raw.get("remediate", [])):
            if step.get("command"):
                self._command(step["command"], ("remediate", j, "command"),
                              bool(step.get("changes_state", False)))
            remediate.append(
                Remedy(
                    text=self._text(step["text"], ("remediate", j, "text")),
                    command=step.get("command"),
                    changes_state=bool(step.get("changes_state", False)),
                )
            )
        return Rule(
            id=raw["id"],
            fault=fault,
            severity=raw.get("severity"),
            confidence=raw.get("confidence", "high"),
            title=texts.get("title", {}).get("en", raw["id"]),
            file=self.location.doc.file,
            line=self.location.line(),
            texts=texts,
            when=tuple(when),
            asserts=tuple(asserts),
            explains=tuple(raw.get("explains", ())),
            on=on,
            remediate=tuple(remediate),
            raw=raw,
            variables=tuple(self.order),
            verbatim=frozenset(self.verbatim),
        )

    def _assert(self, item: dict[str, Any], j: int) -> Assertion | None:
        ((kind, attrs),) = item.items()
        path = ("assert", j, kind)
        spec = registry().get(kind)
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
            attr_type = attr_spec(spec, attr)
            try:
                if attr_type is None:
                    raise LiteralError(f"unknown attribute {attr!r} of fact kind {kind!r}")
                var = as_variable(raw)
                if isinstance(var, Var):
                    if var.name not in self.bound:
                        raise LiteralError(f"variable {var} is not bound by the rule's patterns")
                    if not types_compatible(self.bound[var.name], attr_type.type):
                        raise LiteralError(
                            f"variable {var} holds a {self.bound[var.name]}, not {attr_type.type}"
                        )
                    values[attr] = var
                else:
                    values[attr] = coerce(var if isinstance(var, str) else raw, attr_type)
            except LiteralError as exc:
                self.err((*path, attr), str(exc))
                ok = False
        for name, spec_attr in spec.attrs.items():
            if name not in attrs and not spec_attr.nullable:
                self.err(path, f"{kind} needs {name!r}")
                ok = False
        return Assertion(kind, values, (*self.location.path, *path)) if ok else None
