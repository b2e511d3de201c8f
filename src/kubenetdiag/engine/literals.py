"""How a value written in a rule is read: a `$variable`, or a literal of a registry type.

CLIPS compares type and value, so "0" never equals 0: a literal of the wrong type would silently
never match. That is why a value is converted only when nothing is lost, and anything else is a
problem the rule author hears about.
"""

from __future__ import annotations

import math
import re
from typing import Any

from kubenetdiag.facts.model import Scalar
from kubenetdiag.facts.registry import AttrSpec, KindSpec

from .model import Var

VAR_RE = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")
# Every fact has a node, though the registry does not list it among a kind's attributes.
NODE_SPEC = AttrSpec("node", "str", "The node the fact is about, or cluster.", False)
INT64 = (-(2**63), 2**63 - 1)


class LiteralError(Exception):
    """A value a rule cannot use where it stands; the caller adds the file and line."""


def attr_spec(spec: KindSpec, attr: str) -> AttrSpec | None:
    """The registry entry of `attr` in a kind, counting the `node` every fact has."""
    if attr == "node":
        return NODE_SPEC
    return spec.attrs.get(attr)


def coerce(value: Scalar, spec: AttrSpec) -> Scalar:
    """Convert a literal to the attribute's registry type when no information is lost."""
    if value is None:
        if spec.nullable:
            return None
        raise LiteralError(f"{spec.name} is never null, so null never matches")
    if isinstance(value, str) and "\x00" in value:
        raise LiteralError("a NUL character is not allowed in a value")
    kind = spec.type
    if kind == "str":
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    elif kind == "int":
        if isinstance(value, bool):
            pass
        elif isinstance(value, int):
            if INT64[0] <= value <= INT64[1]:
                return value
            raise LiteralError(f"{value} is out of the 64-bit integer range")
        elif isinstance(value, float) and value.is_integer() and math.isfinite(value):
            return int(value)
        elif isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            return coerce(int(value), spec)
    elif kind == "float":
        if isinstance(value, bool):
            pass
        elif isinstance(value, (int, float)):
            if math.isfinite(value):
                return float(value)
            raise LiteralError("infinity and NaN are not allowed")
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
            if number is not None and math.isfinite(number):
                return number
    elif kind == "bool" and isinstance(value, bool):
        return value
    raise LiteralError(f"{spec.name} is a {kind}; {value!r} is not")


def as_number(value: Any) -> int | float:
    """`value` as the operand of a numeric comparison, which CLIPS makes across int and float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LiteralError(f"{value!r} is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise LiteralError("infinity and NaN are not allowed")
    if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
        raise LiteralError(f"{value} is out of the 64-bit integer range")
    return value


def as_variable(value: Any) -> Var | None | str:
    """A `$name` is a variable; `$$x` is the literal `$x`; other `$...` strings are mistakes.

    None means `value` is no `$` string at all and is to be read as a literal.
    """
    if not isinstance(value, str) or not value.startswith("$"):
        return None
    if value.startswith("$$"):
        return value[1:]
    match = VAR_RE.match(value)
    if not match:
        raise LiteralError(
            f"{value!r} is not a valid variable name (write $name, or $$ for a literal $)"
        )
    return Var(match.group(1))


def types_compatible(first: str, second: str) -> bool:
    """Whether values of two registry types can ever be equal (CLIPS equates 1 and 1.0)."""
    return first == second or {first, second} <= {"int", "float"}
