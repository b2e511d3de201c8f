"""Check one schema-valid rule against the facts registry and build its Rule.

The schema knows the shape of a rule; only the registry knows which fact kinds and attributes
exist and of which type each is, and only the rule as a whole knows which variables its patterns
bind. Problems found here block loading: a rule that names an unknown attribute or compares a
string with a number would never match, silently.
"""

from __future__ import annotations

from typing import Any

from kubenetdiag.errors import InputError
from kubenetdiag.facts.model import Scalar
from kubenetdiag.facts.registry import AttrSpec, KindSpec, registry

from .literals import LiteralError, as_number, as_variable, attr_spec, coerce, types_compatible
from .model import PLACEHOLDER_RE, Assertion, Op, Path_, Pattern, Remedy, Rule, SlotTest, Var
from .rulefiles import RuleLocation

NUMERIC_OPS = {"lt", "le", "gt", "ge"}
STRING_OPS = {"contains", "startswith"}


class RuleChecker:
    """Checks one schema-valid rule and builds its Rule; problems go to `errors`."""

    def __init__(self, location: RuleLocation, raw: dict[str, Any]) -> None:
        self.location = location
        self.raw = raw
        self.errors: list[InputError] = []
        # variable -> registry type of the attribute that bound it (positive patterns only)
        self.bound: dict[str, str] = {}
        self.order: list[str] = []

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
                return SlotTest(attr, "ops", ops=tuple(self._ops(attr_type, raw, scope)))
            var = as_variable(raw)
            if isinstance(var, Var):
                if var.name in scope:
                    if not types_compatible(scope[var.name], attr_type.type):
                        raise LiteralError(
                            f"variable {var} holds a {scope[var.name]}, "
                            f"{attr} is a {attr_type.type}; they can never be equal"
                        )
                else:
                    scope[var.name] = attr_type.type
                return SlotTest(attr, "var", var=var)
            value = var if isinstance(var, str) else raw
            return SlotTest(attr, "literal", literal=coerce(value, attr_type))
        except LiteralError as exc:
            self.err(path, f"{kind}.{attr}: {exc}")
            return None

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
            for name in PLACEHOLDER_RE.findall(words):
                if name != "node" and name not in self.bound:
                    self.err(
                        (*path, lang) if isinstance(raw, dict) else path,
                        f"{{{name}}} names no variable bound by the rule's patterns",
                        hint="bind it in a (non-negated) pattern as $" + name,
                    )
        return text

    # -- the rule ---------------------------------------------------------------------------

    def check(self) -> Rule:
        """The Rule, with no tests yet; it is usable only if `errors` stayed empty."""
        raw = self.raw
        when = []
        for j, cond in enumerate(raw["when"]):
            if "not" in cond:
                pattern = self._pattern(cond["not"], ("when", j, "not"), negated=True)
            else:
                pattern = self._pattern(cond, ("when", j), negated=False)
            if pattern is not None:
                when.append(pattern)
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
