"""Where each kernel setting is made persistent: which sysctl file sets it last.

The load order is systemd-sysctl's (the same `sysctl --system` follows): every `*.conf` in
/etc/sysctl.d, /run/sysctl.d, /usr/local/lib/sysctl.d, /usr/lib/sysctl.d and /lib/sysctl.d,
one file per basename (the first directory wins, so /etc overrides /usr/lib, and a link to
/dev/null masks), all taken in basename order; /etc/sysctl.conf comes last. We work this out
from the files themselves: running `sysctl --system` or `sysctl -p` to see it would apply them.

Sample output and the facts it gives:

>>> out = (
...     'F\\t/etc/sysctl.d/99-kubernetes.conf\\n'
...     'F\\t/etc/sysctl.conf\\n'
...     '/etc/sysctl.d/99-kubernetes.conf:1:net.ipv4.ip_forward = 1\\n'
...     '/etc/sysctl.conf:10:net.ipv4.ip_forward = 0\\n'
... )
>>> facts = parse(Section("sysctl_files", "", 0, 0.0, out, ""), "node1")
>>> [(f.attrs["key"], f.attrs["file"], f.attrs["number"], f.attrs["overrides"])
...  for f in facts if f.kind == "sysctl_file_setting"]
[('net.ipv4.ip_forward', '/etc/sysctl.conf', 0, '/etc/sysctl.d/99-kubernetes.conf:1')]
"""

from __future__ import annotations

from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.probes.base import NEWLINE, Probe, Section
from kubenetdiag.probes.text import clip, to_int

DIRS = (
    "/etc/sysctl.d",
    "/run/sysctl.d",
    "/usr/local/lib/sysctl.d",
    "/usr/lib/sysctl.d",
    "/lib/sysctl.d",
)
SYSCTL_CONF = "/etc/sysctl.conf"

# F<TAB>path for a file, L<TAB>path<TAB>/dev/null (or nothing) for a symlink, then one
# `grep -Hn` over all of them (one fork), comments and blank lines left on the node: each
# setting as `path:N:line`. Outputs of older versions name every link's target.
COMMAND = (
    NEWLINE + "o=; set --; for d in " + " ".join(DIRS) + "; do for f in \"$d\"/*.conf; do "
    # a link's target matters only when it masks the file (/dev/null, as systemd-sysctl
    # reads it): tested by the shell, no readlink per link
    "if [ -L \"$f\" ]; then t=; [ \"$f\" -ef /dev/null ] && t=/dev/null; "
    "o=\"${o}L\t$f\t$t$__nl\"; "
    "elif [ -f \"$f\" ]; then o=\"${o}F\t$f$__nl\"; else continue; fi; "
    "set -- \"$@\" \"$f\"; done; done; "
    f"if [ -f {SYSCTL_CONF} ]; then o=\"${{o}}F\t{SYSCTL_CONF}$__nl\"; "
    f"set -- \"$@\" {SYSCTL_CONF}; fi; printf %s \"$o\"; "
    "[ $# -eq 0 ] || grep -Hn -v -e '^[[:space:]]*[#;]' -e '^[[:space:]]*$' -- \"$@\"; return 0"
)


def _normalize(key: str) -> str:
    """systemd accepts `net/ipv4/ip_forward` too; there `.` inside a name (eth0.100) is literal.
    Our runtime sysctl facts spell keys with dots throughout, so we do the same."""
    key = key.strip()
    if "/" in key.split(".", 1)[0]:
        key = key.replace("/", ".")
    return key


def load_order(listing: list[tuple[str, str | None]]) -> tuple[list[str], dict[str, str]]:
    """(files in the order they are applied, {file: why it is not applied})."""
    by_base: dict[str, str] = {}
    skipped: dict[str, str] = {}
    links = dict(listing)
    for path, _ in listing:
        if path == SYSCTL_CONF:
            continue
        base = path.rsplit("/", 1)[-1]
        if base in by_base:
            skipped[path] = f"shadowed by {by_base[base]}"
            continue
        by_base[base] = path
    order = []
    for base in sorted(by_base):
        path = by_base[base]
        if links.get(path) == "/dev/null":
            skipped[path] = "masked (linked to /dev/null)"
            continue
        order.append(path)
    if SYSCTL_CONF in links:
        order.append(SYSCTL_CONF)
    return order, skipped


def parse(section: Section, node: str) -> list[Fact]:
    listing: list[tuple[str, str | None]] = []
    content: dict[str, list[tuple[int, str]]] = {}
    lines = section.stdout.splitlines()
    for line in lines:
        if line.startswith("F\t"):
            listing.append((line[2:], None))
        elif line.startswith("L\t"):
            path, _, target = line[2:].partition("\t")
            listing.append((path, target))
    paths = sorted({p for p, _ in listing}, key=len, reverse=True)
    for line in lines:
        if not line.startswith("/"):
            continue
        for p in paths:  # longest first: a path may itself contain ':'
            if line.startswith(p + ":"):
                num, _, text = line[len(p) + 1 :].partition(":")
                if num.isdigit():
                    content.setdefault(p, []).append((int(num), text))
                break
    order, skipped = load_order(listing)

    def src(excerpt: str) -> Source:
        return Source("sysctl_files", "grep -Hn <settings> <sysctl files in load order>",
                      section.exit_code, excerpt)

    facts: list[Fact] = []
    for path, _ in listing:
        applied = path in order
        facts.append(Fact("sysctl_file", node, {
            "path": path,
            "applied": applied,
            "order": order.index(path) + 1 if applied else None,
            "skipped_because": skipped.get(path),
        }, src(path)))
    last: dict[str, tuple[str, str, int]] = {}
    earlier: dict[str, list[str]] = {}
    for path in order:
        for n, raw in content.get(path, []):
            text = raw.strip()
            if not text or text[0] in "#;" or "=" not in text:
                continue
            key, _, value = text.partition("=")
            key = _normalize(key.lstrip("-"))
            if not key or " " in key:
                continue
            if key in last:
                earlier.setdefault(key, []).append(f"{last[key][1]}:{last[key][2]}")
            last[key] = (value.strip(), path, n)
    for key, (value, path, n) in last.items():
        facts.append(Fact("sysctl_file_setting", node, {
            "key": clip(key, 200),
            "value": clip(value, 200),
            "number": to_int(value),
            "file": path,
            "line": n,
            "overrides": ", ".join(earlier[key]) if key in earlier else None,
        }, src(clip(f"{path}:{n}: {key} = {value}", 500))))
    return facts


PROBE = Probe(
    name="sysctl_files",
    command=COMMAND,
    parse=parse,
    kinds=("sysctl_file", "sysctl_file_setting"),
    blocks="which sysctl file persists each kernel setting (what a reboot would restore)",
    tools=("grep",),
    timeout_s=5,
)
