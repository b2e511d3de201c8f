"""Run the probe script on this machine, for `diagnose --local` and inventory hosts with
`ansible_connection: local`. Same script, same wire format as over SSH."""

from __future__ import annotations

import socket
import subprocess

from kubenetdiag.collect.transport import KILL_GRACE_S, ScriptResult
from kubenetdiag.errors import CollectError


class LocalTransport:
    """This machine as a node (a `Transport`)."""

    def __init__(self, command_timeout: float) -> None:
        self.command_timeout = command_timeout

    def run_script(self, script: str, *, limit: int, timeout: float | None = None
                   ) -> ScriptResult:
        # As long as an SSH node would let it run, `timeout -k` grace included.
        wait_s = (self.command_timeout if timeout is None else timeout) + KILL_GRACE_S
        try:
            proc = subprocess.run(
                ["sh", "-s"], input=script.encode(), capture_output=True, timeout=wait_s
            )
        except subprocess.TimeoutExpired:
            raise CollectError(f"probe script did not finish within {wait_s:g}s") from None
        except OSError as exc:
            raise CollectError(f"cannot start sh: {exc.strerror}") from None
        return ScriptResult(
            stdout=proc.stdout[:limit].decode("utf-8", "replace"),
            stderr=proc.stderr[:limit].decode("utf-8", "replace"),
            status=proc.returncode,
            truncated=len(proc.stdout) > limit or len(proc.stderr) > limit,
        )

    def open_stream(self, address: str, port: int, timeout: float) -> socket.socket:
        return socket.create_connection((address, port), timeout=timeout)
