"""DNS and HTTP checks spoken through a TCP stream the node opened: an SSH direct-tcpip
channel, so the packets leave from the node even when it has no dig, nslookup, curl or wget.

DNS messages are built and read with dnspython. Results are written as one line in the words
the parsers read (`dns: rcode=NOERROR answers=10.96.0.1 rtt_ms=0.9`, `http_code=200
time=0.003`), so a bundle records what was seen whichever way it was asked.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype

from kubenetdiag.collect.transport import Stream


def _a_records(msg: dns.message.Message) -> list[str]:
    return [r.address for rrset in msg.answer if rrset.rdtype == dns.rdatatype.A for r in rrset]


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
    query = dns.message.make_query(name, dns.rdatatype.A)
    wire = query.to_wire()
    try:
        stream.settimeout(timeout)
        # DNS over TCP: each message carries a 2-byte length prefix (RFC 1035 4.2.2)
        stream.sendall(struct.pack("!H", len(wire)) + wire)
        deadline = started + timeout
        (length,) = struct.unpack("!H", _read(stream, 2, deadline))
        answer = dns.message.from_wire(_read(stream, length, deadline))
        if not query.is_response(answer):
            raise ValueError("the answer does not match the query")
        rcode, addrs = dns.rcode.to_text(answer.rcode()), _a_records(answer)
    except (TimeoutError, OSError, EOFError) as exc:
        kind = "timeout" if isinstance(exc, TimeoutError) or "timed out" in str(exc) else \
            "reset"
        return f"dns: error={kind}"
    except (ValueError, struct.error, dns.exception.DNSException) as exc:
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


# protocol of a ChannelRequest -> (stream, "address:port", query) -> the result line
SPEAKERS: dict[str, Callable[[Stream, str, str], str]] = {
    "dns": lambda stream, where, name: dns_over(stream, name),
    "http": lambda stream, where, path: http_over(stream, where, path),
}
# what the line says when the node could not even open the connection
_NO_CONNECTION = {"dns": "dns: error=", "http": "http_code=000 error="}


def no_connection(protocol: str, exc: Exception) -> str:
    """The result line for a connection the node could not open, in the protocol's words."""
    words = str(exc).lower()
    reason = ("refused" if "refused" in words else "timeout" if "timed out" in words
              else "connect_failed")
    return f"{_NO_CONNECTION[protocol]}{reason} ({exc})"
