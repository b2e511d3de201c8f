"""The real CoreDNS in the lab's CoreDNS pod (`coredns-0`, kube-system, on node1), behind
Service kube-system/kube-dns (10.96.0.10: 53/udp, 53/tcp, 9153/tcp).

coredns runs in the pod's network namespace (a pod has no mount or PID namespace of its own in
the lab) with `-conf <workdir>/coredns/Corefile`: the text of the `coredns` ConfigMap the lab
puts in the API (k8s_objects.corefile), byte for byte. Its plugins are the upstream manifest's:
kubernetes (cluster.local from the lab's kube-apiserver, as user
`system:serviceaccount:kube-system:coredns` through its kubeconfig), forward to the site's
resolver in the outside namespace (never the machine's /etc/resolv.conf: no lab query leaves the
lab), cache, errors, health (:8080), ready (:8181), prometheus (:9153), loop, reload and
loadbalance. Its traffic to the API and to the resolver leaves the pod like any pod's, through
node1 and the CNI's masquerade.

`wait_ready` waits for the ready plugin, which answers 200 once the kubernetes plugin has
synced with the API. Log: `<workdir>/logs/coredns.log`.
"""

from __future__ import annotations

import contextlib
import http.client
import secrets
import subprocess
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from kubenetdiag_lab import components
from kubenetdiag_lab.controlplane import in_netns
from kubenetdiag_lab.errors import LabError, log_tail
from kubenetdiag_lab.netns import cmdline, pids_in_netns, terminate
from kubenetdiag_lab.paths import LabPaths
from kubenetdiag_lab.topology import LabPod, Topology

BINARY = "coredns"
READY_PORT = 8181  # the ready plugin's default
START_TIMEOUT = 30.0
PROBE_TIMEOUT = 1.0  # a probe's timeoutSeconds when the manifest sets none


def config_dir(paths: LabPaths) -> Path:
    return paths.workdir / "coredns"


def corefile_path(paths: LabPaths) -> Path:
    return config_dir(paths) / "Corefile"


def log_path(paths: LabPaths) -> Path:
    return paths.logs / "coredns.log"


def write_corefile(paths: LabPaths, text: str) -> Path:
    path = corefile_path(paths)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def pod(topology: Topology) -> LabPod:
    return topology.pod_for_app("coredns")


def pids(topology: Topology) -> list[int]:
    """coredns processes in the CoreDNS pod."""
    netns = pod(topology).netns
    binary = str(components.path_of(BINARY))
    return [pid for pid in pids_in_netns([netns]).get(netns, [])
            if cmdline(pid).startswith(binary)]


def start(topology: Topology, paths: LabPaths, node_init: int
          ) -> subprocess.Popen[bytes] | None:
    """Start coredns in its pod (detached) unless it runs already; the Corefile must have been
    written (write_corefile). Returns the new process, for wait_ready.

    It runs in its node's mount namespace (`node_init`: the node's PID 1), so its
    /etc/resolv.conf is the node's: the kubelet gives a pod with dnsPolicy Default, as
    CoreDNS's is, a copy of its node's resolv.conf when the pod starts, and a Corefile that
    forwards to /etc/resolv.conf reads that file at start and at every reload."""
    if pids(topology):
        return None
    corefile = corefile_path(paths)
    if not corefile.exists():
        raise LabError(f"no Corefile at {corefile}")
    # nsenter opens the pod's netns file before it enters the node's mount namespace, where
    # the machine's /run/netns is hidden
    argv = ["nsenter", f"--net=/run/netns/{pod(topology).netns}", "-t", str(node_init), "-m",
            "--", str(components.path_of(BINARY)), "-conf", str(corefile)]
    with open(log_path(paths), "ab") as log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=config_dir(paths))


def stop(topology: Topology) -> None:
    # Short grace: on SIGTERM the health plugin's lameduck would keep it serving 5 s more,
    # and the fault this serves stands for a crash.
    terminate(pids(topology), grace=0.5)


def _ready_status(host: str = "127.0.0.1", timeout: float = 2.0) -> int:
    conn = http.client.HTTPConnection(host, READY_PORT, timeout=timeout)
    try:
        conn.request("GET", "/ready")
        return conn.getresponse().status
    finally:
        conn.close()


def ready(topology: Topology) -> bool:
    """The ready plugin answers 200: every plugin that reports readiness (kubernetes: synced
    with the API) is ready."""
    with contextlib.suppress(OSError, http.client.HTTPException):
        return in_netns(pod(topology).netns, _ready_status, timeout=5) == 200
    return False


def probe(topology: Topology, timeout: float = PROBE_TIMEOUT) -> bool:
    """CoreDNS's readiness probe as the kubelet runs it (the upstream manifest's httpGet
    /ready on port 8181): from the pod's node to the pod's IP, within the probe's timeout
    (timeoutSeconds, 1 s by default). False when nothing answers in time: stopped, hung, or
    the node cannot reach its own pod."""
    node = topology.node(pod(topology).node)
    with contextlib.suppress(OSError, http.client.HTTPException, TimeoutError):
        return in_netns(node.netns, _ready_status, pod(topology).ip, timeout,
                        timeout=timeout + 1) == 200
    return False


def _rcode(server: str, name: str) -> str:
    """The rcode CoreDNS at `server` answers an A query for `name` with, or timeout."""
    query = dns.message.make_query(name, dns.rdatatype.A)
    try:
        return dns.rcode.to_text(dns.query.udp(query, server, timeout=3.0).rcode())
    except (dns.exception.Timeout, OSError):
        return "timeout"


def _outside_rcode(server: str) -> str:
    """What CoreDNS at `server` answers for a fresh name under .invalid, which no zone it
    serves holds, so it asks its upstream: NXDOMAIN from a working one, else SERVFAIL or
    timeout. Fresh each time so CoreDNS's cache never answers instead."""
    return _rcode(server, f"knd-{secrets.token_hex(4)}.invalid")


def wait_upstream(topology: Topology, answering: bool, timeout: float = 30.0) -> None:
    """Wait until CoreDNS's upstream answers through it (answering) or does not, asked from
    its pod's node as the node's own checks are."""
    node = topology.node(pod(topology).node)
    deadline = time.monotonic() + timeout
    while True:
        rcode = in_netns(node.netns, _outside_rcode, pod(topology).ip, timeout=10)
        if (rcode == "NXDOMAIN") == answering:
            return
        if time.monotonic() > deadline:
            still = "still does not answer" if answering else "still answers"
            raise LabError(f"CoreDNS's upstream {still} after {timeout:.0f}s (last: {rcode})")
        time.sleep(0.5)


def wait_ready(topology: Topology, paths: LabPaths, proc: subprocess.Popen[bytes] | None = None,
               timeout: float = START_TIMEOUT) -> None:
    """Wait until coredns is ready; raise with its log tail if it exits (`proc`: the process
    start() returned; without it, no coredns in the pod) or the time runs out."""
    deadline = time.monotonic() + timeout
    while not ready(topology):
        log = log_path(paths)
        gone = proc.poll() is not None if proc is not None else not pids(topology)
        if gone:
            raise LabError(f"coredns is not running; last lines of {log}:\n{log_tail(log)}")
        if time.monotonic() > deadline:
            raise LabError(f"coredns not ready within {timeout:.0f}s; last lines of {log}:\n"
                           f"{log_tail(log)}")
        time.sleep(0.05)


LOOP_MARK = b"plugin/loop: Loop ("  # the loop plugin's fatal line: it found its own probe again
LOOP_TIMEOUT = 40.0  # the plugin sends its probe for up to 30 s after the start


def wait_looped(paths: LabPaths, proc: subprocess.Popen[bytes] | None, since: int,
                timeout: float = LOOP_TIMEOUT) -> None:
    """Wait until coredns `proc` exits because its loop plugin saw its own probe query come
    back (a Corefile that forwards to itself); `since` is the log's size before the start, so
    an older run's line does not count. Raise when it keeps running or ends another way."""
    if proc is None:
        raise LabError("coredns was already running: it was not started again")
    log = log_path(paths)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LabError(f"coredns still runs {timeout:.0f}s after its start; no loop detected; "
                       f"last lines of {log}:\n{log_tail(log)}") from None
    with open(log, "rb") as f:
        f.seek(since)
        if LOOP_MARK not in f.read():
            raise LabError(f"coredns exited without detecting a loop; last lines of {log}:\n"
                           f"{log_tail(log)}")


RELOADED_MARK = b"Reloading complete"  # the reload plugin's line once the new Corefile runs


def wait_reloaded(paths: LabPaths, since: int, timeout: float = 15.0) -> None:
    """Wait until coredns's log, past offset `since` (its size before the signal), says a
    reload completed: for a Corefile change no query can tell apart."""
    log = log_path(paths)
    deadline = time.monotonic() + timeout
    while True:
        with open(log, "rb") as f:
            f.seek(since)
            if RELOADED_MARK in f.read():
                return
        if time.monotonic() > deadline:
            raise LabError(f"coredns did not reload within {timeout:.0f}s; last lines of "
                           f"{log}:\n{log_tail(log)}")
        time.sleep(0.1)


def wait_zone(topology: Topology, served: str, other: str, timeout: float = 30.0) -> None:
    """Wait until CoreDNS answers the cluster's names under `served` and not under `other`
    (a reload takes effect within seconds), asked from its pod's node."""
    node = topology.node(pod(topology).node)
    deadline = time.monotonic() + timeout
    while True:
        # the API's own Service: NOERROR from the zone the kubernetes plugin serves,
        # NXDOMAIN (from the upstream) under any other
        got = tuple(in_netns(node.netns, _rcode, pod(topology).ip,
                             f"kubernetes.default.svc.{zone}", timeout=10)
                    for zone in (served, other))
        if got[0] == "NOERROR" and got[1] != "NOERROR":
            return
        if time.monotonic() > deadline:
            raise LabError(f"CoreDNS does not serve {served} alone after {timeout:.0f}s "
                           f"({served}: {got[0]}, {other}: {got[1]})")
        time.sleep(0.5)
