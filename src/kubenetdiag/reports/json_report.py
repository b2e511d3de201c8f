"""The report as JSON, for machines and for `--format json`."""

from __future__ import annotations

from kubenetdiag.bundle import json_text
from kubenetdiag.findings.schema import order_like_schema, validate_report


def render_json(report: dict, *, validated: bool = False) -> str:
    """Validate (unless already done: `validated`), then serialise with the schema's key order
    and two-space indentation."""
    if not validated:
        validate_report(report)
    # ensure_ascii: node data may hold C1 controls (U+009B is a CSI for some terminals) that
    # json would otherwise pass through raw; as \u escapes they are inert when someone cats it.
    return json_text(order_like_schema(report), indent=2, ensure_ascii=True) + "\n"
