"""Network-namespace test lab: a k8s-shaped network with real sshd nodes on one machine.

Import `Lab` from here; see `kubenetdiag_lab.lab` for the layout and its invariants.
"""

from __future__ import annotations

import importlib
from typing import Any

# Resolved on first use: the `kubenetdiag` CLI imports kubenetdiag_lab.cli to build its
# parser, and `diagnose` during an outage should not pay for loading the whole lab.
_EXPORTS = {
    "FAULTS": "faults", "Fault": "faults",
    "Lab": "lab", "LabNode": "lab", "LabPod": "lab", "missing_requirements": "lab",
    "CommandError": "netns", "LabError": "netns",
    "Overlap": "preflight", "find_overlaps": "preflight", "overlap_message": "preflight",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
