"""Recorded probe outputs as the collector would hand them to a parser (tests/fixtures/probes)."""

from __future__ import annotations

from pathlib import Path

from kubenetdiag.probes import BY_NAME, Section

FIX = Path(__file__).parent / "fixtures" / "probes"


def section(probe: str, name: str, exit_code: int = 0) -> Section:
    out = FIX / probe / f"{name}.txt"
    err = FIX / probe / f"{name}.stderr"
    return Section(
        probe=probe,
        command=BY_NAME[probe].command,
        exit_code=exit_code,
        duration_s=0.01,
        stdout=out.read_text(),
        stderr=err.read_text() if err.exists() else "",
    )
