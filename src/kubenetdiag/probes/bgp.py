"""BGP sessions of the BIRD daemon that Calico (and bare-metal setups) run, via `birdcl show
protocols all` on BIRD's control socket: Established or not, with the peer address.

Only where a BIRD control socket exists; calico-node keeps its own in /var/run/calico. A
calico node's host has no BIRD client: it is in the calico-node container, so the probe runs it
in bird's own mount namespace (`nsenter -t <bird's pid> -m birdcl ...`), as an SRE would.
Reading `show` output changes nothing in BIRD. BIRD 1.6 and 2.x print the same table (case differs).

Sample output and the facts it gives:

>>> out = (
...     '##knd:socket /run/bird/bird.ctl\\n'
...     'BIRD 2.0.12 ready.\\n'
...     'Name       Proto      Table      State  Since         Info\\n'
...     'node2      BGP        ---        start  10:22:33.109  Active    '
...     '    Socket: Connection refused\\n'
...     '  BGP state:          Active\\n'
...     '    Neighbor address: 198.18.0.12\\n'
...     '    Neighbor AS:      64512\\n'
...     '    Last error:       Socket: Connection refused\\n'
... )
>>> facts = parse(Section("bgp", "", 0, 0.0, out, ""), "node1")
>>> [(f.attrs["protocol"], f.attrs["peer"], f.attrs["state"], f.attrs["established"])
...  for f in facts]
[('node2', '198.18.0.12', 'Active', False)]
"""

from __future__ import annotations

import re

from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.probes.base import Probe, Section
from kubenetdiag.probes.text import clip, parts, to_int

SOCKETS = ("/run/bird/bird.ctl", "/run/bird.ctl", "/run/calico/bird.ctl")
COMMAND = (
    "set -- " + " ".join(SOCKETS) + "; "
    "[ -L /var/run ] || set -- \"$@\" " + " ".join(s.replace("/run/", "/var/run/", 1)
                                                  for s in SOCKETS) + "; "
    "n=0; for s; do [ -S \"$s\" ] || continue; n=1; "
    # a client on the host itself (-x: bash's `command -v` also names a non-executable match)
    "c=; for b in birdcl birdc; do x=$(command -v $b 2>/dev/null) && [ -x \"$x\" ] "
    "&& { c=$x; break; }; done; "
    # calico-node's BIRD: its client is only in the container's filesystem, so it runs in
    # bird's own mount namespace (nsenter -m; the socket path is the same there)
    "if [ -z \"$c\" ]; then p=; "
    "for d in /proc/[0-9]*; do { read -r m < \"$d/comm\"; } 2>/dev/null || continue; "
    "[ \"$m\" = bird ] && { p=${d#/proc/}; break; }; done; "
    "if [ -n \"$p\" ] && command -v nsenter >/dev/null 2>&1; then c=\"nsenter -t $p -m --\"; "
    "else echo \"kubenetdiag: birdcl: command not found (BIRD socket $s exists)\" >&2; "
    "return 127; fi; fi; "
    "echo \"##knd:socket $s\"; "
    "case $c in nsenter*) $c birdcl -s \"$s\" show protocols all </dev/null 2>/dev/null "
    "|| $c birdc -s \"$s\" show protocols all </dev/null || return $?;; "
    "*) $c -s \"$s\" show protocols all </dev/null || return $?;; esac; done; "
    "[ $n = 1 ] || echo '##knd:none'"
)
_PROTO = re.compile(r"^(\S+)\s+(\S+)\s+(\S+)\s+(up|down|start|stop|flush)\s+(.*)$", re.I)
_DETAIL = re.compile(r"^\s+([A-Za-z][A-Za-z ]*?):\s+(.*)$")
# a channel's route counts: BIRD 1.6, 2 and 3 print `N imported, [N filtered,] N exported`
_ROUTES = re.compile(r"(\d+)\s+imported,\s*(?:\d+\s+filtered,\s*)?(\d+)\s+exported")


def parse(section: Section, node: str) -> list[Fact]:
    facts = []
    for name, sock, lines in parts(section.stdout):
        if name != "socket":
            continue
        protos: list[dict] = []
        for line in lines:
            m = _PROTO.match(line)
            if m and not line[:1].isspace():
                rest = m.group(5).split()
                # Since is a time or a date, with a time after it in some timeformats
                since_len = 2 if len(rest) > 1 and re.match(r"^\d\d:\d\d", rest[1]) else 1
                protos.append({"name": m.group(1), "proto": m.group(2), "state": m.group(4),
                               "since": " ".join(rest[:since_len]),
                               "info": " ".join(rest[since_len:]), "details": {},
                               "routes": [], "raw": [line]})
                continue
            d = _DETAIL.match(line)
            if d and protos:
                protos[-1]["details"].setdefault(d.group(1).strip().lower(), d.group(2).strip())
                counts = _ROUTES.match(d.group(2).strip())
                if d.group(1).strip().lower() == "routes" and counts:
                    # one line per channel (ipv4, ipv6): the session's are their sums
                    protos[-1]["routes"].append((int(counts.group(1)), int(counts.group(2))))
                if len(protos[-1]["raw"]) < 12:
                    protos[-1]["raw"].append(line)
        for p in protos:
            if p["proto"].lower() != "bgp":
                continue
            det = p["details"]
            bgp_state = det.get("bgp state") or (p["info"].split()[0] if p["info"] else "")
            routes = p["routes"]
            facts.append(Fact("bgp_session", node, {
                "protocol": clip(p["name"], 80),
                "peer": clip(det["neighbor address"], 60)
                if det.get("neighbor address") else None,
                "peer_as": to_int(det.get("neighbor as")),
                "state": clip(bgp_state, 40) or None,
                "established": bgp_state.lower() == "established",
                "proto_state": p["state"].lower(),
                "since": clip(p["since"], 40),
                "last_error": clip(det["last error"], 200) if det.get("last error") else None,
                "routes_imported": sum(i for i, _ in routes) if routes else None,
                "routes_exported": sum(e for _, e in routes) if routes else None,
                "socket": clip(sock, 100),
            }, Source("bgp", f"birdcl -s {sock} show protocols all", section.exit_code,
                      clip("\n".join(p["raw"]), 800))))
    return facts


PROBE = Probe(
    name="bgp",
    command=COMMAND,
    parse=parse,
    kinds=("bgp_session",),
    blocks="BGP sessions of BIRD (Calico): which peers are not Established",
    timeout_s=10,
)
