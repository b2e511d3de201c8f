"""Names every stage shares, defined once.

The order of SEVERITIES is the order findings are sorted and counted in: rule files, the engine,
the report builder and every renderer read it from here.
"""

from __future__ import annotations

SEVERITIES: tuple[str, ...] = ("critical", "error", "warning", "info")
SEVERITY_RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}
# Warning and worse need a person: they make the exit code 1.
ALARMING: frozenset[str] = frozenset(SEVERITIES[: SEVERITY_RANK["warning"] + 1])

# Substrings that mark a pod or DaemonSet as a CNI agent, in the names the CNIs ship with
# (kube-flannel-ds, calico-node, cilium, weave-net, kube-router, antrea-agent, canal).
CNI_MARKERS: tuple[str, ...] = (
    "flannel", "calico-node", "cilium", "weave", "kube-router", "antrea", "canal",
)

# The "not checked" entry of a run whose inventory declares no endpoint (facts/parse.py): the
# terminal summary names it on its own line, with how to declare one.
ENDPOINTS_PROBE = "active.endpoints"
