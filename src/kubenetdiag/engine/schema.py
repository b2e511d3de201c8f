"""Validate a rule file against rule.schema.json and word every problem for a rule author.

jsonschema's own messages name JSON paths and dump whole instances; an SRE editing YAML needs the
line and the one thing that is wrong there, so each error kind gets its own wording.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from kubenetdiag.errors import InputError
from kubenetdiag.yamlsrc import YamlDoc

_TYPE_NAMES = {
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "true or false",
    "null": "null",
    "object": "a mapping",
    "array": "a list",
}


@cache
def rule_schema() -> dict[str, Any]:
    text = resources.files("kubenetdiag.engine").joinpath("rule.schema.json").read_text("utf-8")
    return json.loads(text)


@cache
def _validator() -> Draft202012Validator:
    schema = rule_schema()
    # the shipped schema is checked against the metaschema by a test, not on every run
    return Draft202012Validator(schema)


def _what(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _where(path: tuple) -> str:
    for p in reversed(path):
        if isinstance(p, str):
            return f"{p}: "
    return ""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _value_at(data: Any, path: tuple) -> Any:
    for p in path:
        try:
            data = data[p]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _explain(err: ValidationError, doc: YamlDoc) -> list[InputError]:
    path = tuple(err.absolute_path)
    parent = _value_at(doc.data, path)
    if isinstance(err.instance, str) and isinstance(parent, dict) and err.instance in parent:
        # A key that failed propertyNames: jsonschema reports it at the enclosing mapping.
        hint = err.schema.get("description", "") if isinstance(err.schema, dict) else ""
        return [doc.error((*path, err.instance), f"{err.instance!r} is not a valid key", hint)]
    hint = err.schema.get("description", "") if isinstance(err.schema, dict) else ""
    where = _where(path)
    v = err.validator
    inst = err.instance
    if v == "additionalProperties" and isinstance(inst, dict):
        allowed = sorted(err.schema.get("properties", {}))
        return [
            doc.error(
                (*path, k),
                f"unknown field {k!r}",
                hint=f"allowed here: {', '.join(allowed)}" if allowed else hint,
            )
            for k in inst
            if k not in allowed
        ]
    if v == "required":
        missing = [r for r in err.validator_value if isinstance(inst, dict) and r not in inst]
        return [doc.error(path, f"{where}missing required field {m!r}", hint=hint) for m in missing]
    if v == "dependentRequired" and isinstance(inst, dict):
        out = []
        for key, needs in err.validator_value.items():
            for n in needs:
                if key in inst and n not in inst:
                    out.append(doc.error((*path, key), f"{key!r} needs {n!r} as well", hint=hint))
        return out
    if v == "enum":
        choices = ", ".join(str(c) for c in err.validator_value)
        return [doc.error(path, f"{where}{_short(inst)} is not one of: {choices}")]
    if v == "type":
        want = err.validator_value
        wants = [want] if isinstance(want, str) else list(want)
        words = " or ".join(_TYPE_NAMES.get(w, w) for w in wants)
        return [doc.error(path, f"{where}expected {words}, got {_what(inst)}", hint=hint)]
    if v == "pattern":
        return [doc.error(path, f"{where}{_short(inst)} is not a valid name", hint=hint)]
    if v == "maxProperties":
        keys = ", ".join(str(k) for k in inst) if isinstance(inst, dict) else ""
        return [doc.error(path, f"{where}expected exactly one key, got {keys}", hint=hint)]
    if v in ("minProperties", "minItems", "minLength"):
        return [doc.error(path, f"{where}must not be empty", hint=hint)]
    if v == "propertyNames":
        return [doc.error(path, f"{where}{_short(inst)} is not a valid name", hint=hint)]
    return [doc.error(path, f"{where}{err.message}", hint=hint)]


_CLEAN: set[bytes] = set()  # digests of documents the schema passed
_CLEAN_KEPT = 4096


def check_schema(doc: YamlDoc) -> tuple[list[InputError], list[tuple]]:
    """Every schema problem in the document in line order, and the paths where they are.

    The paths let the loader skip its deeper checks of a rule the schema already rejected, so an
    author sees the root problem once instead of a cascade.
    """
    if doc.data is None:
        err = InputError(
            "the file is empty",
            file=doc.file,
            line=1,
            hint="a rule file is a mapping with a `rules:` list",
        )
        return [err], [()]
    # The schema's verdict depends on the data alone: a document already found clean in this
    # process (the same rule files, loaded again by each command a test or a bench runs) is
    # not walked again; validating the shipped rules costs most of a load.
    digest = hashlib.sha256(json.dumps(doc.data, sort_keys=True, default=repr).encode()).digest()
    if digest in _CLEAN:
        return [], []
    out: list[InputError] = []
    paths: list[tuple] = []
    for err in _validator().iter_errors(doc.data):
        paths.append(tuple(err.absolute_path))
        out.extend(_explain(err, doc))
    seen: set[tuple] = set()
    unique = []
    for e in sorted(out, key=lambda e: (e.line or 0, e.message)):
        key = (e.line, e.message)
        if key not in seen:
            seen.add(key)
            unique.append(e)
    if not paths and len(_CLEAN) < _CLEAN_KEPT:
        _CLEAN.add(digest)
    return unique, paths
