"""Cluster services: an app behind a service VIP, the CNI's NAT, the outside world.

- CoreDNS is the real one, in a pod on node1 (coredns.py); Service kube-system/kube-dns on
  10.96.0.10 (53/udp, 53/tcp, 9153/tcp).
- App: an HTTP server on 8080 in a pod on node2; Service default/web on 10.96.0.20:80.
- Service VIPs are the real kube-proxy's work (kubeproxy.py), from the API's Services and
  EndpointSlices; nothing here writes a KUBE-* chain.
- The CNI's masquerade for pod traffic leaving the pod network (to the outside namespace).
- Outside: a namespace on the underlay (198.18.0.250) holding 203.0.113.10, a TCP service on
  3306, standing for the internet and middleware. Nodes route 203.0.113.0/24 to it. It also
  runs the site's DNS resolver on 198.18.0.250:53 (dnsmasq: not a Kubernetes component, the
  upstream CoreDNS forwards to), which knows the middleware's name, mysql.corp.example, and
  answers NXDOMAIN for every other name without asking anyone.

The services' shape (addresses, ports, endpoints) is data in topology.py; this module turns it
into iptables rules and processes, given the topology, the lab's paths and a node's runner.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from kubenetdiag_lab.netns import LabError, cmdline, exec_argv, pids_in_netns, run, terminate
from kubenetdiag_lab.paths import LabPaths
from kubenetdiag_lab.topology import (
    OUTSIDE_DNS,
    OUTSIDE_HOST,
    OUTSIDE_HOST_NAME,
    OUTSIDE_NETWORK,
    OUTSIDE_PORT,
    OUTSIDE_UNDERLAY,
    WEB_PORT,
    Topology,
)

# netprog.py runs as a script inside pods (python -I path): only its path is needed here
NETPROG = str(Path(__file__).with_name("netprog.py"))


def cni_rules(topology: Topology) -> tuple[list[str], list[str]]:
    """(nat, filter) lines calico's felix would add: FORWARD accepts for the pod network and
    masquerade of pod traffic leaving it. flanneld writes its own (FLANNEL-POSTRTG,
    FLANNEL-FWD), so a flannel lab gets none from here."""
    net = topology.pod_network
    if topology.cni != "calico-bgp":
        return [], []
    nat = [":cali-nat-outgoing - [0:0]",
           '-A POSTROUTING -m comment --comment "cali:O3lYWMrLQYEMJtB5" -j cali-nat-outgoing',
           f'-A cali-nat-outgoing -s {net} ! -d {net} -m comment --comment '
           '"cali:flqWnvo8yq4ULQLa" -j MASQUERADE --random-fully']
    flt = [f'-A FORWARD -s {net} -m comment --comment "cali:pod-forward" -j ACCEPT',
           f'-A FORWARD -d {net} -m comment --comment "cali:pod-forward" -j ACCEPT']
    return nat, flt


def node_ruleset(topology: Topology) -> str:
    """The iptables-restore --noflush input a node gets at `up`: the CNI's rules where the
    lab writes them. kube-proxy's chains are the real kube-proxy's (kubeproxy.py)."""
    cni_nat, cni_flt = cni_rules(topology)
    return ("*nat\n" + "\n".join(cni_nat) + "\nCOMMIT\n*filter\n" + "\n".join(cni_flt) +
            "\nCOMMIT\n")


# ---- processes: web, outside ---------------------------------------------------------------


def netprog_argv(*args: str) -> list[str]:
    # -I: the caller's environment (PYTHONPATH, user site) cannot change the helper.
    return [sys.executable, "-I", NETPROG, *args]


def app_commands(topology: Topology, paths: LabPaths, app: str, bind: str | None = None
                 ) -> list[tuple[str, list[str], int, str]]:
    """[(netns, argv, port, proto)] of the processes that make up an app (bind: the web app
    listens on that address only, not on every one)."""
    if app == "outside":
        return [(topology.outside_netns, netprog_argv("serve-banner", str(OUTSIDE_PORT),
                                                      "5.7.44-lab mysql_native_password"),
                 OUTSIDE_PORT, "tcp"),
                (topology.outside_netns, upstream_dns_argv(paths), 53, "udp")]
    pod = topology.pod_for_app(app)
    if app == "web":
        extra = ["--bind", bind] if bind else []
        return [(pod.netns, netprog_argv("serve-http", str(WEB_PORT), *extra), WEB_PORT, "tcp")]
    raise LabError(f"no such lab app {app!r}")


def upstream_dns_argv(paths: LabPaths) -> list[str]:
    """The site's resolver: local data only (--no-resolv, --local=/#/), so it never forwards
    a query anywhere and answers NXDOMAIN for names it does not hold."""
    return ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
            "--no-hosts", "--bind-interfaces", f"--listen-address={OUTSIDE_DNS}",
            "--user=root", f"--pid-file={paths.logs / 'outside-dns.pid'}", "--local=/#/",
            f"--host-record={OUTSIDE_HOST_NAME},{OUTSIDE_HOST}",
            f"--log-facility={paths.logs / 'outside-dns.log'}"]


def _listening(netns: str, port: int, proto: str) -> bool:
    flag = "-Hlnu" if proto == "udp" else "-Hlnt"
    out = run(exec_argv(netns, ["ss", flag, f"sport = :{port}"]), check=False).stdout
    return bool(out.strip())


def start_apps(topology: Topology, paths: LabPaths, apps: list[str],
               timeout: float = 15.0, bind: str | None = None) -> None:
    """Start the apps' processes that are not running and wait until they listen."""
    waiting = []
    for app in apps:
        for netns, argv, port, proto in app_commands(topology, paths, app, bind):
            if _listening(netns, port, proto):
                continue
            log = open(paths.logs / f"{app}.log", "ab")  # noqa: SIM115
            with log:
                subprocess.Popen(exec_argv(netns, argv), stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
            waiting.append((app, netns, port, proto))
    deadline = time.monotonic() + timeout
    while waiting:
        waiting = [item for item in waiting if not _listening(*item[1:])]
        if waiting and time.monotonic() > deadline:
            late = ", ".join(f"{app} :{port}/{proto}" for app, _netns, port, proto in waiting)
            raise LabError(f"lab apps did not start listening within {timeout:.0f}s: {late}")
        if waiting:
            time.sleep(0.05)


def stop_app(topology: Topology, paths: LabPaths, app: str, only: str | None = None) -> None:
    """Stop an app's processes (or only those whose command contains `only`)."""
    for netns, argv, _port, _proto in app_commands(topology, paths, app):
        if only and only not in argv[0]:
            continue
        needle = " ".join(argv[:4])
        pids = [pid for pid in pids_in_netns([netns]).get(netns, [])
                if cmdline(pid).startswith(needle)]
        terminate(pids)


def wire_outside(prefixlen: int) -> list[str]:
    """ip-batch lines for the outside namespace (its eth0 is a switch port of an underlay
    of this prefix length)."""
    return [
        "link set lo up",
        f"addr add {OUTSIDE_UNDERLAY}/{prefixlen} dev eth0",
        "link set eth0 up",
        # A veth pair standing for the outside network's segment (no dummy module needed).
        "link add ext0 type veth peer name ext1",
        f"addr add {OUTSIDE_HOST}/{OUTSIDE_NETWORK.prefixlen} dev ext0",
        "link set ext1 up",
        "link set ext0 up",
    ]
