"""The active phase of a run: plan from what the passive phase and the API found, run, and
attach each node's result to its record (the bundle's node file keeps it under `active`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from kubenetdiag.active.plan import plan
from kubenetdiag.collect import ssh
from kubenetdiag.inventory import Host

if TYPE_CHECKING:
    from kubenetdiag.active.runner import ProgressFn

SKIPPED_FLAG = "active probes not run: --no-active, or `collect` without --active"


def run_phase(
    hosts: Sequence[Host],
    records: list[dict],
    cluster: dict | None,
    connector: ssh.Connector,
    *,
    parallel: int = 32,
    progress: ProgressFn | None = None,
) -> dict[str, dict]:
    """Plan and run; every reached node's record gains its `active` part. Returns the plans."""
    # Imported here: the runner pulls in dnspython, which a passive-only `collect` never needs.
    from kubenetdiag.active.runner import run_active
    from kubenetdiag.facts.parse import facts_from_records

    facts = facts_from_records(records, cluster)
    plans = plan(facts, hosts)
    results = run_active(hosts, plans, connector, parallel=parallel, progress=progress)
    for rec in records:
        if rec["name"] in results:
            rec["active"] = results[rec["name"]]
    return plans


def mark_skipped(records: list[dict], reason: str = SKIPPED_FLAG) -> None:
    """Say in every reached node's record that the active phase was not asked for, so the
    report lists it as not checked instead of silently showing no matrix."""
    for rec in records:
        if rec.get("reachable"):
            rec["active"] = {"skipped": reason}
