"""Helpers the parsers share for multi-part probe output.

A probe that prints several things marks each part with a line `##knd:<part> [argument]`.
Where a part holds file contents a node user controls (CNI configs, resolv.conf), the command
prefixes every content line with `|`, so no content line can pose as a part header.
"""

from __future__ import annotations

import re

HEADER = "##knd:"
_INT = re.compile(r"^-?\d+$")
# A link-layer address as ip and bridge print it, at the start of a line or a word
MAC = re.compile(r"^([0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5})\b")


def parts(text: str) -> list[tuple[str, str, list[str]]]:
    """[(part, argument, lines)] in output order; lines before the first header are dropped."""
    out: list[tuple[str, str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith(HEADER):
            name, _, arg = line[len(HEADER) :].partition(" ")
            out.append((name.strip(), arg.strip(), []))
        elif out:
            out[-1][2].append(line)
    return out


def unprefix(lines: list[str]) -> list[str]:
    """Content lines of a `|`-prefixed part, anything else (a stray line) dropped."""
    return [line[1:] for line in lines if line.startswith("|")]


def env_file(lines: list[str]) -> dict[str, str]:
    """KEY=VALUE lines (os-release, flannel's subnet.env) as a dict; quotes around a value are
    shell syntax, not part of it."""
    env = {}
    for line in lines:
        k, sep, v = line.partition("=")
        if sep:
            env[k.strip()] = v.strip().strip("\"'")
    return env


def to_int(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    return int(value) if _INT.match(value) and len(value) < 20 else None


def clip(value: str, limit: int = 300) -> str:
    return value if len(value) <= limit else value[:limit] + "..."
