"""The lab's one exception type, apart from the modules that run commands."""

from __future__ import annotations

from pathlib import Path


class LabError(RuntimeError):
    """The lab could not do what was asked; the message says what and how to recover."""


def log_tail(path: Path, lines: int = 25) -> str:
    """The last lines of a component's log, for the error that says it failed."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path}: no log)"
    return "\n".join(text.splitlines()[-lines:])
