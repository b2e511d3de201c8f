"""The cluster's DNS name (kubernetes.default.svc.<domain>) asked of each CoreDNS pod the plan
picked and of the DNS Service, with dig, nslookup (bind or busybox) or host, whichever the node
has; and of each CoreDNS pod, a name under .invalid that only its upstream resolver can answer
(with NXDOMAIN), where the Corefile forwards anywhere. Where the node has no DNS tool, the
runner asks over an SSH channel from the node and records the channel's own one-line answer
under the same section name.

>>> from kubenetdiag.probes.active.common import example, section
>>> ctx = example()
>>> out = (";; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 51261\\n"
...        ";; ANSWER SECTION:\\n"
...        "kubernetes.default.svc.cluster.local. 5 IN A\\t10.96.0.1\\n\\n"
...        ";; Query time: 3 msec\\n")
>>> [fact] = DNS.parse(section("active.dns.0", out), ctx.plan["dns"][0], ctx)
>>> fact.kind, fact.attrs["server"], fact.attrs["ok"], fact.attrs["answer"], fact.attrs["rtt_ms"]
('dns_check', '10.96.0.10', True, '10.96.0.1', 3.0)
>>> line = "dns: error=timeout"  # the SSH channel's answer
>>> [fact] = DNS.parse(section("active.dns.0", line), ctx.plan["dns"][0], ctx)
>>> fact.attrs["ok"], fact.attrs["detail"]
(False, 'timeout')
"""

from __future__ import annotations

import re
from typing import Any

import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from kubenetdiag.facts.model import Fact
from kubenetdiag.probes.active.common import IPV4, no_tool, source
from kubenetdiag.probes.active.plan import NodePlan
from kubenetdiag.probes.base import ActiveCheck, ChannelRequest, CheckContext, Section, quoted


def parse_dns(text: str, rc: int | None) -> dict[str, Any]:
    """{ok, answer, detail, rtt_ms} from dig, nslookup (bind or busybox), host, or the
    channel's own `dns:` line."""
    if text.startswith(UDP_PREFIX):
        return _parse_udp(text)
    if text.startswith("dns:"):
        fields = dict(re.findall(r"(\w+)=(\S*)", text))
        answer = fields.get("answers") or None
        return {"ok": bool(answer), "answer": answer,
                "detail": None if answer else (fields.get("error") or fields.get("rcode")
                                               or "empty"),
                "rtt_ms": float(fields["rtt_ms"]) if fields.get("rtt_ms") else None}
    answers: list[str] = []
    detail = None
    rtt = None
    if ";; ->>HEADER<<-" in text or "ANSWER SECTION" in text or ";; Query time" in text:
        dig_status = re.search(r"status: (\w+)", text)
        in_answer = False
        for line in text.splitlines():
            if line.startswith(";; ANSWER SECTION"):
                in_answer = True
                continue
            if in_answer:
                if not line.strip():
                    in_answer = False
                    continue
                record = re.search(rf"\sIN\s+A\s+({IPV4})\s*$", line)
                if record:
                    answers.append(record.group(1))
        query_time = re.search(r";; Query time: (\d+) msec", text)
        rtt = float(query_time.group(1)) if query_time else None
        if not answers:
            detail = (dig_status.group(1) if dig_status and dig_status.group(1) != "NOERROR"
                      else "no answer")
    else:
        # nslookup: addresses after the "Name:" line (the first Address is the server's)
        after_name = text.split("Name:", 1)[1] if "Name:" in text else ""
        answers = re.findall(rf"Address(?: \d+)?:\s*({IPV4})(?!#)\b", after_name)
        # host: "x has address 1.2.3.4"
        answers += re.findall(rf"has address ({IPV4})", text)
        failure = re.search(r"NXDOMAIN|SERVFAIL|REFUSED", text)
        if not answers:
            detail = failure.group(0) if failure else None
    if not answers and detail in (None, "no answer"):
        if re.search(r"timed out|no servers could be reached|connection refused", text, re.I):
            detail = "refused" if "refused" in text.lower() else "timeout"
        elif detail is None:
            detail = "no answer" if rc == 0 else f"failed (exit {rc})"
    return {"ok": bool(answers), "answer": ",".join(answers) or None, "detail": detail,
            "rtt_ms": rtt}


def _targets(plan: NodePlan) -> list[tuple[str, Any]]:
    return [(str(i), server) for i, server in enumerate(plan["dns"])]


UDP_PREFIX = "dns-udp:"
_QUERY_ID = 0x4B44


def udp_script(name: str) -> str | None:
    """The bash script that asks `name` (type A) of the server $0, port $1, over UDP and prints
    `dns-udp: <reply in hex>`; None for a name DNS cannot carry. Every write to a UDP socket is
    a datagram of its own and printf may write in pieces (at a newline byte), so dd gathers
    the query and writes it once."""
    try:
        wire = dns.message.make_query(name, "A", id=_QUERY_ID).to_wire()
    except (dns.exception.DNSException, ValueError):
        return None
    escaped = "".join(f"\\x{b:02x}" for b in wire)  # printf's escapes: nothing for a shell
    return (f'exec 3<>"/dev/udp/$0/$1" || exit 127; printf "{escaped}" | '
            f"dd ibs=1 obs=4096 count={len(wire)} >&3 2>/dev/null; "
            f'printf "{UDP_PREFIX} %s\\n" "$({{ timeout 2 dd bs=4096 count=1 <&3 | '
            'od -An -v -tx1 | tr -d \" \\n\"; } 2>&1 | tr \"\\n\" \" \")"')


def _udp_query(server: str, name: str) -> str:
    """A node with no DNS tool still asks over UDP, as its pods do, through bash's /dev/udp.
    Only where bash, od or timeout is missing does the runner fall back to its SSH channel,
    which speaks TCP only, so a fault that stops UDP alone would pass there."""
    script = udp_script(name)
    if script is None:
        return ""
    return ("elif __has bash && __has timeout && command -v od >/dev/null 2>&1; then "
            f"bash -c {quoted(script)} {quoted(server)} 53; ")


def _ask(server: str, name: str) -> str:
    udp = _udp_query(server, name)
    at, name = quoted(server), quoted(name)
    return (f"if __has dig; then dig +time=2 +tries=1 @{at} {name} A; "
            f"elif __has nslookup; then $__to nslookup -type=a {name} {at}; "
            f"elif __has host; then host -W 2 -t A {name} {at}; "
            f"{udp}else echo 'kubenetdiag: no dns tool'; exit 127; fi")


def _parse_udp(text: str) -> dict[str, Any]:
    """The /dev/udp helper's line: `dns-udp: <dd's complaints> <reply in hex>`.

    >>> q = dns.message.make_query("kubernetes.default.svc.cluster.local", "A", id=_QUERY_ID)
    >>> r = dns.message.make_response(q)
    >>> r.answer.append(dns.rrset.from_text(q.question[0].name, 5, "IN", "A", "10.96.0.1"))
    >>> _parse_udp("dns-udp: 0+1 records in " + r.to_wire().hex())["answer"]
    '10.96.0.1'
    >>> _parse_udp("dns-udp: dd: error reading 'standard input': Connection refused")["detail"]
    'refused'
    >>> _parse_udp("dns-udp: ")["detail"]
    'timeout'
    """
    words = text[len(UDP_PREFIX):].split()
    wire = next((w for w in reversed(words) if len(w) >= 24 and len(w) % 2 == 0
                 and all(c in "0123456789abcdef" for c in w)), None)
    if wire is None:
        return {"ok": False, "answer": None, "rtt_ms": None,
                "detail": "refused" if "refused" in text.lower() else "timeout"}
    try:
        msg = dns.message.from_wire(bytes.fromhex(wire))
    except (dns.exception.DNSException, ValueError):
        return {"ok": False, "answer": None, "detail": "malformed reply", "rtt_ms": None}
    answers = [r.address for rrset in msg.answer if rrset.rdtype == dns.rdatatype.A
               for r in rrset]
    rcode = dns.rcode.to_text(msg.rcode())
    return {"ok": bool(answers), "answer": ",".join(answers) or None, "rtt_ms": None,
            "detail": None if answers else (rcode if rcode != "NOERROR" else "no answer")}


def _over_channel(address: str, name: str) -> ChannelRequest:
    return ChannelRequest(address, 53, "dns", name, f"DNS over TCP to {address}:53 for {name}")


def _command(plan: NodePlan, server: Any) -> str:
    return _ask(server["server"], plan["dns_name"])


def _channel(plan: NodePlan, server: Any) -> ChannelRequest:
    return _over_channel(server["server"], plan["dns_name"])


def parse(section: Section, server: Any, ctx: CheckContext) -> list[Fact]:
    if no_tool(section):
        return []  # the runner asked through the SSH channel instead
    result = parse_dns(section.stdout, section.exit_code)
    return [Fact("dns_check", ctx.node, {
        "server": server["server"], "server_kind": server["kind"],
        "name": ctx.plan["dns_name"], "ok": result["ok"], "answer": result["answer"],
        "detail": result["detail"], "rtt_ms": result["rtt_ms"], "vantage": None},
        source(section))]


DNS = ActiveCheck(
    name="dns",
    kinds=("dns_check",),
    targets=_targets,
    resolve=lambda plan, suffix: plan["dns"][int(suffix)],
    command=_command,
    channel=_channel,
    parse=parse,
    blocks=lambda server: f"DNS answers from {server['server']}",
    order=300,
)
# ---- the way out: CoreDNS and its upstream resolver

def _outside_targets(plan: NodePlan) -> list[tuple[str, Any]]:
    if not plan.get("dns_outside_name"):
        return []
    return [(str(i), server) for i, server in enumerate(plan["dns"]) if server["kind"] == "pod"]


def _outside_channel(plan: NodePlan, server: Any) -> ChannelRequest:
    return _over_channel(server["server"], str(plan.get("dns_outside_name")))


def parse_outside(section: Section, server: Any, ctx: CheckContext) -> list[Fact]:
    """NXDOMAIN is the answer that proves the way out: only the upstream can give it for a
    name of no zone CoreDNS serves. A timeout or SERVFAIL says CoreDNS got nothing back."""
    if no_tool(section):
        return []
    result = parse_dns(section.stdout, section.exit_code)
    return [Fact("dns_outside_check", ctx.node, {
        "server": server["server"], "pod": server.get("pod"),
        "name": str(ctx.plan.get("dns_outside_name") or ""),
        "ok": result["ok"] or result["detail"] == "NXDOMAIN",
        "detail": result["detail"], "rtt_ms": result["rtt_ms"]}, source(section))]


DNS_OUTSIDE = ActiveCheck(
    name="dns.outside",
    kinds=("dns_outside_check",),
    targets=_outside_targets,
    resolve=lambda plan, suffix: plan["dns"][int(suffix)],
    command=lambda plan, server: _ask(server["server"], str(plan.get("dns_outside_name"))),
    channel=_outside_channel,
    parse=parse_outside,
    blocks=lambda server: f"answers from outside the cluster through {server['server']}",
    order=305,
)
CHECKS = (DNS, DNS_OUTSIDE)
