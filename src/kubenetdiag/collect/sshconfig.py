"""OpenSSH's client configuration (~/.ssh/config, or the file `--ssh-config` names), applied
to each host the way Ansible's ssh connection gets it: Ansible passes the inventory's values
to ssh as command-line options, which win over the file, and the file fills in the rest.

Read by paramiko's SSHConfig (Host patterns, Match, tokens such as %h and %p). What is used:
HostName, User, Port, IdentityFile, ProxyJump, ProxyCommand, UserKnownHostsFile,
StrictHostKeyChecking and ServerAliveInterval. A host alias the inventory names (`node2:` with
no ansible_host) is looked up by that name, as `ssh node2` would.

StrictHostKeyChecking `no` (or `off`) is taken as `accept-new`: a key seen for the first time
is recorded, and a changed key is still refused, which kubenetdiag never lets pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import paramiko

from kubenetdiag.errors import InputError
from kubenetdiag.files import NotRegularFile, TooLarge, read_at_most
from kubenetdiag.inventory import Host

MAX_BYTES = 1024 * 1024
# inventory variables that set what the file would otherwise give
_PORT = ("ansible_port", "ansible_ssh_port")


@dataclass(frozen=True)
class Route:
    """A host with the file's settings applied, and what a Host does not carry."""

    host: Host
    proxy_command: str | None = None
    keepalive_s: int | None = None


@dataclass(frozen=True)
class SshConfig:
    config: paramiko.SSHConfig | None = None
    path: str | None = None

    @classmethod
    def load(cls, path: str | None = None, home: Path | None = None) -> SshConfig:
        """The file given (which must exist), else ~/.ssh/config when there is one."""
        if path is None:
            default = (home or Path.home()) / ".ssh" / "config"
            if not default.is_file():
                return cls()
            path = str(default)
        try:
            text = read_at_most(Path(path), MAX_BYTES).decode("utf-8", "replace")
        except FileNotFoundError:
            raise InputError("no such SSH config file", file=path,
                             hint="check the path given to --ssh-config") from None
        except (NotRegularFile, TooLarge, OSError) as exc:
            raise InputError(f"cannot read the SSH config file: {exc}", file=path,
                             hint="give a readable ssh_config(5) file") from None
        try:
            config = paramiko.SSHConfig.from_text(text)
        except Exception as exc:  # paramiko raises several types for malformed files
            raise InputError(f"not an SSH config file paramiko can read: {exc}",
                             file=path, hint="check it with `ssh -G HOST -F FILE`") from None
        return cls(config, path)

    def route(self, host: Host) -> Route:
        if self.config is None or host.connection == "local":
            return Route(host)
        try:
            found = self.config.lookup(host.address)
        except Exception:  # a Match exec or token the file uses that paramiko cannot do
            return Route(host)
        port = host.port
        if not any(k in host.vars for k in _PORT) and str(found.get("port", "")).isdigit():
            port = int(found["port"])
        key_file = host.key_file or next(
            (f for f in found.get("identityfile", []) if os.path.isfile(f)), None)
        known = host.known_hosts or next(
            iter(os.path.expanduser(p) for p in str(found.get("userknownhostsfile", "")).split()),
            None)
        strict = host.strict_host_key
        if strict == "yes" and str(found.get("stricthostkeychecking", "")).lower() in (
                "accept-new", "no", "off"):
            strict = "accept-new"
        jump = host.proxy_jump or _unless_none(found.get("proxyjump"))
        command = None if jump else _unless_none(found.get("proxycommand"))
        keepalive = str(found.get("serveraliveinterval", ""))
        return Route(
            replace(host, address=str(found.get("hostname") or host.address), port=port,
                    user=host.user or found.get("user"), key_file=key_file, known_hosts=known,
                    strict_host_key=strict, proxy_jump=jump),
            proxy_command=command,
            keepalive_s=int(keepalive) if keepalive.isdigit() and int(keepalive) > 0 else None,
        )


def _unless_none(value: object) -> str | None:
    text = str(value or "").strip()
    return None if text.lower() in ("", "none") else text
