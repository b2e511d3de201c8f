"""The JSON Schemas the package ships are valid (checked here once, not per run), and the
report's compiled check gives jsonschema's answers."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from kubenetdiag.engine.schema import rule_schema
from kubenetdiag.findings.schema import (
    REPORT_SCHEMA_PATH,
    report_is_valid,
    report_schema,
    validate_report,
)
from kubenetdiag.vocabulary import SEVERITIES
from test_reports import ALL_REPORTS, big_report, hostile_report, one_root_cause_report

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.parametrize("schema", [rule_schema(), report_schema(),
                                    json.loads((DOCS / "report.schema.json").read_text())],
                         ids=["rule", "report", "docs-report"])
def test_shipped_schema_is_valid_draft_2020_12(schema):
    Draft202012Validator.check_schema(schema)


# --------------------------------------------------------------------------- the fast check
# validate_report answers "valid" from fastjsonschema's check compiled from the schema, and asks
# jsonschema only when that check says no. These tests hold the two to the same answers.

REPORT_IS_VALID = report_is_valid
REFERENCE = Draft202012Validator(report_schema())

WEIRD_VALUES = [None, True, False, 0, 1, 3, -1, 0.5, 1.0, 1.5, -0.25, math.nan, "", "x",
                "critical", "high", "zh-CN", "01.", "2", [], [""], ["x"], {}, {"a": 1},
                {"title": 3}]
# No tuples: fastjsonschema takes one for an array, jsonschema does not, and json.dumps writes
# one as an array, so accepting it is right for the JSON the report becomes.
WEIRD_KEYS = ["zz", "zh-CN", "EN", "x y", "fault", "source", "i18n", "connectivity"]


def with_connectivity(report: dict) -> dict:
    report["connectivity"] = {
        "nodes": ["node1", "node2"],
        "layers": [{"layer": "pod", "matrix": ["1.", "0."],
                    "failed": [{"src": "node2", "dst": "node1", "rtt_ms": None,
                                "detail": "timeout"}]}],
    }
    return report


# Small reports, so that a random place to break is often an interesting one.
BASES = [*(make() for name, make in ALL_REPORTS.items() if name != "big"),
         with_connectivity(one_root_cause_report())]


def places(value: object, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += places(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += places(v, (*path, i))
    return out


def mutate(report: dict, data: st.DataObject) -> dict:
    report = copy.deepcopy(report)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(places(report)))
        parent = report
        for p in path[:-1]:
            parent = parent[p]
        target = parent[path[-1]] if path else report
        action = data.draw(st.sampled_from(["set", "delete", "add"]))
        # copies throughout: a later step may add into what an earlier one put here, and that
        # must not change WEIRD_VALUES itself (hypothesis replays each case from the same state)
        if action == "add" and isinstance(target, dict):
            key = data.draw(st.sampled_from(WEIRD_KEYS))
            target[key] = copy.deepcopy(data.draw(st.sampled_from(WEIRD_VALUES)))
        elif action == "add" and isinstance(target, list):
            target.append(copy.deepcopy(data.draw(st.sampled_from(WEIRD_VALUES))))
        elif action == "delete" and path:
            del parent[path[-1]]
        elif path:
            parent[path[-1]] = copy.deepcopy(data.draw(st.sampled_from(WEIRD_VALUES)))
    return report


@pytest.mark.parametrize("report", [*BASES, big_report(500)])
def test_fast_check_accepts_what_jsonschema_accepts(report: dict) -> None:
    assert REFERENCE.is_valid(report)
    assert REPORT_IS_VALID(report)


def test_fast_check_agrees_with_jsonschema_on_every_single_break() -> None:
    """Every place of a report that has every kind of part, set to each odd value, deleted, or
    given an unknown key (edited in place and put back, which keeps this quick)."""
    report = with_connectivity(hostile_report())
    odd = [None, True, 0, -1, 1.5, "", "x", [], {}]
    missing = object()
    disagree = []

    def compare(what: tuple) -> None:
        if REPORT_IS_VALID(report) != REFERENCE.is_valid(report):
            disagree.append(what)

    for path in places(report):
        target = report
        for p in path[:-1]:
            target = target[p]
        value = target[path[-1]] if path else report
        if isinstance(value, dict):
            value["zz-unknown"] = "x"
            compare((path, "add"))
            del value["zz-unknown"]
        if not path:
            continue
        for v in [*odd, missing]:
            if v is missing:
                if isinstance(target, list):
                    continue  # deleting an item shifts the others: not a single break
                del target[path[-1]]
            else:
                target[path[-1]] = v
            compare((path, v))
            target[path[-1]] = value
    assert disagree == []


@settings(max_examples=300)
@given(st.data())
def test_fast_check_agrees_with_jsonschema_on_broken_reports(data: st.DataObject) -> None:
    report = mutate(data.draw(st.sampled_from(BASES)), data)
    assert REPORT_IS_VALID(report) == REFERENCE.is_valid(report)


@pytest.mark.parametrize(
    ("mutate_report", "path"),
    [
        # True is not the integer 1 in JSON Schema, although it is in Python.
        (lambda r: r["summary"].update(exit_code=True), r"\$\.summary\.exit_code"),
        (lambda r: r["rules"].update(count=False), r"\$\.rules\.count"),
        (lambda r: r["nodes"].append(("a", "tuple")), r"\$\.nodes\[3\]"),
        (lambda r: r["findings"][0]["i18n"].update({"Klingon": {}}), r"\$\.findings\[0\]\.i18n"),
        (lambda r: r["not_checked"].append({"node": "", "probe": "x", "status": "failed",
                                            "reason": "", "blocks": ""}),
         r"\$\.not_checked\[0\]\.node"),
    ],
)
def test_validation_rejects_what_python_would_let_through(mutate_report, path: str) -> None:
    report = one_root_cause_report()
    mutate_report(report)
    assert not REPORT_IS_VALID(report)
    with pytest.raises(ValueError, match=path):
        validate_report(report)


def test_integral_float_is_an_integer_as_in_jsonschema() -> None:
    report = one_root_cause_report()
    report["rules"]["count"] = 42.0
    validate_report(report)


def test_the_schemas_spell_the_severities_as_the_code_orders_them():
    # The JSON Schemas are contracts others read; the order lives in kubenetdiag.vocabulary.
    report = json.loads(Path(REPORT_SCHEMA_PATH).read_text())
    assert report["$defs"]["severity"]["enum"] == list(SEVERITIES)
    assert '"enum": ' + json.dumps(list(SEVERITIES)) in json.dumps(rule_schema())
