"""Make untrusted node output safe to show as plain text.

Everything a node sends back (hostnames, iptables comments, process names, raw excerpts) may have
been written by whoever controls that node. Escaping for HTML, Markdown or rich markup is each
renderer's job; this module removes what no output format should carry at all: terminal escape
sequences, other control characters, and bidirectional overrides that make text read differently
from what it is.
"""

from __future__ import annotations

import re

_ANSI = re.compile(
    r"""
      \x1b\[[0-?]*[ -/]*[@-~]              # CSI: colours, cursor movement
    | \x9b[0-?]*[ -/]*[@-~]                # the same, introduced by the 8-bit C1 CSI
    | \x1b\][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)   # OSC: window title, hyperlinks, clipboard
    | \x1b[PX^_][^\x1b\x9c]*(?:\x1b\\|\x9c)         # DCS / SOS / PM / APC strings
    | \x1b[@-Z\\-_]                        # the remaining two-byte escapes
    """,
    re.VERBOSE,
)
# C0 except tab and newline, DEL, C1; \r goes too, since a bare CR lets a line overwrite itself.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Bidi embeddings/overrides/isolates and marks ("Trojan Source" style spoofing of names).
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKS = re.compile(r"[\t\n]+")


def clean_block(text: object) -> str:
    """Text safe to show as-is, keeping newlines and tabs (excerpts, explanations, commands)."""
    s = "" if text is None else str(text)
    # Every character the patterns remove is a control (Cc) or format (Cf) character, which
    # isprintable() rejects; most names and cells have none, and this one C scan spares them
    # three regex passes.
    if s.isprintable():
        return s
    s = s.replace("\r\n", "\n")
    s = _ANSI.sub("", s)
    s = _CONTROL.sub("", s)
    return _BIDI.sub("", s)


def clean_line(text: object) -> str:
    """Like clean_block, folded onto one line (names, addresses, table cells)."""
    s = "" if text is None else str(text)
    if s.isprintable():  # no tab or newline either
        return s.strip()
    return _LINE_BREAKS.sub(" ", clean_block(s)).strip()
