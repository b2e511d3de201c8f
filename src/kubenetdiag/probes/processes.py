"""Processes and services: CNI agents, kube-proxy, kubelet, the container runtime, host
firewalls (firewalld running; ufw enabled in /etc/ufw/ufw.conf), and security software known
to break pod networking. The names are data (processes.yaml), not code, so a site adds its own.

One `ps` (or, without ps, the shell reading /proc/*/stat: no fork per process), with each
process's state, so a stopped (T) or zombie (Z) agent is told from a running one. Command lines
can carry passwords and tokens; those options are cut out on the node, before the bundle.
Where /proc hides other users' processes from the login (hidepid, not root), an agent not
seen is unknown, not stopped: only the ones seen become facts.

Sample output and the facts it gives:

>>> out = (
...     '##knd:ps eos\\n'
...     '    1 Ss   systemd         /usr/lib/systemd/systemd --switched-root\\n'
...     '  812 Tl   flanneld        /opt/bin/flanneld --ip-masq --kube-subnet-'
...     'mgr\\n'
... )
>>> facts = parse(Section("processes", "", 0, 0.0, out, ""), "node1")
>>> [(f.attrs["name"], f.attrs["role"], f.attrs["pids"], f.attrs["state"])
...  for f in facts if f.attrs.get("running")]
[('flanneld', 'cni_agent', '812', 'T')]
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.probes.base import Probe, Section, read_files
from kubenetdiag.probes.text import clip, parts, unprefix
from kubenetdiag.yamlsrc import load_plain

ENV_VAR = "KUBENETDIAG_PROCESSES"
MAX_ARGS = 300

_REDACT = (
    "gsub(/--?[A-Za-z0-9_.-]*([Pp][Aa][Ss][Ss][Ww]|[Tt][Oo][Kk][Ee][Nn]|[Ss][Ee][Cc][Rr][Ee][Tt])"
    "[A-Za-z0-9_.-]*(=|[ ]+)[^ ]*/, \"<redacted>\"); "
    "gsub(/[A-Za-z_]*(PASSW|TOKEN|SECRET)[A-Za-z_]*=[^ ]*/, \"<redacted>\")"
)
# One -o per column with an empty header: procps and busybox's ps read it alike, so one ps
# serves both; awk says the listing came from ps and fails on an empty one. Without ps, the
# shell reads /proc/PID/stat itself (no fork per process): comm is between the first "(" and
# the last ")", the state the letter after it.
_AWK = f"{_REDACT}; print substr($0, 1, {MAX_ARGS})"
# A login that is not root on a node whose /proc is mounted with hidepid sees its own processes
# only: every agent would look stopped. PID 1's stat tells (the shell's read, no process): it
# is readable to everyone unless hidepid hides other users' processes from this login.
HIDDEN = "hidden"
COMMAND = (
    f"{{ read -r __p1 </proc/1/stat; }} 2>/dev/null || echo '##knd:{HIDDEN} pid1'; "
    "ps -e -o pid= -o stat= -o comm= -o args= 2>/dev/null | "
    f"awk 'NR==1{{print \"##knd:ps eos\"}} {{{_AWK}}} END{{exit NR==0}}' || "
    "{ echo '##knd:ps procs'; out=$(for d in /proc/[0-9]*; do "
    "read -r s <\"$d/stat\" 2>/dev/null || continue; c=${s#*(}; c=${c%)*}; t=${s##*) }; "
    "printf '%s %s %s -\\n' \"${d#/proc/}\" \"${t%% *}\" \"$c\"; done); "
    f"printf '%s\\n' \"$out\" | awk '{{{_AWK}}}'; }}; "
    "if [ -r /etc/ufw/ufw.conf ]; then "
    + read_files("/etc/ufw/ufw.conf", "|", head="##knd:ufw") + "; fi"
)

_LINE = re.compile(r"^\s*(\d+)\s+(\S+)\s*(.*)$")
# pid, stat (procps: "Ssl", busybox: "SW<"; the state is its first letter), comm, args
_LINE_STAT = re.compile(r"^\s*(\d+)\s+([A-Za-z])\S*\s+(\S+)\s*(.*)$")
# /proc/PID/stat read by the shell: comm may hold spaces, and the line ends with " -"
_LINE_PROC = re.compile(r"^(\d+) ([A-Za-z]) (.*) -$")
# Stopped, traced, zombie, dead: such a process is listed but does nothing.
NOT_ALIVE = frozenset("TtZXx")


@dataclass(frozen=True)
class Known:
    """One process the list knows: the name its facts carry, and every way it shows up.

    `matchers` are (how, text): `name` (comm or argv[0]'s file name), `contains` (anywhere in
    the command line, any case) or `command` (argv[0]'s file name and the words after it, such
    as `openshift start node`, which runs kubelet and kube-proxy in one process)."""

    label: str
    matchers: tuple[tuple[str, str], ...]


def _matcher(entry: object) -> tuple[str, str] | None:
    if isinstance(entry, str) and entry:
        return ("name", entry)
    if isinstance(entry, dict) and len(entry) == 1:
        (how, text), = entry.items()
        if how in ("contains", "command") and isinstance(text, str) and text.split():
            return (how, text)
    return None


def _known(entry: object) -> Known | None:
    if isinstance(entry, dict) and "name" in entry:
        first = _matcher(entry["name"])
        aliases = entry.get("aliases") or []
        if first is None or not isinstance(aliases, list):
            return None
        rest = [m for m in map(_matcher, aliases) if m is not None]
        return Known(first[1], (first, *rest))
    m = _matcher(entry)
    return Known(m[1], (m,)) if m else None


def _load(text: str, into: dict[str, list[Known]]) -> None:
    data = load_plain(text) or {}
    if not isinstance(data, dict):
        raise ValueError("a process list maps roles to lists of names")
    for role, entries in data.items():
        for entry in entries or []:
            known = _known(entry)
            if known is not None:
                into.setdefault(str(role), []).append(known)


@cache
def _catalog(extra: str) -> dict[str, list[Known]]:
    roles: dict[str, list[Known]] = {}
    _load(resources.files("kubenetdiag.probes").joinpath("processes.yaml").read_text(), roles)
    for path in filter(None, extra.split(":")):
        _load(Path(path).read_text(encoding="utf-8"), roles)
    return roles


def shipped() -> dict[str, list[Known]]:
    """The list that comes with kubenetdiag, without a site's additions."""
    return _catalog("")


def catalog() -> dict[str, list[Known]]:
    """Role -> known processes: the shipped list plus the files named in
    $KUBENETDIAG_PROCESSES."""
    return _catalog(os.environ.get(ENV_VAR, ""))


def _match(known: Known, comm: str, args: str) -> str | None:
    """The alias by which this process is `known`, or None. A whole name wins over one that
    only matches the 15 characters the kernel keeps of comm: `docker-containe` is both
    docker-containerd and docker-containerd-current, and argv[0] tells which."""
    words = args.split()
    prog = words[0].rsplit("/", 1)[-1] if words else ""
    cut = None
    for how, text in known.matchers:
        if how == "name":
            if prog == text or comm == text:
                return text
            if cut is None and comm == text[:15] and prog in ("", comm):
                cut = text
        elif how == "contains":
            if text.lower() in args.lower() or text.lower() in comm.lower():
                return text
        else:
            want = text.split()
            if (prog or comm) == want[0] and words[1:len(want)] == want[1:]:
                return text
    return cut


def _process(fmt: str, line: str) -> tuple[int, str, str, str | None] | None:
    """(pid, comm, args, state) of one listed process; state None where the list has none
    (bundles from before the state was collected)."""
    if fmt == "procs":
        m = _LINE_PROC.match(line)
        return (int(m.group(1)), m.group(3), "", m.group(2)) if m else None
    if fmt == "eos":
        m = _LINE_STAT.match(line)
        if not m:
            return None
        args = "" if m.group(4) == "-" else m.group(4)
        return int(m.group(1)), m.group(3), args, m.group(2)
    m = _LINE.match(line)
    if not m:
        return None
    return int(m.group(1)), m.group(2), "" if m.group(3) == "-" else m.group(3), None


def parse(section: Section, node: str) -> list[Fact]:
    procs: list[tuple[int, str, str, str | None]] = []
    fmt = None
    hidden = False
    ufw: list[str] | None = None
    for name, arg, lines in parts(section.stdout):
        if name == HIDDEN:
            hidden = True
        elif name == "ps":
            fmt = arg
            for line in lines:
                proc = _process(arg, line)
                if proc:
                    procs.append(proc)
        elif name == "ufw":
            ufw = unprefix(lines)
    facts: list[Fact] = []
    if fmt is None:
        return facts  # the list never came: unknown, and parse.py reports why
    for role, entries in catalog().items():
        for known in entries:
            label = known.label
            hits = []
            for pid, comm, args, state in procs:
                alias = _match(known, comm, args)
                if alias is not None:
                    hits.append((pid, comm, args, state, alias))
            # The fact describes one process: the first one alive, so an old zombie beside a
            # restarted agent does not make it look dead; a stopped or zombie one only when
            # every match is.
            shown = next((h for h in hits if h[3] not in NOT_ALIVE), hits[0] if hits else None)
            if hidden and not hits:
                continue  # hidden from this login, not known to be absent
            facts.append(Fact("process", node, {
                "name": clip(label, 64),
                "role": clip(role, 64),
                "running": bool(hits),
                "count": len(hits),
                "pids": ",".join(str(h[0]) for h in hits[:10]) or None,
                "args": clip(shown[2], MAX_ARGS) if shown and shown[2] else None,
                "state": shown[3] if shown else None,
                "matched": clip(shown[4], 64) if shown else None,
            }, Source("processes", "ps -e -o pid= -o stat= -o comm= -o args=", section.exit_code,
                      clip("\n".join(f"{p} {s or '-'} {c} {a}" for p, c, a, s, _ in hits[:5])
                           or f"no process named {label} among {len(procs)}", 800))))
    # firewalld is a Python script: comm is its file name, or python when started by hand
    firewalld = any(c == "firewalld" or "/firewalld" in a.split(" --", 1)[0]
                    for _, c, a, _ in procs)
    if firewalld or not hidden:
        facts.append(Fact("host_firewall", node, {
            "name": "firewalld", "active": firewalld,
            "evidence": "firewalld process running" if firewalld else "no firewalld process",
        }, Source("processes", "ps -e -o pid= -o stat= -o comm= -o args=", section.exit_code,
                  "firewalld")))
    enabled = None
    if ufw is not None:
        for line in ufw:
            k, _, v = line.partition("=")
            if k.strip() == "ENABLED":
                enabled = v.strip().strip("\"'").lower() == "yes"
    facts.append(Fact("host_firewall", node, {
        "name": "ufw",
        "active": bool(enabled),
        "evidence": "no /etc/ufw/ufw.conf" if ufw is None else f"ufw.conf ENABLED={enabled}",
    }, Source("processes", "cat /etc/ufw/ufw.conf", section.exit_code,
              clip("\n".join(ufw or []), 500))))
    if hidden:
        facts.append(Fact("probe_status", node, {
            "probe": "processes", "status": "permission_denied",
            "reason": "/proc hides other users' processes from this login (mounted with "
                      f"hidepid): {len(procs)} of its own listed, any other agent unknown",
            "blocks": "whether the agents, runtime and firewalld not seen are running: only "
                      "those found are known",
            "kinds": "process,host_firewall",
        }, Source("processes", COMMAND, section.exit_code, "PID 1's /proc entry is hidden")))
    return facts


PROBE = Probe(
    name="processes",
    command=COMMAND,
    parse=parse,
    kinds=("process", "host_firewall"),
    blocks="processes (CNI agents, kube-proxy, kubelet, runtime, firewalld/ufw, security software)",
    tools=("awk",),
    timeout_s=15,
)
