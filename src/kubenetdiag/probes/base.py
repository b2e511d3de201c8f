"""What a probe is: one read-only shell command, the parser for its output, and what it blocks.

A probe module defines `PROBE`. The collector only reads `name`, `command`, `tools` and
`timeout_s`; the parse stage only calls `parse`. Keeping both in one module means adding a fact
is one file (plus its fixtures), and the command and the parser can never drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from kubenetdiag.facts.model import Fact


@dataclass(frozen=True)
class Section:
    """One probe's raw result on one node, as the bundle keeps it."""

    probe: str
    command: str
    exit_code: int | None  # None: it did not finish (timeout, or the script died)
    duration_s: float
    stdout: str
    stderr: str
    truncated: bool = False

    def to_dict(self) -> dict:
        return {
            "probe": self.probe,
            "command": self.command,
            "exit_code": self.exit_code,
            "duration_s": self.duration_s,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "truncated": self.truncated,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Section:
        rc = d.get("exit_code")
        return cls(
            probe=str(d["probe"]),
            command=str(d.get("command", "")),
            exit_code=rc if isinstance(rc, int) and not isinstance(rc, bool) else None,
            duration_s=float(d.get("duration_s") or 0.0),
            stdout=str(d.get("stdout", "")),
            stderr=str(d.get("stderr", "")),
            truncated=bool(d.get("truncated", False)),
        )


Parser = Callable[[Section, str], list[Fact]]


@dataclass(frozen=True)
class Probe:
    name: str
    command: str  # POSIX sh; must never change the node
    parse: Parser  # pure: (section, node name) -> facts
    blocks: str  # what cannot be checked when this probe gives no answer
    tools: tuple[str, ...] = ()  # binaries it needs; a missing one is reported, not guessed at
    timeout_s: int = 15
    ok_exit_codes: frozenset[int] = field(default_factory=lambda: frozenset({0}))
    # Run at the very start of the script, its stdout kept in the environment variable
    # `prelude_var(name)` for `command` to read: lets a probe compare a first sample taken
    # before every other probe with a second one taken at its own turn, with no file written.
    prelude: str = ""


def prelude_var(name: str) -> str:
    """The environment variable holding a probe's prelude output on the node."""
    return "KND_PRE_" + "".join(c if c.isalnum() else "_" for c in name)
