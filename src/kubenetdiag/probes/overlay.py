"""What flannel programs for VXLAN: /run/flannel/subnet.env, and for every VXLAN device
(flannel.1, vxlan.calico, cilium_vxlan) its forwarding database and neighbor entries. A peer
node without an FDB entry or neighbor is unreachable through the overlay even when routes exist.

And the permanent neighbour entries of every other device: an entry written by hand or by a
tool (`ip neigh replace ... nud permanent`, a static ARP table) is never re-resolved, so one
that names a MAC the peer does not have sends everything for that peer to nobody, on the
underlay as on the overlay. Both come from the script's one `ip -batch` (IP_BATCH: every
neighbour entry, sorted here), else from `ip neigh` per VXLAN device and for the permanent
entries. The other devices' dynamic entries correct themselves and are left out, but for
those of one MAC that answers for several IPv4 addresses on one device, and those that name
one of the node's own MACs (batch only; the probe lists its devices' MACs): that is how peers
see a machine cloned with another's MAC, even when the clone itself cannot be reached.

Sample output and the facts it gives:

>>> out = (
...     '##knd:fdb flannel.1\\n'
...     '5a:1c:2e:3d:4f:60 dst 198.18.0.12 self permanent\\n'
...     '##knd:neigh flannel.1\\n'
...     '10.244.2.0 lladdr 5a:1c:2e:3d:4f:60 PERMANENT\\n'
... )
>>> facts = parse(Section("overlay", "", 0, 0.0, out, ""), "node1")
>>> [(f.kind, f.attrs.get("dst") or f.attrs.get("ip"), f.attrs["mac"]) for f in facts]
[('fdb_entry', '198.18.0.12', '5a:1c:2e:3d:4f:60'), ('neighbor', '10.244.2.0', '5a:1c:2e:3d:4f:60')]
"""

from __future__ import annotations

import json
from collections import Counter

from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.probes.base import (
    IP_BATCH,
    Probe,
    Section,
    from_ip_batch,
    read_files,
    unread_lines,
)
from kubenetdiag.probes.text import MAC, clip, env_file, parts, to_int, unprefix

# VXLAN devices say DEVTYPE=vxlan in their uevent, on its first line (the kernel writes a
# device's type before its class's INTERFACE= and IFINDEX=): the shell reads that line of each,
# no process and a few bytes per veth on a node with hundreds of them.
# The neighbour entries come from the script's one `ip -batch` (every entry, JSON), which the
# parser sorts: all of a VXLAN device's, the permanent ones of the others and those of a MAC
# behind a few addresses or of one of the node's own. Where the batch did not run, `ip neigh`
# per VXLAN device and for the permanent entries, as text.
SHARED_MAX = 8  # addresses behind one MAC beyond which it is a router's, not clones'

COMMAND = (
    "f=/run/flannel/subnet.env; "
    "if [ -r $f ]; then " + read_files("$f", "|", 50, head="##knd:subnet.env") + "; fi; "
    "if " + from_ip_batch("neighbours") + "; then __nb=1; else __nb=; fi; "
    "__m=; for u in /sys/class/net/*/uevent; do l=; { IFS= read -r l <\"$u\"; } 2>/dev/null; "
    "d=${u%/uevent}; d=${d##*/}; "
    # every device's own MAC, read by the shell: an entry naming one is a machine answering
    # with this node's MAC
    "if [ -n \"$__nb\" ]; then a=; { read -r a <\"${u%/uevent}/address\"; } 2>/dev/null; "
    "__m=\"$__m$d $a$__nl\"; fi; "
    "[ \"$l\" = DEVTYPE=vxlan ] || continue; "
    # the listings held and printed in one write
    "f=$(bridge fdb show dev \"$d\"); "
    "if [ -n \"$__nb\" ]; then printf '##knd:fdb %s\\n%s\\n' \"$d\" \"$f\"; "
    "else n=$(ip neigh show dev \"$d\"); "
    "printf '##knd:fdb %s\\n%s\\n##knd:neigh %s\\n%s\\n' \"$d\" \"$f\" \"$d\" \"$n\"; fi; "
    "done; if [ -n \"$__nb\" ]; then printf '##knd:macs\\n%s' \"$__m\"; "
    "else echo '##knd:permanent text'; ip -4 neigh show nud permanent; fi; return 0"
)


def _permanent(form: str | None, lines: list[str]
               ) -> tuple[list[tuple[str, str, str | None, str]], list[str]]:
    """(ip, dev, mac, line) of each permanent entry of a listing, JSON or text, and the lines
    not understood."""
    if form == "json":
        try:
            entries = json.loads("".join(lines) or "[]")
        except ValueError:
            return [], lines
        if not isinstance(entries, list):
            return [], lines
        return [(e["dst"], e["dev"], e["lladdr"] if isinstance(e.get("lladdr"), str) else None,
                 json.dumps(e, sort_keys=True))
                for e in entries if isinstance(e, dict)
                and isinstance(e.get("dst"), str) and isinstance(e.get("dev"), str)], []
    out, unread = [], []
    for line in lines:
        words = line.split()
        if len(words) < 3 or words[0].count(".") != 3 or "dev" not in words[:-1]:
            unread.append(line)
            continue
        mac = words[words.index("lladdr") + 1] if "lladdr" in words[:-1] else None
        out.append((words[0], words[words.index("dev") + 1], mac, line))
    return out, unread


def _neighbours(lines: list[str]) -> tuple[list[tuple[str, str, str | None, str, str]],
                                           list[str]]:
    """(ip, dev, mac, state, line) of each entry of the batch's JSON listing of every
    neighbour, and the lines not understood."""
    try:
        entries = json.loads("".join(lines) or "[]")
    except (ValueError, RecursionError):
        return [], lines
    if not isinstance(entries, list):
        return [], lines
    out = []
    for e in entries:
        if not (isinstance(e, dict) and isinstance(e.get("dst"), str)
                and isinstance(e.get("dev"), str)):
            continue
        states = e.get("state") if isinstance(e.get("state"), list) else []
        state = str(states[0]) if states else "UNKNOWN"
        mac = e["lladdr"] if isinstance(e.get("lladdr"), str) else None
        out.append((e["dst"], e["dev"], mac, state, json.dumps(e, sort_keys=True)))
    return out, []


def parse(section: Section, node: str) -> list[Fact]:
    facts: list[Fact] = []
    listed = parts(section.stdout)
    vxlan = {dev for name, dev, _ in listed if name in ("fdb", "neigh") and dev}
    # the node's own MACs; all zeroes is a device without one (lo, a tunnel)
    own = {words[1].lower() for name, _, lines in listed if name == "macs"
           for words in (line.split() for line in lines)
           if len(words) == 2 and words[1].strip("0:")}

    def src(cmd: str, text: str) -> Source:
        return Source("overlay", cmd, section.exit_code, clip(text, 500))

    for name, dev, lines in listed:
        if name == "subnet.env":
            env = env_file(unprefix(lines))
            if not env:
                continue
            ipmasq = env.get("FLANNEL_IPMASQ")
            facts.append(Fact("flannel_subnet", node, {
                "network": clip(env.get("FLANNEL_NETWORK", ""), 60) or None,
                "subnet": clip(env.get("FLANNEL_SUBNET", ""), 60) or None,
                "mtu": to_int(env.get("FLANNEL_MTU")),
                "ipmasq": None if ipmasq is None else ipmasq.lower() == "true",
            }, src("cat /run/flannel/subnet.env", "\n".join(unprefix(lines)))))
        elif name == "fdb" and dev:
            for line in lines:
                m = MAC.match(line.strip())
                if not m:
                    continue
                words = line.split()
                dst = words[words.index("dst") + 1] if "dst" in words[:-1] else None
                facts.append(Fact("fdb_entry", node, {
                    "dev": clip(dev, 64),
                    "mac": m.group(1).lower(),
                    "dst": clip(dst, 60) if dst else None,
                    "permanent": "permanent" in words,
                }, src(f"bridge fdb show dev {dev}", line)))
        elif name == "neigh" and dev:
            for line in lines:
                words = line.split()
                if not words or words[0].count(".") != 3:
                    continue
                mac = words[words.index("lladdr") + 1] if "lladdr" in words[:-1] else None
                facts.append(Fact("neighbor", node, {
                    "dev": clip(dev, 64),
                    "ip": clip(words[0], 60),
                    "mac": clip(mac.lower(), 40) if mac else None,
                    "state": clip(words[-1], 30) if words[-1].isupper() else "UNKNOWN",
                }, src(f"ip neigh show dev {dev}", line)))
        elif name == "neighbours":
            entries, unread = _neighbours(lines)
            facts += unread_lines(section, node, unread, "neighbour entries")
            answering = Counter((on, mac) for ip, on, mac, _, _ in entries
                                if mac and ip.count(".") == 3)
            for ip, on, mac, state, line in entries:
                # every entry of a VXLAN device; of the others, those set by hand or a tool,
                # those naming one of this node's own MACs (another machine answered with it:
                # a clone), and those where one MAC answers for a few IPv4 addresses on one
                # device (a NIC cloned with its MAC, an address held twice). Many behind one
                # MAC is a router answering for the segment (proxy ARP, a cloud's virtual
                # network answering every ARP with one MAC): kept, they would be one fact per
                # peer.
                if on not in vxlan and state != "PERMANENT" and not (
                        mac and ip.count(".") == 3 and (
                            mac.lower() in own or 1 < answering[(on, mac)] <= SHARED_MAX)):
                    continue
                facts.append(Fact("neighbor", node, {
                    "dev": clip(on, 64),
                    "ip": clip(ip, 60),
                    "mac": clip(mac.lower(), 40) if mac else None,
                    "state": clip(state, 30),
                }, src(f"ip neigh show dev {on}", line)))
        elif name == "permanent":
            entries, unread = _permanent(dev, lines)
            facts += unread_lines(section, node, unread, "permanent neighbour entries")
            # a VXLAN device's entries are all listed above, permanent ones included
            for ip, on, mac, line in entries:
                if on in vxlan:
                    continue
                facts.append(Fact("neighbor", node, {
                    "dev": clip(on, 64),
                    "ip": clip(ip, 60),
                    "mac": clip(mac.lower(), 40) if mac else None,
                    "state": "PERMANENT",
                }, src("ip -4 neigh show nud permanent", line)))
    return facts


PROBE = Probe(
    name="overlay",
    command=COMMAND,
    parse=parse,
    kinds=("flannel_subnet", "fdb_entry", "neighbor"),
    blocks="flannel subnet.env, the VXLAN FDB/neighbor entries toward peer nodes and the "
           "permanent neighbour entries of the other devices",
    preludes=(IP_BATCH,),
    tools=("ip", "bridge"),
    timeout_s=10,
)
