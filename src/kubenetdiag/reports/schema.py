"""The report's JSON Schema: validation with a JSON path, and the canonical key order."""

from __future__ import annotations

import json
import numbers
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

REPORT_SCHEMA_PATH: Path = Path(__file__).with_name("report.schema.json")


@cache
def report_schema() -> dict[str, Any]:
    return json.loads(REPORT_SCHEMA_PATH.read_text("utf-8"))


@cache
def _validator() -> Draft202012Validator:
    schema = report_schema()
    # the shipped schema is checked against the metaschema by a test, not on every run
    return Draft202012Validator(schema)


def _json_path(parts: list[str | int]) -> str:
    out = "$"
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif p.isidentifier():
            out += f".{p}"
        else:
            # Language tags and attribute names are not always identifiers (zh-CN).
            out += f"[{json.dumps(p)}]"
    return out


def _document_order(report: Any, error: ValidationError) -> list[int]:
    # Errors come out in schema-walk order; ranking them by where they sit in the report (key
    # positions, array indexes) makes "the first problem" the one a reader of the JSON meets first.
    order = []
    node = report
    for part in error.absolute_path:
        if isinstance(node, dict):
            order.append(list(node).index(part))
        else:
            order.append(int(part))
        node = node[part]
    return order


# --------------------------------------------------------------------------- fast check
#
# jsonschema walks the schema anew for every value, creating a validator object per keyword
# level: at 5,000 nodes (80,000 objects) one validation took 4.5 s of CPU. The report's schema
# uses a small set of keywords, so it is compiled once into plain Python checks that answer
# only "valid or not". jsonschema stays the authority: it runs whenever the fast check says
# no (to name the problem) and whenever the schema uses a keyword the compiler does not know.

Check = Callable[[Any], bool]

# Keywords that never make an instance invalid here (format is an annotation unless a format
# checker is given, and _validator() gives none).
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$comment", "$defs", "title", "description", "format", "default",
     "examples"}
)
_COMPILED = frozenset(
    {"$ref", "type", "const", "enum", "minLength", "maxLength", "pattern", "minimum", "maximum",
     "items", "minItems", "maxItems", "required", "properties", "additionalProperties",
     "propertyNames", "anyOf"}
)


class UnsupportedSchema(Exception):
    """The schema uses something the fast check does not implement: use jsonschema alone."""


def _is_number(v: Any) -> bool:
    t = type(v)
    if t is int or t is float:
        return True
    return isinstance(v, numbers.Number) and not isinstance(v, bool)


def _is_integer(v: Any) -> bool:
    # Draft 2020-12: 1.0 is an integer, True is not.
    if isinstance(v, bool):
        return False
    return isinstance(v, int) or (isinstance(v, float) and v.is_integer())


_TYPES: dict[str, Check] = {
    "string": lambda v: isinstance(v, str),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": _is_number,
    "integer": _is_integer,
}


def _equal(value: Any, allowed: Any) -> bool:
    """jsonschema's equality for a scalar `allowed`: True is not 1, False is not 0."""
    if value is allowed:
        return True
    if isinstance(value, str) or isinstance(allowed, str):
        return value == allowed
    if isinstance(value, bool) or isinstance(allowed, bool):
        return False  # `is` above was the only way for a bool to be equal
    return value == allowed


def _all(checks: list[Check]) -> Check:
    if not checks:
        return lambda v: True
    if len(checks) == 1:
        return checks[0]
    checks_t = tuple(checks)

    def check(v: Any) -> bool:
        for c in checks_t:  # noqa: SIM110 (a generator per value costs twice the time)
            if not c(v):
                return False
        return True

    return check


def _type_check(types: Any) -> Check:
    names = [types] if isinstance(types, str) else list(types)
    if not names or any(n not in _TYPES for n in names):
        raise UnsupportedSchema(f"type {types!r}")
    preds = tuple(_TYPES[n] for n in names if n != "null")
    if len(preds) == 1:
        one = preds[0]
        return (lambda v: v is None or one(v)) if "null" in names else one
    if not preds:
        return _TYPES["null"]
    nullable = "null" in names
    return lambda v: (nullable and v is None) or any(p(v) for p in preds)


def _scalar(value: Any) -> Any:
    if value is not None and not isinstance(value, (str, int, float)):
        raise UnsupportedSchema(f"const/enum value {value!r}")
    return value


def _string_check(schema: dict) -> Check | None:
    lo, hi, pat = schema.get("minLength"), schema.get("maxLength"), schema.get("pattern")
    if lo is None and hi is None and pat is None:
        return None
    search = re.compile(pat).search if pat is not None else None

    def check(v: Any) -> bool:
        if not isinstance(v, str):
            return True
        if lo is not None and len(v) < lo:
            return False
        if hi is not None and len(v) > hi:
            return False
        return search is None or search(v) is not None

    return check


def _number_check(schema: dict) -> Check | None:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if lo is None and hi is None:
        return None

    def check(v: Any) -> bool:
        if not _is_number(v):
            return True
        if lo is not None and v < lo:
            return False
        return not (hi is not None and v > hi)

    return check


class _Compiler:
    def __init__(self, root: dict) -> None:
        self.root = root
        self.refs: dict[str, Check] = {}
        self.compiling: set[str] = set()

    def ref(self, ref: Any) -> Check:
        if not isinstance(ref, str) or not ref.startswith("#/$defs/"):
            raise UnsupportedSchema(f"$ref {ref!r}")
        if ref not in self.refs:
            if ref in self.compiling:
                raise UnsupportedSchema(f"recursive $ref {ref!r}")
            name = ref.removeprefix("#/$defs/")
            target = self.root.get("$defs", {}).get(name)
            if target is None:
                raise UnsupportedSchema(f"$ref {ref!r} points nowhere")
            self.compiling.add(ref)
            self.refs[ref] = self.compile(target)
            self.compiling.discard(ref)
        return self.refs[ref]

    def compile(self, schema: Any) -> Check:
        if schema is True:
            return lambda v: True
        if schema is False:
            return lambda v: False
        if not isinstance(schema, dict):
            raise UnsupportedSchema(f"schema {schema!r}")
        unknown = set(schema) - _ANNOTATIONS - _COMPILED
        if unknown:
            raise UnsupportedSchema(f"keywords {sorted(unknown)}")
        checks: list[Check] = []
        if "type" in schema:
            checks.append(_type_check(schema["type"]))
        if "const" in schema:
            const = _scalar(schema["const"])
            checks.append(lambda v: _equal(v, const))
        if "enum" in schema:
            allowed = tuple(_scalar(e) for e in schema["enum"])
            checks.append(lambda v: any(_equal(v, a) for a in allowed))
        for extra in (_string_check(schema), _number_check(schema)):
            if extra is not None:
                checks.append(extra)
        if {"items", "minItems", "maxItems"} & set(schema):
            checks.append(self.array(schema))
        if {"required", "properties", "additionalProperties", "propertyNames"} & set(schema):
            checks.append(self.object(schema))
        if "anyOf" in schema:
            alts = tuple(self.compile(s) for s in schema["anyOf"])
            if not alts:
                raise UnsupportedSchema("empty anyOf")
            checks.append(lambda v: any(a(v) for a in alts))
        if "$ref" in schema:
            checks.append(self.ref(schema["$ref"]))
        return _all(checks)

    def array(self, schema: dict) -> Check:
        item = self.compile(schema["items"]) if "items" in schema else None
        lo, hi = schema.get("minItems"), schema.get("maxItems")

        def check(v: Any) -> bool:
            if not isinstance(v, list):
                return True
            if lo is not None and len(v) < lo:
                return False
            if hi is not None and len(v) > hi:
                return False
            if item is not None:
                for x in v:
                    if not item(x):
                        return False
            return True

        return check

    def object(self, schema: dict) -> Check:
        required = tuple(schema.get("required", ()))
        props = tuple((k, self.compile(s)) for k, s in schema.get("properties", {}).items())
        known = frozenset(k for k, _ in props)
        extra = schema.get("additionalProperties", True)
        closed = extra is False
        extra_check = None if isinstance(extra, bool) else self.compile(extra)
        names = self.compile(schema["propertyNames"]) if "propertyNames" in schema else None

        def check(v: Any) -> bool:
            if not isinstance(v, dict):
                return True
            for k in required:
                if k not in v:
                    return False
            if closed and not known.issuperset(v):
                return False
            for k, c in props:
                if k in v and not c(v[k]):
                    return False
            if extra_check is not None:
                for k, x in v.items():
                    if k not in known and not extra_check(x):
                        return False
            if names is not None:
                for k in v:
                    if not names(k):
                        return False
            return True

        return check


def compile_schema(schema: dict) -> Check:
    """A function telling whether an instance is valid under `schema` (a JSON Schema using only
    the keywords above, with local `#/$defs/` references); UnsupportedSchema otherwise."""
    return _Compiler(schema).compile(schema)


@cache
def _fast_check() -> Check | None:
    try:
        return compile_schema(report_schema())
    except UnsupportedSchema:
        return None


def validate_report(report: dict) -> None:
    """Raise ValueError naming the JSON path of the first problem, e.g. `$.findings[0].fault`."""
    fast = _fast_check()
    if fast is not None and fast(report):
        return
    errors = list(_validator().iter_errors(report))
    if not errors:
        return
    error = min(errors, key=lambda e: _document_order(report, e))
    parts: list[str | int] = list(error.absolute_path)
    message = error.message
    if error.validator == "required" and isinstance(error.instance, dict):
        # Point at the missing key itself, which is what the producer has to add.
        missing = [k for k in error.validator_value if k not in error.instance]
        if missing:
            parts.append(missing[0])
            message = "required property is missing"
    raise ValueError(f"invalid report at {_json_path(parts)}: {message}")


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return report_schema()["$defs"][ref.removeprefix("#/$defs/")]
    return node


def order_like_schema(value: Any, node: dict[str, Any] | None = None) -> Any:
    """A copy of `value` whose dict keys follow the schema's property order.

    Insertion order of the producer's dicts would otherwise leak into the output, and diffs of
    two reports would show moved keys instead of changed values. Keys the schema does not list
    (fact attributes, language tags) are sorted.
    """
    if node is None:
        node = report_schema()
    node = _resolve(node)
    if isinstance(value, dict):
        props: dict[str, Any] = node.get("properties", {})
        extra = node.get("additionalProperties")
        keys = [k for k in props if k in value] + sorted(k for k in value if k not in props)
        out = {}
        for k in keys:
            child = props.get(k, extra if isinstance(extra, dict) else {})
            out[k] = order_like_schema(value[k], child)
        return out
    if isinstance(value, list):
        items = node.get("items")
        return [order_like_schema(v, items if isinstance(items, dict) else {}) for v in value]
    return value
