"""Processes and services: CNI agents, kube-proxy, kubelet, the container runtime, host
firewalls (firewalld running; ufw enabled in /etc/ufw/ufw.conf), and security software known
to break pod networking. The names are data (processes.yaml), not code, so a site adds its own.

One `ps` (or, without ps, the shell reading /proc/*/comm: no fork per process). Command lines
can carry passwords and tokens; those options are cut out on the node, before the bundle.

Sample output and the facts it gives:

>>> out = (
...     '##knd:ps eo\\n'
...     '    1 systemd         /usr/lib/systemd/systemd --switched-root\\n'
...     '  812 flanneld        /opt/bin/flanneld --ip-masq --kube-subnet-'
...     'mgr\\n'
... )
>>> facts = parse(Section("processes", "", 0, 0.0, out, ""), "node1")
>>> [(f.attrs["name"], f.attrs["role"], f.attrs["pids"])
...  for f in facts if f.attrs.get("running")]
[('flanneld', 'cni_agent', '812')]
"""

from __future__ import annotations

import os
import re
from functools import cache
from importlib import resources
from pathlib import Path

from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.probes.base import Probe, Section
from kubenetdiag.probes.text import clip, parts, unprefix
from kubenetdiag.yamlsrc import load_plain

ENV_VAR = "KUBENETDIAG_PROCESSES"
MAX_ARGS = 300

_REDACT = (
    "gsub(/--?[A-Za-z0-9_.-]*([Pp][Aa][Ss][Ss][Ww]|[Tt][Oo][Kk][Ee][Nn]|[Ss][Ee][Cc][Rr][Ee][Tt])"
    "[A-Za-z0-9_.-]*(=|[ ]+)[^ ]*/, \"<redacted>\"); "
    "gsub(/[A-Za-z_]*(PASSW|TOKEN|SECRET)[A-Za-z_]*=[^ ]*/, \"<redacted>\")"
)
COMMAND = (
    "if out=$(ps -eo pid=,comm=,args= 2>/dev/null) && [ -n \"$out\" ]; then echo '##knd:ps eo'; "
    "elif out=$(ps -o pid,comm,args 2>/dev/null) && [ -n \"$out\" ]; then echo '##knd:ps busybox'; "
    "else echo '##knd:ps proc'; out=$(for d in /proc/[0-9]*; do "
    "read -r c <\"$d/comm\" 2>/dev/null && printf '%s %s -\\n' \"${d#/proc/}\" \"$c\"; done); fi; "
    f"printf '%s\\n' \"$out\" | awk '{{{_REDACT}; print substr($0, 1, {MAX_ARGS})}}'; "
    "if [ -r /etc/ufw/ufw.conf ]; then echo '##knd:ufw'; sed -n 's/^/|/p' /etc/ufw/ufw.conf; fi"
)

_LINE = re.compile(r"^\s*(\d+)\s+(\S+)\s*(.*)$")


def _load(text: str, into: dict[str, list]) -> None:
    data = load_plain(text) or {}
    if not isinstance(data, dict):
        raise ValueError("a process list maps roles to lists of names")
    for role, names in data.items():
        for n in names or []:
            if isinstance(n, str) or (isinstance(n, dict) and isinstance(n.get("contains"), str)):
                into.setdefault(str(role), []).append(n)


@cache
def _catalog(extra: str) -> dict[str, list]:
    roles: dict[str, list] = {}
    _load(resources.files("kubenetdiag.probes").joinpath("processes.yaml").read_text(), roles)
    for path in filter(None, extra.split(":")):
        _load(Path(path).read_text(encoding="utf-8"), roles)
    return roles


def catalog() -> dict[str, list]:
    """Role -> names: the shipped list plus the files named in $KUBENETDIAG_PROCESSES."""
    return _catalog(os.environ.get(ENV_VAR, ""))


def _matches(entry: str | dict, comm: str, prog: str, args: str) -> bool:
    if isinstance(entry, dict):
        text = entry["contains"].lower()
        return text in args.lower() or text in comm.lower()
    return comm == entry or comm == entry[:15] or prog == entry


def parse(section: Section, node: str) -> list[Fact]:
    procs: list[tuple[int, str, str]] = []
    fmt = None
    ufw: list[str] | None = None
    for name, arg, lines in parts(section.stdout):
        if name == "ps":
            fmt = arg
            for line in lines:
                m = _LINE.match(line)
                if m:
                    args = "" if m.group(3) == "-" else m.group(3)
                    procs.append((int(m.group(1)), m.group(2), args))
        elif name == "ufw":
            ufw = unprefix(lines)
    facts: list[Fact] = []
    if fmt is None:
        return facts  # the list never came: unknown, and parse.py reports why
    for role, entries in catalog().items():
        for entry in entries:
            label = entry if isinstance(entry, str) else entry["contains"]
            hits = []
            for pid, comm, args in procs:
                prog = args.split(" ", 1)[0].rsplit("/", 1)[-1] if args else ""
                if _matches(entry, comm, prog, args):
                    hits.append((pid, comm, args))
            facts.append(Fact("process", node, {
                "name": clip(label, 64),
                "role": clip(role, 64),
                "running": bool(hits),
                "count": len(hits),
                "pids": ",".join(str(h[0]) for h in hits[:10]) or None,
                "args": clip(hits[0][2], MAX_ARGS) if hits and hits[0][2] else None,
            }, Source("processes", "ps -eo pid,comm,args", section.exit_code,
                      clip("\n".join(f"{p} {c} {a}" for p, c, a in hits[:5])
                           or f"no process named {label} among {len(procs)}", 800))))
    # firewalld is a Python script: comm is its file name, or python when started by hand
    firewalld = any(c == "firewalld" or "/firewalld" in a.split(" --", 1)[0] for _, c, a in procs)
    facts.append(Fact("host_firewall", node, {
        "name": "firewalld", "active": firewalld,
        "evidence": "firewalld process running" if firewalld else "no firewalld process",
    }, Source("processes", "ps -eo pid,comm,args", section.exit_code, "firewalld")))
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
    return facts


PROBE = Probe(
    name="processes",
    command=COMMAND,
    parse=parse,
    blocks="processes (CNI agents, kube-proxy, kubelet, runtime, firewalld/ufw, security software)",
    tools=("awk",),
    timeout_s=15,
)
