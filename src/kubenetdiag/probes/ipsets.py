"""The node's ipsets, which iptables rules match with `-m set --match-set NAME FLAGS`:
kube-proxy's ipvs mode (KUBE-CLUSTER-IP, KUBE-LOOP-BACK, KUBE-NODE-PORT-TCP...) and Calico
(cali40...) write their rules that way, so without the members no such rule can be decided.

Only when the ip_set code is in the kernel (/sys/module/ip_set: a loaded module, or a built-in
one, which has parameters): `ipset` asks the kernel through netlink, which would load the module
otherwise and so change the node. `ipset save` prints every set in full, a set at a time, so
a set is complete unless the output was cut at the probe's limit (the last one then is not,
and those after it are absent).

Sample output and the facts it gives:

>>> out = (
...     'create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 comment\\n'
...     'add KUBE-CLUSTER-IP 10.96.0.10,udp:53\\n'
...     'add KUBE-CLUSTER-IP 10.96.0.20,tcp:80\\n'
...     'create KUBE-NODE-PORT-TCP bitmap:port range 0-65535 comment\\n'
... )
>>> facts = parse(Section("ipsets", "", 0, 0.0, out, ""), "node1")
>>> [(f.attrs["name"], f.attrs["type"], f.attrs["entries"]) for f in facts]
[('KUBE-CLUSTER-IP', 'hash:ip,port', 2), ('KUBE-NODE-PORT-TCP', 'bitmap:port', 0)]
>>> facts[0].attrs["members"]
'10.96.0.10,udp:53 10.96.0.20,tcp:80'
"""

from __future__ import annotations

from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.probes.base import CUT_NOTE, HOLD, Probe, Section, unread_lines
from kubenetdiag.probes.text import clip

COMMAND = (
    "if [ ! -d /sys/module/ip_set ]; then echo '# ip_set is not loaded'; return 0; fi; "
    "command -v ipset >/dev/null 2>&1 || "
    "{ echo 'kubenetdiag: ipset: command not found (ip_set is loaded)' >&2; return 127; }; "
    f"{HOLD} ipset save"
)
MAX_MEMBERS = 5000  # kept per set; a set with more is not complete
_MEMBER_CHARS = 100  # an ipset member is at most ip,proto:port,ip/prefix


def parse(section: Section, node: str) -> list[Fact]:
    sets: list[dict] = []
    by_name: dict[str, dict] = {}
    unread: list[str] = []
    for line in section.stdout.splitlines():
        words = line.split()
        if not words or line.startswith("#"):
            continue
        if words[0] == "create" and len(words) >= 3:
            s = {"name": words[1], "type": words[2], "family": None, "members": [],
                 "entries": 0, "complete": True, "raw": [line]}
            if "family" in words[3:-1]:
                s["family"] = words[words.index("family", 3) + 1]
            sets.append(s)
            by_name[words[1]] = s
        elif words[0] == "add" and len(words) >= 3 and words[1] in by_name:
            s = by_name[words[1]]
            s["entries"] += 1
            # a hash:net exception (nomatch) is kept as !member: it wins over the others
            member = ("!" if "nomatch" in words[3:] else "") + words[2]
            if len(s["members"]) < MAX_MEMBERS and len(member) <= _MEMBER_CHARS:
                s["members"].append(member)
            else:
                s["complete"] = False
            if len(s["raw"]) < 6:
                s["raw"].append(line)
        else:
            unread.append(line)
    cut = section.truncated or CUT_NOTE in section.stderr
    if cut and sets:
        sets[-1]["complete"] = False
    facts = [Fact("ipset", node, {
        "name": clip(s["name"], 64),
        "type": clip(s["type"], 32),
        "family": s["family"],
        "entries": s["entries"],
        "complete": s["complete"],
        # sorted: ipset prints a hash set in its hash order, which differs from node to node
        # and run to run; sorted, one set reads the same everywhere (a diff shows only what
        # changed, and the walk indexes it once for all the nodes that share it)
        "members": " ".join(sorted(s["members"])),
    }, Source("ipsets", "ipset save", section.exit_code, clip("\n".join(s["raw"]), 600)))
        for s in sets]
    return facts + unread_lines(section, node, unread, "ipset lines")


PROBE = Probe(
    name="ipsets",
    command=COMMAND,
    parse=parse,
    kinds=("ipset",),
    blocks="ipsets: iptables rules that match a set (kube-proxy ipvs mode, Calico) stay "
           "undecided in the path walk",
    timeout_s=15,
)
