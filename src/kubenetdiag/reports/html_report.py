"""One self-contained HTML incident report."""

from __future__ import annotations

from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined

from kubenetdiag.reports.view import build_view
from kubenetdiag.vocabulary import SEVERITIES


@cache
def _env() -> Environment:
    # autoescape=True unconditionally: select_autoescape decides by file name and would leave a
    # `.j2` template unescaped, which for node-supplied strings means script injection.
    env = Environment(
        loader=PackageLoader("kubenetdiag.reports", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )
    env.globals["severities"] = SEVERITIES
    return env


def render_html(report: dict, lang: str = "en", *, validated: bool = False) -> str:
    """The report as one HTML file that fetches nothing (no scripts, fonts, images or links).

    `validated=True` skips the schema check for a report already checked (build_report does).
    """
    view = build_view(report, lang, validated=validated)
    return _env().get_template("report.html.j2").render(v=view, ui=view.ui)
