"""IPsec (xfrm) policies: `ip xfrm policy list`. The kernel looks a packet up in them after
the routing decision (sent and forwarded packets, direction out; forwarded ones also fwd) and
before delivering it (direction in), and a policy whose action is `block` drops what its
selector covers, with nothing in netfilter or the routing tables to show for it. flannel's
IPsec backend, strongSwan and Cilium's IPsec write policies; a hardening script or a
half-removed VPN can leave a block behind.

Only policies are read: `ip xfrm state` prints the security associations' keys.

ip prints the policies as text only (no `-j`), each a selector line (`src 0.0.0.0/0 dst
10.244.2.0/24 proto udp dport 8472 dev eth0 uid 0`), then lines indented by tabs: `dir out
action block priority 10 ptype main`, `mark 0x1/0xffffffff`, and for IPsec a template (`tmpl
src A dst B`, `proto esp reqid 1 mode tunnel`).

The words are read by a keyword table; a line in another form is reported as not understood
(`partial`), never guessed at. Per-socket policies (`socket in` or `socket out` where the
direction line says `dir`: an IKE daemon's bypass for its own socket) apply to one socket
only and are left out.

>>> out = ("src 0.0.0.0/0 dst 10.244.2.0/24 \\n\\tdir out action block priority 0 ptype main \\n"
...        "src 198.18.0.11/32 dst 198.18.0.13/32 \\n\\tdir out priority 0 ptype main \\n"
...        "\\ttmpl src 198.18.0.11 dst 198.18.0.13\\n\\t\\tproto esp reqid 0 mode tunnel\\n")
>>> facts = parse(Section("xfrm", "", 0, 0.0, out, ""), "node1")
>>> [(f.attrs["dir"], f.attrs["dst"], f.attrs["action"], f.attrs["ipsec"]) for f in facts]
[('out', '10.244.2.0/24', 'block', False), ('out', '198.18.0.13/32', 'allow', True)]
"""

from __future__ import annotations

import ipaddress
import re

from kubenetdiag.facts.model import Fact, Source, excerpt
from kubenetdiag.probes.base import Probe, Section, unread_lines
from kubenetdiag.probes.text import clip

COMMAND = "ip xfrm policy list"
WHAT = "IPsec (xfrm) policies that block or require IPsec for traffic"
MAX_POLICIES = 500

# Selector words of the first line, each followed by one value.
_SELECTOR = {"src", "dst", "proto", "sport", "dport", "type", "code", "dev", "uid", "spi",
             "key"}
# Words of the `dir` line: valued, and bare flags.
_DIR_VALUED = {"dir", "action", "index", "priority", "ptype", "share", "flag", "if_id"}
_PROTO_NAMES = {"1": "icmp", "6": "tcp", "17": "udp", "50": "esp", "51": "ah", "132": "sctp"}
_NUMBER = re.compile(r"^\d{1,10}$")
_NAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")


def _prefix(text: str) -> str | None:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        return None


def _selector(words: list[str]) -> dict | None:
    """The first line's selector; None when it is not one."""
    if len(words) < 4 or words[0] != "src" or words[2] != "dst":
        return None
    out: dict = {"src": _prefix(words[1]), "dst": _prefix(words[3]), "proto": None,
                 "sport": None, "dport": None, "dev": None}
    if out["src"] is None or out["dst"] is None:
        return None
    i = 4
    while i < len(words):
        word, value = words[i], words[i + 1] if i + 1 < len(words) else None
        if word not in _SELECTOR or value is None:
            return None
        if word == "proto":
            out["proto"] = _PROTO_NAMES.get(value, value.lower()) if _NAME.match(value) else None
        elif word in ("sport", "dport"):
            if not _NUMBER.match(value):
                return None
            out[word] = int(value)
        elif word == "dev" and _NAME.match(value):
            out["dev"] = value
        i += 2
    return out


def _direction(words: list[str], policy: dict) -> bool:
    """The `dir` line's words into `policy`; False when the line is in another form."""
    i = 0
    while i < len(words):
        word = words[i]
        if word not in _DIR_VALUED or i + 1 >= len(words):
            return False
        value = words[i + 1]
        if word == "dir":
            policy["dir"] = value
        elif word == "action":
            policy["action"] = value
        elif word == "priority":
            if not _NUMBER.match(value):
                return False
            policy["priority"] = int(value)
        elif word == "ptype":
            policy["ptype"] = value
        elif word == "flag":
            # `flag localok icmp`, `flag  (0x00000000)`: flags run to the end of the line
            break
        i += 2
    return policy.get("dir") in ("in", "out", "fwd")


def parse(section: Section, node: str) -> list[Fact]:
    facts: list[Fact] = []
    unread: list[str] = []
    policy: dict | None = None
    raw: list[str] = []

    def done() -> None:
        if policy is None or policy.get("dir") == "socket":
            return
        if policy.get("dir") is None:
            unread.append(" ".join(raw))  # a selector with no direction line after it
            return
        if policy.get("action") not in ("allow", "block"):
            unread.append(" ".join(raw))  # an action this parser does not know
            return
        if len(facts) >= MAX_POLICIES:
            return
        text = clip(" ".join(raw), 300)
        facts.append(Fact("xfrm_policy", node, {
            "dir": policy["dir"], "src": policy["src"], "dst": policy["dst"],
            "proto": policy["proto"], "sport": policy["sport"], "dport": policy["dport"],
            "dev": policy["dev"], "action": policy["action"],
            "priority": policy.get("priority", 0), "ipsec": policy["ipsec"],
            "mark": policy["mark"], "main": policy.get("ptype", "main") == "main",
            "text": text,
        }, Source("xfrm", COMMAND, section.exit_code, excerpt("\n".join(raw), 1000))))

    for line in section.stdout.splitlines():
        if not line.strip():
            continue
        words = line.split()
        if not line[0].isspace():
            done()
            selector = _selector(words)
            policy = None if selector is None else {
                **selector, "action": "allow", "ipsec": False, "mark": None}
            raw = [line.strip()]
            if policy is None:
                unread.append(line)
            continue
        if policy is None:
            unread.append(line)  # the rest of a policy whose first line was not read
            continue
        raw.append(line.strip())
        if words[0] == "socket":
            policy["dir"] = "socket"  # one socket's own policy (`socket in priority 0 ...`)
        elif words[0] == "dir":
            if not _direction(words, policy):
                unread.append(line)
                policy = None
        elif words[0] == "tmpl":
            policy["ipsec"] = True  # the packet must go through an IPsec SA
        elif words[0] == "mark" and len(words) > 1:
            policy["mark"] = clip(words[1], 40)
        elif words[0] in ("proto", "level", "enc-mask", "lifetime", "limit:", "expire",
                          "add", "security", "if_id", "0(bytes),"):
            pass  # the template's and the lifetime's details: not the walk's business
        else:
            unread.append(line)
    done()
    return facts + unread_lines(section, node, unread, WHAT)


PROBE = Probe(
    name="xfrm",
    command=COMMAND,
    parse=parse,
    kinds=("xfrm_policy",),
    blocks=WHAT,
    tools=("ip",),
)
