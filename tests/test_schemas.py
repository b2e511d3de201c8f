"""The JSON Schemas the package ships are themselves valid (checked here once, not per run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from kubenetdiag.engine.schema import rule_schema
from kubenetdiag.reports.schema import report_schema

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.parametrize("schema", [rule_schema(), report_schema(),
                                    json.loads((DOCS / "report.schema.json").read_text())],
                         ids=["rule", "report", "docs-report"])
def test_shipped_schema_is_valid_draft_2020_12(schema):
    Draft202012Validator.check_schema(schema)
