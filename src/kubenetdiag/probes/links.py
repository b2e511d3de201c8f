"""Interfaces: type, MTU, state, bridge master, addresses, and each VXLAN's id, port, local
address and underlay device (flannel.1, vxlan.calico), IPIP tunl0, cni0, cali*, veths; and the
XDP program attached to a device, which sees every packet it receives before the kernel does.

`ip -d -j` where iproute2 has JSON (4.13+); CentOS 7's iproute 3.10/4.11 have no `-j`, so the
command falls back to the one-line `-o` form, which this parser reads too.

Sample output and the facts it gives:

>>> out = (
...     '##knd:link json\\n'
...     '[{"ifindex":3,"ifname":"flannel.1","flags":["BROADCAST","MULTICA'
...     'ST","UP","LOWER_UP"],"mtu":1450,"operstate":"UNKNOWN","address":'
...     '"5a:1c:2e:3d:4f:61","linkinfo":{"info_kind":"vxlan","info_data":'
...     '{"id":1,"local":"198.18.0.11","link":"eth0","port":8472}}}]\\n'
...     '##knd:addr json\\n'
...     '[{"ifname":"flannel.1","addr_info":[{"family":"inet","local":"10'
...     '.244.1.0","prefixlen":32}]}]\\n'
... )
>>> facts = parse(Section("links", "", 0, 0.0, out, ""), "node1")
>>> [(f.attrs["name"], f.attrs["kind"], f.attrs["mtu"], f.attrs["vxlan_port"], f.attrs["addresses"])
...  for f in facts]
[('flannel.1', 'vxlan', 1450, 8472, '10.244.1.0/32')]
"""

from __future__ import annotations

import json
import re

from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.probes.base import IP_BATCH, Probe, Section, from_ip_batch
from kubenetdiag.probes.text import MAC, clip, parts, to_int

# The listings come from the script's one `ip -batch` (IP_BATCH) where it ran; else the JSON
# attempt's output is kept, not thrown away and asked for again.
# Each device's link speed in Mbit/s, as the driver reports it (ethtool's Speed): what a NIC's
# traffic is measured against. Read by the shell itself; a device that is down or virtual
# without one answers EINVAL or -1.
SPEED = ("echo '##knd:speed'; for __f in /sys/class/net/*/speed; do "
         "__d=${__f%/speed}; read -r __s 2>/dev/null <\"$__f\" && echo \"${__d##*/} $__s\"; "
         "done; true")
# Each bridge's forwarding database: the MACs it learned on each port. With the neighbour
# table it tells whose address is behind a pod's veth on a bridge (cni0): the pod's MAC was
# learned on the port, and the node's neighbour entry on the bridge gives that MAC's address.
# One `bridge` per bridge, found by the shell (only a bridge has a `bridge` directory).
FDB = ("for __f in /sys/class/net/*/bridge; do [ -d \"$__f\" ] || continue; "
       "__d=${__f%/bridge}; __d=${__d##*/}; echo \"##knd:fdb $__d\"; "
       "bridge fdb show br \"$__d\" 2>/dev/null; done; true")
COMMAND = (
    "{ " + from_ip_batch("link", "addr", "neighbours") + " || "
    "if o=$(ip -d -j link show 2>/dev/null); then "
    "echo '##knd:link json'; printf '%s\\n' \"$o\"; echo; "
    "echo '##knd:addr json'; ip -j -4 addr show; "
    "echo '##knd:neighbours json'; ip -j -4 neigh show; "
    "else echo '##knd:link text'; ip -d -o link show; "
    "echo '##knd:addr text'; ip -o -4 addr show; "
    "echo '##knd:neighbours text'; ip -4 neigh show; fi; }; " + SPEED + "; " + FDB
)

_HEAD = re.compile(r"^(\d+):\s+([^:@\s]+)(?:@(\S+?))?:\s+<([^>]*)>(.*)$")
_KINDS = {
    "vxlan", "veth", "bridge", "ipip", "dummy", "tun", "vlan", "bond", "macvlan", "ipvlan",
    "geneve", "wireguard", "gre", "gretap", "team", "openvswitch", "sit", "ip6tnl", "vrf",
    "nlmon", "ifb", "netkit", "macvtap", "erspan", "bareudp",
}
# Kinds whose reported speed is a real link's: a NIC, or a bond, team or VLAN over NICs.
_WIRED = frozenset({"device", "bond", "team", "vlan", "macvlan", "ipvlan"})
# XDP attach modes as the kernel numbers them (XDP_ATTACHED_*) and as ip words them.
_XDP_MODES = {1: "native", 2: "generic", 3: "offload", 4: "multi"}
_XDP_WORDS = {"xdp": "native", "xdpdrv": "native", "xdpgeneric": "generic", "xdpskb": "generic",
              "xdpoffload": "offload", "xdphw": "offload", "xdpmulti": "multi"}
_XDP_HEAD = re.compile(r"(?:^|\s)(xdp[a-z]*|xdp\[\d+\])(?:/id:(\d+))?(?=\s|$)")
_XDP_PROG = re.compile(r"prog/(xdp[a-z]*) id (\d+)(?: name (\S+))?")
PEERS_SHOWN = 8  # addresses named behind one veth (a pod has one or two)


def _mode(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return _XDP_MODES.get(value, f"mode {value}")
    return "unknown"


def _xdp_prog(mode: str, prog: object) -> str:
    if not isinstance(prog, dict) or not isinstance(prog.get("id"), int):
        return mode
    name = prog.get("name")
    return f"{mode} prog {prog['id']}" + (f" name {name}" if isinstance(name, str) and name else "")


def _xdp_from_json(xdp: object) -> str | None:
    """An XDP program runs before the kernel stack (and netfilter) sees the packet: it may drop
    or redirect anything, so the walk says where one is attached and how."""
    if not isinstance(xdp, dict):
        return None
    mode = xdp.get("mode", xdp.get("attached"))
    if not isinstance(mode, int) or isinstance(mode, bool) or mode == 0:
        return None
    attached = xdp.get("attached") if isinstance(xdp.get("attached"), list) else []
    if mode == 4 and attached:
        return ",".join(_xdp_prog(_mode(a.get("mode")), a.get("prog"))
                        for a in attached if isinstance(a, dict))
    return _xdp_prog(_mode(mode), xdp.get("prog"))


def _xdp_from_text(head: str, details: list[str]) -> str | None:
    m = _XDP_HEAD.search(head)
    if not m:
        return None
    mode = _XDP_WORDS.get(m.group(1), m.group(1))
    progs = []
    for seg in details:
        for word, prog_id, name in _XDP_PROG.findall(seg):
            # single mode prints prog/xdp whatever the mode; several modes name theirs
            one = mode if word == "xdp" else _XDP_WORDS.get(word, word)
            progs.append(f"{one} prog {prog_id}" + (f" name {name}" if name else ""))
    if progs:
        return ",".join(progs)
    return f"{mode} prog {m.group(2)}" if m.group(2) else mode


def _link_address(seg: str) -> str | None:
    """The link-layer address after `link/TYPE`, whatever the type (ether, loopback, ipip),
    as the JSON form's `address` gives it; `link/none` has none."""
    m = re.match(r"\s*link/(\S+) (\S+)", seg)
    return m.group(2) if m and m.group(1) != "none" else None


def _word_after(text: str, word: str) -> str | None:
    m = re.search(rf"(?:^|\s){re.escape(word)} (\S+)", text)
    return m.group(1) if m else None


def _from_json(text: str) -> list[dict]:
    out = []
    for d in json.loads(text or "[]"):
        if not isinstance(d, dict) or not isinstance(d.get("ifname"), str):
            continue
        info = d.get("linkinfo") if isinstance(d.get("linkinfo"), dict) else {}
        data = info.get("info_data") if isinstance(info.get("info_data"), dict) else {}
        flags = d.get("flags") if isinstance(d.get("flags"), list) else []
        kind = info.get("info_kind")
        vx = kind == "vxlan"
        port = info.get("info_slave_data") if info.get("info_slave_kind") == "bridge" else None
        hairpin = port.get("hairpin") if isinstance(port, dict) else None
        port_state = port.get("state") if isinstance(port, dict) else None
        out.append({
            "name": d["ifname"],
            "ifindex": d.get("ifindex") if isinstance(d.get("ifindex"), int) else None,
            "kind": kind if isinstance(kind, str) else "device",
            "mtu": d.get("mtu") if isinstance(d.get("mtu"), int) else None,
            "state": str(d.get("operstate", "UNKNOWN")),
            "admin_up": "UP" in flags,
            "lower_up": "LOWER_UP" in flags,
            "master": d.get("master") if isinstance(d.get("master"), str) else None,
            "mac": d.get("address") if isinstance(d.get("address"), str) else None,
            "vxlan_id": data.get("id") if vx and isinstance(data.get("id"), int) else None,
            "vxlan_port": data.get("port") if vx and isinstance(data.get("port"), int) else None,
            "vxlan_local": str(data["local"]) if vx and data.get("local") else None,
            "vxlan_dev": str(data["link"]) if vx and data.get("link") else None,
            "xdp": _xdp_from_json(d.get("xdp")),
            "hairpin": hairpin if isinstance(hairpin, bool) else None,
            "port_state": clip(port_state, 20) if isinstance(port_state, str) else None,
            "promisc": "PROMISC" in flags,
            "noarp": "NOARP" in flags,
        })
    return out


def _from_text(lines: list[str]) -> list[dict]:
    out = []
    for line in lines:
        segs = [s.strip() for s in line.split("\\")]
        m = _HEAD.match(segs[0])
        if not m:
            continue
        head = m.group(5)
        flags = m.group(4).split(",")
        kind = "device"
        vxlan = ""
        # a bridge port's own segment, after its kind's: "bridge_slave state forwarding ...
        # hairpin on ..."
        port = next((seg for seg in segs[2:] if seg.startswith("bridge_slave")), "")
        hairpin = {"on": True, "off": False}.get(_word_after(port, "hairpin") or "")
        for seg in segs[2:]:
            first = seg.split(" ", 1)[0]
            if first in _KINDS:
                kind = first
                if first == "vxlan":
                    vxlan = seg
                break
        if kind == "device" and len(segs) > 1 and segs[1].startswith("link/loopback"):
            kind = "device"
        vx = kind == "vxlan"
        out.append({
            "name": m.group(2),
            "ifindex": int(m.group(1)),
            "kind": kind,
            "mtu": to_int(_word_after(head, "mtu")),
            "state": _word_after(head, "state") or "UNKNOWN",
            "admin_up": "UP" in flags,
            "lower_up": "LOWER_UP" in flags,
            "master": _word_after(head, "master"),
            "mac": _link_address(segs[1]) if len(segs) > 1 else None,
            "vxlan_id": to_int(_word_after(vxlan, "id")) if vx else None,
            "vxlan_port": to_int(_word_after(vxlan, "dstport")) if vx else None,
            "vxlan_local": _word_after(vxlan, "local") if vx else None,
            "vxlan_dev": _word_after(vxlan, "dev") if vx else None,
            "xdp": _xdp_from_text(head, segs[1:]),
            "hairpin": hairpin,
            "port_state": clip(_word_after(port, "state") or "", 20) or None,
            "promisc": "PROMISC" in flags,
            "noarp": "NOARP" in flags,
        })
    return out


def _addresses(fmt: str, lines: list[str]) -> dict[str, list[str]]:
    addrs: dict[str, list[str]] = {}
    if fmt == "json":
        for d in json.loads("\n".join(lines) or "[]"):
            if not isinstance(d, dict) or not isinstance(d.get("ifname"), str):
                continue
            for a in d.get("addr_info") or []:
                if isinstance(a, dict) and a.get("local"):
                    addrs.setdefault(d["ifname"], []).append(f"{a['local']}/{a.get('prefixlen')}")
    else:
        for line in lines:
            m = re.match(r"^\d+:\s+(\S+)\s+inet\s+(\S+)", line)
            if m:
                addrs.setdefault(m.group(1), []).append(m.group(2))
    return addrs


def _neighbours(fmt: str, lines: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Device -> (address, MAC) of each of its neighbour entries that has a MAC."""
    out: dict[str, list[tuple[str, str]]] = {}
    if fmt == "json":
        entries = json.loads("\n".join(lines) or "[]")
        for e in entries if isinstance(entries, list) else ():
            if (isinstance(e, dict) and isinstance(e.get("dst"), str)
                    and isinstance(e.get("dev"), str) and isinstance(e.get("lladdr"), str)):
                out.setdefault(e["dev"], []).append((e["dst"], e["lladdr"].lower()))
        return out
    for line in lines:
        words = line.split()
        if "dev" in words[1:-1] and "lladdr" in words[:-1]:
            mac = words[words.index("lladdr") + 1].lower()
            out.setdefault(words[words.index("dev") + 1], []).append((words[0], mac))
    return out


def _learned(lines: list[str]) -> dict[str, set[str]]:
    """Port -> the MACs a bridge's forwarding database has behind it: learned, or static
    entries naming a remote MAC; not the bridge's and ports' own (`permanent`, `self`)."""
    out: dict[str, set[str]] = {}
    for line in lines:
        words = line.split()
        if (len(words) < 3 or words[1] != "dev" or not MAC.fullmatch(words[0])
                or "self" in words or "permanent" in words):
            continue
        out.setdefault(words[2], set()).add(words[0].lower())
    return out


def _peer_addresses(link: dict, neighbours: dict[str, list[tuple[str, str]]],
                    learned: dict[str, dict[str, set[str]]]) -> str | None:
    """The addresses behind a veth, from the node's side: on a bridge port, the bridge's
    neighbours whose MAC the bridge learned on the port; else the veth's own neighbours (a
    routed veth: Calico's cali*, the ptp plugin's). None when that cannot be read."""
    if link["kind"] != "veth":
        return None
    master = link["master"]
    if master:
        if master not in learned:
            return None  # bridged to something whose table was not read
        macs = learned[master].get(link["name"], set())
        found = [ip for ip, mac in neighbours.get(master, []) if mac in macs]
    else:
        found = [ip for ip, _ in neighbours.get(link["name"], [])]
    shown = sorted(set(found))[:PEERS_SHOWN]
    return clip(",".join(shown), 200) or None


def parse(section: Section, node: str) -> list[Fact]:
    links: list[dict] = []
    addrs: dict[str, list[str]] = {}
    raw_lines: dict[str, str] = {}
    speeds: dict[str, int] = {}
    neighbours: dict[str, list[tuple[str, str]]] = {}
    learned: dict[str, dict[str, set[str]]] = {}  # bridge -> port -> MACs
    for name, fmt, lines in parts(section.stdout):
        try:
            if name == "neighbours":
                neighbours = _neighbours(fmt, lines)
            elif name == "fdb":
                learned[fmt] = _learned(lines)
            elif name == "link":
                if fmt == "json":
                    links = _from_json("\n".join(lines))
                else:
                    links = _from_text(lines)
                    raw_lines = {ln.split(":", 2)[1].strip().split("@")[0]: ln
                                 for ln in lines if ln.count(":") >= 2}
            elif name == "addr":
                addrs = _addresses(fmt, lines)
            elif name == "speed":
                speeds = {w[0]: int(w[1]) for w in (ln.split() for ln in lines)
                          if len(w) == 2 and w[1].isdigit() and int(w[1]) > 0}
        except (ValueError, AttributeError, TypeError, RecursionError):
            # half a JSON document (cut off), or one nested past reason: the other parts may
            # still be whole
            continue
    facts = []
    for link in links:
        link["addresses"] = ",".join(addrs.get(link["name"], [])) or None
        # a veth, a bridge or a tunnel reports a nominal speed (or none) that bounds nothing
        link["speed_mbps"] = speeds.get(link["name"]) if link["kind"] in _WIRED else None
        link["peer_addresses"] = _peer_addresses(link, neighbours, learned)
        evidence = raw_lines.get(link["name"]) or (
            f"{link['name']}: {link['kind']} mtu {link['mtu']} state {link['state']}"
            + (f" vxlan id {link['vxlan_id']} dstport {link['vxlan_port']}"
               f" local {link['vxlan_local']} dev {link['vxlan_dev']}" if link["vxlan_id"] else "")
            + (f" xdp {link['xdp']}" if link["xdp"] else "")
            + (f" master {link['master']} hairpin off" if link["hairpin"] is False else "")
            + (f" master {link['master']} port state {link['port_state']}"
               if link["port_state"] not in (None, "forwarding") else "")
        )
        link["name"] = clip(link["name"], 64)
        facts.append(Fact("interface", node, link, Source(
            "links", "ip -d -j link show", section.exit_code, clip(evidence, 500))))
    return facts


PROBE = Probe(
    name="links",
    command=COMMAND,
    preludes=(IP_BATCH,),
    parse=parse,
    kinds=("interface",),
    blocks="interfaces (VXLAN/IPIP devices, cni0, veths, MTU and state)",
    tools=("ip",),
)
