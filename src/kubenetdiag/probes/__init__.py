"""The node probes. Order is the order they run in on the node.

`counters` runs last: its first sample is taken by the script's prelude, so every other probe's
run time counts toward the interval between its two samples.
"""

from __future__ import annotations

from kubenetdiag.probes import (
    bgp,
    cni,
    conntrack,
    counters,
    host,
    iptables,
    iptables_legacy,
    ipvs,
    kernel,
    links,
    modules,
    nftables,
    overlay,
    processes,
    routes,
    sockets,
    sysctl,
    sysctl_files,
)
from kubenetdiag.probes.base import Probe, Section

PROBES: tuple[Probe, ...] = (
    kernel.PROBE,
    sysctl.PROBE,
    sysctl_files.PROBE,
    modules.PROBE,
    iptables.PROBE,
    iptables_legacy.PROBE,
    nftables.PROBE,
    ipvs.PROBE,
    links.PROBE,
    routes.PROBE,
    overlay.PROBE,
    cni.PROBE,
    conntrack.PROBE,
    sockets.PROBE,
    processes.PROBE,
    bgp.PROBE,
    host.PROBE,
    counters.PROBE,
)
BY_NAME: dict[str, Probe] = {p.name: p for p in PROBES}

__all__ = ["PROBES", "BY_NAME", "Probe", "Section"]
