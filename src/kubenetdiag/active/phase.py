"""The active phase as `run_phase` / `mark_skipped`, kept for callers of this old path until
kubenetdiag.pipeline takes them over: the plan lives in kubenetdiag.probes.active.plan, the
runner in kubenetdiag.collect.active."""

from __future__ import annotations

from collections.abc import Sequence

from kubenetdiag.collect.active import SKIPPED_FLAG, ProgressFn, mark_skipped, run_active
from kubenetdiag.collect.ssh import Connector
from kubenetdiag.facts.parse import facts_from_records
from kubenetdiag.inventory import Host
from kubenetdiag.probes.active.plan import plan

__all__ = ["SKIPPED_FLAG", "mark_skipped", "run_phase"]


def run_phase(
    hosts: Sequence[Host],
    records: list[dict],
    cluster: dict | None,
    connector: Connector,
    *,
    parallel: int = 32,
    progress: ProgressFn | None = None,
) -> dict[str, dict]:
    """Plan and run; every reached node's record gains its `active` part. Returns the plans."""
    plans = plan(facts_from_records(records, cluster), hosts)
    results = run_active(hosts, plans, connector, parallel=parallel, progress=progress)
    for rec in records:
        if rec["name"] in results:
            rec["active"] = results[rec["name"]]
    return plans
