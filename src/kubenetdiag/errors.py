"""Errors a user can act on, and the exit codes of every way a run can end (docs/errors.md).

An InputError stops the run before any work starts (exit code 2) and always says where the bad
input is and what to do about it.
"""

from __future__ import annotations

import re

# Every way a run ends, in one place (docs/errors.md). 0 and 1 follow from the findings.
EXIT_OK = 0  # no finding of severity warning or above
EXIT_FINDINGS = 1  # at least one finding of severity warning or above
EXIT_USAGE = 2  # bad input: nothing was run
EXIT_ALL_FAILED = 3  # no node could be collected from
EXIT_INTERNAL = 4  # a bug: the traceback is printed, and the bundle keeps what was collected
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT
EXIT_BROKEN_PIPE = 141  # stdout closed early (a pipe to head), as a shell reports SIGPIPE


# C0 controls but newline and tab, DEL, C1 controls, and the bidirectional overrides that can
# reorder what an SRE reads, and lone surrogates (a JSON escape) that no terminal encoding can
# print: a node name or a file from a bundle may hold any of them.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def for_terminal(text: str) -> str:
    """`text` with every character that a terminal would act on shown as an escape (`\\x1b`).

    Anything printed to a terminal that came from a bundle, an inventory, a rule file or a node
    goes through here: an escape sequence in it must be read, never executed."""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class InputError(Exception):
    """Bad user input: a file, a flag, a rule. Rendered as `file:line: message` plus a hint."""

    def __init__(
        self, message: str, *, file: str | None = None, line: int | None = None, hint: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.hint = hint

    def location(self) -> str:
        if self.file and self.line:
            return f"{self.file}:{self.line}"
        return self.file or ""

    def __str__(self) -> str:
        loc = self.location()
        text = f"{loc}: {self.message}" if loc else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    def as_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "message": self.message, "hint": self.hint}


class RuleErrors(InputError):
    """All the problems found while loading rules; `errors` holds each one with its location."""

    def __init__(self, errors: list[InputError]) -> None:
        self.errors = list(errors)
        first = self.errors[0] if self.errors else None
        super().__init__(
            f"{len(self.errors)} problem(s) in the rules",
            file=first.file if first else None,
            line=first.line if first else None,
            hint="run `kubenetdiag rules lint` for the full list",
        )

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class CollectError(Exception):
    """A node could not be collected from; the message says why in words an SRE can act on.
    The collector turns it into the node's `error`: it never stops the run."""
