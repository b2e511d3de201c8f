"""How the runners reach a node: one contract for SSH and for this machine.

A `Transport` is bound to one host. The runners ask `Connector.for_host(host)` for it and call
the same two methods whatever the host's connection is, so a new way to reach nodes is one
class here, not a branch in every runner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# `timeout -k KILL_GRACE_S` on the node: the script gets SIGTERM at its deadline and SIGKILL
# this much later. A local run waits as long.
KILL_GRACE_S = 5


def node_command(deadline_s: float) -> str:
    """The command a node runs a script with (the script on its stdin): the node enforces the
    deadline too, so nothing lingers there if the collector disconnects, and nice execs the
    shell (no process more): a sick node's workloads come first."""
    return f"timeout -k {KILL_GRACE_S} {max(5, int(deadline_s))} nice -n 10 sh -s"


@dataclass(frozen=True)
class ScriptResult:
    """What one script run gave back, as the runners keep it."""

    stdout: str
    stderr: str
    status: int | None  # the script's exit status; None when none came back
    truncated: bool  # a stream passed the output limit; the rest was read and dropped


class Stream(Protocol):
    """A TCP connection the node opened, as the SSH-channel checks use it."""

    def sendall(self, data: bytes) -> None: ...
    def recv(self, n: int) -> bytes: ...
    def settimeout(self, t: float) -> None: ...
    def close(self) -> None: ...


class Transport(Protocol):
    """One host's way in."""

    def run_script(self, script: str, *, limit: int, timeout: float | None = None
                   ) -> ScriptResult:
        """Run `script` with `sh -s` on the node. `limit`: bytes kept per stream; `timeout`:
        seconds the node lets it run (None: the run's command timeout). Raises CollectError
        when the node cannot be reached or the script cannot be started."""
        ...

    def open_stream(self, address: str, port: int, timeout: float) -> Stream:
        """A TCP connection to address:port opened from the node. Raises CollectError or
        OSError when it cannot be opened."""
        ...
