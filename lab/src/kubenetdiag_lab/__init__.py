"""Network-namespace test lab: a k8s-shaped network with real sshd nodes on one machine.

A separate package from the `kubenetdiag` product (it needs root and is for rule authors and CI,
not for an SRE's laptop); it adds `kubenetdiag lab` through the `kubenetdiag.commands` entry
point. Import `Lab` from here; see `kubenetdiag_lab.lab` for the layout and its invariants,
`kubenetdiag_lab.topology` for the shape as data and `kubenetdiag_lab.runner` for how commands
reach a node or pod.
"""

from __future__ import annotations

import importlib
from typing import Any

# Resolved on first use: `python -m kubenetdiag_lab.<module>` and the helpers run by path
# should not pay for loading the whole lab.
_EXPORTS = {
    "FAULTS": "faults", "Fault": "faults", "FaultContext": "faults",
    "Lab": "lab", "missing_requirements": "lab",
    "LabNode": "topology", "LabPod": "topology", "Topology": "topology",
    "CommandError": "netns", "exit_on_sigterm": "netns", "LabError": "errors",
    "Overlap": "preflight", "find_overlaps": "preflight", "overlap_message": "preflight",
    "CommandRunner": "runner", "NodeCommandRunner": "runner", "Runners": "runner",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
