"""Thin helpers over `ip netns`, processes and namespaces.

Everything here acts either inside a named network namespace or on the namespace objects
themselves (create, list, delete). Nothing configures the root namespace's network.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from kubenetdiag_lab.errors import LabError

NETNS_DIR = Path("/run/netns")


class CommandError(LabError, subprocess.CalledProcessError):
    """A lab command exited non-zero.

    Also a CalledProcessError so callers used to subprocess.run(check=True) can catch it, but
    its message carries stderr, which is what one needs to see when a lab step fails.
    """

    def __init__(self, cp: subprocess.CompletedProcess[str]) -> None:
        subprocess.CalledProcessError.__init__(
            self, cp.returncode, cp.args, output=cp.stdout, stderr=cp.stderr
        )

    def __str__(self) -> str:
        argv = self.cmd if isinstance(self.cmd, str) else shlex.join(map(str, self.cmd))
        detail = (self.stderr or self.stdout or "").strip()
        text = f"command exited {self.returncode}: {argv}"
        return f"{text}\n{detail}" if detail else text


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    input: str | None = None,
    timeout: float | None = 30.0,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command with captured text output; raise CommandError on failure if check."""
    try:
        cp = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            # Without input, a child that reads stdin (ssh does) must not steal the caller's.
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]}: not installed or not on PATH") from exc
    if check and cp.returncode != 0:
        raise CommandError(cp)
    return cp


def exec_argv(netns: str, argv: Sequence[str]) -> list[str]:
    # `ip netns exec` rather than nsenter: it also remounts /sys for the namespace, so tools
    # that read /sys/class/net (the diagnoser's probes do) see the namespace's interfaces.
    return ["ip", "netns", "exec", netns, *argv]


def ip_batch(netns: str | None, lines: Iterable[str]) -> None:
    """Apply many `ip` commands in one process: one fork instead of dozens per node."""
    script = "\n".join(lines) + "\n"
    argv = ["ip", "-batch", "-"] if netns is None else ["ip", "-n", netns, "-batch", "-"]
    run(argv, input=script)


def name_pattern(prefix: str) -> re.Pattern[str]:
    # Exact lab shapes only, so `down` of prefix "knd" never touches "knd2-..." or a
    # namespace someone else named "knd-something".
    return re.compile(rf"^{re.escape(prefix)}-(sw|client|outside|cp|node\d+(-pod\d+)?)$")


def list_netns() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def lab_namespaces(prefix: str) -> list[str]:
    pattern = name_pattern(prefix)
    return [name for name in list_netns() if pattern.match(name)]


def _ns_id(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def pids_in_netns(names: Iterable[str]) -> dict[str, list[int]]:
    """Processes whose network namespace is one of `names`.

    Same test as `ip netns pids` (device and inode of /proc/PID/ns/net), but one pass over
    /proc for all namespaces: a 50-node lab has ~100 of them.
    """
    wanted: dict[tuple[int, int], str] = {}
    for name in names:
        ident = _ns_id(NETNS_DIR / name)
        if ident is not None:
            wanted[ident] = name
    found: dict[str, list[int]] = {name: [] for name in wanted.values()}
    if not wanted:
        return found
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == me:
            continue
        ident = _ns_id(Path(entry.path) / "ns" / "net")
        if ident in wanted:
            found[wanted[ident]].append(pid)
    return found


def proc_state(pid: int) -> str | None:
    """The process's state letter (R, S, T for stopped, Z...); None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The state letter follows the parenthesised command name, which may contain spaces.
    return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] or None


def _alive(pid: int) -> bool:
    # Zombies count as dead: reaping is left to whoever owns the Popen (waitpid here would
    # steal the exit status from the caller's subprocess object).
    return proc_state(pid) not in (None, "Z", "X")


def terminate(pids: Iterable[int], grace: float = 2.0) -> None:
    """SIGTERM (and SIGCONT), wait up to `grace` seconds, then SIGKILL whatever is left."""
    pending = set(pids)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in list(pending):
            try:
                os.kill(pid, sig)
                if sig == signal.SIGTERM:
                    # a process a fault hung (SIGSTOP) acts on SIGTERM only once continued
                    os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pending.discard(pid)
        deadline = time.monotonic() + grace
        while pending and time.monotonic() < deadline:
            pending = {pid for pid in pending if _alive(pid)}
            if pending:
                time.sleep(0.02)
        if not pending:
            return
    if pending:
        raise LabError(f"processes survived SIGKILL: {sorted(pending)}")


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def add_netns(names: Sequence[str]) -> None:
    if names:
        ip_batch(None, (f"netns add {name}" for name in names))


def delete_netns(names: Sequence[str]) -> list[str]:
    """Delete namespaces; return those that still exist afterwards."""
    if names:
        # -force keeps going past a name that is already gone (idempotent down).
        run(["ip", "-force", "-batch", "-"], input="".join(f"netns del {n}\n" for n in names),
            check=False)
    present = set(list_netns())
    return [name for name in names if name in present]


def exit_on_sigterm() -> None:
    """Make SIGTERM (a CI job's timeout, `kill`) end the program the way Ctrl-C does, through
    its `finally` blocks, so a lab being torn down there is: by default Python dies on the spot
    and leaves the lab's namespaces and processes behind."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
