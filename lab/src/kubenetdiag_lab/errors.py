"""The lab's one exception type, apart from the modules that run commands."""

from __future__ import annotations


class LabError(RuntimeError):
    """The lab could not do what was asked; the message says what and how to recover."""
