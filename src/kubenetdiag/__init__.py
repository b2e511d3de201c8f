"""kubenetdiag: diagnose Kubernetes network faults from node and cluster facts."""

__version__ = "0.1.0"
