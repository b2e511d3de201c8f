"""Compile checked rules into CLIPS constructs.

Rule files are untrusted, so nothing from them is pasted into CLIPS text unquoted: construct,
template, slot and variable names are generated (templates and slots from the trusted registry,
behind a fixed prefix), and every string literal goes through `clips_literal`. Titles, texts and
commands never reach CLIPS at all.

How results come back: each rule's action asserts a `__fired` fact (rule index, the `__id`s of the
facts its positive patterns matched, and the values of its variables). Derived facts get their
`__id` from a Python callback keyed on their content, so the same conclusion reached twice is the
same fact to CLIPS (no duplicate activations, and symptom<->cause cycles terminate), and they
carry `__from`, the ids they were concluded from, so evidence expands to base facts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubenetdiag.facts.model import Scalar
from kubenetdiag.facts.registry import KindSpec, registry

from .model import Assertion, Op, Pattern, Rule, SlotTest, Var

FIRED = "__fired"
DERIVE_FN = "kd-derive"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_CMP = {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}


class CompileError(Exception):
    def __init__(self, rule: Rule | None, message: str) -> None:
        super().__init__(message)
        self.rule = rule


def clips_literal(value: Scalar) -> str:
    """A CLIPS literal for a Python scalar, matching how facts are asserted: str -> STRING,
    None -> nil, bool -> TRUE/FALSE, numbers as numbers."""
    if value is None:
        return "nil"
    if value is True:
        return "TRUE"
    if value is False:
        return "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("non-finite float")
        return repr(value)  # always has "." or "e", so CLIPS reads a FLOAT
    if isinstance(value, str):
        if "\x00" in value:
            # The construct goes to C as a NUL-terminated string: a NUL would cut it short.
            raise ValueError("NUL character in a string")
        return clips_string(value)
    raise TypeError(f"not a scalar: {type(value).__name__}")


def clips_string(value: str) -> str:
    """A CLIPS string literal; the caller has dealt with NUL characters."""
    if "\\" in value or '"' in value:
        # Inside a CLIPS string only backslash and double quote are special.
        value = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + value + '"'


def _slot_name(attr: str) -> str:
    if not _NAME_RE.match(attr):
        raise CompileError(None, f"registry attribute {attr!r} is not a plain name")
    return "f_" + attr


def _template_name(kind: str) -> str:
    if not _NAME_RE.match(kind):
        raise CompileError(None, f"registry kind {kind!r} is not a plain name")
    return "k_" + kind


@dataclass
class KindLayout:
    """How one fact kind lives in CLIPS, and which base facts of it are worth asserting."""

    kind: str
    template: str
    attrs: tuple[str, ...]  # every registry attribute, in registry order
    matched: bool = False  # some pattern names this kind: only then are base facts asserted
    referenced: set[str] = field(default_factory=set)  # attributes some pattern constrains
    # Each pattern's variable-free constraints as (attr, allowed values or predicate). A fact
    # that fails every pattern's constraints can match no pattern (not even a negated one), so
    # it is not asserted at all. None = some pattern has none: assert every fact of the kind.
    filters: list[tuple[tuple[str, Check], ...]] | None = field(default_factory=list)

    def slot(self, attr: str) -> str:
        return _slot_name(attr)


@dataclass
class Program:
    rules: list[Rule]
    kinds: dict[str, KindLayout]
    derived_kinds: list[str]  # index used by the derive callback
    templates: list[str]
    rule_constructs: list[str]


def _template(layout: KindLayout, spec: KindSpec) -> str:
    slots = ["(slot __id)"]
    if spec.derived:
        slots.append("(multislot __from)")
    slots.append("(slot f_node (default nil))")
    slots += [f"(slot {_slot_name(a)} (default nil))" for a in layout.attrs]
    return f"(deftemplate {layout.template} {' '.join(slots)})"


Check = frozenset | Callable[[Any], bool]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _op_check(op: Op) -> Check | None:
    """A Python test that every value the CLIPS constraint accepts also passes (it may accept
    more, never less); None when the operand is a variable, known only during matching."""
    x = op.operand
    if isinstance(x, Var) or (isinstance(x, tuple) and any(isinstance(i, Var) for i in x)):
        return None
    if op.op == "eq":
        return frozenset([x])
    if op.op == "in":
        return frozenset(x)  # type: ignore[arg-type]
    if op.op == "ne":
        return lambda v: v != x
    if op.op == "not_in":
        excluded = frozenset(x)  # type: ignore[arg-type]
        return lambda v: v not in excluded
    if op.op == "lt":
        return lambda v: _is_number(v) and v < x
    if op.op == "le":
        return lambda v: _is_number(v) and v <= x
    if op.op == "gt":
        return lambda v: _is_number(v) and v > x
    if op.op == "ge":
        return lambda v: _is_number(v) and v >= x
    if op.op == "contains":
        return lambda v: isinstance(v, str) and x in v
    if op.op == "startswith":
        return lambda v: isinstance(v, str) and v.startswith(x)
    return None


def _prefilter(pattern: Pattern) -> tuple[tuple[str, Check], ...]:
    """The pattern's constraints that need no variable, as (attr, set or predicate)."""
    out: list[tuple[str, Check]] = []
    for t in pattern.tests:
        if t.form == "literal":
            out.append((t.attr, frozenset([t.literal])))
        elif t.form == "ops":
            for op in t.ops:
                check = _op_check(op)
                if check is not None:
                    out.append((t.attr, check))
    return tuple(out)


class _RuleCompiler:
    def __init__(self, rule: Rule, index: int, program: Program, level: int = 0) -> None:
        self.rule = rule
        self.index = index
        self.program = program
        self.level = level
        self.names: dict[str, str] = {}  # positive variables -> CLIPS variable
        self.ids: list[str] = []

    def _operand(self, x: Scalar | Var, scope: dict[str, str]) -> str:
        if isinstance(x, Var):
            return scope[x.name]
        return clips_literal(x)

    def _ops(self, tvar: str, ops: Sequence[Op], scope: dict[str, str]) -> str:
        parts = [tvar]
        guarded = set()

        def guard(pred: str, var: str) -> None:
            # Numeric/string predicates raise a CLIPS error on the wrong type (a null, a string
            # where a number was expected); test the type first so such facts just don't match.
            if (pred, var) not in guarded:
                guarded.add((pred, var))
                parts.append(f":({pred} {var})")

        for op in ops:
            if op.op == "eq":
                parts.append(f":(eq {tvar} {self._operand(op.operand, scope)})")  # type: ignore[arg-type]
            elif op.op == "ne":
                parts.append(f":(neq {tvar} {self._operand(op.operand, scope)})")  # type: ignore[arg-type]
            elif op.op in _CMP:
                x = self._operand(op.operand, scope)  # type: ignore[arg-type]
                guard("numberp", tvar)
                if isinstance(op.operand, Var):
                    guard("numberp", x)
                parts.append(f":({_CMP[op.op]} {tvar} {x})")
            elif op.op == "in":
                alts = [f"(eq {tvar} {self._operand(x, scope)})" for x in op.operand]  # type: ignore[union-attr]
                # CLIPS's `or` takes two arguments at least: `in: [one]` is that one test
                parts.append(f":(or {' '.join(alts)})" if len(alts) > 1 else f":{alts[0]}")
            elif op.op == "not_in":
                xs = " ".join(self._operand(x, scope) for x in op.operand)  # type: ignore[union-attr]
                parts.append(f":(neq {tvar} {xs})")
            elif op.op in ("contains", "startswith"):
                x = self._operand(op.operand, scope)  # type: ignore[arg-type]
                guard("stringp", tvar)
                if isinstance(op.operand, Var):
                    guard("stringp", x)
                if op.op == "contains":
                    parts.append(f":(str-index {x} {tvar})")
                else:
                    parts.append(f":(eq (str-index {x} {tvar}) 1)")
            else:
                raise CompileError(self.rule, f"unknown operator {op.op!r}")
        return "&".join(parts)

    def _slot(self, t: SlotTest, pi: int, si: int, scope: dict[str, str], local: str) -> str:
        slot = _slot_name(t.attr)
        if t.form == "literal":
            return f"({slot} {clips_literal(t.literal)})"
        if t.form == "var":
            return f"({slot} {self._var(t.var, scope, local)})"
        if t.var is not None:
            # `{ops..., bind: $x}`: the operators test $x's own CLIPS variable, so the value that
            # passes them is the value bound (`?v3&:(or (eq ?v3 ...))`); were $x bound before,
            # the same text is an equality join plus the operators. The operands were bound
            # earlier (the checker saw to it), so naming $x first cannot change them.
            return f"({slot} {self._ops(self._var(t.var, scope, local), t.ops, scope)})"
        return f"({slot} {self._ops(f'?t{pi}_{si}', t.ops, scope)})"

    @staticmethod
    def _var(var: Var | None, scope: dict[str, str], local: str) -> str:
        """The CLIPS variable of `var`, named now if this is where it is first bound."""
        assert var is not None
        name = scope.get(var.name)
        if name is None:
            name = f"?{local}{len(scope)}"
            scope[var.name] = name
        return name

    def _pattern(self, p: Pattern, pi: int) -> str:
        layout = self.program.kinds[p.kind]
        if p.negated:
            # Variables first bound here are local to the negation: give them their own names
            # so a later positive pattern binding the same $name is unaffected.
            scope = dict(self.names)
            local = f"n{pi}_"
        else:
            scope = self.names
            local = "v"
        slots = [self._slot(t, pi, si, scope, local) for si, t in enumerate(p.tests)]
        if p.negated:
            return f"(not ({layout.template} {' '.join(slots)}))"
        idvar = f"?i{pi}"
        self.ids.append(idvar)
        return f"({layout.template} (__id {idvar}) {' '.join(slots)})"

    def _assertion(self, a: Assertion, k: int) -> str:
        spec = registry()[a.kind]
        kind_index = self.program.derived_kinds.index(a.kind)
        values = []
        attrs = ("node", *spec.attrs)
        for attr in attrs:
            v = a.values.get(attr)
            values.append(self.names[v.name] if isinstance(v, Var) else clips_literal(v))
        slots = " ".join(f"({_slot_name(n)} {v})" for n, v in zip(attrs, values, strict=True))
        dvar = f"?d{k}"
        ids = " ".join(self.ids)
        return (
            f"(bind {dvar} ({DERIVE_FN} {self.index} {kind_index} {len(self.ids)} {ids} "
            f"{' '.join(values)})) "
            f"(assert ({self.program.kinds[a.kind].template} (__id {dvar}) (__from {ids}) {slots}))"
        )

    def compile(self) -> str:
        lhs = [self._pattern(p, pi) for pi, p in enumerate(self.rule.when)]
        vals = " ".join(self.names[v] for v in self.rule.variables)
        rhs = [self._assertion(a, k) for k, a in enumerate(self.rule.asserts)]
        rhs.append(
            f"(assert ({FIRED} (rule {self.index}) (ids {' '.join(self.ids)}) (vals {vals})))"
        )
        declare = f"(declare (salience {-10 * self.level})) " if self.level else ""
        return f"(defrule r{self.index} {declare}{' '.join(lhs)} => {' '.join(rhs)})"


def _may_assert(a: Assertion, p: Pattern) -> bool:
    """Whether assertion `a` can produce a fact that pattern `p` matches, judged on the
    constants both give (a variable can be anything)."""
    if a.kind != p.kind:
        return False
    for t in p.tests:
        v = a.values.get(t.attr)
        if isinstance(v, Var):
            continue
        if t.form == "literal" and v != t.literal:
            return False
        for op in t.ops if t.form == "ops" else ():
            check = _op_check(op)
            if type(check) is frozenset and v not in check:
                return False
    return True


def strata(rules: Sequence[Rule]) -> list[int]:
    """Each rule's stratum: 0 without a negated derived pattern, else one above every rule
    whose assertion could match that pattern.

    A negated derived pattern ("no cause explains this symptom") is only true once every rule
    that could still assert such a fact has had its turn. CLIPS fires the higher salience first,
    so a rule at stratum n (salience -10n) runs after every rule below it. One shared 'late'
    level was not enough: a CoreDNS cause rule that itself waits for path causes and the DNS
    symptom rule that waits for it raced, and the symptom was reported beside its cause.
    A cycle (two rules each waiting for the other's assertion) keeps the rules on one stratum.
    """
    reg = registry()
    waits: list[list[int]] = []
    for r in rules:
        negs = [p for p in r.when if p.negated and reg[p.kind].derived]
        waits.append([
            j for j, other in enumerate(rules)
            if other is not r and any(_may_assert(a, p) for a in other.asserts for p in negs)
        ] if negs else [])
    level: dict[int, int] = {}
    visiting: set[int] = set()

    def depth(i: int) -> int:
        if i in level:
            return level[i]
        if not waits[i]:
            level[i] = 0
            return 0
        visiting.add(i)
        below = [depth(j) for j in waits[i] if j not in visiting]
        visiting.discard(i)
        level[i] = 1 + max(below, default=0)
        return level[i]

    return [depth(i) for i in range(len(rules))]


def compile_rules(rules: Sequence[Rule]) -> Program:
    reg = registry()
    kinds: dict[str, KindLayout] = {}

    def layout(kind: str) -> KindLayout:
        if kind not in kinds:
            kinds[kind] = KindLayout(kind, _template_name(kind), tuple(reg[kind].attrs))
        return kinds[kind]

    derived: list[str] = []
    for r in rules:
        for p in r.when:
            lay = layout(p.kind)
            lay.matched = True
            lay.referenced.update(t.attr for t in p.tests if t.attr != "node")
            filt = _prefilter(p)
            if not filt:
                lay.filters = None
            elif lay.filters is not None:
                lay.filters.append(filt)
        for a in r.asserts:
            layout(a.kind)
            if a.kind not in derived:
                derived.append(a.kind)
    program = Program(list(rules), kinds, derived, [], [])
    program.templates = [
        f"(deftemplate {FIRED} (slot rule) (multislot ids) (multislot vals))",
        *(_template(lay, reg[k]) for k, lay in kinds.items()),
    ]
    levels = strata(rules)
    for i, r in enumerate(rules):
        try:
            program.rule_constructs.append(_RuleCompiler(r, i, program, levels[i]).compile())
        except (ValueError, TypeError) as exc:
            raise CompileError(r, str(exc)) from None
    return program
