"""Minimal ICMP echo client, run inside a lab namespace as a script.

The lab cannot rely on a `ping` binary (iputils is often missing from slim images), so it ships
this one. It is executed by path with `python -I`, so it must import nothing but the stdlib.
It tells a silent drop (timeout) from an active refusal (ICMP error, e.g. an iptables REJECT),
which is the distinction the fault tests care about.

Exit status: 0 if any echo reply arrived, 1 if none did, 2 on a usage or socket error. Up to
`count` echoes are sent, and none after the first reply: "any reply" is then known, and a
healthy check costs one round trip instead of the intervals between the others (the lab's
tests ask it a few hundred times a run).
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import struct
import sys
import time

ECHO_REPLY, DEST_UNREACH, ECHO_REQUEST, TIME_EXCEEDED = 0, 3, 8, 11


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int, size: int = 23) -> bytes:
    payload = struct.pack("!d", time.time()) + b"kubenetdiag-lab"
    payload = (payload * (size // len(payload) + 1))[: max(size, 8)]
    header = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, ident, seq)
    csum = checksum(header + payload)
    return struct.pack("!BBHHH", ECHO_REQUEST, 0, csum, ident, seq) + payload


def classify(packet: bytes, dst: str, ident: int, seq: int) -> str | None:
    """Return "reply", "error:<type>/<code> from <addr>" or None if the packet is not ours."""
    ihl = (packet[0] & 0x0F) * 4
    icmp = packet[ihl:]
    if len(icmp) < 8:
        return None
    kind, code, _, pid, pseq = struct.unpack("!BBHHH", icmp[:8])
    src = socket.inet_ntoa(packet[12:16])
    if kind == ECHO_REPLY:
        return "reply" if (pid, pseq, src) == (ident, seq, dst) else None
    if kind in (DEST_UNREACH, TIME_EXCEEDED):
        # An ICMP error quotes our original IP header + first 8 bytes of our echo request.
        inner = icmp[8:]
        if len(inner) < 20:
            return None
        inner_ihl = (inner[0] & 0x0F) * 4
        quoted = inner[inner_ihl : inner_ihl + 8]
        if len(quoted) < 8 or socket.inet_ntoa(inner[16:20]) != dst:
            return None
        qkind, _, _, qid, qseq = struct.unpack("!BBHHH", quoted)
        if (qkind, qid, qseq) == (ECHO_REQUEST, ident, seq):
            return f"error:{kind}/{code} from {src}"
    return None


IP_MTU_DISCOVER, IP_PMTUDISC_DONT, IP_PMTUDISC_DO = 10, 0, 2  # linux/in.h; not all Pythons
# export them


def ping(dst: str, count: int, timeout: float, interval: float, size: int | None = None,
         df: bool = True) -> int:
    ident = os.getpid() & 0xFFFF
    replies = 0
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        if size is not None:
            # DF on: a packet too big for some link on the path is dropped (or answered with
            # "fragmentation needed"), never silently fragmented, as with `ping -M do -s`.
            # Off (`ping -M dont`): the sender fragments to its own MTU, routers on the way
            # fragment further.
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER,
                            IP_PMTUDISC_DO if df else IP_PMTUDISC_DONT)
        for seq in range(1, count + 1):
            sent = time.monotonic()
            sock.sendto(echo_request(ident, seq, 23 if size is None else size), (dst, 0))
            deadline = sent + timeout
            outcome = None
            while outcome is None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([sock], [], [], left)[0]:
                    break
                outcome = classify(sock.recv(4096), dst, ident, seq)
            ms = (time.monotonic() - sent) * 1000
            if outcome == "reply":
                replies += 1
                print(f"reply from {dst} seq={seq} time={ms:.2f} ms", flush=True)
            elif outcome is None:
                print(f"no reply from {dst} seq={seq} within {timeout:g}s", flush=True)
            else:
                print(f"unreachable {dst} seq={seq}: icmp {outcome} after {ms:.2f} ms",
                      flush=True)
            if replies:
                break
            if seq < count:
                time.sleep(interval)
    print(f"{seq} sent, {replies} received", flush=True)
    return 0 if replies else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dst")
    parser.add_argument("-c", "--count", type=int, default=1)
    parser.add_argument("-W", "--timeout", type=float, default=1.0)
    parser.add_argument("-i", "--interval", type=float, default=0.2)
    parser.add_argument("-s", "--size", type=int, default=None,
                        help="payload bytes, sent with DF set")
    parser.add_argument("--no-df", action="store_true",
                        help="with --size: DF off, so the packet may be fragmented")
    args = parser.parse_args(argv)
    try:
        socket.inet_aton(args.dst)
        return ping(args.dst, max(1, args.count), args.timeout, args.interval, args.size,
                    df=not args.no_df)
    except OSError as exc:
        print(f"ping {args.dst}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
