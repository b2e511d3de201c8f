"""Small network programs the lab runs inside its namespaces, executed by path with `python -I`.

It runs by path as a separate process in a pod, node or outside namespace, so it imports nothing
from kubenetdiag: only the stdlib and dnspython (an installed dependency, which `-I` still
sees). Every loop is bounded by a count and a deadline, and every target is
whatever the lab passes in (lab addresses only).

  serve-http PORT [--bind A]    an app pod's HTTP server (on every address, or only A)
  serve-banner PORT TEXT        a middleware-like TCP service that greets and closes first
  dns SERVER NAME [--tcp]       one A query; prints the addresses, exit 0 if any
  http URL                      one GET; prints the status and body, exit 0 on 2xx
  tcp HOST PORT                 one connect; exit 0 if it was accepted
  listen-stuck PORT BACKLOG     a listener that never accepts (fills its accept queue)
  connect-burst HOST PORT N     N non-blocking connects at once, held briefly, then closed
  udp-stuck PORT RCVBUF         a UDP socket with a tiny receive buffer that never reads
  udp-sink PORT                 a UDP receiver with the default buffer that reads everything;
                                --every S: what queued, once per S seconds
  udp-trickle HOST PORT N SECONDS
                                N datagrams a second, for at most SECONDS
  udp-flood HOST PORT N         N datagrams, as fast as the socket allows
  tw-burst N                    N loopback connections closed by the client: N TIME_WAITs;
                                --to HOST PORT: to that server instead, each shut down by
                                the client first, closed once the server closed its end
  close-burst HOST PORT N       N connections, each closed after the server closed it: N
                                TIME_WAITs on the server's side
  connect-retry HOST PORT N SECONDS
                                a client that keeps N connects in flight, gives each up after
                                2 s and opens the next, for at most SECONDS (a connection
                                pool retrying against a server that does not answer)
  bulk-sink PORT                a TCP receiver that reads and discards whatever it is sent
  bulk-send HOST PORT SECONDS   one TCP connection sending as fast as the path takes, for at
                                most SECONDS (a bulk transfer, such as a backup)
  tcp-receiver PORT [--read]    a TCP server that accepts and keeps each connection, reading
                                what arrives only with --read; --rate B: B bytes a second
  tcp-push HOST PORT BYTES      one connection that sends BYTES (bounded) and stays open;
                                --pause S: 16 KiB first, the rest S seconds later
  listen-named PORT NAME        a listener that accepts and closes, under process name NAME,
                                with SO_REUSEPORT [--bind A]
  connect-keep HOST PORT N SECONDS
                                N connections one after another, kept open, never read or
                                closed, for at most SECONDS (a pool that does not notice its
                                server closed them); --close: each closed at once, then exit;
                                --half-close: each shut down for sending (its FIN sent) and
                                kept, waiting for the server's;
                                --burst: all started at once, not waited for, then kept
  serve-limited PORT FILES      a server whose open-file limit is FILES (as ulimit -n or
                                LimitNOFILE sets it) that keeps every connection it accepts;
                                --leak: it answers and closes each, and leaks a file instead
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import http.server
import os
import resource
import select
import signal
import socket
import sys
import time
import urllib.request

import dns.message
import dns.query
import dns.rdatatype

BULK_LIMIT = 1800.0  # a client left running by a lost heal ends by itself


def _wait_forever() -> int:
    # Servers run until the lab stops them; SIGTERM ends them with status 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()


def serve_http(port: int, bind: str) -> int:
    body_text = f"web: hello from {socket.gethostname()}\n"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            body = body_text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass  # probes hit these servers often; their logs are noise

    class Server(http.server.ThreadingHTTPServer):
        # socketserver's default backlog is 5, which no web server ships with (nginx asks for
        # 511, Go's net/http for somaxconn): the diagnoser's own checks, every node's at
        # once, overflowed it
        request_queue_size = 128

    server = Server((bind, port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"listening on {port}", flush=True)
    server.serve_forever()
    return 0


def serve_banner(port: int, text: str, backlog: int) -> int:
    srv = socket.create_server(("0.0.0.0", port), backlog=backlog)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"listening on {port}", flush=True)
    while True:
        conn, _ = srv.accept()
        with conn:
            conn.sendall(text.encode() + b"\n")


def tcp_receiver(port: int, read: bool, rate: int = 0) -> int:
    # Keeps every connection it accepts; without --read its receive queues only grow, as an
    # application blocked elsewhere leaves them. With --rate it reads that many bytes a
    # second, 4 KiB at a time: a consumer slower than its sender (a log shipper writing to a
    # slow disk), whose queue stays full while it keeps reading.
    srv = socket.create_server(("0.0.0.0", port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    how = f"reading {rate} bytes/s" if rate else "reading" if read else "never reading"
    print(f"listening on {port}, {how}", flush=True)
    kept = []
    while True:
        conn, _ = srv.accept()
        kept.append(conn)
        while rate:
            if not conn.recv(4096):
                break
            time.sleep(4096 / rate)
        while read:
            if not conn.recv(65536):
                break


def connect_keep(host: str, port: int, count: int, seconds: float, close: bool,
                 burst: bool, half_close: bool = False) -> int:
    deadline = time.monotonic() + seconds
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    kept = []
    made = 0
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        if burst:  # every handshake started at once, none waited for
            conn = _start_connect(host, port)
        else:
            try:
                conn = socket.create_connection((host, port), timeout=2)
            except OSError:
                conn = None
        if conn is None:
            continue
        made += 1
        if close:
            conn.close()
        else:
            if half_close:
                conn.shutdown(socket.SHUT_WR)
            kept.append(conn)
    done = "closed" if close else "half-closed and kept" if half_close else "kept"
    print(f"{made} connections to {host}:{port}, {done}", flush=True)
    while not close and time.monotonic() < deadline:
        time.sleep(0.5)
    return 0


def serve_limited(port: int, files: int, leak: bool) -> int:
    # The limit is the process's own soft RLIMIT_NOFILE, set before it opens anything, as a
    # service manager sets it before exec. At the limit accept() fails with EMFILE and, as
    # servers do (Go's net/http, nginx), the loop backs off and tries again: the connections
    # the kernel completed meanwhile wait in the accept queue.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (files, hard))
    srv = socket.create_server(("0.0.0.0", port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"listening on {port}, at most {files} open files", flush=True)
    kept = []
    while True:
        try:
            conn, _ = srv.accept()
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            time.sleep(0.005)
            continue
        if not leak:
            kept.append(conn)
            continue
        with conn:
            conn.sendall(b"ok\n")
        with contextlib.suppress(OSError):
            kept.append(open("/proc/self/stat", "rb"))  # noqa: SIM115 (the leak is the point)


def tcp_push(host: str, port: int, size: int, timeout: float, pause: float) -> int:
    # Sends until `size` bytes are out or the peer's window closes, then holds the
    # connection open (the queue it left behind is the point). With a pause, a first
    # 16 KiB go out alone, so the server has accepted and read before the rest follows.
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.settimeout(timeout)
    sent = 0
    chunk = b"x" * 65536
    if pause:
        sent = sock.send(chunk[:16384])
        time.sleep(pause)
    try:
        while sent < size:
            sent += sock.send(chunk[:size - sent])
    except TimeoutError:
        pass
    print(f"sent {sent} bytes to {host}:{port}, holding", flush=True)
    return _wait_forever()


def listen_named(port: int, name: str, bind: str) -> int:
    # The kernel shows a process by its comm; setting it makes this listener look like the
    # program it stands for (a second service that took the port).
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:
        comm.write(name[:15])
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    srv.bind((bind, port))
    srv.listen(128)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"{name} listening on {bind}:{port}", flush=True)
    while True:
        conn, _ = srv.accept()
        conn.close()


def dns_lookup(server: str, name: str, tcp: bool, timeout: float) -> int:
    query = dns.message.make_query(name, dns.rdatatype.A)
    ask = dns.query.tcp if tcp else dns.query.udp
    answer = ask(query, server, timeout=timeout)
    addrs = [r.address for rrset in answer.answer if rrset.rdtype == dns.rdatatype.A
             for r in rrset]
    print(f"{name} rcode={answer.rcode()} {' '.join(addrs)}".rstrip(), flush=True)
    return 0 if addrs else 1


def http_get(url: str, timeout: float) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (lab URLs only)
        print(resp.status, resp.read().decode(errors="replace").strip(), flush=True)
        return 0 if 200 <= resp.status < 300 else 1


def tcp(host: str, port: int, timeout: float) -> int:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        try:
            greeting = sock.recv(256).decode(errors="replace").strip()
        except TimeoutError:
            greeting = ""
    print(f"connected to {host}:{port} {greeting}".rstrip(), flush=True)
    return 0


def listen_stuck(port: int, backlog: int) -> int:
    # listen() and never accept(): once `backlog` handshakes complete, further final ACKs
    # overflow the accept queue, which is what ListenOverflows counts.
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(backlog)
    print(f"listening on {port} backlog {backlog}, never accepting", flush=True)
    return _wait_forever()


def _start_connect(host: str, port: int) -> socket.socket | None:
    """A handshake started and not waited for (the SYN is on its way), or None when the
    connect failed at once."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.connect((host, port))
    except BlockingIOError:
        pass
    except OSError:
        s.close()
        return None
    return s


def connect_burst(host: str, port: int, count: int, hold: float) -> int:
    socks = []
    deadline = time.monotonic() + hold
    for _ in range(count):
        s = _start_connect(host, port)
        if s is not None:
            socks.append(s)
    # Keep the sockets open so the kernel retransmits the handshakes that were not accepted:
    # each retry that hits the full queue counts again.
    while time.monotonic() < deadline:
        time.sleep(0.05)
    for s in socks:
        s.close()
    print(f"{len(socks)} connects to {host}:{port}", flush=True)
    return 0


def udp_stuck(port: int, rcvbuf: int, bind: str = "0.0.0.0") -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((bind, port))
    print(f"udp {port} rcvbuf {sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)}, "
          "never reading", flush=True)
    return _wait_forever()


def udp_sink(port: int, every: float = 0.0) -> int:
    # With `every`, it drains what has queued once per that many seconds, as a server that
    # handles its datagrams in batches: a few always wait, far from filling the buffer.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"udp {port} rcvbuf {sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)}, "
          f"reading{f' every {every} s' if every else ''}", flush=True)
    while not every:
        sock.recv(65535)
    sock.setblocking(False)
    while True:
        time.sleep(every)
        with contextlib.suppress(BlockingIOError):
            while True:
                sock.recv(65535)


def udp_trickle(host: str, port: int, per_s: int, seconds: float) -> int:
    # A steady sender (a log forwarder, a metrics agent): per_s datagrams a second.
    payload = os.urandom(512)
    deadline = time.monotonic() + seconds
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                sock.sendto(payload, (host, port))
            time.sleep(1 / per_s)
    return 0


def udp_flood(host: str, port: int, count: int, limit: float) -> int:
    payload = os.urandom(512)
    deadline = time.monotonic() + limit
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(count):
            if time.monotonic() > deadline:
                break
            try:
                sock.sendto(payload, (host, port))
                sent += 1
            except OSError:
                select.select([], [], [], 0.001)
    print(f"{sent} datagrams to {host}:{port}", flush=True)
    return 0


def tw_burst(count: int, limit: float, to: tuple[str, int] | None = None) -> int:
    if to is not None:
        return _tw_burst_to(to, count, limit)
    srv = socket.create_server(("127.0.0.1", 0), backlog=128)
    port = srv.getsockname()[1]
    deadline = time.monotonic() + limit
    made = 0
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        cli = socket.create_connection(("127.0.0.1", port), timeout=2)
        conn, _ = srv.accept()
        cli.close()  # the client closes first, so the client side enters TIME_WAIT
        conn.close()
        made += 1
    print(f"{made} connections closed by the client", flush=True)
    return 0


def _tw_burst_to(to: tuple[str, int], count: int, limit: float) -> int:
    # A client without keep-alive: it sends its FIN first and waits for the server's, one
    # connection after the other, so each ends in TIME_WAIT on this side, toward one peer.
    deadline = time.monotonic() + limit
    made = 0
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        with socket.create_connection(to, timeout=2) as cli:
            cli.shutdown(socket.SHUT_WR)
            while cli.recv(4096):
                pass
        made += 1
    print(f"{made} connections to {to[0]}:{to[1]} closed by the client", flush=True)
    return 0


def close_burst(host: str, port: int, count: int, limit: float) -> int:
    deadline = time.monotonic() + limit
    made = 0
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        with socket.create_connection((host, port), timeout=2) as cli:
            while cli.recv(4096):  # until the server closes: its side enters TIME_WAIT
                pass
        made += 1
    print(f"{made} connections to {host}:{port} closed by the server", flush=True)
    return 0


def connect_retry(host: str, port: int, count: int, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    pending: dict[socket.socket, float] = {}
    made = 0
    while time.monotonic() < deadline:
        now = time.monotonic()
        for s, started in list(pending.items()):
            if now - started > 2.0:  # given up, as a client's connect timeout would
                s.close()
                del pending[s]
        while len(pending) < count:
            s = _start_connect(host, port)
            if s is None:
                break
            pending[s] = time.monotonic()
            made += 1
        time.sleep(0.1)
    print(f"{made} connects to {host}:{port}", flush=True)
    return 0


def bulk_sink(port: int) -> int:
    srv = socket.create_server(("0.0.0.0", port), backlog=16)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"bulk sink on {port}", flush=True)
    while True:
        conn, _ = srv.accept()
        with conn:
            while conn.recv(65536):
                pass


def bulk_send(host: str, port: int, seconds: float) -> int:
    # One connection, blocking writes: TCP's own congestion control keeps the bottleneck's
    # queue full, which is what a bulk transfer does to the links it crosses.
    chunk = os.urandom(65536)
    deadline = time.monotonic() + seconds
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sent = 0
    with socket.create_connection((host, port), timeout=10) as sock:
        while time.monotonic() < deadline:
            sock.sendall(chunk)
            sent += len(chunk)
    print(f"{sent} bytes to {host}:{port}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=3.0)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve-http")
    p.add_argument("port", type=int)
    p.add_argument("--bind", default="0.0.0.0")
    p = sub.add_parser("serve-banner")
    p.add_argument("port", type=int)
    p.add_argument("text")
    p.add_argument("--backlog", type=int, default=128)
    p = sub.add_parser("dns")
    p.add_argument("server")
    p.add_argument("name")
    p.add_argument("--tcp", action="store_true")
    p = sub.add_parser("http")
    p.add_argument("url")
    p = sub.add_parser("tcp")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p = sub.add_parser("listen-stuck")
    p.add_argument("port", type=int)
    p.add_argument("backlog", type=int)
    p = sub.add_parser("connect-burst")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("count", type=int)
    p.add_argument("--hold", type=float, default=2.0)
    p = sub.add_parser("udp-stuck")
    p.add_argument("port", type=int)
    p.add_argument("rcvbuf", type=int)
    p.add_argument("--bind", default="0.0.0.0")
    p = sub.add_parser("udp-sink")
    p.add_argument("port", type=int)
    p.add_argument("--every", type=float, default=0.0)
    p = sub.add_parser("udp-trickle")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("per_s", type=int)
    p.add_argument("seconds", type=float)
    p = sub.add_parser("udp-flood")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("count", type=int)
    p = sub.add_parser("tw-burst")
    p.add_argument("count", type=int)
    p.add_argument("--to", nargs=2, metavar=("HOST", "PORT"))
    p = sub.add_parser("close-burst")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("count", type=int)
    p = sub.add_parser("connect-retry")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("count", type=int)
    p.add_argument("seconds", type=float)
    p = sub.add_parser("bulk-sink")
    p.add_argument("port", type=int)
    p = sub.add_parser("bulk-send")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("seconds", type=float)
    p = sub.add_parser("tcp-receiver")
    p.add_argument("port", type=int)
    p.add_argument("--read", action="store_true")
    p.add_argument("--rate", type=int, default=0)
    p = sub.add_parser("tcp-push")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("bytes", type=int)
    p.add_argument("--pause", type=float, default=0.0)
    p = sub.add_parser("connect-keep")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("count", type=int)
    p.add_argument("seconds", type=float)
    p.add_argument("--close", action="store_true")
    p.add_argument("--burst", action="store_true")
    p.add_argument("--half-close", action="store_true")
    p = sub.add_parser("serve-limited")
    p.add_argument("port", type=int)
    p.add_argument("files", type=int)
    p.add_argument("--leak", action="store_true")
    p = sub.add_parser("listen-named")
    p.add_argument("port", type=int)
    p.add_argument("name")
    p.add_argument("--bind", default="0.0.0.0")
    a = parser.parse_args(argv)
    limit = 10.0  # hard cap on any burst, whatever the count
    # Bursts of whole connections are slower: on a loaded two-core machine 1,500 took more
    # than 10 s and the fault came out smaller than asked. Their runner's timeout is 60 s.
    conn_limit = 45.0
    try:
        if a.cmd == "serve-http":
            return serve_http(a.port, a.bind)
        if a.cmd == "serve-banner":
            return serve_banner(a.port, a.text, a.backlog)
        if a.cmd == "dns":
            return dns_lookup(a.server, a.name, a.tcp, a.timeout)
        if a.cmd == "http":
            return http_get(a.url, a.timeout)
        if a.cmd == "tcp":
            return tcp(a.host, a.port, a.timeout)
        if a.cmd == "listen-stuck":
            return listen_stuck(a.port, a.backlog)
        if a.cmd == "connect-burst":
            return connect_burst(a.host, a.port, min(a.count, 5000), min(a.hold, limit))
        if a.cmd == "udp-stuck":
            return udp_stuck(a.port, a.rcvbuf, a.bind)
        if a.cmd == "udp-sink":
            return udp_sink(a.port, min(max(a.every, 0.0), limit))
        if a.cmd == "udp-trickle":
            return udp_trickle(a.host, a.port, min(max(a.per_s, 1), 1000),
                               min(a.seconds, BULK_LIMIT))
        if a.cmd == "udp-flood":
            return udp_flood(a.host, a.port, min(a.count, 200000), limit)
        if a.cmd == "tw-burst":
            to = (a.to[0], int(a.to[1])) if a.to else None
            return tw_burst(min(a.count, 20000), conn_limit, to)
        if a.cmd == "tcp-receiver":
            return tcp_receiver(a.port, a.read, max(a.rate, 0))
        if a.cmd == "tcp-push":
            return tcp_push(a.host, a.port, min(a.bytes, 8 << 20), a.timeout,
                            min(a.pause, limit))
        if a.cmd == "listen-named":
            return listen_named(a.port, a.name, a.bind)
        if a.cmd == "connect-keep":
            return connect_keep(a.host, a.port, min(a.count, 2000), min(a.seconds, BULK_LIMIT),
                                a.close, a.burst, a.half_close)
        if a.cmd == "serve-limited":
            return serve_limited(a.port, min(max(a.files, 8), 4096), a.leak)
        if a.cmd == "close-burst":
            return close_burst(a.host, a.port, min(a.count, 20000), conn_limit)
        if a.cmd == "connect-retry":
            return connect_retry(a.host, a.port, min(a.count, 64), min(a.seconds, BULK_LIMIT))
        if a.cmd == "bulk-sink":
            return bulk_sink(a.port)
        if a.cmd == "bulk-send":
            return bulk_send(a.host, a.port, min(a.seconds, BULK_LIMIT))
    except (OSError, ValueError) as exc:
        print(f"{a.cmd}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
