"""Every plugin that runs on a node: the passive probes here, the active checks in
`kubenetdiag.probes.active` (docs/probes.md).

A module of this package that defines `PROBE` is a probe: it is found here by walking the
package, so adding one is adding its module. `PROBES` is the order they run in on the node,
by each probe's `order` (default DEFAULT_ORDER) and then by name: `counters` has a larger order
and runs last, since its first sample is taken by the script's prelude and every other probe's
run time counts toward the interval between its two samples.
"""

from __future__ import annotations

import sys

from kubenetdiag.probes.base import DEFAULT_ORDER, Probe, Section, discover, in_order, unique

PROBES: tuple[Probe, ...] = tuple(
    unique(in_order([probe for _, probe in discover(sys.modules[__name__], "PROBE")]), "probes")
)
BY_NAME: dict[str, Probe] = {p.name: p for p in PROBES}


def probe_names() -> list[str]:
    """The passive probes a collection runs, in order: what a bundle's meta.json records as
    `probes`, so its analysis can tell "did not run on this node" from "not run at all"."""
    return [p.name for p in PROBES]


__all__ = ["BY_NAME", "DEFAULT_ORDER", "PROBES", "Probe", "Section", "probe_names"]
