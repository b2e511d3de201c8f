"""Renderers of the report dict (docs/contracts.md, "Finding and report"): HTML, Markdown, JSON,
JUnit XML, Prometheus text and the terminal summary. All of them validate the report against
report.schema.json first, unless told with `validated=True` that it was (findings.build_report
checks what it builds)."""

import io
from collections.abc import Sequence

from rich.console import Console

from kubenetdiag.engine.model import Rule
from kubenetdiag.findings.schema import REPORT_SCHEMA_PATH, validate_report
from kubenetdiag.reports.html_report import render_html
from kubenetdiag.reports.i18n import SUPPORTED_LANGS
from kubenetdiag.reports.json_report import render_json
from kubenetdiag.reports.junit_report import render_junit
from kubenetdiag.reports.markdown_report import render_markdown
from kubenetdiag.reports.terminal import print_summary

__all__ = [
    "REPORT_SCHEMA_PATH",
    "SUPPORTED_LANGS",
    "print_summary",
    "render",
    "render_html",
    "render_json",
    "render_junit",
    "render_markdown",
    "validate_report",
]

FORMATS = ("html", "json", "markdown", "text", "junit", "prometheus")


def render(report: dict, fmt: str, lang: str = "en", rules: Sequence[Rule] = ()) -> str:
    """The report as one of FORMATS, for a report `findings.build_report` made (and checked
    against its schema: once per run, not once per format). `rules`: the rules the run
    evaluated, for JUnit's one test case per rule and node."""
    if fmt == "html":
        return render_html(report, lang=lang, validated=True)
    if fmt == "json":
        return render_json(report, validated=True)
    if fmt == "markdown":
        return render_markdown(report, lang=lang, validated=True)
    if fmt == "junit":
        return render_junit(report, rules, validated=True)
    if fmt == "prometheus":
        # prometheus_client takes 25 ms to import: only runs that ask for it pay
        from kubenetdiag.reports.prometheus_report import render_prometheus

        return render_prometheus(report, validated=True)
    if fmt == "text":
        console = Console(record=True, width=100, file=io.StringIO())
        print_summary(report, console, lang=lang, validated=True)
        return console.export_text()
    raise ValueError(f"unknown report format {fmt!r}; one of {', '.join(FORMATS)}")
