"""DNS and HTTP checks spoken through a TCP stream the node opened: an SSH direct-tcpip
channel, so the packets leave from the node even when it has no dig, nslookup, curl or wget.

Stdlib only. The results are written as one line in the same words the parsers read
(`dns: rcode=NOERROR answers=10.96.0.1 rtt_ms=0.9`, `http_code=200 time=0.003`), so a bundle
records what was seen whichever way it was asked.
"""

from __future__ import annotations

import secrets
import struct
import time
from typing import Protocol

RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


class Stream(Protocol):
    def sendall(self, data: bytes) -> None: ...
    def recv(self, n: int) -> bytes: ...
    def settimeout(self, t: float) -> None: ...
    def close(self) -> None: ...


def dns_query(name: str, qid: int) -> bytes:
    """A standard query for `name` type A class IN, recursion desired, with the 2-byte length
    prefix DNS over TCP uses (RFC 1035 4.2.2)."""
    labels = b"".join(bytes([len(p)]) + p.encode("ascii") for p in name.strip(".").split("."))
    body = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\0" + \
        struct.pack("!HH", 1, 1)
    return struct.pack("!H", len(body)) + body


def _skip_name(msg: bytes, i: int) -> int:
    while True:
        n = msg[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:  # compression pointer: two bytes, and the name ends there
            return i + 2
        i += 1 + n


def dns_answers(msg: bytes, qid: int) -> tuple[str, list[str]]:
    """(rcode name, A addresses) of a response without its length prefix."""
    if len(msg) < 12:
        raise ValueError("short DNS response")
    rid, flags, qd, an, _, _ = struct.unpack("!HHHHHH", msg[:12])
    if rid != qid:
        raise ValueError("DNS response id does not match the query")
    i = 12
    for _ in range(qd):
        i = _skip_name(msg, i) + 4
    addrs = []
    for _ in range(an):
        i = _skip_name(msg, i)
        rtype, _, _, rdlen = struct.unpack("!HHIH", msg[i:i + 10])
        i += 10
        if rtype == 1 and rdlen == 4:
            addrs.append(".".join(str(b) for b in msg[i:i + 4]))
        i += rdlen
    return RCODES.get(flags & 0xF, str(flags & 0xF)), addrs


def _read(stream: Stream, n: int, deadline: float) -> bytes:
    buf = b""
    while len(buf) < n:
        if time.monotonic() > deadline:
            raise TimeoutError
        chunk = stream.recv(n - len(buf))
        if not chunk:
            raise ConnectionResetError("closed early")
        buf += chunk
    return buf


def dns_over(stream: Stream, name: str, timeout: float = 2.0) -> str:
    """Ask over an open stream; return the result line. Never raises for network trouble."""
    started = time.monotonic()
    qid = secrets.randbelow(0xFFFF)
    try:
        stream.settimeout(timeout)
        stream.sendall(dns_query(name, qid))
        deadline = started + timeout
        (length,) = struct.unpack("!H", _read(stream, 2, deadline))
        rcode, addrs = dns_answers(_read(stream, length, deadline), qid)
    except (TimeoutError, OSError, EOFError) as exc:
        kind = "timeout" if isinstance(exc, TimeoutError) or "timed out" in str(exc) else \
            "reset"
        return f"dns: error={kind}"
    except (ValueError, struct.error, IndexError) as exc:
        return f"dns: error=bad_response ({exc})".replace(" (", "_(")
    rtt = (time.monotonic() - started) * 1000
    return f"dns: rcode={rcode} answers={','.join(addrs)} rtt_ms={rtt:.1f}"


def http_over(stream: Stream, host: str, path: str, timeout: float = 3.0) -> str:
    """GET over an open stream; return `http_code=NNN time=S` (000 when nothing came back)."""
    started = time.monotonic()
    try:
        stream.settimeout(timeout)
        stream.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: kubenetdiag\r\n"
                       "Connection: close\r\n\r\n".encode("ascii"))
        head = b""
        deadline = started + timeout
        while b"\r\n" not in head and len(head) < 4096:
            if time.monotonic() > deadline:
                raise TimeoutError
            chunk = stream.recv(1024)
            if not chunk:
                break
            head += chunk
        parts = head.split(b"\r\n", 1)[0].split()
        code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    except (TimeoutError, OSError, EOFError):
        code = 0
    return f"http_code={code:03d} time={time.monotonic() - started:.3f}"
