"""Recorded probe outputs as the collector would hand them to a parser (tests/fixtures/probes)."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

from kubenetdiag import pipeline
from kubenetdiag.bundle import Bundle
from kubenetdiag.engine import load_ruleset
from kubenetdiag.facts.parse import node_facts
from kubenetdiag.facts.registry import validate_fact
from kubenetdiag.probes import BY_NAME, Section

FIX = Path(__file__).parent / "fixtures" / "probes"
EXAMPLE = Path(__file__).parent.parent / "examples" / "bundles" / "lab-three-faults"


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


def statuses(probe: str, stdout: str, stderr: str, exit_code: int) -> tuple[list, list]:
    """(probe_status attrs, other facts) of one section as the parse stage sees it."""
    record = {"name": "n", "address": "a", "reachable": True, "error": None,
              "sections": [{"probe": probe, "command": BY_NAME[probe].command,
                            "exit_code": exit_code, "stdout": stdout, "stderr": stderr}]}
    facts = [f for f in node_facts(record, ran=[probe]) if f.kind != "node_status"]
    for f in facts:
        assert not validate_fact(f), f
    return ([f.attrs for f in facts if f.kind == "probe_status"],
            [f for f in facts if f.kind != "probe_status"])


def statuses_of(probe: str, name: str, exit_code: int) -> tuple[list, list]:
    """`statuses` of a recorded fixture."""
    sec = section(probe, name, exit_code)
    return statuses(probe, sec.stdout, sec.stderr, exit_code)


@functools.cache
def _rules():
    return load_ruleset()


def example_report(probe: str | None = None, name: str = "", exit_code: int = 0) -> dict:
    """The report of the shipped example bundle, analysed again; with `probe`, node1's section
    of that probe replaced by the recorded fixture `name` first."""
    bundle = Bundle.read(EXAMPLE)
    records = copy.deepcopy(bundle.records)
    if probe is not None:
        sec = next(s for s in records[0]["sections"] if s["probe"] == probe)
        fixture = section(probe, name, exit_code)
        sec.update(stdout=fixture.stdout, stderr=fixture.stderr, exit_code=exit_code)
    return pipeline.analyze(Bundle(bundle.path, bundle.meta, records, bundle.cluster), _rules(),
                            save=False).report
