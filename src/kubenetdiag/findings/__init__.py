"""The findings contract (docs/contracts.md): the report of one run, built from the engine's
findings plus what was and was not checked, and the JSON Schema every report must pass.

    report = build_report(meta, records, facts, findings, rules_count=..., rules_digest=...,
                          bundle=...)
"""

from .report import (
    ALARMING,
    FAILED_DETAILS_MAX,
    MATRIX_FAILED,
    MATRIX_OK,
    MATRIX_UNMEASURED,
    REACH_LAYERS,
    REPORT_SCHEMA,
    build_report,
    connectivity,
    exit_code,
)
from .schema import REPORT_SCHEMA_PATH, order_like_schema, report_is_valid, validate_report

__all__ = [
    "ALARMING",
    "FAILED_DETAILS_MAX",
    "MATRIX_FAILED",
    "MATRIX_OK",
    "MATRIX_UNMEASURED",
    "REACH_LAYERS",
    "REPORT_SCHEMA",
    "REPORT_SCHEMA_PATH",
    "build_report",
    "connectivity",
    "exit_code",
    "order_like_schema",
    "report_is_valid",
    "validate_report",
]
