"""Where a kernel setting is made persistent, on the sysctl fact itself.

A sysctl rule matches the running value (`sysctl`); the fix that survives a reboot is the file
that sets it at boot (`sysctl_file_setting`, which exists only when some file sets the key). A
rule cannot match that fact without stopping to fire when no file sets the key, so the parse
stage copies the answer onto the sysctl fact every sysctl rule already matches: `file` and
`line` (the last setting in the boot load order), and `persist_to`, the file a fix should write.

>>> from kubenetdiag.facts.model import Fact
>>> facts = [
...     Fact("sysctl", "n1", {"key": "net.ipv4.ip_forward", "value": "0", "number": 0,
...                           "present": True}),
...     Fact("sysctl", "n1", {"key": "net.core.somaxconn", "value": "128", "number": 128,
...                           "present": True}),
...     Fact("sysctl_file", "n1", {"path": "/usr/lib/sysctl.d/50-default.conf", "applied": True,
...                                "order": 1, "skipped_because": None}),
...     Fact("sysctl_file_setting", "n1", {"key": "net.ipv4.ip_forward", "value": "0",
...          "number": 0, "file": "/etc/sysctl.d/99-hardening.conf", "line": 3,
...          "overrides": None}),
...     Fact("sysctl", "n2", {"key": "net.ipv4.ip_forward", "value": "0", "number": 0,
...                           "present": True}),
... ]
>>> _ = persist_sysctl(facts)
>>> [(f.node, f.attrs["key"], f.attrs["file"], f.attrs["line"], f.attrs["persist_to"])
...  for f in facts if f.kind == "sysctl"]  # doctest: +NORMALIZE_WHITESPACE
[('n1', 'net.ipv4.ip_forward', '/etc/sysctl.d/99-hardening.conf', 3,
  '/etc/sysctl.d/99-hardening.conf'),
 ('n1', 'net.core.somaxconn', None, None, '/etc/sysctl.d/99-zz-kubenetdiag.conf'),
 ('n2', 'net.ipv4.ip_forward', None, None, None)]
"""

from __future__ import annotations

from kubenetdiag.facts.model import Fact

# A new file for a key no file under /etc sets: it sorts after the usual vendor and admin files
# (50-default.conf, 99-sysctl.conf), so its setting is the one the boot applies last.
NEW_FILE = "/etc/sysctl.d/99-zz-kubenetdiag.conf"


def persist_sysctl(facts: list[Fact]) -> list[Fact]:
    """Set `file`, `line` and `persist_to` on every sysctl fact of `facts` (in place; returns
    them). `persist_to` is the file that sets the key when it is under /etc (edit it), else
    NEW_FILE (a file under /usr/lib or /run is the vendor's or volatile: override it from /etc);
    null when the node's sysctl files were not read, since then nothing says which file wins."""
    read: set[str] = set()
    setting: dict[tuple[str, str], Fact] = {}
    for f in facts:
        if f.kind == "sysctl_file":
            read.add(f.node)
        elif f.kind == "sysctl_file_setting":
            read.add(f.node)
            setting[(f.node, str(f.attrs["key"]))] = f
    for f in facts:
        if f.kind != "sysctl":
            continue
        s = setting.get((f.node, str(f.attrs["key"])))
        file = str(s.attrs["file"]) if s else None
        f.attrs["file"] = file
        f.attrs["line"] = s.attrs["line"] if s else None
        if file and file.startswith("/etc/"):
            f.attrs["persist_to"] = file
        else:
            f.attrs["persist_to"] = NEW_FILE if f.node in read else None
    return facts
