"""The node probes. Order is the order they run in on the node."""

from __future__ import annotations

from kubenetdiag.probes import iptables, kernel, sysctl
from kubenetdiag.probes.base import Probe, Section

PROBES: tuple[Probe, ...] = (kernel.PROBE, sysctl.PROBE, iptables.PROBE)
BY_NAME: dict[str, Probe] = {p.name: p for p in PROBES}

__all__ = ["PROBES", "BY_NAME", "Probe", "Section"]
