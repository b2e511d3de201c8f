"""known_hosts for the SSH transport: one store shared by the run's worker threads, and the
policies for a host key the files do not hold (refuse, or accept a first-seen one when the
user opted in, as OpenSSH's StrictHostKeyChecking=accept-new does)."""

from __future__ import annotations

import fcntl
import hmac
import os
import threading
from pathlib import Path

import paramiko

from kubenetdiag.errors import CollectError
from kubenetdiag.inventory import Host


class HostKeyStore:
    """known_hosts files shared by all worker threads.

    Each file is read once and indexed by host name: paramiko's HostKeys scans every entry on
    each lookup (and on each line it loads), which is quadratic in the number of nodes. Hashed
    names (HashKnownHosts) cannot be indexed and are matched one entry at a time, as OpenSSH
    does. New keys (only when the user opted in) are appended at the end of the run, once per
    file, as OpenSSH appends them: the user's comments and other lines stay as they were.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plain: dict[str, dict[str, dict[str, paramiko.PKey]]] = {}
        self._hashed: dict[str, list[paramiko.hostkeys.HostKeyEntry]] = {}
        self._revoked: dict[str, set[str]] = {}  # base64 blobs of @revoked keys
        self._new: dict[str, list[tuple[str, paramiko.PKey]]] = {}

    def _loaded(self, path: str) -> None:
        """Read and index `path` the first time it is asked about (caller holds the lock)."""
        if path in self._plain:
            return
        plain: dict[str, dict[str, paramiko.PKey]] = {}
        hashed: list[paramiko.hostkeys.HostKeyEntry] = []
        revoked: set[str] = set()
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            text = ""
        except OSError as exc:
            raise CollectError(f"cannot read known_hosts file {path}: {exc}") from None
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            marker = ""
            if line.startswith("@"):
                marker, _, line = line.partition(" ")
            # host certificates (@cert-authority) are not supported: such lines trust nothing
            if not line or line.startswith("#") or marker not in ("", "@revoked"):
                continue
            try:
                entry = paramiko.hostkeys.HostKeyEntry.from_line(line, lineno)
            except (paramiko.SSHException, paramiko.hostkeys.InvalidHostKey, ValueError):
                entry = None  # a damaged line: skipped, as OpenSSH skips it
            if entry is None or entry.key is None:
                continue
            if marker == "@revoked":
                revoked.add(entry.key.get_base64())
                continue
            if any(h.startswith("|1|") for h in entry.hostnames):
                hashed.append(entry)
            for name in entry.hostnames:
                if not name.startswith("|1|"):
                    plain.setdefault(name, {}).setdefault(entry.key.get_name(), entry.key)
        for keys in plain.values():
            for name in [n for n, k in keys.items() if k.get_base64() in revoked]:
                del keys[name]
        hashed = [e for e in hashed if e.key.get_base64() not in revoked]
        self._plain[path], self._hashed[path], self._revoked[path] = plain, hashed, revoked

    def revoked(self, path: str, key: paramiko.PKey) -> bool:
        """The key is marked @revoked in the file: never to be trusted, not even as new."""
        with self._lock:
            self._loaded(path)
            return key.get_base64() in self._revoked[path]

    def lookup(self, path: str, hostname: str) -> dict[str, paramiko.PKey]:
        with self._lock:
            self._loaded(path)
            found = dict(self._plain[path].get(hostname, {}))
            hashed = self._hashed[path]
        for entry in hashed:
            if entry.key.get_name() in found:
                continue
            for h in entry.hostnames:
                if h.startswith("|1|") and hmac.compare_digest(
                    paramiko.HostKeys.hash_host(hostname, h), h
                ):
                    found[entry.key.get_name()] = entry.key
                    break
        return found

    def add(self, path: str, hostname: str, key: paramiko.PKey) -> None:
        with self._lock:
            self._plain.setdefault(path, {}).setdefault(hostname, {})[key.get_name()] = key
            self._new.setdefault(path, []).append((hostname, key))

    def save(self) -> list[str]:
        """Append the keys first seen in this run; return the files that gained keys."""
        with self._lock:
            new, self._new = self._new, {}
        for path, keys in sorted(new.items()):
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            lines = "".join(f"{h} {k.get_name()} {k.get_base64()}\n" for h, k in keys)
            fd = os.open(target, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a+b") as f:
                # the collector's worker processes save at the same time
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
                if f.seek(0, os.SEEK_END) > 0:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        lines = "\n" + lines
                f.write(lines.encode())
        return sorted(new)


class AcceptNewPolicy(paramiko.MissingHostKeyPolicy):
    """Accept a host never seen before (the user opted in); a changed key is still refused."""

    def __init__(self, store: HostKeyStore, path: str) -> None:
        self.store, self.path = store, path

    def missing_host_key(self, client, hostname, key):  # noqa: ANN001 (paramiko's signature)
        if self.store.revoked(self.path, key):
            raise CollectError(
                f"host key of {hostname} is marked @revoked in {self.path}: refusing it"
            )
        self.store.add(self.path, hostname, key)


class RejectPolicy(paramiko.MissingHostKeyPolicy):
    def __init__(self, path: str) -> None:
        self.path = path

    def missing_host_key(self, client, hostname, key):  # noqa: ANN001 (paramiko's signature)
        fp = key.fingerprint if hasattr(key, "fingerprint") else key.get_name()
        raise CollectError(
            f"unknown host key for {hostname} ({fp}), not in {self.path}: verify it and add "
            "it to known_hosts, or rerun with --accept-new-host-keys to trust first-seen keys"
        )


def known_hosts_path(host: Host, override: str | None = None) -> str:
    """The file holding the host's key: --known-hosts, else the inventory's
    UserKnownHostsFile, else the user's own."""
    return str(Path(override or host.known_hosts or "~/.ssh/known_hosts").expanduser())
