"""Run the probe script on this machine, for `diagnose --local` and inventory hosts with
`ansible_connection: local`. Same script, same wire format as over SSH."""

from __future__ import annotations

import subprocess

from kubenetdiag.collect.ssh import CollectError


def run_script(script: str, timeout: float, limit: int) -> tuple[str, str, int | None, bool]:
    try:
        proc = subprocess.run(
            ["sh", "-s"], input=script.encode(), capture_output=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise CollectError(f"probe script did not finish within {timeout:g}s") from None
    except OSError as exc:
        raise CollectError(f"cannot start sh: {exc.strerror}") from None
    truncated = len(proc.stdout) > limit or len(proc.stderr) > limit
    return (
        proc.stdout[:limit].decode("utf-8", "replace"),
        proc.stderr[:limit].decode("utf-8", "replace"),
        proc.returncode,
        truncated,
    )
