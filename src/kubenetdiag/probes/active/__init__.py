"""Active checks: traffic sent from every node to its peers, over the node's SSH connection.

plan.py decides each node's targets from facts and the inventory (pure); every other module
that defines `CHECKS` holds active checks (`kubenetdiag.probes.base.ActiveCheck`): for each,
how it finds its targets in the plan, the shell fragment per target and the parser of its
output. script.py assembles one node's script from them. Running it is
kubenetdiag.collect.active's job, turning its sections into facts kubenetdiag.facts.parse's.

Checks are found by walking this package the first time they are asked for (a check module
imports script.py's helpers, which ask for the checks: doing it at import would go round).
They run in `order`, then name order.
"""

from __future__ import annotations

import sys
from functools import cache

from kubenetdiag.probes.base import ActiveCheck, discover, in_order, unique

PREFIX = "active."  # every active section's probe name starts with it


@cache
def checks() -> tuple[ActiveCheck, ...]:
    """Every active check, in the order the script runs them."""
    found = [c for _, module_checks in discover(sys.modules[__name__], "CHECKS")
             for c in module_checks]
    return tuple(unique(in_order(found), "active checks"))


@cache
def _by_name() -> dict[str, ActiveCheck]:
    return {c.name: c for c in checks()}


def check_for(section_probe: str) -> tuple[ActiveCheck, str] | None:
    """(check, id suffix) for a section's probe name, e.g. `active.pod.ping.pod.0` ->
    (the pod.ping check, "pod.0"): the longest check name it starts with; None when no check
    has it (written by a newer version).

    >>> check, suffix = check_for("active.mtu.1.0")
    >>> (check.name, suffix)
    ('mtu', '1.0')
    >>> check_for("active.teleport.0") is None
    True
    """
    words = section_probe.removeprefix(PREFIX).split(".")
    by_name = _by_name()
    for cut in range(len(words), 0, -1):
        check = by_name.get(".".join(words[:cut]))
        if check is not None:
            return check, ".".join(words[cut:])
    return None


__all__ = ["PREFIX", "check_for", "checks"]
