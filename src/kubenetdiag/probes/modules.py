"""Kernel modules the data path depends on: br_netfilter above all (without it bridged pod
traffic skips iptables, and its sysctls do not even exist).

/proc/modules only lists loadable modules, and a kernel built without module support has no
such file at all, so a feature file the module creates counts as evidence too. When neither
says anything the answer is unknown (null), never "not loaded".

Sample output and the facts it gives:

>>> out = (
...     '##knd:proc_modules\\n'
...     'vxlan 77824 0 - Live 0x0000000000000000\\n'
...     'br_netfilter 32768 0 - Live 0x0000000000000000\\n'
...     '##knd:present\\n'
...     '/sys/module/vxlan\\n'
... )
>>> facts = parse(Section("modules", "", 0, 0.0, out, ""), "node1")
>>> [(f.attrs["name"], f.attrs["loaded"], f.attrs["evidence"])
...  for f in facts if f.attrs["name"] in ("vxlan", "ip_vs")]
[('ip_vs', False, None), ('vxlan', True, '/proc/modules')]
"""

from __future__ import annotations

from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.probes.base import NEWLINE, Probe, Section, read_files
from kubenetdiag.probes.text import parts

# module -> files that exist only when the module (or the built-in code) is active
MODULES: dict[str, tuple[str, ...]] = {
    "br_netfilter": ("/proc/sys/net/bridge",),
    "nf_conntrack": ("/proc/sys/net/netfilter/nf_conntrack_max",),
    "ip_vs": ("/proc/net/ip_vs",),
    "ip_tables": ("/proc/net/ip_tables_names",),
    "nf_tables": (),
    "vxlan": (),
    "ipip": (),
    "bridge": (),
    "veth": (),
    "overlay": (),
}
_FILES = sorted({f for fs in MODULES.values() for f in fs} | {f"/sys/module/{m}" for m in MODULES})

COMMAND = (
    "if [ -r /proc/modules ]; then "
    + read_files("/proc/modules", head="##knd:proc_modules") + "; fi; "
    # one write for the list, not one per file
    + NEWLINE + "p='##knd:present'; for f in " + " ".join(_FILES)
    + '; do [ -e "$f" ] && p="$p$__nl$f"; done; printf \'%s\\n\' "$p"; '

    "read r </proc/sys/kernel/osrelease; b=/lib/modules/$r/modules.builtin; "
    "if [ -r \"$b\" ]; then echo '##knd:builtin'; "
    "grep -E '/(" + "|".join(MODULES) + ")[.]ko' \"$b\"; fi; "
    "return 0"
)


def parse(section: Section, node: str) -> list[Fact]:
    listed: set[str] | None = None
    present: set[str] = set()
    builtin: set[str] = set()
    for name, _, lines in parts(section.stdout):
        if name == "proc_modules":
            listed = {ln.split()[0] for ln in lines if ln.split()}
        elif name == "present":
            present = {ln.strip() for ln in lines}
        elif name == "builtin":
            builtin = {ln.strip().rsplit("/", 1)[-1].removesuffix(".ko") for ln in lines}
    facts = []
    for mod, files in MODULES.items():
        evidence = None
        if listed is not None and mod in listed:
            evidence = "/proc/modules"
        elif mod in builtin:
            evidence = "modules.builtin"
        elif f"/sys/module/{mod}" in present:
            evidence = f"/sys/module/{mod}"
        else:
            evidence = next((f for f in files if f in present), None)
        if evidence:
            loaded: bool | None = True
        elif listed is not None and not section.stderr.strip():
            loaded = False
        else:
            loaded = None  # no module list to check against: built in, or absent
        facts.append(
            Fact(
                "kernel_module",
                node,
                {"name": mod, "loaded": loaded, "evidence": evidence},
                Source("modules", COMMAND, section.exit_code, f"{mod}: {evidence or 'not found'}"),
            )
        )
    return facts


PROBE = Probe(
    name="modules",
    command=COMMAND,
    parse=parse,
    kinds=("kernel_module",),
    blocks="kernel modules (br_netfilter, nf_conntrack, ip_vs, vxlan...)",
    timeout_s=5,
)
