"""The report's JSON Schema: validation with a JSON path, and the canonical key order."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema
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


@cache
def _fast_check() -> Callable[[Any], Any]:
    # jsonschema walks the schema anew for every value: 4.5 s of CPU on a 5,000-node report.
    # fastjsonschema turns the schema into Python code once, and answers in about 0.1 s;
    # jsonschema still runs when it says no, to name the first problem in document order.
    # Formats are not asserted, as jsonschema does not assert them without a FormatChecker,
    # and nothing is filled in from defaults: the check must not change the report.
    return fastjsonschema.compile(report_schema(), use_default=False, use_formats=False)


def report_is_valid(report: Any) -> bool:
    try:
        _fast_check()(report)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def validate_report(report: dict) -> None:
    """Raise ValueError naming the JSON path of the first problem, e.g. `$.findings[0].fault`."""
    if report_is_valid(report):
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
