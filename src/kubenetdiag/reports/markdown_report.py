"""The report as Markdown, to paste into a ticket or a chat.

Node data is escaped for CommonMark/GFM so that it stays text: a hostname cannot open a link, an
HTML tag, a code span or a new table cell. Commands go into fenced blocks, which show their
content literally, with a fence longer than any backtick run inside the command.
"""

from __future__ import annotations

import re
from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined

from kubenetdiag.reports.view import build_view
from kubenetdiag.vocabulary import SEVERITIES

# `&` too: an entity such as &#x202E; would bring back a character the sanitizer removed.
_INLINE_SPECIAL = re.compile(r"([\\`*\[\]<>|~&])")
# Line starts that would turn prose into a heading, quote, list, rule or setext underline.
_BLOCK_START = re.compile(r"^(\s*)([#>+=-]|\d+[.)])")


def md_inline(text: str) -> str:
    """Escape one line of text for use anywhere in a Markdown line."""
    return _INLINE_SPECIAL.sub(r"\\\1", text.replace("\n", " "))


def md_cell(text: str) -> str:
    """Escape text for a GFM table cell: also `|` (a new cell) and newlines (a new row)."""
    return "<br>".join(_INLINE_SPECIAL.sub(r"\\\1", line) for line in text.split("\n"))


def md_block(text: str) -> str:
    """Escape multi-line prose, keeping its line breaks as hard breaks."""
    lines = []
    for line in text.split("\n"):
        line = _INLINE_SPECIAL.sub(r"\\\1", line)
        line = _BLOCK_START.sub(lambda m: m.group(1) + _escape_marker(m.group(2)), line)
        lines.append(line)
    # Two trailing spaces are a hard line break; a blank line stays a paragraph break.
    return "\n".join(ln + "  " if ln.strip() and nxt.strip() else ln
                     for ln, nxt in zip(lines, lines[1:] + [""], strict=True))


def _escape_marker(marker: str) -> str:
    if marker[0].isdigit():
        return marker[:-1] + "\\" + marker[-1]
    return "\\" + marker


def md_code(text: str) -> str:
    """An inline code span that holds `text` literally, whatever backticks it contains."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_fence(text: str, info: str = "sh") -> str:
    """A fenced code block holding `text` literally."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"


@cache
def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("kubenetdiag.reports", "templates"),
        autoescape=False,  # Markdown, not HTML: escaping is done by the md_* filters
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(md=md_inline, cell=md_cell, block=md_block, code=md_code, fence=md_fence)
    env.globals["severities"] = SEVERITIES
    return env


def render_markdown(report: dict, lang: str = "en", *, validated: bool = False) -> str:
    """The report as GitHub-flavoured Markdown: headings, tables and fenced commands.

    `validated=True` skips the schema check for a report already checked (build_report does).
    """
    view = build_view(report, lang, validated=validated)
    return _env().get_template("report.md.j2").render(v=view, ui=view.ui).strip() + "\n"
