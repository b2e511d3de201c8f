"""Network-namespace test lab: a k8s-shaped network with real sshd nodes on one machine.

Import `Lab` from here; see `kubenetdiag.lab.lab` for the layout and its invariants.
"""

from __future__ import annotations

from kubenetdiag.lab.faults import FAULTS, Fault
from kubenetdiag.lab.lab import Lab, LabNode, LabPod, missing_requirements
from kubenetdiag.lab.netns import CommandError, LabError
from kubenetdiag.lab.preflight import Overlap, find_overlaps, overlap_message

__all__ = [
    "FAULTS",
    "CommandError",
    "Fault",
    "Lab",
    "LabError",
    "LabNode",
    "LabPod",
    "Overlap",
    "find_overlaps",
    "missing_requirements",
    "overlap_message",
]
