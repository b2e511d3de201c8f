"""Raw active output -> reach, mtu_check, vxlan_flow, dns_check, http_check, tcp_check facts.

Pure functions over text, so every output format is tested from fixtures: ping from iputils
and busybox, dig / nslookup / host, curl -w and wget -S, tcpdump lines, and the SSH-channel
checks' own one-line format. A check that could not run (tool missing) becomes a probe_status
fact, never a failed or passed check.
"""

from __future__ import annotations

import re
from typing import Any

from kubenetdiag.facts.model import Fact, Source, excerpt

RS = "\x1e"  # the script's stand-in for newlines inside one check's output line

# ---------------------------------------------------------------- ping

_PING_STATS = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")
_PING_RTT = re.compile(r"(?:rtt|round-trip) min/avg/max(?:/mdev)? = [\d.]+/([\d.]+)/")
_PING_TOO_LONG = re.compile(r"message too long(?:, mtu[= ](\d+))?", re.I)
_PING_FRAG = re.compile(r"Frag needed and DF set \(mtu = (\d+)\)", re.I)


def parse_ping(text: str, rc: int | None) -> dict[str, Any]:
    """{ok, rtt_ms, detail, mtu} from ping's output (iputils or busybox)."""
    stats = _PING_STATS.search(text)
    received = int(stats.group(2)) if stats else 0
    rtt = _PING_RTT.search(text)
    too_long = _PING_TOO_LONG.search(text)
    frag = _PING_FRAG.search(text)
    detail = None
    mtu = None
    if too_long:
        mtu = int(too_long.group(1)) if too_long.group(1) else None
        detail = "message too long" + (f", mtu={mtu}" if mtu else "")
    elif frag:
        mtu = int(frag.group(1))
        detail = f"frag needed, mtu={mtu}"
    elif "Destination Host Unreachable" in text or "Destination Net Unreachable" in text:
        detail = "unreachable"
    elif "Network is unreachable" in text:
        detail = "network unreachable"
    elif "Operation not permitted" in text:
        detail = "not permitted"
    elif received == 0:
        detail = "timeout"
    return {
        "ok": received > 0,
        "rtt_ms": float(rtt.group(1)) if rtt and received else None,
        "detail": detail,
        "mtu": mtu,
    }


_UNSUPPORTED = re.compile(r"command not found|not found$|invalid option|unrecognized option|"
                          r"illegal option|usage: ping|BusyBox v", re.I | re.M)
_UNSUPPORTED_WORDS = ("not found", "option", "usage", "busybox")


def unsupported(text: str) -> bool:
    """The command or an option does not exist here (busybox ping has no -M)."""
    # a case-insensitive alternation over every probe's output was a sixth of parsing; plain
    # substring tests rule out almost every text first
    low = text.lower()
    return any(w in low for w in _UNSUPPORTED_WORDS) and bool(_UNSUPPORTED.search(text))


# ---------------------------------------------------------------- DNS

_IPV4 = r"\d{1,3}(?:\.\d{1,3}){3}"


def parse_dns(text: str, rc: int | None) -> dict[str, Any]:
    """{ok, answer, detail, rtt_ms} from dig, nslookup (bind or busybox), host, or the
    channel's own `dns:` line."""
    if text.startswith("dns:"):
        kv = dict(re.findall(r"(\w+)=(\S*)", text))
        answer = kv.get("answers") or None
        return {"ok": bool(answer), "answer": answer,
                "detail": None if answer else (kv.get("error") or kv.get("rcode") or "empty"),
                "rtt_ms": float(kv["rtt_ms"]) if kv.get("rtt_ms") else None}
    answers: list[str] = []
    detail = None
    rtt = None
    if ";; ->>HEADER<<-" in text or "ANSWER SECTION" in text or ";; Query time" in text:
        status = re.search(r"status: (\w+)", text)
        in_answer = False
        for line in text.splitlines():
            if line.startswith(";; ANSWER SECTION"):
                in_answer = True
                continue
            if in_answer:
                if not line.strip():
                    in_answer = False
                    continue
                m = re.search(rf"\sIN\s+A\s+({_IPV4})\s*$", line)
                if m:
                    answers.append(m.group(1))
        qt = re.search(r";; Query time: (\d+) msec", text)
        rtt = float(qt.group(1)) if qt else None
        if not answers:
            detail = status.group(1) if status and status.group(1) != "NOERROR" else "no answer"
    else:
        # nslookup: addresses after the "Name:" line (the first Address is the server's)
        after_name = text.split("Name:", 1)[1] if "Name:" in text else ""
        answers = re.findall(rf"Address(?: \d+)?:\s*({_IPV4})(?!#)\b", after_name)
        # host: "x has address 1.2.3.4"
        answers += re.findall(rf"has address ({_IPV4})", text)
        m = re.search(r"NXDOMAIN|SERVFAIL|REFUSED", text)
        if not answers:
            detail = m.group(0) if m else None
    if not answers and detail in (None, "no answer"):
        if re.search(r"timed out|no servers could be reached|connection refused", text, re.I):
            detail = "refused" if "refused" in text.lower() else "timeout"
        elif detail is None:
            detail = "no answer" if rc == 0 else f"failed (exit {rc})"
    return {"ok": bool(answers), "answer": ",".join(answers) or None, "detail": detail,
            "rtt_ms": rtt}


# ---------------------------------------------------------------- HTTP

_CURL_EXIT = {6: "unresolved", 7: "refused", 28: "timeout", 52: "empty reply", 56: "reset"}


def parse_http(text: str, rc: int | None) -> dict[str, Any]:
    """{status, ok, detail} from curl -w 'http_code=...', wget -S, or the channel's line."""
    m = re.search(r"http_code=(\d{3})", text)
    if m:
        code = int(m.group(1))
        status = code or None  # curl's 000: no response at all
        detail = None if status else _CURL_EXIT.get(rc or 0, f"curl exit {rc}")
    else:
        codes = re.findall(r"HTTP/\d(?:\.\d)? (\d{3})", text)
        status = int(codes[-1]) if codes else None
        low = text.lower()
        detail = None
        if status is None:
            detail = ("refused" if "refused" in low else "timeout" if "timed out" in low or
                      rc == 4 else text.strip().splitlines()[-1][:200] if text.strip()
                      else f"exit {rc}")
    return {"status": status, "ok": status is not None and 200 <= status < 300,
            "detail": detail}


# ---------------------------------------------------------------- TCP


def parse_tcp(text: str, rc: int | None) -> dict[str, Any]:
    """{ok, address, detail} from the script's TCP helper (nc -z or bash /dev/tcp)."""
    resolved = re.search(rf"resolved: \S+ ({_IPV4})", text)
    address = resolved.group(1) if resolved else None
    low = text.lower()
    if "unresolved:" in low or "name or service not known" in low:
        return {"ok": False, "address": None, "detail": "unresolved"}
    if rc == 0:
        return {"ok": True, "address": address, "detail": None}
    if "refused" in low:
        detail = "refused"
    elif rc == 124 or "timed out" in low:
        detail = "timeout"
    elif "no route" in low or "unreachable" in low:
        detail = "unreachable"
    elif "reset" in low:
        detail = "reset"
    else:
        detail = f"failed (exit {rc})"
    return {"ok": False, "address": address, "detail": detail}


# ---------------------------------------------------------------- tcpdump

_TCPDUMP = re.compile(rf"\bIP ({_IPV4})\.\d+ > ({_IPV4})\.(\d+):")


def count_vxlan(text: str, me: str | None, peers: dict[str, str], port: int
                ) -> dict[str, tuple[int, int]]:
    """peer name -> (sent to it, received from it) from `tcpdump -nn` lines."""
    counts = {name: [0, 0] for name in peers.values()}
    for m in _TCPDUMP.finditer(text):
        src, dst = m.group(1), m.group(2)
        if dst in peers and (me is None or src == me):
            counts[peers[dst]][0] += 1
        elif src in peers and (me is None or dst == me):
            counts[peers[src]][1] += 1
    return {k: (v[0], v[1]) for k, v in counts.items()}


# ---------------------------------------------------------------- sections -> facts


def _status(node: str, probe: str, status: str, reason: str, blocks: str, section: dict
            ) -> Fact:
    return Fact("probe_status", node,
                {"probe": probe, "status": status, "reason": reason[:300], "blocks": blocks},
                _source(section))


def _source(section: dict) -> Source:
    return Source(section["probe"], section.get("command", ""), section.get("exit_code"),
                  excerpt(section.get("stdout", ""), 1000))


def _missing(section: dict) -> bool:
    return section.get("exit_code") == 127


def active_facts(node: str, active: dict) -> list[Fact]:
    """Facts from one node record's `active` part (see docs/contracts.md)."""
    if active.get("skipped"):
        return []  # said once for the whole run, by skipped_fact()
    plan = active.get("plan") or {}
    if active.get("error") and not active.get("sections"):
        return [Fact("probe_status", node, {
            "probe": "active", "status": "failed", "reason": str(active["error"])[:300],
            "blocks": "active probes"}, Source("active", "", None, str(active["error"])))]
    peers = plan.get("peers", [])
    facts: list[Fact] = []
    for section in active.get("sections", []):
        try:
            facts.extend(_section_facts(node, plan, peers, section, active.get("podns")))
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            facts.append(_status(node, section.get("probe", "active"), "failed",
                                 f"could not parse the output: {exc!r}", "active probe",
                                 section))
    return facts


def skipped_fact(reason: str) -> Fact:
    """One 'not checked' entry for a run whose active phase was not asked for."""
    return Fact("probe_status", "cluster", {
        "probe": "active", "status": "not_queried", "reason": reason,
        "blocks": "active probes: pod-network matrix, MTU, VXLAN direction, CoreDNS checks, "
                  "declared endpoints; run diagnose without --no-active (or collect --active)",
    }, Source("active", "", None, reason))


def _section_facts(node: str, plan: dict, peers: list, section: dict, podns: str | None
                   ) -> list[Fact]:
    probe = section["probe"]
    parts = probe.split(".")[1:]  # drop the "active." prefix
    text = section.get("stdout", "")
    rc = section.get("exit_code")
    src = _source(section)
    vantage = None
    if parts and parts[0] == "pod":
        vantage, parts = podns or "pod", parts[1:]
    kind = parts[0]
    if kind == "ping":
        layer, peer = parts[1], peers[int(parts[2])]
        if _missing(section) or unsupported(text):
            return [_status(node, probe, "missing_tool", text.strip()[:200] or "ping missing",
                            f"{layer} reachability of {peer['name']}", section)]
        r = parse_ping(text, rc)
        return [Fact("reach", node, {"src": node, "dst": peer["name"], "layer": layer,
                                     "ok": r["ok"], "rtt_ms": r["rtt_ms"],
                                     "detail": r["detail"], "vantage": vantage}, src)]
    if kind == "mtu":
        mtu, peer = plan["mtu"][int(parts[1])], peers[int(parts[2])]
        if _missing(section) or unsupported(text):
            return [_status(node, probe, "missing_tool",
                            text.strip()[:200] or "ping -M do unsupported",
                            f"MTU {mtu['size'] + 28} towards {peer['name']}", section)]
        r = parse_ping(text, rc)
        return [Fact("mtu_check", node, {"dst": peer["name"], "layer": mtu["layer"],
                                         "size": int(mtu["size"]),
                                         "mtu": int(mtu["size"]) + 28, "ok": r["ok"],
                                         "detail": r["detail"]}, src)]
    if kind == "dns":
        d = plan["dns"][int(parts[1])]
        if _missing(section):
            return []  # the runner asked through the SSH channel instead (a dnstcp section)
        r = parse_dns(text, rc)
        return [Fact("dns_check", node, {"server": d["server"], "server_kind": d["kind"],
                                         "name": plan["dns_name"], "ok": r["ok"],
                                         "answer": r["answer"], "detail": r["detail"],
                                         "rtt_ms": r["rtt_ms"], "vantage": vantage}, src)]
    if kind == "http":
        h = plan["http"][int(parts[1])]
        if _missing(section):
            return []  # asked through the SSH channel instead
        r = parse_http(text, rc)
        return [Fact("http_check", node, {"url": h["url"], "target": h["target"],
                                          "target_pod": h.get("pod"), "status": r["status"],
                                          "ok": r["ok"], "detail": r["detail"]}, src)]
    if kind == "tcp":
        e = plan["endpoints"][int(parts[1])]
        if _missing(section):
            return [_status(node, probe, "missing_tool", text.strip()[:200] or "no nc/bash",
                            f"TCP connect to {e['target']}", section)]
        r = parse_tcp(text, rc)
        address = r["address"] or (e["host"] if e["by"] == "ip" else None)
        return [Fact("tcp_check", node, {"target": e["target"], "address": address,
                                         "by": e["by"], "ok": r["ok"], "detail": r["detail"],
                                         "rtt_ms": None, "vantage": vantage}, src)]
    if kind == "capture":
        return _capture_facts(node, plan, peers, section)
    if kind == "unavailable":
        return [_status(node, probe, "missing_tool", text.strip()[:300], parts[1]
                        if len(parts) > 1 else "active check", section)]
    return []


def _capture_facts(node: str, plan: dict, peers: list, section: dict) -> list[Fact]:
    vx = plan.get("vxlan") or {}
    text = section.get("stdout", "")
    if section.get("exit_code") == 127 or "command not found" in text:
        return [_status(node, section["probe"], "missing_tool", text.strip()[:200],
                        "VXLAN direction (tcpdump)", section)]
    if re.search(r"permission denied|Operation not permitted|don't have permission", text,
                 re.I):
        return [_status(node, section["probe"], "permission_denied", text.strip()[:200],
                        "VXLAN direction (tcpdump)", section)]
    if "listening on" not in text:
        return [_status(node, section["probe"], "failed", text.strip()[:200] or "no output",
                        "VXLAN direction (tcpdump)", section)]
    addr = {p["address"]: p["name"] for p in peers if p.get("address")}
    counts = count_vxlan(text, plan.get("address"), addr, int(vx.get("port") or 0))
    window = float(section.get("duration_s") or 0.0)
    return [Fact("vxlan_flow", node, {"peer": name, "port": int(vx["port"]), "sent": s,
                                      "received": r, "window_s": window}, _source(section))
            for name, (s, r) in counts.items()]
