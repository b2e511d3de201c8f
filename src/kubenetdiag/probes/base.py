"""The one plugin model for what runs on a node: a shell fragment, the parser for its output,
and what cannot be checked when it gives no answer.

Two kinds of plugin share it (docs/probes.md):

* a passive `Probe` (module attribute `PROBE`): one read-only command, run once per node inside
  the node script; the parse stage calls `parse(section, node)`;
* an `ActiveCheck` (module attribute `CHECKS` in `kubenetdiag.probes.active`): traffic sent from
  the node to targets its plan names, one fragment per target; the parse stage looks the
  section's check up by name and calls `parse(section, target, context)`.

Both are found by walking their package (see `discover`), never listed by hand; where the order
matters it is the plugin's `order` field. Keeping the command and its parser in one module means
adding a fact is one file plus its fixtures, and the two can never drift apart.
"""

from __future__ import annotations

import importlib
import pkgutil
import shlex
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from kubenetdiag.facts.model import Fact, Source, excerpt
from kubenetdiag.probes.text import clip, parts

if TYPE_CHECKING:
    from kubenetdiag.probes.active.plan import NodePlan

# Plugins without an explicit order run in name order at this position; a probe that must run
# after every other one (a second sample) says so with a larger number.
DEFAULT_ORDER = 500


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
    def from_dict(cls, raw: dict) -> Section:
        rc = raw.get("exit_code")
        return cls(
            probe=str(raw["probe"]),
            command=str(raw.get("command", "")),
            exit_code=rc if isinstance(rc, int) and not isinstance(rc, bool) else None,
            duration_s=float(raw.get("duration_s") or 0.0),
            stdout=str(raw.get("stdout", "")),
            stderr=str(raw.get("stderr", "")),
            truncated=bool(raw.get("truncated", False)),
        )


Parser = Callable[[Section, str], list[Fact]]


@dataclass(frozen=True)
class Probe:
    name: str
    command: str  # POSIX sh; must never change the node
    parse: Parser  # pure: (section, node name) -> facts
    blocks: str  # what cannot be checked when this probe gives no answer
    # The fact kinds `parse` makes (probe_status aside, which any probe may give). The report
    # reads it to name the rules a failed probe leaves unevaluated; tests/test_producers.py
    # fails when the parser makes a kind that is not declared here.
    kinds: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()  # binaries it needs; a missing one is reported, not guessed at
    timeout_s: int = 15
    ok_exit_codes: frozenset[int] = field(default_factory=lambda: frozenset({0}))
    # Run by the script's own shell before any probe, to set shell variables `command` reads
    # (never printing): a first sample taken before every other probe (`TwoSample`), or one
    # tool call whose output several probes share (`IP_BATCH`). A prelude shared by several
    # probes runs once. `command` must still work where its prelude did not run (a subset of
    # probes, a script run by hand).
    preludes: tuple[Prelude, ...] = ()
    # Position in the node script: lower runs first, equal orders run in name order.
    order: int = DEFAULT_ORDER
    # Set for a probe made by `TwoSample`: its second sample can then be taken after the
    # active phase (collect.script.deferring)
    sampling: TwoSample | None = None


# What the node script writes on a probe's stderr when it cut the probe's output at its limit.
CUT_NOTE = "kubenetdiag: output cut at"
# The node script's helper that runs a command holding its output, to print it in one write
# and cut at the per-probe limit (collect.script): for outputs that grow with the cluster and
# tools that write a line at a time. Sections record the command without it, as typed by hand.
HOLD = "__knd_hold"
# What the node script's watchdog writes on a probe's stderr when it killed one of the probe's
# commands at the probe's time limit; the section's exit status is then 124.
TIMEOUT_NOTE = "kubenetdiag: timed out, killed after"


def shown(command: str) -> str:
    """A probe command as an SRE would type it: without the script's helper."""
    return command.replace(HOLD + " ", "")


def unread_lines(section: Section, node: str, lines: Sequence[str], what: str,
                 kinds: str | None = "") -> list[Fact]:
    """A `partial` probe_status naming the lines of `section` that its parser could not read:
    an output in a form nobody foresaw is shown to the SRE instead of becoming made-up facts.
    `what`: what those lines may have held. The facts from the other lines stand, so it leaves
    no rule unevaluated (kinds ""), unless `kinds` names those left unknown (None: all of the
    probe's) when the parser gives none rather than guess."""
    unread = [line.strip() for line in lines if line.strip()]
    if not unread:
        return []
    first = "; ".join(clip(line, 120) for line in unread[:3])
    return [Fact("probe_status", node, {
        "probe": section.probe,
        "status": "partial",
        "reason": clip(f"{len(unread)} line(s) not understood: {first}", 300),
        "blocks": what,
        "kinds": kinds,
    }, Source(section.probe, section.command, section.exit_code,
              excerpt("\n".join(unread[:20]), 1000)))]


@dataclass(frozen=True)
class Prelude:
    """Shell run by the script's own shell before any probe; it sets `var` and prints nothing.
    Probes that list the same prelude share one run of it."""

    var: str
    command: str


# A newline, for shell that splits or joins lines: the shell's default IFS (space, tab,
# newline) ends with one, so no quoted string has to span two lines (see collect.script).
NEWLINE = '[ -n "$__nl" ] || __nl=${IFS#??}; '


def read_into(var: str, paths: str, prefix: str = "", limit: int = 0, head: str = "") -> str:
    """Shell that sets `var` to the files' contents (each line `prefix`ed, at most `limit`
    lines a file when given, after the line `head`), read by the shell itself: no process.
    Regular files only: a FIFO planted at /etc/resolv.conf must not block the script's
    shell. A last line without a newline is kept too. Single-quote free, so it can be stored
    in a single-quoted variable and eval'd."""
    cap = f"[ $__n -lt {limit} ] && " if limit else ""
    start = f'"{head}$__nl"' if head else ""
    return (NEWLINE + f"{var}={start}; for __f in {paths}; do "
            "[ -f \"$__f\" ] && [ -r \"$__f\" ] || continue; "
            f"__n=0; while {cap}{{ IFS= read -r __l || [ -n \"$__l\" ]; }}; do "
            f"{var}=\"${var}{prefix}$__l$__nl\"; __n=$((__n+1)); __l=; done <\"$__f\"; done")


# Shell: true where the script may use netlink's admin requests (CAP_NET_ADMIN, bit 12 of its
# effective capabilities, read with the shell's own `read`: no process). A login that is not
# root lacks it: ipvsadm and conntrack -S are refused there, while the kernel's tables in
# /proc/net that they mirror can be read by anyone.
CAN_NET_ADMIN = (
    "{ __ce=0; while read -r __ck __cv; do [ \"$__ck\" = CapEff: ] && __ce=$__cv; "
    "done </proc/self/status; [ $((0x${__ce:-0} >> 12 & 1)) = 1 ]; }"
)


def read_files(paths: str, prefix: str = "", limit: int = 0, head: str = "") -> str:
    """Shell that prints files as `cat` would, as `read_into` reads them: no process on the
    node, where `cat`, `sed` or `grep` cost one each. For small files (/proc, /etc): the shell
    reads a byte at a time. All of it goes out in one write (each write to the SSH session can
    become a packet of its own for the collector).

    Not for /proc/sys: an integer sysctl answers a read at an offset other than 0 with EOF,
    so a byte-at-a-time reader gets its first digit only (grep or cat read it whole)."""
    return read_into("__b", paths, prefix, limit, head) + "; printf %s \"$__b\""


# One `ip` for the listings the links, routes, ip_rule and overlay probes print (iproute2's
# batch mode; one JSON array per line): the last is every neighbour entry, which tells the
# links probe whose address is behind a pod's veth and gives the overlay probe the VXLAN
# devices' entries and those set by hand or by a tool (`nud permanent`), which the kernel
# never re-resolves. Without JSON (iproute2 before
# 4.13) or with a listing it cannot make, it fails and each probe asks on its own, in the form
# it falls back to.
IP_BATCH = Prelude("KND_IP", "KND_IP=$(ip -4 -d -j -batch - 2>/dev/null <<'EOF'\n"
                             "link show\naddr show\nroute show table all\nrule show\n"
                             "neigh show\nEOF\n)")
IP_BATCH_LINES = ("link", "addr", "route", "rule", "neighbours")


def sysctl_read(paths: Sequence[str]) -> Prelude:
    """One `grep` for the /proc/sys files several probes read (sysctl, conntrack, sockets):
    `path:value` lines, grep's errors among them, and its exit status."""
    return Prelude("KND_SYSCTL", "command -v grep >/dev/null 2>&1 && { KND_SYSCTL=$(cd /proc/sys "
                   f"&& grep -H '' {' '.join(paths)} 2>&1); KND_SYSCTL_RC=$?; }}")


def from_sysctl_read(pattern: str, strip: str = "", skip: str = "",
                     errors: bool = False, head: str = "") -> str:
    """Shell that prints the lines of the sysctl_read prelude whose path matches the case
    `pattern` (and not `skip`, which may name grep's error lines too), `strip` cut off the
    front, after the line `head` when given, in one write (grep's errors on stderr, with
    `errors`), and succeeds; fails, printing nothing, where it did not run."""
    start = f'"{head}$__nl"' if head else ""
    return (NEWLINE + f"[ -n \"${{KND_SYSCTL:-}}\" ] && {{ __b={start}; __e=; set -f; __i=$IFS; "
            "IFS=$__nl; for __l in $KND_SYSCTL; do case $__l in "
            + (f"{skip}) ;; " if skip else "") + "grep:*) __e=\"$__e$__l$__nl\";; "
            + f"{pattern}) __b=\"$__b${{__l#{strip}}}$__nl\";; esac; done; "
            "IFS=$__i; set +f; printf %s \"$__b\"; "
            + ("printf %s \"$__e\" >&2; " if errors else "") + "}")


def from_ip_batch(*listings: str) -> str:
    """Shell that prints the named listings of IP_BATCH, each under `##knd:<name> json`, in one
    write, and succeeds; or fails, printing nothing, where the batch did not run or came out
    short."""
    heads = "".join(f"##knd:{name} json\\n%s\\n" for name in listings)
    args = " ".join(f'"${IP_BATCH_LINES.index(name) + 1}"' for name in listings)
    return (f"__knd_ipb() {{ [ $# -eq {len(IP_BATCH_LINES)} ] || return 1; "
            f"printf '{heads}' {args}; }}; "
            "set -f; __i=$IFS; IFS=$__nl; __knd_ipb ${KND_IP:-}; __r=$?; IFS=$__i; set +f; "
            "[ $__r -eq 0 ]")


def quoted(value: Any) -> str:
    """A value made one shell word: every target that reaches a command line goes through it,
    since plans are built from facts a hostile node could shape."""
    return shlex.quote(str(value))


# ---------------------------------------------------------------- two samples


def sleep_until(start_cs: str, interval_s: int) -> str:
    """Shell that sleeps until `interval_s` seconds have passed since `start_cs`, a shell
    expression holding /proc/uptime in centiseconds; at once when they have. The uptime is read
    by the shell itself (no clock forked for); `sleep` takes fractions where it can.

    >>> "$((200-c1+$c0))" in sleep_until("$c0", 2)
    True
    """
    return (
        "read u1 _ </proc/uptime; c1=$((${u1%.*}*100+1${u1#*.}-100)); "
        f"r=$(({interval_s * 100}-c1+{start_cs})); "
        "if [ $r -gt 0 ]; then f=$((r%100)); [ $f -lt 10 ] && f=0$f; "
        "sleep $((r/100)).$f 2>/dev/null || sleep $(((r+99)/100)); fi"
    )


@dataclass(frozen=True)
class Samples:
    """The two samples of a `TwoSample` probe, each without its /proc/uptime line."""

    first: list[str]
    second: list[str]
    interval_s: float | None  # None when either uptime is missing or time did not advance


@dataclass(frozen=True)
class TwoSample:
    """A probe that reads the same files twice, to tell "rising now" from "non-zero since boot".

    The first sample is the script's prelude, taken before any other probe runs; the second is
    taken at the probe's own turn, after a sleep that tops the interval up to `min_interval_s`.
    Give the probe `order` above the default so the other probes' run time is the interval.
    /proc/uptime is read first in each sample: the interval is measured from it with the
    shell's own arithmetic, so no clock is forked for.

    When the active phase follows, the interval overlaps it instead: the node script prints the
    first sample only (`first_only`), and the collector takes the second once the node's checks
    are done (`second_after`, topped up the same way from the first sample's uptime).

    >>> ts = TwoSample("demo", "/proc/net/snmp", min_interval_s=2)
    >>> ts.prelude.var
    'KND_PRE_demo'
    >>> out = "##knd:sample 1\\n100.50 7.0\\nA: 1\\n##knd:sample 2\\n103.00 9.0\\nA: 4\\n"
    >>> s = TwoSample.split(out)
    >>> (s.first, s.second, s.interval_s)
    (['A: 1'], ['A: 4'], 2.5)
    >>> TwoSample.first_uptime("##knd:sample 1\\n100.50 7.0\\nA: 1")
    100.5
    """

    name: str
    paths: str  # the files each sample reads, after /proc/uptime
    min_interval_s: int = 2
    # Shell whose output each sample adds after the files': for what a read of fixed paths
    # cannot reach (the files of processes found at the time). Single-quote free, as the
    # sample is kept in a single-quoted variable.
    then: str = ""

    @property
    def _files(self) -> str:
        return f"/proc/uptime {self.paths}"

    @property
    def sample(self) -> str:
        return read_files(self._files) + (f"; {self.then}" if self.then else "")

    @property
    def prelude(self) -> Prelude:
        var = "KND_PRE_" + "".join(c if c.isalnum() else "_" for c in self.name)
        then = f"; {var}=\"${var}$({self.then})$__nl\"" if self.then else ""
        return Prelude(var, read_into(var, self._files) + then)

    def _first(self) -> str:
        # Without the prelude's value (a script run by hand) the first sample is taken here.
        return (f"S='{self.sample}'; first=${self.prelude.var}; "
                "[ -n \"$first\" ] || first=$(eval \"$S\"); "
                # the prelude's value ends with a newline, a $(...) drops it
                "printf '##knd:sample 1\\n%s\\n' \"${first%[![:print:]]}\"")

    def _second(self) -> str:
        # Arithmetic on /proc/uptime's "seconds.hundredths" ($first's first word) in the shell
        # itself: no fork per sample.
        return (
            "u0=${first%%[!0-9.]*}; "
            "if [ -n \"$u0\" ]; then c0=$((${u0%.*}*100+1${u0#*.}-100)); "
            + sleep_until("$c0", self.min_interval_s) + "; fi; "
            "echo '##knd:sample 2'; eval \"$S\""
        )

    @property
    def command(self) -> str:
        return f"{self._first()}; {self._second()}"

    @property
    def first_only(self) -> str:
        return self._first()

    def second_after(self, first_uptime: float) -> str:
        """The second sample, taken later in a session of its own: no sooner than
        `min_interval_s` after the first, whose /proc/uptime value is given."""
        return f"S='{self.sample}'; first={first_uptime:.2f}; {self._second()}"

    @staticmethod
    def has_second(stdout: str) -> bool:
        """Whether a section's output holds the second sample already."""
        return "2" in _samples(stdout)

    @staticmethod
    def first_uptime(stdout: str) -> float | None:
        """The first sample's /proc/uptime value in a section's output, if it has one."""
        return _uptime_and_rest(_samples(stdout).get("1", []))[0]

    @staticmethod
    def split(stdout: str) -> Samples:
        """The two samples and the seconds between them, from the command's output."""
        samples = _samples(stdout)
        t0, first = _uptime_and_rest(samples.get("1", []))
        t1, second = _uptime_and_rest(samples.get("2", []))
        interval = round(t1 - t0, 2) if t0 is not None and t1 is not None and t1 > t0 else None
        return Samples(first, second, interval)


def _samples(stdout: str) -> dict[str, list[str]]:
    return {arg: lines for name, arg, lines in parts(stdout) if name == "sample"}


def _uptime_and_rest(lines: list[str]) -> tuple[float | None, list[str]]:
    if not lines:
        return None, []
    words = lines[0].split()
    try:
        uptime = float(words[0]) if words else None
    except ValueError:
        uptime = None
    return uptime, lines[1:]


# ---------------------------------------------------------------- active checks


@dataclass(frozen=True)
class CheckContext:
    """What an active check's parser may know beside its section and target."""

    node: str
    plan: NodePlan
    podns: str | None  # the pod network namespace the script entered, if any


@dataclass(frozen=True)
class ChannelRequest:
    """How to ask a check's question through an SSH direct-tcpip channel from the node, when
    the node has no tool for it. `protocol` names a speaker of kubenetdiag.collect.channel."""

    address: str
    port: int
    protocol: str  # "dns" or "http"
    query: str  # the DNS name, or the HTTP path
    what: str  # said in the section's command: what was asked


ActiveParser = Callable[[Section, Any, CheckContext], list[Fact]]


@dataclass(frozen=True)
class ActiveCheck:
    """One kind of active check. Its sections are named `active.<name>.<suffix>` (or
    `active.<name>` for an empty suffix), the suffix being what `targets` gave for the target.

    A check with `command` alone is a job (one line of output, many jobs run at once); with
    `window_command` too it runs around all the jobs, as the VXLAN capture does, and `command`
    is only what its section records; with `after_command` the collector runs it on its own
    once every node's script has finished, as the counter re-read does; with none of them it
    only parses sections that older versions wrote.
    """

    name: str
    # (id suffix, target) in run order; suffixes index into the plan, so the parser maps each
    # section back to its peer, server or endpoint without trusting what the node printed.
    targets: Callable[[NodePlan], list[tuple[str, Any]]]
    parse: ActiveParser  # pure: (section, target, context) -> facts
    blocks: Callable[[Any], str]  # what cannot be checked when a target gives no answer
    # The fact kinds `parse` makes (probe_status aside), as for a Probe.
    kinds: tuple[str, ...] = ()
    # POSIX sh run in `sh -c`, which may use the script's helpers ($__pi, __has, $__TCP...;
    # see probes/active/script.py); it is also what the section records as its command.
    command: Callable[[NodePlan, Any], str] | None = None
    # For a check that runs around the jobs: (target, seconds it may run) -> the command line.
    window_command: Callable[[Any, int], str] | None = None
    # For a check run after every node's checks are done (so no peer is still sending): the
    # plan -> the script, run once per node with the check's only target.
    after_command: Callable[[NodePlan], str] | None = None
    tools: tuple[str, ...] = ()  # a window check runs only when the node has all of them
    # Where the node has no tool: ask through an SSH channel instead (collect.active does).
    channel: Callable[[NodePlan, Any], ChannelRequest] | None = None
    # suffix -> target, for sections whose target is not in the plan (default: from targets)
    resolve: Callable[[NodePlan, str], Any] | None = None
    order: int = DEFAULT_ORDER

    def section_id(self, suffix: str) -> str:
        return f"{self.name}.{suffix}" if suffix else self.name

    def target(self, plan: NodePlan, suffix: str) -> Any:
        """The target a section suffix stands for; KeyError when the plan has none."""
        if self.resolve is not None:
            return self.resolve(plan, suffix)
        return dict(self.targets(plan))[suffix]


# ---------------------------------------------------------------- discovery


def discover(package: ModuleType, attribute: str) -> list[tuple[ModuleType, Any]]:
    """(module, its `attribute`) for every module directly in `package` that defines it, in
    module name order. A module without it is a helper (text.py, base.py)."""
    found = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda info: info.name):
        if info.ispkg:
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        if hasattr(module, attribute):
            found.append((module, getattr(module, attribute)))
    return found


def in_order(plugins: Sequence[Any]) -> list[Any]:
    """Plugins sorted by (order, name): the order they run in."""
    return sorted(plugins, key=lambda plugin: (plugin.order, plugin.name))


def unique(plugins: Sequence[Any], what: str) -> Iterator[Any]:
    seen: set[str] = set()
    for p in plugins:
        if p.name in seen:
            raise ValueError(f"two {what} are named {p.name!r}")
        seen.add(p.name)
        yield p
