"""The running kernel's release, which decides what settings can exist (tcp_tw_recycle < 4.12).

Sample output and the facts it gives:

>>> out = (
...     '3.10.0-1160.el7.x86_64\\n'
... )
>>> facts = parse(Section("kernel", "", 0, 0.0, out, ""), "node1")
>>> [(f.kind, f.attrs["release"], f.attrs["major"], f.attrs["minor"]) for f in facts]
[('kernel', '3.10.0-1160.el7.x86_64', 3, 10)]
"""

from __future__ import annotations

import re

from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.probes.base import Probe, Section

COMMAND = "read -r r </proc/sys/kernel/osrelease && printf '%s\\n' \"$r\""  # no `cat` process
_EVIDENCE = "cat /proc/sys/kernel/osrelease"  # what an SRE would type to see the same
_VERSION = re.compile(r"^(\d+)\.(\d+)")


def parse(section: Section, node: str) -> list[Fact]:
    lines = section.stdout.strip().splitlines()
    if not lines:
        return []
    release = lines[0].strip()[:200]
    m = _VERSION.match(release)
    return [
        Fact(
            "kernel",
            node,
            {
                "release": release,
                "major": int(m.group(1)) if m else None,
                "minor": int(m.group(2)) if m else None,
            },
            Source("kernel", _EVIDENCE, section.exit_code, release),
        )
    ]


PROBE = Probe(
    name="kernel",
    command=COMMAND,
    parse=parse,
    kinds=("kernel",),
    blocks="kernel version checks (settings removed or added by kernel release)",
)
