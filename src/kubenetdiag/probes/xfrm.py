"""IPsec (xfrm) policies: `ip xfrm policy list`. The kernel looks a packet up in them after
the routing decision (sent and forwarded packets, direction out; forwarded ones also fwd) and
before delivering it (direction in), and a policy whose action is `block` drops what its
selector covers, with nothing in netfilter or the routing tables to show for it. flannel's
IPsec backend, strongSwan and Cilium's IPsec write policies; a hardening script or a
half-removed VPN can leave a block behind.

Where a policy has a template, the security associations are listed too, and each policy
says whether every template it requires has one (`sa`): without one the kernel drops what
the policy covers (XfrmOutNoStates), as it does when an IKE daemon or a CNI agent that keys
the tunnels is down or lost its keys. `ip xfrm state` prints the keys; `nokeys` (iproute2
5.1+) hides them, and an older ip ignores the word silently, so the node's shell keeps only
the lines that name an SA (`src A dst B`, `proto esp spi S reqid R mode M`, `if_id`) and the
keys never leave the node, whatever ip prints.

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

# The policies; then, only where one has a template, how many netlink sockets listen for the
# kernel's requests for an SA (NETLINK_XFRM, protocol 6, subscribed to its ACQUIRE group, bit
# 0 of the groups column: an IKE daemon such as charon or pluto) and the SAs under a
# `##knd:xfrm-state` line, reduced by the shell to the words that name them: no key, no
# process more. Its variables are its own: the script's shell shares every name (__s is the
# runner's clock).
COMMAND = (
    "__xp=$(ip xfrm policy list) || return $?; [ -z \"$__xp\" ] || printf \"%s\\n\" \"$__xp\"; "
    "case $__xp in *tmpl*) ;; *) return 0;; esac; "
    "if [ -r /proc/net/netlink ]; then __xk=0; "
    "while read -r __x1 __x2 __x3 __x4 __x5; do [ \"$__x2\" = 6 ] || continue; "
    "case $__x4 in *[13579bdfBDF]) __xk=$((__xk+1));; esac; done < /proc/net/netlink; "
    "else __xk=unread; fi; echo \"##knd:xfrm-acquire-listeners $__xk\"; "
    "__xs=$(ip xfrm state list nokeys) || { echo \"##knd:xfrm-state failed\"; return 0; }; "
    "__xb=\"##knd:xfrm-state$__nl\"; __xn=0; set -f; IFS=$__nl; "
    "for __xl in $__xs; do IFS=$__ifs; set -- $__xl; IFS=$__nl; case $1 in "
    "src|proto|if_id) __xb=\"$__xb$__xl$__nl\"; __xn=$((__xn+1));; esac; "
    "[ $__xn -lt 20000 ] || break; done; IFS=$__ifs; set +f; printf %s \"$__xb\"; "
    "__xp=; __xs=; __xb=; __xk="
)
STATE_HEAD = "##knd:xfrm-state"
LISTENERS_HEAD = "##knd:xfrm-acquire-listeners"
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


def _address(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _sa_words(words: list[str]) -> dict | None:
    """`proto esp [spi 0x...] reqid R mode M` (a template's second line, an SA's first
    indented one) into its fields; None when it is in another form."""
    out: dict = {"spi": 0}
    i = 0
    while i + 1 < len(words):
        word, value = words[i], words[i + 1]
        if word == "proto":
            out["proto"] = value
        elif word == "spi":
            try:
                out["spi"] = int(value, 16)
            except ValueError:
                return None
        elif word == "reqid":
            if not _NUMBER.match(value):
                return None
            out["reqid"] = int(value)
        elif word == "mode":
            out["mode"] = value
        else:
            return None
        i += 2
    if i != len(words) or not {"proto", "reqid", "mode"} <= set(out):
        return None
    return out


def read_states(lines: list[str], unread: list[str]) -> list[dict]:
    """The SAs the node's shell kept of `ip xfrm state list`: address line, then the proto
    line and, for an SA bound to an XFRM interface, `if_id`. Larval entries (SPI 0: the
    kernel asked a key manager for the SA and none came yet) are kept, with spi 0."""
    states: list[dict] = []
    for line in lines:
        words = line.split()
        if not words:
            continue
        if not line[0].isspace() and len(words) == 4 and words[0] == "src" and words[2] == "dst":
            src, dst = _address(words[1]), _address(words[3])
            if src is None or dst is None:
                unread.append(line)
                continue
            states.append({"src": src, "dst": dst, "if_id": 0})
        elif states and words[0] == "proto" and "proto" not in states[-1]:
            fields = _sa_words(words)
            if fields is None:
                unread.append(line)
            else:
                states[-1].update(fields)
        elif states and words[0] == "if_id" and len(words) == 2:
            try:
                states[-1]["if_id"] = int(words[1], 16)
            except ValueError:
                unread.append(line)
        else:
            unread.append(line)
    return states


def _serves(tmpl: dict, state: dict) -> bool:
    """Whether the SA can carry what the template asks for, as the kernel looks one up for
    an outgoing packet: same protocol, mode and reqid, the tunnel's end points (a
    transport template's, left empty, are the packet's own), its SPI when it names one.
    Lenient where the listing leaves the kernel's test undecided (the packet's mark)."""
    if (state.get("proto"), state.get("mode")) != (tmpl["proto"], tmpl["mode"]) \
            or state.get("if_id") or (tmpl["reqid"] and state.get("reqid") != tmpl["reqid"]):
        return False
    if tmpl["spi"] and state.get("spi") != tmpl["spi"]:
        return False
    return all(tmpl[key] in (None, "0.0.0.0", "::") or tmpl[key] == state[key]
               for key in ("src", "dst"))


def asked_for(tmpl: dict, larval: dict) -> bool:
    """Whether a larval entry (the kernel's request to a key manager, SPI 0) is for the
    template: same protocol and mode, and its end points, or, where the template names a
    reqid, the same reqid and the end points either way round (a key manager negotiates a
    reqid's SAs both ways at once, so the request going out stands for the way in too)."""
    if (larval.get("proto"), larval.get("mode")) != (tmpl["proto"], tmpl["mode"]):
        return False
    if tmpl["reqid"] and larval.get("reqid") != tmpl["reqid"]:
        return False
    ends = (larval.get("src"), larval.get("dst"))
    return any(all(tmpl[key] in (None, "0.0.0.0", "::") or tmpl[key] == value
                   for key, value in zip(("src", "dst"), pair, strict=True))
               for pair in ((ends, ends[::-1]) if tmpl["reqid"] else (ends,)))


def _template_text(t: dict) -> str:
    return (f"src {t['src']} dst {t['dst']} proto {t['proto']}"
            + (f" spi {t['spi']:#010x}" if t["spi"] else "")
            + f" reqid {t['reqid']} mode {t['mode']}")


def _sa_status(templates: list[dict], states: list[dict] | None, listeners: int | None
               ) -> tuple[str | None, str | None]:
    """(sa, missing): whether each required template has an SA, and the first that has none.

    An SA that is missing is not always a fault: where a key manager listens for the kernel's
    ACQUIRE, the first packet a policy covers makes the kernel ask it for one (an on-demand
    tunnel, strongSwan's `start_action = trap`, Libreswan's `auto=route`), and an idle tunnel
    has none until then: `on_demand`. The kernel's larval entry (SPI 0) for the template is a
    request made and not answered yet: `acquire`, dropping what the policy covers meanwhile.
    Without a listener nothing can ever install one: `missing`."""
    required = [t for t in templates if not t["optional"]]
    if not required:
        return None, None
    if states is None:
        return "unread", None
    for t in required:
        if any(_serves(t, x) for x in states if x.get("spi")):
            continue
        if any(asked_for(t, x) for x in states if "proto" in x and not x.get("spi")):
            return "acquire", _template_text(t)
        return ("on_demand" if listeners else "missing"), _template_text(t)
    return "present", None


def parse(section: Section, node: str) -> list[Fact]:
    policies: list[tuple[dict, list[str]]] = []
    unread: list[str] = []
    policy: dict | None = None
    raw: list[str] = []
    lines = section.stdout.splitlines()
    states: list[dict] | None = None
    listeners: int | None = None  # unknown: older bundles, /proc/net/netlink unreadable
    for n, line in enumerate(lines):
        if line.startswith(LISTENERS_HEAD):
            count = line[len(LISTENERS_HEAD):].strip()
            listeners = int(count) if _NUMBER.match(count) else None
            lines[n] = ""
            continue
        if line.startswith(STATE_HEAD):
            if line.strip() == STATE_HEAD:
                states = read_states(lines[n + 1:], unread)
            lines = lines[:n]  # `failed`: the SAs are not known
            break

    def done() -> None:
        if policy is None or policy.get("dir") == "socket":
            return
        if policy.get("dir") is None:
            unread.append(" ".join(raw))  # a selector with no direction line after it
            return
        if policy.get("action") not in ("allow", "block"):
            unread.append(" ".join(raw))  # an action this parser does not know
            return
        if any(t is None or "proto" not in t for t in policy["templates"]):
            # a template whose second line was not read, or never came (the listing ended)
            unread.append(" ".join(raw))
            return
        policies.append((policy, raw))

    for line in lines:
        if not line.strip():
            continue
        words = line.split()
        if not line[0].isspace():
            done()
            selector = _selector(words)
            policy = None if selector is None else {
                **selector, "action": "allow", "mark": None, "if_id": None, "templates": []}
            raw = [line.strip()]
            if policy is None:
                unread.append(line)
            continue
        if policy is None:
            unread.append(line)  # the rest of a policy whose first line was not read
            continue
        raw.append(line.strip())
        templates = policy["templates"]
        last = templates[-1] if templates else None  # None too once its proto line was not read
        if words[0] == "socket":
            policy["dir"] = "socket"  # one socket's own policy (`socket in priority 0 ...`)
        elif words[0] == "dir":
            if not _direction(words, policy):
                unread.append(line)
                policy = None
        elif words[0] == "tmpl":
            # the packet must go through an IPsec SA: `tmpl src A dst B`, its proto line next
            ends = (_address(words[2]), _address(words[4])) if len(words) == 5 \
                and words[1] == "src" and words[3] == "dst" else (None, None)
            if None in ends:
                unread.append(line)
                policy = None
                continue
            templates.append({"src": ends[0], "dst": ends[1], "optional": False})
        elif words[0] == "proto" and last is not None and "proto" not in last:
            fields = _sa_words(words)
            if fields is None:
                templates[-1] = None  # reported with the policy's text by done()
            else:
                last.update(fields)
        elif words[0] == "level" and templates and len(words) > 1:
            if last is not None:
                last["optional"] = words[1] != "required"  # `use`: an SA if there is one
        elif words[0] == "mark" and len(words) > 1:
            policy["mark"] = clip(words[1], 40)
        elif words[0] == "if_id" and len(words) == 2:
            try:
                policy["if_id"] = int(words[1], 16)
            except ValueError:
                unread.append(line)
        elif words[0] in ("proto", "enc-mask", "lifetime", "limit:", "expire", "add",
                          "security", "0(bytes),"):
            pass  # the template's masks and the lifetime's details: not the walk's business
        else:
            unread.append(line)
    done()
    facts = [_fact(section, node, policy, raw, states, listeners)
             for policy, raw in policies[:MAX_POLICIES]]
    return facts + unread_lines(section, node, unread, WHAT)


def _fact(section: Section, node: str, policy: dict, raw: list[str], states: list[dict] | None,
          listeners: int | None) -> Fact:
    sa, missing = _sa_status(policy["templates"], states, listeners)
    return Fact("xfrm_policy", node, {
        "dir": policy["dir"], "src": policy["src"], "dst": policy["dst"],
        "proto": policy["proto"], "sport": policy["sport"], "dport": policy["dport"],
        "dev": policy["dev"], "action": policy["action"],
        "priority": policy.get("priority", 0), "ipsec": bool(policy["templates"]),
        "sa": sa, "missing": missing,
        "mark": policy["mark"], "if_id": policy["if_id"],
        "main": policy.get("ptype", "main") == "main",
        "text": clip(" ".join(raw), 300),
    }, Source("xfrm", COMMAND, section.exit_code, excerpt("\n".join(raw), 1000)))


PROBE = Probe(
    name="xfrm",
    command=COMMAND,
    parse=parse,
    kinds=("xfrm_policy",),
    blocks=WHAT,
    tools=("ip",),
)
