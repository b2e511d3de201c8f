"""A node's own mount and PID namespace, so probes over SSH see a believable node.

Each node gets a small init (bash as PID 1 of a new PID namespace, inside the node's network
namespace and a private mount namespace). The init overlays /etc and /var/lib with the node's
own changes (OWN_DIRS: its CNI config and state), bind-mounts the node's own /etc/sysctl.conf,
/etc/sysctl.d/, /etc/resolv.conf and /run (from the lab work dir) and starts fake agents named
like the real ones (kubelet, containerd, calico-node). sshd, bird, the real kube-proxy and
flanneld and fault processes are started inside it with nsenter, so `ps` and
`cat /etc/sysctl.d/*` over SSH show that node's processes and files only.

Killing the init ends the whole PID namespace (the kernel kills every process in it), and the
mount namespace disappears with its last process, so `down` has nothing extra to undo. Mounts are
private: nothing propagates to the machine's own mount table.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubenetdiag_lab.errors import log_tail
from kubenetdiag_lab.netns import LabError, cmdline, exec_argv, pids_in_netns, run, terminate
from kubenetdiag_lab.topology import LabNode

# The real binaries' names; the processes are `sleep infinity` run under these names (a symlink
# gives the kernel's comm, argv[0] gives ps's args), so they cost ~1 MiB each and do nothing.
AGENTS = {
    "flannel-vxlan": ("kubelet", "containerd"),  # flanneld is the real one (flannel.py)
    "flannel-host-gw": ("kubelet", "containerd"),
    "calico-bgp": ("calico-node", "kubelet", "containerd"),
}
AGENT_PATHS = {
    "calico-node": "/usr/bin/calico-node",
    "kubelet": "/usr/bin/kubelet",
    "containerd": "/usr/bin/containerd",
}
INIT_NAME = "node-init.sh"  # also how the init is told apart from a reused pid
# Directories a node writes into as its own: an overlay on the machine's, whose changes land in
# the node's files (NodeFiles.own). A node's CNI config (/etc/cni/net.d) and CNI state
# (/var/lib/cni: IPAM leases, libcni's cached results) are there, and the machine gets none.
OWN_DIRS = ("/etc", "/var/lib")


@dataclass(frozen=True)
class NodeFiles:
    """A node's own files under the lab work dir; the init mounts them over the real paths."""

    dir: Path

    @property
    def etc(self) -> Path:
        return self.dir / "etc"

    @property
    def sysctl_conf(self) -> Path:
        return self.etc / "sysctl.conf"

    @property
    def resolv_conf(self) -> Path:
        return self.etc / "resolv.conf"

    @property
    def sysctl_d(self) -> Path:
        return self.etc / "sysctl.d"

    @property
    def run_dir(self) -> Path:
        return self.dir / "run"

    @property
    def subnet_env(self) -> Path:
        return self.run_dir / "flannel" / "subnet.env"

    @property
    def ready(self) -> Path:
        return self.dir / "init.ready"

    @property
    def bin(self) -> Path:
        return self.dir / "bin"

    @property
    def init(self) -> Path:
        return self.dir / INIT_NAME

    @property
    def home(self) -> Path:
        """The node's root home: its shell start-up files (login_mounts)."""
        return self.dir / "home"

    def own(self, path: str) -> Path:
        """What the node wrote under one of OWN_DIRS (its overlay's upper directory): the
        node's own /etc/cni/net.d is own("/etc") / "cni/net.d"."""
        return self.dir / "own" / path.strip("/").replace("/", "-") / "upper"

    def own_work(self, path: str) -> Path:
        return self.own(path).with_name("work")

    @property
    def cni_net_d(self) -> Path:
        return self.own("/etc") / "cni" / "net.d"


def prepare(files: NodeFiles, sysctl_conf: str, resolv_conf: str) -> None:
    if any(c in str(files.dir) for c in ",:"):  # overlayfs's option separators
        raise LabError(f"{files.dir}: a lab work dir with ',' or ':' in its path cannot hold "
                       f"a node's own /etc (an overlay); choose another --workdir")
    # A node starts with nothing of its own under OWN_DIRS: a previous run's CNI state (IPAM
    # leases, cached results) would be a different node's.
    shutil.rmtree(files.dir / "own", ignore_errors=True)
    # /run is a tmpfs on a real node, empty at boot: a socket bird left there in an earlier
    # run of this work dir would be read as a BIRD that stopped answering
    shutil.rmtree(files.run_dir, ignore_errors=True)
    for path in OWN_DIRS:
        files.own(path).mkdir(parents=True)
        files.own_work(path).mkdir()
    for directory in (files.sysctl_d, files.run_dir / "flannel", files.run_dir / "sshd",
                      files.run_dir / "calico", files.bin, files.home):
        directory.mkdir(parents=True, exist_ok=True)
    files.sysctl_conf.write_text(sysctl_conf)
    files.resolv_conf.write_text(resolv_conf)
    # A fresh node's root home holds the distribution's defaults, nothing of this machine's.
    for name in STARTUP_FILES:
        skel = SKEL / name
        if skel.is_file():
            (files.home / name).write_bytes(skel.read_bytes())
    sleep = which("sleep")
    for name in AGENT_PATHS:
        link = files.bin / name
        if not link.is_symlink():
            link.symlink_to(sleep)
    files.ready.unlink(missing_ok=True)


def which(tool: str) -> str:
    """The tool's path in the system directories (not PATH: a venv must not shadow it)."""
    for directory in ("/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        if os.access(f"{directory}/{tool}", os.X_OK):
            return f"{directory}/{tool}"
    raise LabError(f"{tool}: not installed")


def agent_command(files: NodeFiles, name: str) -> str:
    """Shell (bash) to start one fake agent in the background, detached from any caller pipe."""
    return (f"(exec -a {shlex.quote(AGENT_PATHS[name])} {shlex.quote(str(files.bin / name))} "
            f"infinity) </dev/null >/dev/null 2>&1 &")


# What a shell or sshd runs on every login, relative to the user's home: bash's start-up and
# logout files, sh's, and sshd's own per-user hook and environment.
STARTUP_FILES = (".bashrc", ".bash_profile", ".bash_login", ".profile", ".bash_logout",
                 ".ssh/rc", ".ssh/environment")
SKEL = Path("/etc/skel")
LOGIN_HOME = Path("/root")  # the lab's nodes are logged in to as root (its inventory)


def login_mounts(files: NodeFiles, home: Path = LOGIN_HOME) -> list[str]:
    """Shell lines that give the node's logins its own start-up files: each one the machine's
    home has is covered by the node's copy, or by /dev/null where the node has none. Files,
    not the home itself: the lab's work dir may sit under the machine's home. A file the
    machine lacks needs nothing: the node cannot see one either."""
    lines = []
    for name in STARTUP_FILES:
        if (home / name).is_file():
            own = files.home / name
            source = own if own.is_file() else Path("/dev/null")
            lines.append(f"mount --bind {_quoted(source)} {_quoted(home / name)}")
    return lines


def _quoted(path: Path) -> str:
    return shlex.quote(str(path))


def init_script(files: NodeFiles, agents: Sequence[str], hidden: Sequence[str] = (),
                own_login: bool = True) -> str:
    """hidden: programs the node's host must not have (they live in a container's filesystem
    on a real node); /dev/null is mounted over each, so they are not executable there.
    own_login: logins run the node's own start-up files (login_mounts), not this machine's."""
    # /run becomes the node's own (sshd's privsep dir, flannel's subnet.env, bird's socket
    # link), which also hides the machine's /run/netns from the node, as on a real node.
    lines = [
        "set -e",
        *(f"mount -t overlay knd-node-own -o lowerdir={path},upperdir="
          f"{_quoted(files.own(path))},workdir={_quoted(files.own_work(path))} {path}"
          for path in OWN_DIRS),
        f"mount --bind {_quoted(files.sysctl_conf)} /etc/sysctl.conf",
        f"mount --bind {_quoted(files.sysctl_d)} /etc/sysctl.d",
        f"mount --rbind {_quoted(files.run_dir)} /run",
        # The node's own resolver. Where this machine's /etc/resolv.conf is a link (into
        # systemd-resolved's /run), the mount lands on its target: made first under the
        # node's own /run, where it is missing; nothing is made outside the lab's files.
        "__rc=$(readlink -m /etc/resolv.conf)",
        'case $__rc in /run/*) [ -e "$__rc" ] || '
        '{ mkdir -p "$(dirname "$__rc")" && : > "$__rc"; };; esac',
        f'if [ -e "$__rc" ]; then mount --bind {_quoted(files.resolv_conf)} /etc/resolv.conf; fi',
        *(f"mount --bind /dev/null {shlex.quote(path)}" for path in hidden),
        *(login_mounts(files) if own_login else []),
        *(agent_command(files, a) for a in agents),
        "set +e",
        f": > {_quoted(files.ready)}",
        # PID 1 ignores signals it has no handler for; TERM must end the namespace.
        "trap 'exit 0' TERM INT",
        # `wait` also reaps orphans re-parented to PID 1, so a killed agent does not linger
        # as a zombie that a process probe would still count.
        "while :; do sleep 3600 & wait $!; done",
    ]
    return "\n".join(lines)


def start_init(netns: str, files: NodeFiles, agents: Sequence[str], log: Path,
               hidden: Sequence[str] = (), own_login: bool = True) -> int:
    """Start a node's init; return the unshare process's pid (the init is its only child)."""
    files.init.write_text(init_script(files, agents, hidden, own_login) + "\n")
    argv = exec_argv(netns, ["unshare", "--mount", "--pid", "--fork", "--mount-proc",
                             "--propagation", "private", "bash", str(files.init)])
    with open(log, "ab") as fh:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return proc.pid


def wait_ready(items: dict[str, tuple[int, NodeFiles]], timeout: float = 20.0) -> dict[str, int]:
    """Wait for every init to finish its mounts; return node name -> init pid (PID 1 inside)."""
    pending = dict(items)
    found: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while pending:
        for name, (pid, files) in list(pending.items()):
            init = init_pid(pid)
            if init and files.ready.exists():
                found[name] = init
                del pending[name]
            elif not os.path.exists(f"/proc/{pid}"):
                raise LabError(f"node init of {name} exited; see {files.dir / 'init.log'}")
        if pending and time.monotonic() > deadline:
            raise LabError(f"node init did not come up within {timeout:.0f}s on "
                           f"{', '.join(sorted(pending))}")
        if pending:
            time.sleep(0.02)
    return found


def init_pid(unshare_pid: int) -> int | None:
    try:
        children = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children").read_text().split()
    except OSError:
        return None
    for child in children:
        if INIT_NAME in cmdline(int(child)):
            return int(child)
    return None


def is_init(pid: int | None) -> bool:
    return bool(pid) and INIT_NAME in cmdline(int(pid or 0))


def enter_argv(init: int, argv: Sequence[str]) -> list[str]:
    """argv run inside the node: its network, mount and PID namespaces."""
    return ["nsenter", "-t", str(init), "-n", "-m", "-p", "--", *argv]


def node_sh(init: int, script: str, check: bool = True, timeout: float = 30.0
            ) -> subprocess.CompletedProcess[str]:
    return run(enter_argv(init, ["bash", "-c", script]), check=check, timeout=timeout)


def procs_named(netns_pids: Sequence[int], comm: str) -> list[int]:
    """Pids among netns_pids whose kernel name (comm) is `comm` (15 chars, as the kernel keeps)."""
    out = []
    for pid in netns_pids:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if name == comm[:15]:
            out.append(pid)
    return out


def procs_in(netns: str, comm: str) -> list[int]:
    """Pids of processes named `comm` in a node (its network namespace)."""
    return procs_named(pids_in_netns([netns]).get(netns, []), comm)


def wait_started(netns: str, comm: str, timeout: float = 5.0) -> bool:
    """Wait until a process named `comm` runs in the node: a daemon started in the background
    (`( exec ... ) &`) is still the shell for a moment after the start returns, and a wait
    that checks it is alive would find it missing. False after `timeout`: the caller's own
    wait then reports it, with its log."""
    deadline = time.monotonic() + timeout
    while not procs_in(netns, comm):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def kill(pids: Sequence[int]) -> None:
    if pids:
        terminate(pids)


def expose_netns(init: int, files: NodeFiles, netns: dict[str, str]) -> None:
    """Show pod network namespaces inside the node as containerd does: /run/netns/<name>.

    The node's /run is its own, so the machine's /run/netns is hidden there. Each pod netns
    file is opened here (fd 3) and bind-mounted from /proc/self/fd/3 by a process inside the
    node's mount and PID namespaces; the mount is private to the node and goes away with it.
    """
    (files.run_dir / "netns").mkdir(exist_ok=True)
    for name, source in netns.items():
        target = files.run_dir / "netns" / name
        target.touch()
        script = (f"exec 3<{shlex.quote('/run/netns/' + source)} && exec nsenter -t {init} "
                  f"-m -p -- mount --bind /proc/self/fd/3 {shlex.quote('/run/netns/' + name)}")
        run(["sh", "-c", script])


def wait_nodes(daemon: str, work: str, nodes: Sequence[LabNode], done: Callable[[LabNode], bool],
               log_of: Callable[[str], Path], timeout: float) -> None:
    """Wait until done(node) holds on every node for the node daemon `daemon` (its process
    name). Raise with the daemon's log tail (log_of(node name)) as soon as it is not running
    on a node still pending, or when `timeout` runs out; `work` says what it was doing."""
    pending = {node.name: node for node in nodes}
    deadline = time.monotonic() + timeout
    while pending:
        for name, node in list(pending.items()):
            if done(node):
                del pending[name]
            elif not procs_in(node.netns, daemon):
                raise LabError(f"{daemon} on {name} is not running; last lines of "
                               f"{log_of(name)}:\n{log_tail(log_of(name))}")
        if pending and time.monotonic() > deadline:
            name = sorted(pending)[0]
            raise LabError(f"{daemon} did not {work} within {timeout:.0f}s on "
                           f"{', '.join(sorted(pending))}; last lines of "
                           f"{log_of(name)}:\n{log_tail(log_of(name))}")
        if pending:
            time.sleep(0.1)
