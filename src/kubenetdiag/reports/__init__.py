"""Renderers of the report dict (docs/contracts.md, "Finding and report"): HTML, Markdown, JSON
and the terminal summary. All of them validate the report against report.schema.json first,
unless told with `validated=True` that it was (findings.build_report checks what it builds)."""

from kubenetdiag.reports.html_report import render_html
from kubenetdiag.reports.i18n import SUPPORTED_LANGS
from kubenetdiag.reports.json_report import render_json
from kubenetdiag.reports.markdown_report import render_markdown
from kubenetdiag.reports.schema import REPORT_SCHEMA_PATH, validate_report
from kubenetdiag.reports.terminal import print_summary

__all__ = [
    "REPORT_SCHEMA_PATH",
    "SUPPORTED_LANGS",
    "print_summary",
    "render_html",
    "render_json",
    "render_markdown",
    "validate_report",
]
