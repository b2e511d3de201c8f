"""The colored summary printed at the end of a run: what is wrong, where, and the first fix.

Everything from the report is passed to rich as `Text`, never as a str: a str would be parsed as
console markup (`[red]`, `[link=...]`) and emoji codes, so a node could style or hyperlink its
own name. Control characters were already removed by the view, so an escape sequence in a
hostname cannot reach the terminal either.
"""

from __future__ import annotations

from dataclasses import replace

from rich.console import Console
from rich.text import Text

from kubenetdiag.reports.sanitize import clean_line
from kubenetdiag.reports.view import build_view
from kubenetdiag.reports.viewmodel import FindingView, NotEvaluatedGroup, ReportView
from kubenetdiag.vocabulary import ENDPOINTS_PROBE, SEVERITIES

SEVERITY_STYLE = {
    "critical": "bold white on red",
    "error": "bold red",
    "warning": "bold yellow",
    "info": "bold cyan",
}
LEVEL_STYLE = {
    "critical": "bold red",
    "error": "bold red",
    "warning": "bold yellow",
    "partial": "bold yellow",
    "unknown": "bold yellow",
    "info": "bold cyan",
    "ok": "bold green",
}
# Enough to act on; the rest is in the full report. Keeps the summary within one screen.
MAX_ITEMS = 6
MAX_NODES = 5
MAX_CHANGES = 12  # lines of "changed since the baseline"; the full list is in the reports
MAX_UNREACHABLE = 8
MAX_NOT_EVALUATED = 3  # groups of rules not evaluated; the full list is in the reports


def _line(*parts: tuple[str, str] | str, wrap: bool = False) -> Text:
    text = Text(no_wrap=not wrap, overflow="fold" if wrap else "ellipsis")
    for part in parts:
        if isinstance(part, tuple):
            text.append(part[0], style=part[1])
        else:
            text.append(part)
    return text


def _names(names: list[str], limit: int, view: ReportView) -> str:
    shown = ", ".join(names[:limit])
    if len(names) > limit:
        shown += " " + view.ui("more", n=len(names) - limit)
    return shown


def _item(f: FindingView, view: ReportView) -> list[Text]:
    ui = view.ui
    out = [
        _line(
            "  ",
            (f" {f.severity_label.upper()} ", SEVERITY_STYLE[f.severity]),
            " ",
            (f.title, "bold"),
            ("  " + ui("confidence_short", value=f.confidence), "dim"),
            (f"  [{f.role_label}]" if f.role != "root" else "", "dim"),
        )
    ]
    if f.nodes:
        out.append(_line("     ", (_names([n.label for n in f.nodes], MAX_NODES, view), "cyan")))
    step = f.first_command
    if step is not None:
        first, _, rest = step.command.partition("\n")
        mark = (
            (f"⚠ {ui('changes_state')}", "bold yellow")
            if step.changes_state
            else (ui("read_only"), "green")
        )
        shown = first + (" …" if rest else "")
        out.append(_line("     $ ", (shown, "bold"), "   ", mark, wrap=True))
    return out


def _by_nodes(groups: list[NotEvaluatedGroup]) -> list[NotEvaluatedGroup]:
    """One line per set of nodes: the view splits a node set's rules by the causes that left
    each unevaluated, which the full reports show and one screen has no room for."""
    out: list[NotEvaluatedGroup] = []
    for g in groups:
        last = out[-1] if out else None
        if last is not None and (last.count, [n.label for n in last.nodes]) == (
                g.count, [n.label for n in g.nodes]):
            seen = {(c.probe, c.status) for c in last.causes}
            last.causes += [c for c in g.causes if (c.probe, c.status) not in seen]
            last.rules += [r for r in g.rules if r.rule not in {x.rule for x in last.rules}]
        else:
            out.append(replace(g, causes=list(g.causes), rules=list(g.rules)))
    return out


def print_summary(
    report: dict,
    console: Console,
    lang: str = "en",
    *,
    full_report: str | None = None,
    validated: bool = False,
) -> None:
    """Print the verdict, root causes with their nodes and first command, and what was not checked.

    `full_report` is where the complete report was written, if anywhere; without it the summary
    points at the bundle, or says how to get a full report. `validated=True` skips the schema
    check for a report already checked (build_report does).
    """
    view = build_view(report, lang, validated=validated)
    ui = view.ui
    counts = view.counts
    lines: list[Text] = []

    by_sev = ui("list_sep").join(f"{counts[s]} {ui.severity(s)}" for s in SEVERITIES if counts[s])
    header = _line(
        ("kubenetdiag  ", "bold"),
        (view.verdict.headline, LEVEL_STYLE[view.verdict.level]),
        "  · ",
        ui.plural("nodes_count", counts["nodes"]),
        " · ",
        ui.plural("findings_count", counts["findings"]),
        ui("in_parens", text=by_sev) if by_sev else "",
    )
    if counts["unreachable"]:
        header.append(" · ")
        header.append(ui.plural("unreachable_count", counts["unreachable"]), style="bold yellow")
    lines.append(header)

    items = view.verdict.items
    for f in items[:MAX_ITEMS]:
        lines.extend(_item(f, view))
    if len(items) > MAX_ITEMS:
        lines.append(_line("  ", (ui("more", n=len(items) - MAX_ITEMS), "dim")))
    for note in view.verdict.notes:
        lines.append(_line("  + ", (note, "dim")))

    if view.changes is not None:
        lines.append(_line(("  Δ ", "bold"), (ui("changes"), "bold"), ui("colon"),
                           ("" if view.changes else ui("nothing_changed"), "dim")))
        for text in view.changes[:MAX_CHANGES]:
            lines.append(_line("    ", text))
        if len(view.changes) > MAX_CHANGES:
            lines.append(_line("    ", (ui("more", n=len(view.changes) - MAX_CHANGES), "dim")))

    conn = view.connectivity
    if not conn.measured:
        conn_style = "yellow"
    elif conn.suspects or any(h.failed for h in conn.heatmaps):
        conn_style = "bold red"
    else:
        conn_style = "green"
    lines.append(_line("  ", (conn.line, conn_style)))

    unreachable = [n.name for n in view.nodes_first if not n.reachable]
    if unreachable:
        lines.append(
            _line(
                ("⚠ ", "bold yellow"),
                (ui.plural("unchecked_nodes", len(unreachable)), "bold yellow"),
                ui("colon"),
                _names(unreachable, MAX_UNREACHABLE, view),
            )
        )
    merged = _by_nodes(view.not_evaluated)
    for g in merged[:MAX_NOT_EVALUATED]:
        where = (ui.plural("every_reachable_node", g.count) if g.every_reachable
                 else _names([n.label for n in g.nodes], MAX_NODES, view))
        # probes with the same status share it: "ip_rule, tc: not collected by ..."
        by_status: dict[str, list[str]] = {}
        for c in g.causes:
            by_status.setdefault(c.status, []).append(c.probe)
        causes = ui("cause_sep").join(
            ui("cause", probe=ui("list_sep").join(p for p in probes if p), status=status)
            if any(probes) else status
            for status, probes in by_status.items())
        lines.append(_line(("⚠ ", "bold yellow"), ui.plural(
            "rules_not_evaluated", len(g.rules), nodes=where, causes=causes), wrap=True))
    if len(merged) > MAX_NOT_EVALUATED:
        lines.append(_line("  ", (ui("more", n=len(merged) - MAX_NOT_EVALUATED), "dim")))
    if view.verdict.unchecked_warning:
        lines.append(_line("  ", (ui("unknown_not_healthy"), "yellow")))
    # Said on its own line: "no finding" about middleware means nothing was connected to, and
    # the fix (declaring endpoints) is the operator's, not a probe that failed.
    if any(c["probe"] == ENDPOINTS_PROBE for c in report["not_checked"]):
        lines.append(_line("  ", (ui("endpoints_not_declared"), "yellow"), wrap=True))
    if view.needs_root:
        lines.append(_line("  ", (ui("needs_root"), "yellow"), wrap=True))

    if full_report:
        hint = ui("full_report", path=clean_line(full_report))
    elif view.bundle:
        hint = ui("full_report_bundle", path=view.bundle)
    else:
        hint = ui("full_report_hint")

    for line in lines:
        # highlight=False: rich's highlighter would colour numbers and addresses inside node
        # data, which reads as emphasis the data did not ask for.
        # no_wrap/overflow passed again here: rich 15 ignores them when set on the Text alone,
        # and a title wrapping onto the next line breaks the one-screen layout.
        console.print(line, highlight=False, soft_wrap=False, no_wrap=line.no_wrap,
                      overflow=line.overflow)
    # The path last and whole (soft wrap: the terminal folds it, no newline is written into
    # it), so it can be copied from the screen or the saved .txt as it is.
    console.print(_line((hint, "dim")), highlight=False, soft_wrap=True)
