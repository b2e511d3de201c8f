"""Run the probe script on a node over one SSH session (paramiko): the SSH `Transport`, and the
`Connector` that hands every runner the transport for a host (local ones included).

Every failure becomes a sentence an SRE can act on ("connection refused on 198.18.0.12:22: is
sshd running?"), never a traceback, and never stops the other nodes.
"""

from __future__ import annotations

import logging
import random
import select
import shlex
import socket
import threading
import time
from dataclasses import dataclass, replace

import paramiko

from kubenetdiag.collect.hostkeys import (
    AcceptNewPolicy,
    HostKeyStore,
    RejectPolicy,
    known_hosts_path,
)
from kubenetdiag.collect.local import LocalTransport
from kubenetdiag.collect.sshconfig import SshConfig
from kubenetdiag.collect.transport import ScriptResult, Transport, node_command
from kubenetdiag.errors import CollectError
from kubenetdiag.inventory import Host

# paramiko logs every failed handshake from its transport thread, traceback included (60 lines
# for a host that accepts TCP and never sends a banner); with no handler configured Python
# prints that to stderr. The reason reaches the user as the node's error instead: one line.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


@dataclass(frozen=True)
class SshOptions:
    connect_timeout: float = 10.0
    command_timeout: float = 60.0
    accept_new_host_keys: bool = False
    known_hosts: str | None = None  # overrides the inventory's UserKnownHostsFile
    retries: int = 2  # for sshd's MaxStartups refusals under a burst of connections
    ssh_config: str | None = None  # OpenSSH client config; None: ~/.ssh/config if present


def _tcp(host: Host, opts: SshOptions) -> socket.socket:
    where = f"{host.address}:{host.port}"
    try:
        return socket.create_connection((host.address, host.port), timeout=opts.connect_timeout)
    except socket.gaierror as exc:
        raise CollectError(f"cannot resolve {host.address}: {exc.strerror}") from None
    except ConnectionRefusedError:
        raise CollectError(f"connection refused on {where}: is sshd running?") from None
    except TimeoutError:
        raise CollectError(
            f"no answer from {where} within {opts.connect_timeout:g}s (host down or filtered)"
        ) from None
    except OSError as exc:
        raise CollectError(f"cannot connect to {where}: {exc.strerror or exc}") from None


# AES-GCM first: its tag is checked inside `cryptography`, where paramiko checks every
# HMAC-SHA2 tag with a byte-by-byte Python loop, which was about a quarter of the collector's
# CPU per node. The other ciphers stay behind it for sshd builds without GCM (before 6.2).
_GCM = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def _transport(sock, disabled_algorithms=None) -> paramiko.Transport:  # noqa: ANN001
    t = paramiko.Transport(sock, disabled_algorithms=disabled_algorithms)
    sec = t.get_security_options()
    offered = tuple(sec.ciphers)
    sec.ciphers = tuple(c for c in _GCM if c in offered) + tuple(
        c for c in offered if c not in _GCM
    )
    return t


class KeyCache:
    """Private keys read once per run, not once per node (paramiko tries every key class in
    turn on each connect). A key it cannot read alone (passphrase, unknown type) is left to
    paramiko, whose error message names the problem."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, paramiko.PKey | None] = {}

    def get(self, path: str) -> paramiko.PKey | None:
        with self._lock:
            if path not in self._keys:
                try:
                    self._keys[path] = paramiko.PKey.from_path(path)
                except (OSError, paramiko.SSHException, ValueError):
                    self._keys[path] = None
            return self._keys[path]


def _connect(
    host: Host,
    opts: SshOptions,
    store: HostKeyStore,
    jumps: JumpHosts | None = None,
    keys: KeyCache | None = None,
    proxy_command: str | None = None,
) -> paramiko.SSHClient:
    path = known_hosts_path(host, opts.known_hosts)
    client = paramiko.SSHClient()
    # known_hosts names a non-22 port as "[addr]:port", as OpenSSH does
    name = host.address if host.port == 22 else f"[{host.address}]:{host.port}"
    for keytype, key in store.lookup(path, name).items():
        client.get_host_keys().add(name, keytype, key)
    accept = opts.accept_new_host_keys or host.strict_host_key == "accept-new"
    client.set_missing_host_key_policy(
        AcceptNewPolicy(store, path) if accept else RejectPolicy(path)
    )
    where = f"{host.address}:{host.port}"
    if host.proxy_jump and jumps:
        sock = jumps.channel(host)
    elif proxy_command:
        try:
            sock = paramiko.ProxyCommand(proxy_command)
        except (paramiko.SSHException, OSError) as exc:
            raise CollectError(f"ProxyCommand {proxy_command!r} could not start: {exc}") from None
    else:
        sock = _tcp(host, opts)
    pkey = keys.get(host.key_file) if keys and host.key_file else None
    try:
        client.connect(
            host.address,
            port=host.port,
            username=host.user,
            password=host.password,
            pkey=pkey,
            key_filename=None if pkey else host.key_file,
            look_for_keys=host.key_file is None,
            allow_agent=True,
            sock=sock,
            timeout=opts.connect_timeout,
            banner_timeout=opts.connect_timeout,
            auth_timeout=opts.connect_timeout,
            channel_timeout=opts.connect_timeout,
            transport_factory=_transport,
        )
    except CollectError:
        client.close()
        raise
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise CollectError(
            f"HOST KEY CHANGED for {host.address} (got {exc.key.get_name()}, known_hosts has "
            f"{exc.expected_key.get_name()} in {path}): possible man-in-the-middle; verify the "
            "node's key and fix known_hosts before trusting it"
        ) from None
    except paramiko.AuthenticationException as exc:
        client.close()
        who = host.user or "the current user"
        key = f" with key {host.key_file}" if host.key_file else ""
        raise CollectError(f"authentication failed for {who}{key}: {exc}") from None
    except paramiko.ssh_exception.IncompatiblePeer as exc:
        client.close()
        raise CollectError(
            f"no common SSH algorithm with {where} ({exc}); very old sshd (CentOS 6/7) may only "
            "offer SHA-1 algorithms that current clients refuse"
        ) from None
    except paramiko.SSHException as exc:
        client.close()
        if "No authentication methods available" in str(exc):
            # no key file, no agent, no password: nothing would ever prompt, and no retry helps
            raise CollectError(
                f"authentication failed for {host.user or 'the current user'}: no key to log "
                "in with; set ansible_ssh_private_key_file (or IdentityFile in the SSH "
                "config), or load the key into ssh-agent (SSH_AUTH_SOCK)") from None
        raise _Retryable(f"SSH handshake with {where} failed: {exc}") from None
    except (OSError, EOFError) as exc:
        client.close()
        raise _Retryable(f"SSH handshake with {where} failed: {exc}") from None
    return client


class _Retryable(CollectError):
    """sshd dropped an unauthenticated connection (MaxStartups) or the handshake broke."""


def _command(host: Host, opts: SshOptions, timeout: float | None = None) -> str:
    cmd = node_command(opts.command_timeout if timeout is None else timeout)
    if host.become:
        user = f"-u {shlex.quote(host.become_user)} " if host.become_user else ""
        cmd = f"sudo -n {user}-- {cmd}"
    return cmd


def parse_jump(spec: str) -> tuple[str | None, str, int]:
    """`[user@]host[:port]` (IPv6 as `[addr]:port`) -> (user, host, port)."""
    if "," in spec:
        raise CollectError(f"ProxyJump {spec}: chains of jump hosts are not supported yet")
    user, _, hostport = spec.rpartition("@")
    host, port = hostport, "22"
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port = rest.lstrip(":") or "22"
    elif hostport.count(":") == 1:
        host, port = hostport.split(":")
    if not host or not port.isdigit():
        raise CollectError(f"ProxyJump {spec!r} is not of the form [user@]host[:port]")
    return user or None, host, int(port)


class JumpHosts:
    """One SSH connection per jump host, shared by every node behind it.

    Opening a `direct-tcpip` channel on an existing transport costs one round trip, where a new
    bastion login per node would cost a handshake each and trip the bastion's MaxStartups.
    """

    def __init__(self, opts: SshOptions, store: HostKeyStore, keys: KeyCache,
                 config: SshConfig | None = None) -> None:
        self.opts, self.store, self.keys = opts, store, keys
        self.config = config or SshConfig()
        self._lock = threading.Lock()
        self._clients: dict[str, paramiko.SSHClient] = {}

    def channel(self, host: Host) -> paramiko.Channel:
        spec = host.proxy_jump or ""
        user, address, port = parse_jump(spec)
        with self._lock:  # the first node behind a bastion logs in; the others wait and reuse
            client = self._clients.get(spec)
            transport = client.get_transport() if client else None
            if transport is None or not transport.is_active():
                jump = Host(
                    name=f"jump host {spec}",
                    address=address,
                    port=port,
                    user=user or host.user,
                    key_file=host.key_file,
                    known_hosts=host.known_hosts,
                    strict_host_key=host.strict_host_key,
                )
                # a bastion named by its alias in the SSH config (Host bastion / HostName ...)
                jump = replace(self.config.route(jump).host, proxy_jump=None)
                try:
                    client = _connect(jump, self.opts, self.store, keys=self.keys)
                except CollectError as exc:
                    raise CollectError(f"via jump host {spec}: {exc}") from None
                self._clients[spec] = client
                transport = client.get_transport()
        try:
            return transport.open_channel(
                "direct-tcpip",
                (host.address, host.port),
                ("127.0.0.1", 0),
                timeout=self.opts.connect_timeout,
            )
        except (paramiko.ChannelException, paramiko.SSHException, OSError) as exc:
            raise CollectError(
                f"jump host {spec} could not open a connection to {host.address}:{host.port}: {exc}"
            ) from None

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


class Connector:
    """Everything one run shares between its worker threads: options, host keys, jump hosts.

    With keep=True each node's SSH client stays open after the passive script, so the active
    phase runs its second script (and its direct-tcpip channels) over the same connection
    instead of logging in again; close() ends them all.
    """

    def __init__(self, opts: SshOptions, keep: bool = False) -> None:
        self.opts = opts
        self.keep = keep
        self.store = HostKeyStore()
        self.keys = KeyCache()
        self.config = SshConfig.load(opts.ssh_config)
        self.jumps = JumpHosts(opts, self.store, self.keys, self.config)
        self._lock = threading.Lock()
        self._clients: dict[str, paramiko.SSHClient] = {}

    def _client(self, host: Host) -> paramiko.SSHClient:
        with self._lock:
            client = self._clients.get(host.name)
        transport = client.get_transport() if client else None
        if client is not None and transport is not None and transport.is_active():
            return client
        attempt = 0
        while True:
            try:
                route = self.config.route(host)
                client = _connect(route.host, self.opts, self.store, self.jumps, self.keys,
                                  route.proxy_command)
                if route.keepalive_s and client.get_transport() is not None:
                    client.get_transport().set_keepalive(route.keepalive_s)
                break
            except _Retryable:
                attempt += 1
                if attempt > self.opts.retries:
                    raise
                time.sleep(random.uniform(0.2, 1.0) * attempt)
        if self.keep:
            with self._lock:
                self._clients[host.name] = client
        return client

    def for_host(self, host: Host) -> Transport:
        """The way into `host`: this machine for `ansible_connection: local`, else SSH."""
        if host.connection == "local":
            return LocalTransport(self.opts.command_timeout)
        return SshTransport(self, host)

    def run_script(
        self, host: Host, script: str, limit: int, timeout: float | None = None
    ) -> ScriptResult:
        """Run `script` on `host` over SSH. timeout: the node-side deadline, default the run's
        command timeout."""
        client = self._client(host)
        limit_s = self.opts.command_timeout if timeout is None else timeout
        try:
            return _exec(client, _command(host, self.opts, limit_s), script, limit_s, limit)
        finally:
            if not self.keep:
                client.close()

    def open_channel(self, host: Host, address: str, port: int, timeout: float
                     ) -> paramiko.Channel:
        """A TCP connection opened by the node itself (direct-tcpip), for checks the node has
        no tool for. Raises CollectError when sshd refuses (AllowTcpForwarding no) or the
        connect fails."""
        transport = self._client(host).get_transport()
        if transport is None:
            raise CollectError("SSH transport closed")
        try:
            return transport.open_channel("direct-tcpip", (address, port), ("127.0.0.1", 0),
                                          timeout=timeout)
        except (paramiko.ChannelException, paramiko.SSHException, OSError, EOFError) as exc:
            raise CollectError(f"node could not open {address}:{port}: {exc}") from None

    def close(self) -> list[str]:
        """Close node and jump connections; save and return the known_hosts files that gained
        keys."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
        self.jumps.close()
        return self.store.save()


class SshTransport:
    """One host over the run's SSH connections (a `Transport`)."""

    def __init__(self, connector: Connector, host: Host) -> None:
        self.connector, self.host = connector, host

    def run_script(self, script: str, *, limit: int, timeout: float | None = None
                   ) -> ScriptResult:
        return self.connector.run_script(self.host, script, limit, timeout)

    def open_stream(self, address: str, port: int, timeout: float) -> paramiko.Channel:
        return self.connector.open_channel(self.host, address, port, timeout)


def _exec(
    client: paramiko.SSHClient, command: str, script: str, timeout: float, limit: int
) -> ScriptResult:
    transport = client.get_transport()
    if transport is None:
        raise CollectError("SSH transport closed right after login")
    try:
        chan = transport.open_session(timeout=timeout)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise CollectError(
            f"the node's sshd did not open a session within {timeout:g}s ({exc}): it may be "
            "overloaded, or limit sessions per connection (MaxSessions)") from None
    try:
        chan.exec_command(command)
        chan.sendall(script.encode())
        chan.shutdown_write()
        out, err = bytearray(), bytearray()
        truncated = False
        deadline = time.monotonic() + timeout + 10  # the node-side timeout should fire first
        # Drain both streams as data arrives: a full window on either one would stall the node.
        while True:
            for ready, recv, buf in (
                (chan.recv_ready, chan.recv, out),
                (chan.recv_stderr_ready, chan.recv_stderr, err),
            ):
                while ready():
                    data = recv(65536)
                    if len(buf) < limit:
                        buf += data
                    else:
                        truncated = True  # keep draining: the node must not block on us
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            if time.monotonic() > deadline:
                raise CollectError(f"probe script did not finish within {timeout:g}s")
            if chan.eof_received:
                # Both streams are done; only the exit status is still on its way. The
                # channel's fd stays readable after EOF, so select() would spin here.
                chan.status_event.wait(0.5)
            else:
                select.select([chan], [], [], 0.5)
        status = chan.recv_exit_status()
        text_err = err.decode("utf-8", "replace")
        if status != 0 and "sudo" in command:
            if "password is required" in text_err:
                raise CollectError(
                    "sudo asked for a password: give the user NOPASSWD sudo for `sh`, "
                    "or connect as root"
                )
            if "no tty present" in text_err or "requiretty" in text_err:
                raise CollectError(
                    "sudo requires a tty (Defaults requiretty): disable it for this user"
                )
        return ScriptResult(out.decode("utf-8", "replace"), text_err, status, truncated)
    finally:
        chan.close()
