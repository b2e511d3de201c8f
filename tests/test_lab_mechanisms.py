"""Every second (third, ...) way of making a fault, proven at the network level without the
diagnoser: the mechanism really breaks the traffic its description claims, and heal brings
every node back to exactly the state it had before (iptables-save, nft, ip rule, routes in
every table, links and their MTUs, tc, sysctls, the processes and their run state), also when
the test fails while the fault is in force, and when the record of its parameters is lost.

The lab fixtures are session-wide; run one mode at a time on a small machine, e.g.
`-k "vxlan"`, `-k "hostgw"`, `-k "calico"`.
"""

from __future__ import annotations

import difflib
import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kubenetdiag_lab import Lab, LabError, cni, coredns, flannel, services
from kubenetdiag_lab.faults import FAULTS
from kubenetdiag_lab.netns import cmdline, pids_in_netns
from kubenetdiag_lab.topology import (
    OUTSIDE_HOST,
    OUTSIDE_HOST_NAME,
    OUTSIDE_PORT,
    OUTSIDE_UNDERLAY,
    RETIRED_NODE_ADDRESS,
    WEB_NODE_PORT,
    LabPod,
)
from test_lab_faults import (
    api,
    client_pod,
    close_wait_owners,
    counter,
    dns_ok,
    fd_count_and_limit,
    fin_wait2_peers,
    pod_blocked,
    pod_ready,
    pods_ok,
    recorded,
    slice_endpoints,
    ssh,
    web_ok,
    window_scaled,
)

pytestmark = pytest.mark.lab

UNCOMPARED = "(shown, not compared)"
SYSCTLS = re.compile(r"^net\.(ipv4\.conf\.|ipv4\.ip_forward |bridge\.|core\.somaxconn )")
# the snapshot's own shell, the init's sleep, the iptables runs of flanneld and kube-proxy
TRANSIENT = {"ps", "bash", "sh", "sleep", "nsenter", "iptables", "iptables-save",
             "iptables-restor", "ip6tables", "ip6tables-save", "ip6tables-resto"}


def _rules(text: str) -> str:
    """iptables-save without comments and counters. kube-proxy rewrites its KUBE-* chains
    whenever endpoints change and orders their rules as it likes (KUBE-SERVICES after a
    readiness change): within those chains the rules are compared as a set."""
    text = re.sub(r"\[\d+:\d+\]", "[0:0]", text)
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    own = sorted(line for line in lines if line.startswith("-A KUBE-"))
    return "\n".join([line for line in lines if not line.startswith("-A KUBE-")] + own)


IPTABLES_NFT = {"filter", "nat", "mangle", "raw", "security"}


def _nft(text: str) -> str:
    """`nft -j list ruleset` as lines: every table and chain (hook, priority, policy), and
    the rules of native tables in order. The rules of iptables-nft's own tables are left to
    iptables-save, which shows them in iptables' terms; their base chains stay, because
    iptables-save shows built-in chains whether they exist or not."""
    objects, rules = [], []
    for item in json.loads(text or "{}").get("nftables", []):
        for kind, body in item.items():
            if kind == "metainfo":
                continue
            body = {key: value for key, value in body.items() if key != "handle"}
            if kind != "rule":
                objects.append(f"{kind} {json.dumps(body, sort_keys=True)}")
            elif not (body["family"] in ("ip", "ip6") and body["table"] in IPTABLES_NFT):
                rules.append(f"rule {json.dumps(body, sort_keys=True)}")
    return "\n".join(sorted(objects) + rules)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _stopped_or_not(pid: int) -> str:
    """What a heal must restore of a process: stopped (T), gone, or running; running (R) and
    sleeping (S) only say where the scheduler caught it (one CI run compared R with S)."""
    state = _state(pid)
    return state if state in ("T", "gone") else "running"


def snapshot(lab: Lab) -> dict[str, str]:
    """Everything a fault may touch, per node, pod and the switch, as text to compare."""
    out: dict[str, str] = {}
    for node in lab.nodes:
        runner = lab.runners.node(node)

        def cmd(*argv: str, runner=runner) -> str:
            return runner.run(list(argv), check=False).stdout

        sysctls = [line for line in cmd("sysctl", "-a").splitlines() if SYSCTLS.match(line)]
        ps = runner.shell("ps -eo pid=,ppid=,stat=,comm=").stdout
        rows = [line.split(None, 3) for line in ps.splitlines() if line.strip()]
        comm_of = {pid: comm for pid, _ppid, _stat, comm in rows}
        # A zombie (Z) has exited already: only its parent's reaping is pending. A child with
        # its parent's name is a fork about to exec (flanneld and kube-proxy run iptables).
        procs = [(stat, comm) for _pid, ppid, stat, comm in rows
                 if not stat.startswith("Z") and comm_of.get(ppid) != comm]
        # in one process: each command here runs twice for each of a hundred cases. The node's
        # own /etc/cni/net.d and /etc/resolv.conf, and the legacy backend's rules, read only
        # where it has tables (its -D would make one; an empty table a heal left is alike)
        cni, resolv, legacy = runner.shell(
            "ls -A /etc/cni/net.d 2>&1; echo @@; cat /etc/resolv.conf; echo @@; "
            "if [ -s /proc/net/ip_tables_names ]; then iptables-legacy-save; fi",
            check=False).stdout.split("@@\n")
        out |= {
            f"{node.name} iptables": _rules(cmd("iptables-save")),
            f"{node.name} iptables-legacy": "\n".join(
                line for line in legacy.splitlines() if line.startswith("-A")),
            f"{node.name} cni": cni,
            f"{node.name} resolv.conf": resolv,
            f"{node.name} nft": _nft(cmd("nft", "-j", "-s", "list", "ruleset")),
            f"{node.name} ip rule": cmd("ip", "-4", "rule"),
            f"{node.name} xfrm": cmd("ip", "xfrm", "policy", "list"),
            # IPv4: no fault touches IPv6, whose link-local routes come and go with DAD
            f"{node.name} routes": cmd("ip", "-4", "route", "show", "table", "all"),
            # by name, not index: a device the heal had its owner make again (flanneld's
            # flannel.1) is the same device with a new index
            f"{node.name} links": "\n".join(sorted(
                line.split(": ", 1)[-1] for line in cmd("ip", "-o", "link").splitlines())),
            # entries the kernel never re-resolves (others come and go with traffic)
            f"{node.name} neigh": cmd("ip", "-4", "neigh", "show", "nud", "permanent"),
            # qdiscs by device, not in ifindex order: a device made again (flannel.1) is listed
            # after the pods' veths the CNI plugins made later
            f"{node.name} tc": "\n".join(sorted(cmd("tc", "qdisc", "show").splitlines()))
            + cmd("tc", "filter", "show", "dev", "eth0", "ingress"),
            f"{node.name} sysctl": "\n".join(sorted(sysctls)),
            # the process set and whether each is stopped (T), not pids: a heal may restart
            f"{node.name} processes": "\n".join(sorted(
                f"{comm} {'stopped' if stat.startswith('T') else 'running'}"
                for stat, comm in procs if comm not in TRANSIENT)),
            f"{node.name} sysctl.d": " ".join(sorted(
                p.name for p in lab.paths.node_files(node.name).sysctl_d.iterdir())),
            f"{node.name} ps {UNCOMPARED}": ps,
        }
    for pod in lab.pods:
        out[f"{pod.name} eth0"] = lab.runners.pod(pod.name).run(
            ["ip", "-o", "link", "show", "eth0"]).stdout
        out[f"{pod.name} resolv.conf"] = pod_resolv_conf(lab, pod.name)
    out["switch nft"] = _nft(lab.runners.switch.run(["nft", "-j", "-s", "list",
                                                     "ruleset"]).stdout)
    # the middleware host's own firewall (endpoint_unreachable via=allowlist acts there)
    # (its rules only: the first iptables call there creates the empty filter table)
    out["outside iptables"] = "\n".join(
        line for line in lab.runners.outside.run(["iptables-save"]).stdout.splitlines()
        if line.startswith("-A "))
    out["coredns"] = " ".join(_stopped_or_not(pid) for pid in coredns.pids(lab.topology))
    return out


def pod_resolv_conf(lab: Lab, pod: str) -> str:
    """The pod's resolv.conf as its sandbox shows it, where the diagnoser reads it."""
    netns = next(p.netns for p in lab.pods if p.name == pod)
    for pid in pids_in_netns([netns]).get(netns, []):
        if cmdline(pid).strip() == "sleep infinity":
            return Path(f"/proc/{pid}/root/etc/resolv.conf").read_text()
    raise AssertionError(f"no sandbox process in {netns}")


def assert_same(before: dict[str, str], after: dict[str, str]) -> None:
    changed = [key for key in before
               if before[key] != after.get(key) and not key.endswith(UNCOMPARED)]
    if any(key.endswith(" processes") for key in changed):  # which processes, exactly
        changed += [key for key in before if key.endswith(UNCOMPARED)]
    diff = "\n".join(
        f"--- {key}\n" + "\n".join(difflib.unified_diff(before[key].splitlines(),
                                                         after.get(key, "").splitlines(),
                                                         lineterm="", n=1))
        for key in changed)
    assert not changed, f"heal did not restore the prior state:\n{diff}"


class Boom(Exception):
    """A test failing while its fault is in force."""


def proven(lab: Lab, fault: str, node: str | None, params: dict[str, str],
           broken: Callable[[Lab], None], *, blind: bool = False) -> None:
    """Healthy before; `broken(lab)` (its own asserts) holds under the fault; the test then
    fails inside the block, and the heal that runs anyway restores the exact prior state.
    `blind`: the record of the fault's parameters is lost first (another process, a crash), so
    that heal runs with the fault's defaults and must still undo whichever way it was made."""
    assert pods_ok(lab, "node1", "node2") and pods_ok(lab, "node2", "node1")
    before = snapshot(lab)
    with pytest.raises(Boom), lab.injected(fault, node, params):
        assert recorded(lab) == [(fault, node or lab.pod_for_app("coredns").node)]
        broken(lab)
        if blind:
            forget_faults(lab)
        raise Boom
    assert recorded(lab) == []
    assert_same(before, snapshot(lab))
    assert pods_ok(lab, "node1", "node2") and pods_ok(lab, "node2", "node1")


def blocked_both(lab: Lab, a: str, b: str) -> None:
    assert pod_blocked(lab, a, b) and pod_blocked(lab, b, a)


def refused(lab: Lab, src: str, dst: str) -> None:
    """Actively refused: an ICMP error comes back (a REJECT, an unreachable route)."""
    cp = lab.pod_ping(src, dst, count=1, timeout=1)
    assert cp.returncode != 0 and "icmp error" in cp.stdout, cp.stdout


def dropped(lab: Lab, src: str, dst: str) -> None:
    """Silently dropped: no reply and no error."""
    cp = lab.pod_ping(src, dst, count=1, timeout=0.7)
    assert cp.returncode != 0 and "no reply" in cp.stdout, cp.stdout


def sysctl(lab: Lab, node: str, key: str) -> str:
    return lab.node_exec(node, ["sysctl", "-n", key]).stdout.strip()


def iptables(lab: Lab, node: str) -> str:
    return lab.node_exec(node, ["iptables-save"]).stdout


def nft_tables(lab: Lab, node: str) -> str:
    return lab.node_exec(node, ["nft", "list", "tables"]).stdout


def proc_states(lab: Lab, node: str) -> dict[str, str]:
    """{comm: stat} of the node's processes, as `ps` over SSH shows them."""
    lines = ssh(lab, node, "ps -eo comm=,stat=").stdout.splitlines()
    return dict(line.split() for line in lines if len(line.split()) == 2)


def wait_until(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def cni_pod(lab: Lab, node: str) -> dict:
    lab.controlplane.attach()
    ns, selector = (("kube-system", "k8s-app%3Dcalico-node") if lab.cni == "calico-bgp"
                    else ("kube-flannel", "app%3Dflannel"))
    pods = lab.controlplane.admin().get(f"/api/v1/namespaces/{ns}/pods?labelSelector="
                                        f"{selector}")["items"]
    return next(p for p in pods if p["spec"]["nodeName"] == node)


def container(pod: dict) -> tuple[bool, int]:
    status = pod["status"]["containerStatuses"][0]
    return status["ready"], status["restartCount"]


# ---- flannel-vxlan (the session lab) -----------------------------------------------------------


def _forwarding_per_interface(lab: Lab) -> None:
    assert sysctl(lab, "node2", "net.ipv4.ip_forward") == "1"
    assert sysctl(lab, "node2", "net.ipv4.conf.cni0.forwarding") == "0"
    blocked_both(lab, "node1", "node2")


def _rp_filter_on_flannel_only(lab: Lab) -> None:
    assert sysctl(lab, "node2", "net.ipv4.conf.all.rp_filter") == "0"
    assert sysctl(lab, "node2", "net.ipv4.conf.flannel/1.rp_filter") == "1"
    assert "via 198.18.0.11 dev eth0" in lab.node_exec(
        "node2", ["ip", "route", "show", "10.244.1.0/24"]).stdout
    blocked_both(lab, "node1", "node2")
    # the asymmetric route alone does not bite: strict rp_filter on flannel.1 does
    lab.node_exec("node2", ["sysctl", "-qw", "net.ipv4.conf.flannel/1.rp_filter=0"])
    assert pods_ok(lab) and pods_ok(lab, "node2", "node1")
    lab.node_exec("node2", ["sysctl", "-qw", "net.ipv4.conf.flannel/1.rp_filter=1"])
    assert pod_blocked(lab)


def _nft_forward_reject(lab: Lab) -> None:
    refused(lab, "node1", "node2")
    assert "REJECT" not in iptables(lab, "node2")
    assert "table inet filter" in nft_tables(lab, "node2")


def _userchain_reject(lab: Lab) -> None:
    refused(lab, "node2", "node1")
    rules = iptables(lab, "node1")
    assert "-A FORWARD -j FWD-POLICY" in rules and "-A FWD-POLICY -j REJECT" in rules


def _mangle_drop(lab: Lab) -> None:
    dropped(lab, "node1", "node2")
    assert "DROP" not in lab.node_exec("node2", ["iptables", "-S", "FORWARD"]).stdout
    assert "-A FORWARD -d 10.244.2.0/24 -j DROP" in lab.node_exec(
        "node2", ["iptables", "-t", "mangle", "-S"]).stdout


def _legacy_drop(lab: Lab) -> None:
    """The DROP is in the legacy backend: the node's own iptables lists no such rule and
    only warns that legacy tables exist, yet the kernel runs both."""
    dropped(lab, "node1", "node2")
    assert "DROP" not in lab.node_exec("node2", ["iptables", "-S", "FORWARD"]).stdout
    assert "iptables-legacy tables present" in lab.node_exec("node2", ["iptables-save"]).stderr
    assert "-A FORWARD -d 10.244.2.0/24 -j DROP" in lab.node_exec(
        "node2", ["iptables-legacy", "-S", "FORWARD"]).stdout


def _userchain_drop(lab: Lab) -> None:
    dropped(lab, "node2", "node1")
    assert "-A LOCAL-DENY -d 10.244.1.0/24 -j DROP" in iptables(lab, "node1")


def _snat_away(lab: Lab) -> None:
    """Nothing drops node2's pod traffic: its source is rewritten to an address no node
    holds, so the replies are lost; traffic that node1's pods start still gets its replies."""
    assert pod_blocked(lab, "node2", "node1") and not pod_blocked(lab, "node1", "node2")
    assert "DROP" not in "".join(line for line in iptables(lab, "node2").splitlines()
                                 if not line.startswith(("-A KUBE-", ":")))
    assert "-A POSTROUTING -s 10.244.2.0/24 -d 10.244.0.0/16 -j SNAT --to-source " \
        "198.51.100.7" in lab.node_exec("node2", ["iptables", "-t", "nat", "-S"]).stdout


def _firewalld_nft(lab: Lab) -> None:
    # VXLAN from node1 is rejected at node2's input: the ICMP error goes to node1, not the pod
    blocked_both(lab, "node1", "node2")
    assert ssh(lab, "node2", "true").returncode == 0  # ssh is allowed in the public zone
    assert "firewalld" in proc_states(lab, "node2")
    assert "ZONES" not in iptables(lab, "node2")
    assert "table inet firewalld" in nft_tables(lab, "node2")
    args = ssh(lab, "node2", "ps -eo args").stdout
    assert re.search(r"python3 -s \S*/firewalld --nofork --nopid", args), args


def _agent_iptables(lab: Lab) -> None:
    dropped(lab, "node2", "node1")
    assert "wsssr_defence_d" in proc_states(lab, "node1")
    assert "-A FORWARD -j WSSSR-FWD" in iptables(lab, "node1")
    assert "wsssr" not in nft_tables(lab, "node1")


def _vxlan_nft(lab: Lab) -> None:
    blocked_both(lab, "node1", "node2")
    assert "8472" not in iptables(lab, "node2")
    assert "table inet guard" in nft_tables(lab, "node2")


def _vxlan_prerouting(lab: Lab) -> None:
    blocked_both(lab, "node1", "node2")
    assert "-A PREROUTING -p udp -m udp --dport 8472 -j DROP" in lab.node_exec(
        "node1", ["iptables", "-t", "raw", "-S"]).stdout


def _vxlan_tc(lab: Lab) -> None:
    blocked_both(lab, "node1", "node2")
    assert "8472" not in iptables(lab, "node2")
    assert "8472" not in lab.node_exec("node2", ["nft", "list", "ruleset"]).stdout
    assert "direct-action" in lab.node_exec(
        "node2", ["tc", "filter", "show", "dev", "eth0", "ingress"]).stdout
    assert ssh(lab, "node2", "true").returncode == 0  # only VXLAN is dropped


def _vxlan_egress(lab: Lab) -> None:
    """node2's own VXLAN dropped as it leaves eth0, below the capture: tcpdump on node2 sees
    none of it go out while a pod pings across, and iptables shows nothing."""
    assert "hook egress device" in lab.node_exec(
        "node2", ["nft", "list", "table", "netdev", "guard"]).stdout
    _not_seen_leaving(lab)


def _vxlan_tc_egress(lab: Lab) -> None:
    assert "8472" not in lab.node_exec("node2", ["nft", "list", "ruleset"]).stdout
    assert "direct-action" in lab.node_exec(
        "node2", ["tc", "filter", "show", "dev", "eth0", "egress"]).stdout
    _not_seen_leaving(lab)


def _not_seen_leaving(lab: Lab) -> None:
    blocked_both(lab, "node1", "node2")
    assert "8472" not in iptables(lab, "node2")
    got: list = []
    capture = threading.Thread(target=lambda: got.append(lab.node_exec("node2", [
        "timeout", "4", "tcpdump", "-nn", "-i", "eth0", "-c", "1", "udp", "port", "8472"],
        check=False)))
    capture.start()
    time.sleep(1.0)  # tcpdump listening
    assert pod_blocked(lab, "node2", "node1")
    capture.join()
    assert "0 packets captured" in got[0].stderr, got[0].stderr
    assert ssh(lab, "node2", "true").returncode == 0  # only VXLAN is dropped


def _snat_ports_exhausted(lab: Lab) -> None:
    """The pods' connects to the middleware time out while node2's own connect answers, and
    node2's conntrack counts the dropped SYNs as failed inserts, more of them by the second."""
    def failed() -> int:
        stats = lab.node_exec("node2", ["conntrack", "-S"]).stdout
        return sum(int(w.split("=")[1]) for w in stats.split() if w.startswith("insert_failed="))

    before = failed()
    cp = lab.netprog(client_pod(lab, "node2"), "--timeout", "1", "tcp", "203.0.113.10", "3306")
    assert cp.returncode != 0 and "timed out" in cp.stderr + cp.stdout, cp
    assert lab.node_exec("node2", services.netprog_argv(
        "--timeout", "1", "tcp", "203.0.113.10", "3306"), check=False).returncode == 0
    assert failed() > before


def _route_blackhole(lab: Lab) -> None:
    route = lab.node_exec("node1", ["ip", "route", "show", "10.244.2.0/24"]).stdout
    assert route.startswith("blackhole 10.244.2.0/24"), route
    assert pod_blocked(lab, "node1", "node2")


def _vxlan_device_remade_without_routes(lab: Lab) -> None:
    # flanneld made flannel.1 again with the MAC its node publishes, so node1's entries for
    # node2 still hold; node2 itself routes nothing to node1's pods any more
    device = json.loads(lab.node_exec("node2", ["ip", "-j", "-d", "link", "show",
                                                "flannel.1"]).stdout)[0]
    assert device["linkinfo"]["info_data"]["port"] == 8472
    assert device["address"] in lab.node_exec("node1", ["ip", "neigh", "show", "dev",
                                                        "flannel.1"]).stdout
    assert lab.node_exec("node2", ["ip", "route", "show", "10.244.1.0/24"]).stdout == ""
    assert "flannel.1" not in lab.node_exec("node2", ["ip", "route"]).stdout
    assert pod_blocked(lab, "node2", "node1")


def _policy_rule(lab: Lab) -> None:
    assert "to 10.244.1.0/24 blackhole" in lab.node_exec("node2", ["ip", "rule"]).stdout
    assert "dev flannel.1" in lab.node_exec("node2", ["ip", "route", "show",
                                                      "10.244.1.0/24"]).stdout
    dropped(lab, "node2", "node1")
    assert pod_blocked(lab, "node1", "node2")  # replies go the same way


def _policy_table(lab: Lab) -> None:
    assert "to 10.244.0.0/16 lookup 100" in lab.node_exec("node1", ["ip", "rule"]).stdout
    refused(lab, "node1", "node2")  # ICMP net unreachable from node1


def _big_pod_packets_vanish(node: str, peer: str, size: int) -> Callable[[Lab], None]:
    def check(lab: Lab) -> None:
        # small packets pass; big ones, even fragmented by the pod itself, vanish: bigger than
        # the node's side takes (via=pod), or than the pod's own veth passes on (via=veth)
        assert pods_ok(lab, node, peer)
        cp = lab.pod_ping(node, peer, size=size, df=False, timeout=1)
        assert cp.returncode != 0 and "no reply" in cp.stdout, cp.stdout
    return check


def _flanneld_hung(lab: Lab) -> None:
    assert proc_states(lab, "node2")["flanneld"].startswith("T")
    # kube-flannel's DaemonSet has no probe: the API still says Ready and running
    assert container(cni_pod(lab, "node2")) == (True, 0)
    nodes = json.loads(lab.state_path.read_text())["nodes"]
    assert [n["cni_pod_ready"] for n in nodes] == [True, True]


def _coredns_hung(lab: Lab) -> None:
    dns_pod = lab.pod_for_app("coredns")
    assert coredns.pids(lab.topology)
    assert all(_state(pid) == "T" for pid in coredns.pids(lab.topology))
    assert not dns_ok(lab, "node2")
    cp = lab.netprog(client_pod(lab, "node2"), "--timeout", "1", "dns", dns_pod.ip,
                     "kubernetes.default.svc.cluster.local")
    assert cp.returncode != 0
    # the lab's readiness probe timed out, as the kubelet's would: not Ready, no restart
    assert not pod_ready(lab, "kube-system", dns_pod.name)
    assert slice_endpoints(lab, "kube-system", "kube-dns") == [(dns_pod.ip, False)]
    pods = {p["name"]: p for p in json.loads(lab.state_path.read_text())["pods"]}
    assert (pods[dns_pod.name]["ready"], pods[dns_pod.name]["restarts"]) == (False, 0)


def _coredns_loops(lab: Lab) -> None:
    """The node resolves through its stub on loopback; CoreDNS, given the node's file and a
    Corefile that forwards to it, found its own probe coming back and exited."""
    dns_pod = lab.pod_for_app("coredns")
    # the node's own file, in its mount namespace (node_exec enters its network only)
    node = lab.runners.node(lab.topology.node(dns_pod.node))
    assert "nameserver 127.0.0.53" in node.shell("cat /etc/resolv.conf").stdout
    # the node itself still resolves the site's names, through the stub
    assert lab.node_exec(dns_pod.node, services.netprog_argv(
        "--timeout", "2", "dns", "127.0.0.53", OUTSIDE_HOST_NAME)).returncode == 0
    assert "forward . /etc/resolv.conf" in coredns.corefile_path(lab.paths).read_text()
    assert not coredns.pids(lab.topology)
    assert coredns.LOOP_MARK.decode() in coredns.log_path(lab.paths).read_text()
    assert not dns_ok(lab, "node2")
    # crash-looping, as the kubelet reports a container that exits at every start
    assert not pod_ready(lab, "kube-system", dns_pod.name)
    assert slice_endpoints(lab, "kube-system", "kube-dns") == [(dns_pod.ip, False)]
    pods = {p["name"]: p for p in json.loads(lab.state_path.read_text())["pods"]}
    assert pods[dns_pod.name]["ready"] is False and pods[dns_pod.name]["restarts"] > 0


def _zone_mismatched(lab: Lab) -> None:
    """CoreDNS answers the cluster's names under the zone its Corefile now serves only: the
    pods' names, completed with the kubelets' cluster.local, get no address."""
    dns_pod = lab.pod_for_app("coredns")
    assert "kubernetes k8s.example " in coredns.corefile_path(lab.paths).read_text()
    assert pod_ready(lab, "kube-system", dns_pod.name)
    assert not dns_ok(lab, "node2")  # kubernetes.default.svc.cluster.local
    cp = lab.netprog(client_pod(lab, "node2"), "--timeout", "1", "dns", "10.96.0.10",
                     "kubernetes.default.svc.k8s.example")
    assert cp.returncode == 0, cp


def _dns_intercepted(lab: Lab) -> None:
    """CoreDNS runs, Ready, and answers its own node; queries that reach its node from any pod
    are sent to an address where nothing answers."""
    dns_pod = lab.pod_for_app("coredns")
    assert "--dport 53 -j DNAT --to-destination 203.0.113.53" in lab.node_exec(
        dns_pod.node, ["iptables-save", "-t", "nat"]).stdout
    assert not dns_ok(lab, "node2") and not dns_ok(lab, dns_pod.node)
    assert pod_ready(lab, "kube-system", dns_pod.name)
    # the node's own query leaves through OUTPUT, which the rule is not in
    assert lab.node_exec(dns_pod.node, services.netprog_argv(
        "--timeout", "1", "dns", dns_pod.ip, "kubernetes.default.svc.cluster.local"),
        check=False).returncode == 0


def _upstream_gone(via: str) -> Callable[[Lab], None]:
    def broken(lab: Lab) -> None:
        # CoreDNS answers a pod the cluster's names and gets nothing from its upstream for
        # the middleware's name, which the site's resolver knows
        dns_pod, pod = lab.pod_for_app("coredns"), client_pod(lab, "node2")
        ask = ["--timeout", "2", "dns", dns_pod.ip]
        assert lab.netprog(pod, *ask, "kubernetes.default.svc.cluster.local").returncode == 0
        cp = lab.netprog(pod, *ask, "mysql.corp.example")
        assert cp.returncode != 0 and "rcode=3" not in cp.stdout, cp
        corefile = api(lab, "/api/v1/namespaces/kube-system/configmaps/coredns")["data"][
            "Corefile"]
        retired = "forward . 198.18.0.249" in corefile
        assert retired if via == "config" else not retired
        assert pod_ready(lab, "kube-system", dns_pod.name)
    return broken


def _sshd_hung(lab: Lab) -> None:
    started = time.monotonic()
    cp = lab.client_exec(lab.ssh_argv("node2", "true", connect_timeout=2), timeout=30)
    assert cp.returncode == 255 and "refused" not in cp.stderr, cp.stderr
    assert "timed out" in cp.stderr, cp.stderr  # during the banner exchange
    assert time.monotonic() - started >= 1.5
    assert pods_ok(lab, "node1", "node2")  # the node's network is fine
    assert ssh(lab, "node1", "true").returncode == 0


def _node_refuses_everything(lab: Lab) -> None:
    """node2 runs and refuses anything new: SSH fails at once with "No route to host", a
    peer's ping is answered by node2's own address with host prohibited, and node2's own
    connections still get their replies."""
    cp = lab.client_exec(lab.ssh_argv("node2", "true", connect_timeout=5), timeout=30)
    assert cp.returncode == 255 and "No route to host" in cp.stderr, cp.stderr
    node1, node2 = (lab.topology.node(n).address for n in ("node1", "node2"))
    ping = lab.node_exec("node1", ["ping", "-c", "1", "-W", "1", node2], check=False).stdout
    assert f"From {node2} icmp_seq=1 Destination Host Prohibited" in ping, ping
    assert lab.node_exec("node2", ["ping", "-c", "1", "-W", "1", node1]).returncode == 0
    assert not pods_ok(lab, "node1", "node2")


def _node_off_the_network(lab: Lab) -> None:
    """node2 answers nothing on the node network, SSH included, and reaches nobody, while
    node1 and the client still reach each other."""
    cp = lab.client_exec(lab.ssh_argv("node2", "true", connect_timeout=2), timeout=30)
    assert cp.returncode == 255, cp.stderr
    assert ssh(lab, "node1", "true").returncode == 0
    node1, node2 = (lab.topology.node(n).address for n in ("node1", "node2"))
    assert lab.node_exec("node1", ["ping", "-c", "1", "-W", "1", node2],
                         check=False).returncode != 0
    assert lab.node_exec("node2", ["ping", "-c", "1", "-W", "1", node1],
                         check=False).returncode != 0
    assert not pods_ok(lab, "node1", "node2")


def _bridge_nf_file(lab: Lab) -> None:
    cp = ssh(lab, "node1", "cat /etc/sysctl.d/99-libvirt-bridge.conf; "
                           "sysctl -n net.bridge.bridge-nf-call-iptables")
    assert cp.stdout.split() == ["net.bridge.bridge-nf-call-iptables", "=", "0", "0"], cp
    assert not dns_ok(lab, "node1")  # CoreDNS runs on node1: its reply is bridged on cni0
    assert dns_ok(lab, "node2")


LISTEN = ("import socket, subprocess; s = socket.socket(); s.bind(('127.0.0.1', 30099)); "
          "s.listen(4096); print(subprocess.run(['ss', '-Hlnt', 'sport = :30099'], "
          "capture_output=True, text=True).stdout.split()[2])")


def _somaxconn_file(lab: Lab) -> None:
    cp = ssh(lab, "node2", "cat /etc/sysctl.d/99-tuning.conf")
    assert cp.stdout.split() == ["net.core.somaxconn", "=", "64"], cp
    # a listener asking for 4096 gets an accept queue of 64 (ss: Send-Q of a listener)
    assert lab.node_exec("node2", ["python3", "-c", LISTEN]).stdout.strip() == "64"
    assert lab.node_exec("node1", ["python3", "-c", LISTEN]).stdout.strip() == "4096"


def _window_scaling_file(lab: Lab) -> None:
    cp = ssh(lab, "node2", "cat /etc/sysctl.d/99-hardening-tcp.conf")
    assert cp.stdout.split() == ["net.ipv4.tcp_window_scaling", "=", "0"], cp
    assert not window_scaled(lab, "node2") and window_scaled(lab, "node1")


def _kube_proxy_hung(lab: Lab) -> None:
    assert proc_states(lab, "node2")["kube-proxy"].startswith("T")
    assert not dns_ok(lab, "node2") and dns_ok(lab, "node1")
    lab.controlplane.attach()
    pods = lab.controlplane.admin().get(
        "/api/v1/namespaces/kube-system/pods?labelSelector=k8s-app%3Dkube-proxy")["items"]
    mine = next(p for p in pods if p["spec"]["nodeName"] == "node2")
    assert container(mine) == (True, 0)  # kube-proxy's DaemonSet has no probe


def _services_unreached(chain: str) -> Callable[[Lab], None]:
    """kube-proxy runs and its KUBE-SERVICES chain is full, but one base chain of the nat
    table no longer jumps to it: the pods' DNS through the VIP fails only without the
    PREROUTING jump."""
    def check(lab: Lab) -> None:
        assert not proc_states(lab, "node2")["kube-proxy"].startswith("T")
        nat = lab.node_exec("node2", ["iptables", "-t", "nat", "-S"]).stdout
        assert f"-A {chain} -m comment --comment \"kubernetes service portals\" -j " \
            "KUBE-SERVICES" not in nat and "-A KUBE-SERVICES " in nat
        assert dns_ok(lab, "node2") == (chain == "OUTPUT") and dns_ok(lab, "node1")
    return check


def _not_masqueraded(lab: Lab) -> None:
    """node1 no longer masquerades what kube-proxy sends on: a pod's connect to node1's
    NodePort, DNATed to the web pod on node2, is answered from an address the client never
    spoke to; node2's NodePort, which masquerades, still answers."""
    assert '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j ' \
        "KUBE-POSTROUTING" not in lab.node_exec("node1", ["iptables", "-t", "nat", "-S"]).stdout
    pod = client_pod(lab, "node2")
    for node, ok in (("node1", False), ("node2", True)):
        cp = lab.netprog(pod, "--timeout", "1", "tcp", lab.topology.node(node).address,
                         str(WEB_NODE_PORT))
        assert (cp.returncode == 0) == ok, (node, cp.stdout, cp.stderr)


def _nodeports_unreached(lab: Lab) -> None:
    """kube-proxy runs with nodePortAddresses holding none of node2's addresses: every NodePort
    rule is there and nothing jumps to them, so node2's NodePort refuses its peers' pods and
    the node itself, while node1's answers."""
    assert not proc_states(lab, "node2")["kube-proxy"].startswith("T")
    nat = lab.node_exec("node2", ["iptables", "-t", "nat", "-S"]).stdout
    assert "-A KUBE-NODEPORTS " in nat and "-j KUBE-NODEPORTS" not in nat
    pod = client_pod(lab, "node1")
    for node, ok in (("node2", False), ("node1", True)):
        cp = lab.netprog(pod, "--timeout", "1", "tcp", lab.topology.node(node).address,
                         str(WEB_NODE_PORT))
        assert (cp.returncode == 0) == ok, (node, cp.stdout, cp.stderr)
    own = lab.node_exec("node2", services.netprog_argv(
        "--timeout", "1", "tcp", lab.topology.node("node2").address, str(WEB_NODE_PORT)),
        check=False)
    assert own.returncode != 0 and "refused" in own.stdout + own.stderr


def _listener_hung(lab: Lab) -> None:
    # an app that accepted with backlog 128, stopped: its queue is full (Recv-Q 129 > 128)
    line = lab.node_exec("node2", ["ss", "-Hlntp", "sport = :30080"]).stdout.split()
    assert line[:3] == ["LISTEN", "129", "128"], line
    pid = int(re.search(r"pid=(\d+)", " ".join(line)).group(1))
    assert _state(pid) == "T" and "serve-banner 30080" in cmdline(pid)
    # one more connect from a pod is not accepted, and counts as an overflow
    before = counter(lab, "node2", "/proc/net/netstat", "ListenOverflows")
    cp = lab.netprog(client_pod(lab, "node2"), "--timeout", "1", "tcp", "198.18.0.12", "30080")
    assert cp.returncode != 0 and "timed out" in cp.stderr, cp
    assert counter(lab, "node2", "/proc/net/netstat", "ListenOverflows") > before


def _app_pod(lab: Lab, node: str) -> LabPod:
    """The pod the via=pod faults put their programs in: the node's last that is not CoreDNS."""
    return [p for p in lab.pods_on(node) if p.app != "coredns"][-1]


def _pod_counter(lab: Lab, pod: str, path: str, name: str) -> int:
    """A counter of the pod's own network namespace, which the node's does not include."""
    lines = lab.runners.pod(pod).run(["cat", path]).stdout.splitlines()
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        keys, vals = head.split()[1:], values.split()[1:]
        if name in keys:
            return int(vals[keys.index(name)])
    raise AssertionError(f"{name} not in {pod}'s {path}")


def _listener_stuck_in_pod(lab: Lab) -> None:
    # node2's last pod that is not CoreDNS holds a listener with backlog 1 that never accepts:
    # its queue is full, and the pod, not the node, counts what the burst overflowed
    pod = _app_pod(lab, "node2")
    line = lab.runners.pod(pod.name).run(["ss", "-Hlnt", "sport = :30080"]).stdout.split()
    assert line[:3] == ["LISTEN", "2", "1"], line
    assert not lab.node_exec("node2", ["ss", "-Hlnt", "sport = :30080"]).stdout.strip()
    before = _pod_counter(lab, pod.name, "/proc/net/netstat", "ListenOverflows")
    assert before > 0
    cp = lab.netprog(client_pod(lab, "node1"), "--timeout", "1", "tcp", pod.ip, "30080")
    assert cp.returncode != 0 and "timed out" in cp.stderr, cp
    assert _pod_counter(lab, pod.name, "/proc/net/netstat", "ListenOverflows") > before


def _udp_stuck_in_pod(lab: Lab) -> None:
    pod = _app_pod(lab, "node2")
    out = lab.runners.pod(pod.name).run(["ss", "-Hlnum", "sport = :30053"]).stdout
    drops = re.search(r",d(\d+)\)", out)
    assert drops and int(drops.group(1)) > 0, out
    before = _pod_counter(lab, pod.name, "/proc/net/snmp", "RcvbufErrors")
    lab.netprog(client_pod(lab, "node1"), "udp-flood", pod.ip, "30053", "50")
    assert _pod_counter(lab, pod.name, "/proc/net/snmp", "RcvbufErrors") > before


def _time_wait_in_pod(lab: Lab) -> None:
    # node1's pod closed first: the pod's namespace holds the TIME_WAITs, the node none
    pod = _app_pod(lab, "node1")
    toward = ["ss", "-Htn", "state", "time-wait", f"dst {OUTSIDE_HOST}:9104"]
    assert len(lab.runners.pod(pod.name).run(toward).stdout.splitlines()) >= 1400
    assert lab.node_exec("node1", toward).stdout == ""


def _files_leaked(lab: Lab) -> None:
    # the server answered and closed what it accepted, and kept a file open for each: its
    # descriptors are files, not connections, and none is left for accept()
    line, open_, soft = fd_count_and_limit(lab, "node2", 30082)
    assert (open_, soft) == (64, 64) and line[:3] == ["LISTEN", "129", "128"], line
    pid = re.search(r"pid=(\d+)", " ".join(line)).group(1)
    links = lab.node_exec("node2", ["find", f"/proc/{pid}/fd", "-type", "l", "-printf",
                                    "%l\\n"]).stdout.split()
    assert sum(link.endswith("/stat") for link in links) >= 48, links
    assert sum(link.startswith("socket:") for link in links) <= 4, links


def _pool_keeps_closed_connections(lab: Lab) -> None:
    # the middleware greeted and closed each of the pool's connections; the node keeps them
    assert close_wait_owners(lab, "node2") == {f"{OUTSIDE_HOST}:{OUTSIDE_PORT}": 300}
    # and the middleware still answers anyone who connects
    assert "5.7.44-lab" in lab.node_exec("node2", ["python3", "-c", (
        "import socket; s = socket.create_connection(('203.0.113.10', 3306), timeout=2); "
        "print(s.recv(64).decode())")]).stdout


def _half_closed_and_held(lab: Lab) -> None:
    # a process on the node holds every one, so tcp_fin_timeout (left at 60) does not end them
    ip = lab.pods_on("node2")[0].ip
    assert fin_wait2_peers(lab, "node2") == {f"{ip}:30084": 1200}
    owned = lab.node_exec("node2", ["ss", "-Htnp", "state", "fin-wait-2"]).stdout.splitlines()
    assert all("connect-keep" in row or "python" in row for row in owned), owned[:3]
    assert lab.node_exec("node2", ["sysctl", "-n", "net.ipv4.tcp_fin_timeout"]
                         ).stdout.strip() == "60"


def _udp_reader_hung(lab: Lab) -> None:
    out = lab.node_exec("node2", ["ss", "-Hlnump", "sport = :30053"]).stdout
    # the kernel's default buffer (rmem_default), full, with drops; its reader stopped
    skmem = re.search(r"r(\d+),rb(\d+),.*,d(\d+)\)", out)
    assert skmem, out
    queued, rcvbuf, drops = map(int, skmem.groups())
    assert rcvbuf == int(sysctl(lab, "node2", "net.core.rmem_default")) and rcvbuf > 100000
    assert queued > rcvbuf // 2 and drops > 0, out
    pid = int(re.search(r"pid=(\d+)", out).group(1))
    assert _state(pid) == "T" and "udp-sink 30053" in cmdline(pid)
    before = counter(lab, "node2", "/proc/net/snmp", "RcvbufErrors")
    lab.netprog(client_pod(lab, "node2"), "udp-flood", "198.18.0.12", "30053", "50")
    assert counter(lab, "node2", "/proc/net/snmp", "RcvbufErrors") > before


def _time_wait_toward_exporter(lab: Lab) -> None:
    # node1's own client closed first: its side holds the TIME_WAITs, all toward one peer
    held = lab.node_exec("node1", ["ss", "-Htn", "state", "time-wait",
                                   f"dst {OUTSIDE_HOST}:9104"]).stdout
    assert len(held.splitlines()) >= 1400
    # and the exporter's side none (other tests' connections to the middleware may linger)
    assert lab.runners.outside.run(["ss", "-Htn", "state", "time-wait",
                                    "sport = :9104"]).stdout == ""


def _web_on_loopback(lab: Lab) -> None:
    web = lab.pod_for_app("web")
    listening = lab.runners.pod(web.name).run(["ss", "-Hlnt"]).stdout.split()
    assert listening[3] == "127.0.0.1:8080", listening
    cp = lab.netprog(client_pod(lab, "node1"), "tcp", web.ip, "8080")
    assert cp.returncode != 0 and "refused" in cp.stderr, cp
    cp = lab.netprog(client_pod(lab, "node1"), "tcp", "10.96.0.20", "80")
    assert cp.returncode != 0 and "refused" in cp.stderr, cp
    # it does listen: on the pod's loopback
    assert lab.netprog(web.name, "http", "http://127.0.0.1:8080/").returncode == 0
    assert pod_ready(lab, "default", web.name)  # the lab models no readiness probe for it


def _selector_matches_nothing(lab: Lab) -> None:
    web = lab.pod_for_app("web")
    svc = api(lab, "/api/v1/namespaces/default/services/web")
    assert svc["spec"]["selector"] == {"app": "web-v2"}
    # the pod is Ready; the controller's slice lists nothing, kube-proxy rejects the VIP
    assert pod_ready(lab, "default", web.name)
    assert slice_endpoints(lab, "default", "web") == []
    for node in ("node1", "node2"):
        assert "default/web:http has no endpoints" in iptables(lab, node)
    assert not web_ok(lab)
    state = json.loads(lab.state_path.read_text())
    web_svc = next(s for s in state["services"] if s["name"] == "web")
    assert web_svc["endpoints"] == [] and web_svc["selector"] == {"app": "web-v2"}
    assert next(p for p in state["pods"] if p["name"] == web.name)["ready"] is True


def _target_port_renamed(lab: Lab) -> None:
    web = lab.pod_for_app("web")
    svc = api(lab, "/api/v1/namespaces/default/services/web")
    assert svc["spec"]["ports"][0]["targetPort"] == "http-alt"
    pod = api(lab, f"/api/v1/namespaces/default/pods/{web.name}")
    assert pod["spec"]["containers"][0]["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    # the real controller still lists the Ready pod, in a slice without ports, which
    # kube-proxy programs as no endpoint: it rejects the VIP
    assert pod_ready(lab, "default", web.name)
    found = api(lab, "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
                     "?labelSelector=kubernetes.io/service-name%3Dweb")["items"]
    assert [(s.get("ports"), [e["addresses"] for e in s.get("endpoints") or []])
            for s in found] == [(None, [[web.ip]])]
    for node in ("node1", "node2"):
        assert "default/web:http has no endpoints" in iptables(lab, node)
    assert not web_ok(lab)


def _vxlan_link_by_hand(lab: Lab) -> None:
    def link(node: str) -> dict:
        return json.loads(lab.node_exec(node, ["ip", "-j", "-d", "link", "show",
                                               "flannel.1"]).stdout)[0]
    mine, peer = link("node2"), link("node1")
    assert mine["linkinfo"]["info_data"]["port"] == 4789
    assert peer["linkinfo"]["info_data"]["port"] == 8472
    # flanneld still runs with the cluster's configuration, which names no port
    assert "flanneld" in proc_states(lab, "node2")
    assert flannel.configured_port(lab.paths, lab.topology.node("node2")) is None
    # flanneld's entries for the peer are all there: the port alone breaks the overlay
    assert "10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink" in lab.node_exec(
        "node2", ["ip", "route"]).stdout
    assert "dst 198.18.0.11 self permanent" in lab.node_exec(
        "node2", ["bridge", "fdb", "show", "dev", "flannel.1"]).stdout
    assert "PERMANENT" in lab.node_exec("node2", ["ip", "neigh", "show", "dev",
                                                  "flannel.1"]).stdout
    state = json.loads(lab.state_path.read_text())
    assert [n["vxlan_port"] for n in state["nodes"]] == [8472, 4789]
    blocked_both(lab, "node1", "node2")


def _vxlan_vni_by_hand(lab: Lab) -> None:
    def vxlan(node: str) -> dict:
        return json.loads(lab.node_exec(node, ["ip", "-j", "-d", "link", "show",
                                               "flannel.1"]).stdout)[0]["linkinfo"]["info_data"]
    mine, peer = vxlan("node2"), vxlan("node1")
    assert (mine["id"], peer["id"]) == (2, 1)
    assert mine["port"] == peer["port"] == 8472  # the port is right: the VNI alone differs
    # flanneld's entries for the peer are all there
    assert "10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink" in lab.node_exec(
        "node2", ["ip", "route"]).stdout
    assert "dst 198.18.0.11 self permanent" in lab.node_exec(
        "node2", ["bridge", "fdb", "show", "dev", "flannel.1"]).stdout
    blocked_both(lab, "node1", "node2")


def _vxlan_vni_by_config(lab: Lab) -> None:
    def vxlan(dev: str) -> dict:
        return json.loads(lab.node_exec("node2", ["ip", "-j", "-d", "link", "show", dev]
                                        ).stdout)[0]["linkinfo"]["info_data"]
    # flanneld names its device after the VNI: flannel.2 carries the routes, and flannel.1,
    # still up on VNI 1 (as the peers' are), is left with none
    assert (vxlan("flannel.2")["id"], vxlan("flannel.1")["id"]) == (2, 1)
    assert flannel.configured_vni(lab.paths, lab.topology.node("node2")) == 2
    routes = lab.node_exec("node2", ["ip", "route"]).stdout
    assert "10.244.1.0/24 via 10.244.1.0 dev flannel.2 onlink" in routes
    assert "dev flannel.1" not in routes
    blocked_both(lab, "node1", "node2")


def _vtep_mac_shared(lab: Lab) -> None:
    def mac(node: str) -> str:
        return json.loads(lab.node_exec(node, ["ip", "-j", "link", "show", "flannel.1"]
                                        ).stdout)[0]["address"]
    shared = mac("node1")
    assert mac("node2") == shared
    # node2's flanneld announced it, and node1's took it for node2's VTEP
    assert f"10.244.2.0 lladdr {shared} " in lab.node_exec(
        "node1", ["ip", "neigh", "show", "dev", "flannel.1"]).stdout
    # each drops the other's frames: they arrive with its own MAC as their source
    blocked_both(lab, "node1", "node2")


def _vxlan_port_held_on_address(lab: Lab) -> None:
    held = lab.node_exec("node2", ["ss", "-Hulnp", "sport = :8472"]).stdout
    assert "198.18.0.12:8472" in held and "pid=" in held, held
    assert "state DOWN" in lab.node_exec("node2", ["ip", "-o", "link", "show",
                                                   "flannel.1"]).stdout
    # the kernel's wildcard VXLAN socket collides with a socket on one address as well
    cp = lab.node_exec("node2", ["ip", "link", "set", "flannel.1", "up"], check=False)
    assert cp.returncode != 0 and "in use" in cp.stderr, cp.stderr
    blocked_both(lab, "node1", "node2")


def _pings_dropped(lab: Lab) -> None:
    node2 = lab.topology.node("node2").address
    assert lab.node_exec("node1", ["ping", "-c", "1", "-W", "1", node2],
                         check=False).returncode != 0
    # TCP to the node passes (its sshd), and so does the pod network through it
    assert ssh(lab, "node2", "true").returncode == 0
    assert web_ok(lab, "node1") and dns_ok(lab, "node2")


def _pings_ignored_by_the_kernel(lab: Lab) -> None:
    # no rule anywhere: the packet filter passes the pings and the kernel answers none
    assert "icmp" not in iptables(lab, "node2") and "hardening" not in nft_tables(lab, "node2")
    assert sysctl(lab, "node2", "net.ipv4.icmp_echo_ignore_all") == "1"
    _pings_dropped(lab)


def _pods_told(wrong: str) -> Callable[[Lab], None]:
    """The node's pods see a resolv.conf with `wrong` in it through their sandbox (where the
    diagnoser reads it; the other node's pods do not), so a lookup the way a pod makes it
    fails, while the cluster DNS still answers the same pod by address."""
    def check(lab: Lab) -> None:
        pod = client_pod(lab, "node2")
        conf = pod_resolv_conf(lab, pod)
        healthy = pod_resolv_conf(lab, client_pod(lab, "node1"))
        assert wrong in conf and wrong not in healthy
        assert not lookup_as_pod(lab, pod, conf, "kubernetes.default")
        assert lookup_as_pod(lab, pod, healthy, "kubernetes.default")
        assert dns_ok(lab, "node2")
    return check


def lookup_as_pod(lab: Lab, pod: str, conf: str, name: str) -> bool:
    """getent of `name` in the pod's network namespace with `conf` as its resolv.conf (in a
    mount namespace of its own): whether it resolved."""
    script = ('mount -t tmpfs tmpfs /tmp && printf "%s" "$1" >/tmp/r && '
              'mount --bind /tmp/r /etc/resolv.conf && exec timeout 5 getent ahostsv4 "$2"')
    return lab.runners.pod(pod).run(["unshare", "--mount", "--propagation", "private", "sh",
                                     "-c", script, "_", conf, name], check=False
                                    ).returncode == 0


def _xfrm_blocked(via: str) -> Callable[[Lab], None]:
    """node2's IPsec policy drops one direction of its traffic with node1 (out: to node1's
    pods; fwd: node1's pods to node2's; in: all node1 sends to node2's address, its VXLAN
    too) where neither iptables, nft nor the routes show anything, and the kernel counts it.
    (Each node's own pod network still works: proven by `proven`, before and after.)"""
    def check(lab: Lab) -> None:
        if via == "out":
            assert pod_blocked(lab, "node2", "node1")
        elif via == "fwd":
            assert pod_blocked(lab, "node1", "node2")
        else:
            assert lab.node_exec("node1", ["ping", "-c", "1", "-W", "1",
                                           lab.topology.node("node2").address],
                                 check=False).returncode != 0
            assert pod_blocked(lab, "node1", "node2")
        assert "DROP" not in "".join(line for line in iptables(lab, "node2").splitlines()
                                     if not line.startswith(("-A KUBE-", ":")))
        stat = lab.node_exec("node2", ["cat", "/proc/net/xfrm_stat"]).stdout
        blocked = dict(line.split() for line in stat.splitlines() if line.strip())
        assert int(blocked["XfrmOutPolBlock"]) + int(blocked["XfrmInPolBlock"]) > 0, stat
    return check


def _sa_missing(via: str) -> Callable[[Lab], None]:
    """node2's IPsec policy asks for an SA with node1 that nobody installs. Going out, its
    pods' traffic to node1's pods (pod) or everything node2 sends to node1's address (node)
    is dropped and counted as XfrmOutNoStates; coming in, node1's pods' traffic forwarded to
    node2's (fwd) or everything node1 sends to node2's address (in) arrives plain and is
    dropped as XfrmInTmplMismatch; mark, Cilium's way, only what a mangle rule marked going
    out. No DROP in netfilter shows it."""
    counter = "XfrmInTmplMismatch" if via in ("fwd", "in") else "XfrmOutNoStates"

    def check(lab: Lab) -> None:
        if via == "ike":
            # a real charon holds the trap: idle, its policies and no SA, as a healthy
            # on-demand tunnel has; it is subscribed to the kernel's requests
            assert "tmpl" in lab.node_exec("node2", ["ip", "xfrm", "policy", "list"]).stdout
            assert not lab.node_exec("node2", ["ip", "xfrm", "state", "list"]).stdout.strip()
            netlink = lab.node_exec("node2", ["cat", "/proc/net/netlink"]).stdout
            assert any(row.split()[1] == "6" and int(row.split()[3], 16) & 1
                       for row in netlink.splitlines()[1:])
        before = _xfrm_stat(lab, "node2")[counter]
        if via not in ("fwd", "in"):
            assert pod_blocked(lab, "node2", "node1")
        else:
            assert pod_blocked(lab, "node1", "node2")
        if via in ("node", "in"):
            sender, peer = ("node2", "node1") if via == "node" else ("node1", "node2")
            assert lab.node_exec(sender, ["ping", "-c", "1", "-W", "1",
                                          lab.topology.node(peer).address],
                                 check=False).returncode != 0
        assert _xfrm_stat(lab, "node2")[counter] > before
        assert "DROP" not in "".join(line for line in iptables(lab, "node2").splitlines()
                                     if not line.startswith(("-A KUBE-", ":")))
        if via == "ike":  # the kernel asked charon, and the larval entry stays unanswered
            assert "spi 0x00000000" in lab.node_exec(
                "node2", ["ip", "xfrm", "state", "list"]).stdout
    return check


def _xfrm_stat(lab: Lab, node: str) -> dict[str, int]:
    stat = lab.node_exec(node, ["cat", "/proc/net/xfrm_stat"]).stdout
    return {k: int(v) for k, v in (line.split() for line in stat.splitlines() if line.strip())}


def _dns_untracked(via: str) -> Callable[[Lab], None]:
    def check(lab: Lab) -> None:
        if via == "nft":
            assert "udp dport 53 notrack" in lab.node_exec("node2", ["nft", "list", "table",
                                                                    "ip", "dns_notrack"]).stdout
        else:
            assert "-j NOTRACK" in lab.node_exec("node2", ["iptables-save", "-t", "raw"]).stdout
        # kube-proxy's DNAT never sees the node's pods' DNS: the cluster DNS VIP is silent
        assert not dns_ok(lab, "node2") and dns_ok(lab, "node1")
        # while CoreDNS itself answers them, and their other Services work
        cp = lab.netprog(client_pod(lab, "node2"), "--timeout", "1", "dns",
                         lab.pod_for_app("coredns").ip, "kubernetes.default.svc.cluster.local")
        assert cp.returncode == 0, cp.stdout
        assert web_ok(lab, "node2")
    return check


def _vxlan_device_off(lab: Lab) -> None:
    assert "state DOWN" in lab.node_exec("node2", ["ip", "-o", "link", "show",
                                                   "flannel.1"]).stdout
    # the kernel took flanneld's routes and neighbours with it; its FDB entries stay
    assert "flannel.1" not in lab.node_exec("node2", ["ip", "route"]).stdout
    assert lab.node_exec("node2", ["ip", "neigh", "show", "dev", "flannel.1"]).stdout == ""
    assert "dst 198.18.0.11" in lab.node_exec("node2", ["bridge", "fdb", "show", "dev",
                                                        "flannel.1"]).stdout
    # nothing holds its port: the kernel's socket went with the device
    assert lab.node_exec("node2", ["ss", "-Hulnp", "sport = :8472"]).stdout == ""
    blocked_both(lab, "node1", "node2")


def _pod_bridge_off(lab: Lab) -> None:
    assert "state DOWN" in lab.node_exec("node2", ["ip", "-o", "link", "show",
                                                   "cni0"]).stdout
    assert "cni0" not in lab.node_exec("node2", ["ip", "route"]).stdout
    pod = lab.pods_on("node2")[0]
    assert lab.node_exec("node2", ["ping", "-c", "1", "-W", "1", pod.ip],
                         check=False).returncode != 0
    assert pod_blocked(lab, "node2", "node1")


def _bridge_gateway_gone(held: str) -> Callable[[Lab], None]:
    def broken(lab: Lab) -> None:
        # up with its ports, its address replaced or gone, and with it the kernel's route to
        # the node's own pods: the node cannot reach them, nor the pods of other nodes them
        link = lab.node_exec("node2", ["ip", "-o", "-4", "addr", "show", "cni0"]).stdout
        assert ("inet " + held in link) if held else "inet " not in link
        assert "state UP" in lab.node_exec("node2", ["ip", "-o", "link", "show", "cni0"]).stdout
        assert "10.244.2.0/24" not in lab.node_exec("node2", ["ip", "route"]).stdout
        pod = lab.pods_on("node2")[0]
        assert lab.node_exec("node2", ["ping", "-c", "1", "-W", "1", pod.ip],
                             check=False).returncode != 0
        assert pod_blocked(lab, "node1", "node2")
    return broken


def _vxlan_neighbour_gone(lab: Lab) -> None:
    # node2's entries for node1: the route stays, the neighbour is gone, the FDB entry stays
    assert "10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink" in lab.node_exec(
        "node2", ["ip", "route"]).stdout
    assert "10.244.1.0" not in lab.node_exec("node2", ["ip", "neigh", "show", "dev",
                                                       "flannel.1"]).stdout
    assert "dst 198.18.0.11 self permanent" in lab.node_exec(
        "node2", ["bridge", "fdb", "show", "dev", "flannel.1"]).stdout
    blocked_both(lab, "node1", "node2")


def _vxlan_entry_stale(via: str) -> Callable[[Lab], None]:
    """node2's entries for node1 all there, one of them wrong: the neighbour gives a MAC that
    node1's flannel.1 does not have, or the FDB sends node1's MAC to an address no one holds;
    the pods of the two nodes cannot reach each other."""
    def check(lab: Lab) -> None:
        mac = lab.node_exec("node1", ["cat", "/sys/class/net/flannel.1/address"]).stdout.strip()
        neigh = lab.node_exec("node2", ["ip", "neigh", "show", "dev", "flannel.1",
                                        "to", "10.244.1.0"]).stdout
        fdb = lab.node_exec("node2", ["bridge", "fdb", "show", "dev", "flannel.1"]).stdout
        assert "10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink" in lab.node_exec(
            "node2", ["ip", "route"]).stdout
        if via == "mac":
            assert "PERMANENT" in neigh and mac not in neigh, (mac, neigh)
            assert f"{mac} dst 198.18.0.11 self permanent" in fdb
        else:
            assert f"lladdr {mac} PERMANENT" in neigh
            assert f"{mac} dst {RETIRED_NODE_ADDRESS} self permanent" in fdb
            assert "198.18.0.11" not in fdb
        blocked_both(lab, "node1", "node2")
    return check


def _address_takes_peer(via: str) -> Callable[[Lab], None]:
    """docker0 on node2 holds an address whose connected route outranks the way to node1:
    inside node1's pod range (via=pod) or around node1's node address (via=node), while the
    CNI's route to node1's pods is still in the table; the two nodes' pods are cut apart
    (via=node: the tunnel to node1 leaves by the bridge, so only in vxlan mode)."""
    def check(lab: Lab) -> None:
        address, probe = {"pod": ("10.244.1.1/25", "10.244.1.2"),
                          "node": ("198.18.0.9/30", "198.18.0.11")}[via]
        assert address in lab.node_exec("node2", ["ip", "-br", "address", "show",
                                                  "docker0"]).stdout
        assert "dev docker0" in lab.node_exec("node2", ["ip", "route", "get", probe]).stdout
        assert "10.244.1.0/24" in lab.node_exec("node2", ["ip", "route"]).stdout
        blocked_both(lab, "node1", "node2")
    return check


def _peer_address_held(dev: str) -> Callable[[Lab], None]:
    """node2 holds node1's address too (on eth0, or as a /32 on lo): the local table answers
    for it first, so node2's pings, tunnel and replies to node1 end on node2 itself, and the
    two nodes' pods are cut apart."""
    def check(lab: Lab) -> None:
        held = lab.node_exec("node2", ["ip", "-4", "-br", "address", "show", "dev", dev]).stdout
        assert "198.18.0.11/" in held, held
        assert lab.node_exec("node2", ["ip", "route", "get", "198.18.0.11"]
                             ).stdout.startswith("local 198.18.0.11 dev lo")
        blocked_both(lab, "node1", "node2")
    return check


def _underlay_mac_shared(lab: Lab) -> None:
    """node2's eth0 wears node1's MAC: a frame one sends to the other leaves and comes back
    in on the same switch port the MAC was last learned on, which a switch never sends it
    out of, so the two cannot reach each other at all, their pods neither."""
    def mac(node: str) -> str:
        words = lab.node_exec(node, ["ip", "-o", "link", "show", "eth0"]).stdout.split()
        return words[words.index("link/ether") + 1]
    assert mac("node1") == mac("node2")
    cp = lab.node_exec("node2", ["ping", "-c", "2", "-W", "1", "198.18.0.11"], check=False)
    assert cp.returncode != 0, cp.stdout
    blocked_both(lab, "node1", "node2")


def _recv_queue_of_a_hung_reader(lab: Lab) -> None:
    line = lab.node_exec("node2", ["ss", "-Htnp", "state", "established",
                                   "sport = :30070"]).stdout.split()
    assert int(line[0]) >= 65536, line  # Recv-Q: bytes received, not read
    pid = int(re.search(r"pid=(\d+)", " ".join(line)).group(1))
    assert _state(pid) == "T" and "tcp-receiver 30070 --read" in cmdline(pid)
    assert pods_ok(lab, "node1", "node2")  # the network is fine


def _second_listener_on_the_address(lab: Lab) -> None:
    out = lab.node_exec("node2", ["ss", "-Hltnp", "sport = :9100"]).stdout
    assert "0.0.0.0:9100" in out and "198.18.0.12:9100" in out, out
    assert '"node_exporter"' in out and '"legacy-exporte' in out, out  # comm: 15 characters


def _syn_cookies_off_by_file(lab: Lab) -> None:
    cp = ssh(lab, "node2", "cat /etc/sysctl.d/60-network-performance.conf")
    assert cp.stdout.split() == ["net.ipv4.tcp_syncookies", "=", "0",
                                 "net.ipv4.tcp_max_syn_backlog", "=", "128"], cp
    assert sysctl(lab, "node2", "net.ipv4.tcp_syncookies") == "0"
    assert sysctl(lab, "node2", "net.ipv4.tcp_max_syn_backlog") == "128"
    assert sysctl(lab, "node1", "net.ipv4.tcp_syncookies") == "1"
def _connect(lab: Lab, node: str, from_pod: bool) -> tuple[bool, str]:
    """(connected, what it said) of a TCP connect to the middleware, from the node itself or
    from its first pod."""
    argv = services.netprog_argv("--timeout", "2", "tcp", OUTSIDE_HOST, str(OUTSIDE_PORT))
    runner = lab.runners.pod(client_pod(lab, node)) if from_pod else lab.runners.node(node)
    cp = runner.run(argv, check=False, timeout=15)
    return cp.returncode == 0, cp.stdout + cp.stderr


def _middleware(lab: Lab, node: str, *, node_ok: bool, pod_ok: bool, detail: str) -> None:
    """The node and its pod see the middleware as the fault says; the other nodes and their
    pods still connect, so it is that node's failure alone."""
    for other in (n.name for n in lab.nodes if n.name != node):
        assert _connect(lab, other, False)[0] and _connect(lab, other, True)[0], other
    mine, said = _connect(lab, node, False)
    assert mine is node_ok, said
    pods, said = _connect(lab, node, True)
    assert pods is pod_ok, said
    assert detail in said.lower(), said


def _pod_egress_dropped(lab: Lab) -> None:
    _middleware(lab, "node2", node_ok=True, pod_ok=False, detail="timed out")
    assert pods_ok(lab, "node2", "node1")  # pod-to-pod traffic still passes


def _pod_egress_not_masqueraded(lab: Lab) -> None:
    _middleware(lab, "node1", node_ok=True, pod_ok=False, detail="timed out")
    assert pods_ok(lab, "node1", "node2")
    assert f"-A POSTROUTING -s {lab.topology.node('node1').pod_cidr} -d 203.0.113.0/24 -j RETURN" \
        in iptables(lab, "node1")


def _pod_egress_flanneld_without_masq(lab: Lab) -> None:
    _middleware(lab, "node2", node_ok=True, pod_ok=False, detail="timed out")
    assert pods_ok(lab, "node2", "node1")  # the pod network itself is not masqueraded
    assert "FLANNEL-POSTRTG" not in iptables(lab, "node2")
    # flanneld runs, without --ip-masq: not a stopped agent
    node = lab.topology.node("node2")
    assert flannel.pids(node) and not flannel.masquerades(node)


def _vxlan_on_docker0(lab: Lab) -> None:
    """node2's flannel.1 made on docker0's 172.17.0.1, which node1's FDB now sends node2's
    frames to: the pods are cut apart, the nodes still talk."""
    assert "local 172.17.0.1 dev docker0" in lab.node_exec(
        "node2", ["ip", "-d", "link", "show", "flannel.1"]).stdout
    assert " dst 172.17.0.1 " in lab.node_exec(
        "node1", ["bridge", "fdb", "show", "dev", "flannel.1"]).stdout
    assert pod_blocked(lab, "node1", "node2")
    assert lab.node_exec("node1", ["ping", "-c1", "-W1", lab.topology.node("node2").address],
                         check=False).returncode == 0


def _middleware_drops_node(lab: Lab) -> None:
    _middleware(lab, "node2", node_ok=False, pod_ok=False, detail="timed out")
    assert "-j DROP" in lab.runners.outside.run(["iptables-save"]).stdout
    # nothing changed on the node itself
    assert "3306" not in iptables(lab, "node2")


def _node_route_gone(lab: Lab) -> None:
    _middleware(lab, "node1", node_ok=False, pod_ok=False, detail="unreachable")
    assert "203.0.113.0/24" not in lab.node_exec("node1", ["ip", "route"]).stdout


def _gateway_pinned(lab: Lab) -> None:
    """node1 holds a permanent entry for the outside's gateway with a MAC nobody has: it and
    its pods time out toward the middleware, the other nodes go through the same gateway."""
    _middleware(lab, "node1", node_ok=False, pod_ok=False, detail="timed out")
    entry = lab.node_exec("node1", ["ip", "neigh", "show", "to", OUTSIDE_UNDERLAY]).stdout
    assert "PERMANENT" in entry, entry


def _prefix_narrowed(route_kept: bool) -> Callable[[Lab], None]:
    """node1 holds its address as a /28: the outside's gateway is off its link. Brought up
    again from that configuration the kernel refuses the route through it; changed by hand
    the route stays and still works. Either way the gateway's own address, the site's
    resolver, is unreachable from node1, while the collector and the API server still are."""
    def check(lab: Lab) -> None:
        assert "198.18.0.11/28" in lab.node_exec(
            "node1", ["ip", "-4", "-br", "address", "show", "dev", "eth0"]).stdout
        routes = lab.node_exec("node1", ["ip", "route"]).stdout
        assert ("203.0.113.0/24 via 198.18.0.250" in routes) is route_kept, routes
        if route_kept:
            _middleware(lab, "node1", node_ok=True, pod_ok=True, detail="")
        else:
            _middleware(lab, "node1", node_ok=False, pod_ok=False, detail="unreachable")
        cp = lab.node_exec("node1", ["ip", "route", "get", OUTSIDE_UNDERLAY], check=False)
        assert cp.returncode != 0 and "unreachable" in cp.stderr, cp
        assert ssh(lab, "node1", "true").returncode == 0
    return check


def _kubelet_silent(state: str) -> Callable[[Lab], None]:
    def check(lab: Lab) -> None:
        conditions = {c["type"]: c for c in api(lab, "/api/v1/nodes/node2")["status"]["conditions"]}
        assert conditions["Ready"]["status"] == "Unknown", conditions
        # flanneld's own condition is left as it wrote it
        assert conditions["NetworkUnavailable"]["status"] == "False", conditions
        stat = proc_states(lab, "node2").get("kubelet")
        assert (stat or "").startswith("T") if state == "hung" else stat is None, stat
        assert ssh(lab, "node2", "true").returncode == 0  # the node itself answers
        assert pods_ok(lab, "node1", "node2")
    return check


def _cni_config_unusable(via: str) -> Callable[[Lab], None]:
    def check(lab: Lab) -> None:
        # what the node's runtime would read, inside the node (its own /etc)
        node = lab.runners.node("node2")
        files = set(node.shell("ls -A /etc/cni/net.d").stdout.split())
        assert files == {"moved": {"10-flannel.conflist.bak"}, "deleted": set(),
                         "truncated": {"10-flannel.conflist"}}[via], files
        if via == "truncated":  # cut mid-file: it no longer parses
            text = node.shell("cat /etc/cni/net.d/10-flannel.conflist").stdout
            with pytest.raises(ValueError):
                json.loads(text)
        conditions = {c["type"]: c for c in api(lab, "/api/v1/nodes/node2")["status"]["conditions"]}
        assert conditions["Ready"]["status"] == "False", conditions
        assert "cni plugin not initialized" in conditions["Ready"]["message"], conditions
        # the pods already attached keep their network
        assert pods_ok(lab, "node1", "node2") and pods_ok(lab, "node2", "node1")
        # and nothing of the node's own /etc reached the machine's
        assert not Path("/etc/cni/net.d/10-flannel.conflist.bak").exists()
    return check


def _cni_config_shadowed(via: str) -> Callable[[Lab], None]:
    def check(lab: Lab) -> None:
        # in name order, as the runtime reads them, the new file comes first and parses
        node = lab.runners.node("node2")
        first = {"containerd": "10-containerd-net.conflist", "leftover": "10-calico.conflist"}[via]
        files = sorted(node.shell("ls -A /etc/cni/net.d").stdout.split())
        assert files == [first, "10-flannel.conflist"], files
        conf = json.loads(node.shell(f"cat /etc/cni/net.d/{first}").stdout)
        assert conf["plugins"][0]["type"] == {"containerd": "bridge", "leftover": "calico"}[via]
        # nothing changes for the pods already attached, nor for the API's view of the node
        assert pods_ok(lab, "node1", "node2") and pods_ok(lab, "node2", "node1")
        conditions = {c["type"]: c for c in api(lab, "/api/v1/nodes/node2")["status"]["conditions"]}
        assert conditions["Ready"]["status"] == "True", conditions
        assert not Path(f"/etc/cni/net.d/{first}").exists()
    return check


def _four_nameservers(lab: Lab) -> None:
    """The node's own /etc/resolv.conf, as a pod with dnsPolicy Default would be given it,
    lists four nameservers, the site's first; the machine's own file is untouched."""
    machine = Path("/etc/resolv.conf").read_text()
    text = lab.runners.node("node2").shell("cat /etc/resolv.conf").stdout
    servers = [line.split()[1] for line in text.splitlines() if line.startswith("nameserver")]
    assert servers == ["198.18.0.250", "198.18.0.251", "198.18.0.252", "198.18.0.253"], text
    assert "198.18.0.251" not in machine


def _network_reported_down(lab: Lab) -> None:
    conditions = {c["type"]: c for c in api(lab, "/api/v1/nodes/node2")["status"]["conditions"]}
    assert conditions["NetworkUnavailable"]["status"] == "True", conditions
    assert conditions["NetworkUnavailable"]["reason"] == "NoRouteCreated", conditions
    assert conditions["Ready"]["status"] == "True", conditions
    assert pods_ok(lab, "node1", "node2")  # only the API's word: the network itself works


def test_a_deleted_pod_veth_takes_the_pods_end_along_and_the_heal_attaches_it_again(lab):
    """node_pod_link_broken via=delete. The bridge plugin names the new veth at random, so the
    heal cannot be compared link by link: what must hold is the pod attached again at its own
    address, with one IPAM lease per pod and a cached result naming the veth that exists."""
    pod = lab.pods_on("node2")[0]
    node = lab.runners.node("node2")

    def cached_veths() -> set[str]:
        results = node.shell("cat /var/lib/cni/results/*").stdout
        return set(re.findall(r'"name":"(veth[0-9a-f]+)"', results))

    old = cni.host_veth(lab.topology, node, pod, lab.runners.pod(pod.name))
    try:
        lab.inject("node_pod_link_broken", "node2", {"via": "delete"})
        # the pod is left with its loopback alone; the node cannot reach it
        links = lab.runners.pod(pod.name).run(["ip", "-o", "link"]).stdout.splitlines()
        assert [line.split(": ")[1] for line in links] == ["lo"], links
        assert lab.node_exec("node2", ["ping", "-c", "1", "-W", "1", pod.ip],
                             check=False).returncode != 0
        # the cached result still names the device the node no longer has
        assert old in cached_veths()
        assert old not in node.run(["ip", "-o", "link"]).stdout
        forget_faults(lab)  # blind: the heal finds the pod without its interface
        lab.heal("node_pod_link_broken", "node2")
    finally:
        lab.heal()
    new = cni.host_veth(lab.topology, node, pod, lab.runners.pod(pod.name))
    assert new != old and new in cached_veths() and old not in cached_veths()
    assert f"{pod.ip}/" in lab.runners.pod(pod.name).run(["ip", "-o", "-4", "addr"]).stdout
    leases = set(node.shell("ls /var/lib/cni/networks/cbr0").stdout.split())
    assert leases - {"lock", "last_reserved_ip.0"} == {p.ip for p in lab.pods_on("node2")}
    assert pods_ok(lab) and pods_ok(lab, "node2", "node1")
    assert lab.node_exec("node2", ["ping", "-c", "1", "-W", "1", pod.ip]).returncode == 0


def test_a_pod_made_again_without_isDefaultGateway_has_no_default_route_until_healed(lab):
    """node_pod_link_broken via=gateway: the real flannel and bridge plugins, under a conflist
    whose delegate lacks isDefaultGateway, give the pod flannel's route for the pod network
    and no default route. Like via=delete, the heal attaches the pod again (a new veth name),
    so it is judged by what the pod can reach, not link by link."""
    pod = lab.pods_on("node2")[0]
    node = lab.runners.node("node2")
    node_ip = lab.topology.node("node2").address
    conflist = "/etc/cni/net.d/10-flannel.conflist"
    try:
        lab.inject("node_pod_link_broken", "node2", {"via": "gateway"})
        routes = lab.runners.pod(pod.name).run(["ip", "-4", "route"]).stdout
        assert "default" not in routes and "10.244.0.0/16 via 10.244.2.1" in routes, routes
        assert "isDefaultGateway" not in node.shell(f"cat {conflist}").stdout
        # its node is out of reach (its own kernel refuses), pods on other nodes are not
        ping = lab.runners.pod(pod.name).run(["ping", "-c", "1", "-W", "1", node_ip],
                                             check=False)
        assert ping.returncode != 0 and "unreachable" in ping.stdout + ping.stderr
        assert lab.node_exec("node2", ["ping", "-c", "1", "-W", "1", pod.ip]).returncode == 0
        assert pods_ok(lab, "node2", "node1")
        forget_faults(lab)  # blind: the heal finds the pod without its default route
        lab.heal("node_pod_link_broken", "node2")
    finally:
        lab.heal()
    routes = lab.runners.pod(pod.name).run(["ip", "-4", "route"]).stdout
    assert "default via 10.244.2.1 dev eth0" in routes, routes
    assert '"isDefaultGateway": true' in node.shell(f"cat {conflist}").stdout
    leases = set(node.shell("ls /var/lib/cni/networks/cbr0").stdout.split())
    assert leases - {"lock", "last_reserved_ip.0"} == {p.ip for p in lab.pods_on("node2")}
    assert lab.runners.pod(pod.name).run(["ping", "-c", "1", "-W", "1", node_ip]).returncode == 0
    assert pods_ok(lab) and pods_ok(lab, "node2", "node1") and dns_ok(lab, "node2")


def test_network_unavailable_comes_from_the_api_and_flanneld_clears_it_again(lab):
    proven(lab, "node_network_unavailable", "node2", {"via": "route"}, _network_reported_down)
    conditions = {c["type"]: c for c in api(lab, "/api/v1/nodes/node2")["status"]["conditions"]}
    # written by the real flanneld as it started again, not by the lab
    assert (conditions["NetworkUnavailable"]["status"],
            conditions["NetworkUnavailable"]["reason"]) == ("False", "FlannelIsUp"), conditions


def _pods_lose_their_gateway(lab: Lab) -> None:
    """cni0 with NOARP: every pod of the node and the node lose each other, with the bridge
    up, its address and routes in place."""
    node_ip = lab.topology.node("node2").address
    for pod in lab.pods_on("node2"):
        assert lab.node_exec("node2", ["ping", "-c", "1", "-W", "1", pod.ip],
                             check=False).returncode != 0
        assert lab.runners.pod(pod.name).run(["ping", "-c", "1", "-W", "1", node_ip],
                                             check=False).returncode != 0
    link = lab.node_exec("node2", ["ip", "link", "show", "cni0"]).stdout
    assert "NOARP" in link and ",UP,LOWER_UP>" in link, link
    assert "dev cni0 proto kernel" in lab.node_exec("node2", ["ip", "route"]).stdout


def _node_and_pod_apart(via: str) -> Callable[[Lab], None]:
    def check(lab: Lab) -> None:
        pod = lab.pods_on("node2")[0]
        assert lab.node_exec("node2", ["ping", "-c", "1", "-W", "1", pod.ip],
                             check=False).returncode != 0
        node_ip = lab.topology.node("node2").address
        assert lab.runners.pod(pod.name).run(["ping", "-c", "1", "-W", "1", node_ip],
                                             check=False).returncode != 0
        # the node's other pod still answers it
        other = lab.pods_on("node2")[1]
        assert lab.node_exec("node2", ["ping", "-c", "1", "-W", "1", other.ip],
                             check=False).returncode == 0
        # forwarded traffic: the pod reaches the middleware only when its veth is up
        assert _connect(lab, "node2", True)[0] is (via == "filter")
        if via == "port":  # up and in the bridge: only the port's state says it
            veth = cni.host_veth(lab.topology, lab.runners.node("node2"), pod,
                                 lab.runners.pod(pod.name))
            link = lab.node_exec("node2", ["ip", "link", "show", veth]).stdout
            assert "master cni0" in link and ",UP,LOWER_UP>" in link, link
            assert "state disabled" in lab.node_exec(
                "node2", ["bridge", "link", "show", "dev", veth]).stdout
        if via == "proxy_arp":  # link, route and rules as calico made them; no ARP answer
            veth = cni.calico_veth(pod)
            assert f"{pod.ip} dev {veth}" in lab.node_exec("node2", ["ip", "route"]).stdout
            assert sysctl(lab, "node2", f"net.ipv4.conf.{veth}.proxy_arp") == "0"
        if via == "route":  # the veth is up; the node routes the pod to BIRD's blackhole
            got = lab.node_exec("node2", ["ip", "route", "get", pod.ip], check=False)
            assert "blackhole" in got.stdout + got.stderr or got.returncode != 0, got
            assert ",UP," in lab.node_exec("node2", ["ip", "link", "show",
                                                     cni.calico_veth(pod)]).stdout
    return check


def _bridged_drop(lab: Lab) -> None:
    """Other nodes' pods no longer reach node2's pods, node2 itself still does, and iptables
    shows nothing."""
    assert pod_blocked(lab, "node1", "node2")
    pod = lab.pods_on("node2")[0]
    assert lab.node_exec("node2", ["ping", "-c", "1", "-W", "1", pod.ip]).returncode == 0
    assert "DROP" not in "".join(line for line in iptables(lab, "node2").splitlines()
                                 if not line.startswith(("-A KUBE-", ":")))
    assert "table bridge filter" in lab.node_exec("node2", ["nft", "list", "tables"]).stdout


def _pair_cut(node: str, peer: str, *, nic_changed: bool = False) -> Callable[[Lab], None]:
    """The node network between `node` and `peer` fails both ways (a ping's reply crosses it
    too), and the pods' traffic with it, while the client still reaches both nodes."""
    def check(lab: Lab) -> None:
        def ping(src: str, dst: str) -> bool:
            return lab.node_exec(src, ["ping", "-c", "1", "-W", "1",
                                       lab.topology.node(dst).address],
                                 check=False).returncode == 0

        assert not ping(node, peer) and not ping(peer, node)
        assert pod_blocked(lab, node, peer) and pod_blocked(lab, peer, node)
        for each in (node, peer):
            assert lab.runners.client.run(["ping", "-c", "1", "-W", "1",
                                           lab.topology.node(each).address],
                                          check=False).returncode == 0, each
        if nic_changed:
            # the change is the peer's own; the entry that is wrong is the node's
            assert "02:00:5e:00:53:01" in lab.node_exec(peer, ["ip", "link", "show",
                                                               "eth0"]).stdout
            entry = lab.node_exec(node, ["ip", "neigh", "show", "nud", "permanent"]).stdout
            assert lab.topology.node(peer).address in entry and "53:01" not in entry, entry
    return check


def _lossy(node: str, counted: bool = False) -> Callable[[Lab], None]:
    """Echoes between `node` and each peer are lost in part, both ways, and the rest come back;
    the client, whose own port is sound, loses none to a peer. On the switch (`counted` False)
    the node's own counters show nothing; by its own rule, the rule counts what it dropped."""
    def check(lab: Lab) -> None:
        def received(src: str, dst: str) -> int:
            argv = ["ping", "-c", "100", "-i", "0.01", "-W", "1", lab.topology.node(dst).address]
            runner = lab.runners.client if src == "client" else lab.runners.node(src)
            out = runner.run(argv, check=False).stdout
            return int(re.search(r"(\d+) received", out).group(1))

        peers = [n.name for n in lab.topology.nodes if n.name != node]
        counters = lab.node_exec(node, ["cat", "/sys/class/net/eth0/statistics/rx_dropped",
                                        "/sys/class/net/eth0/statistics/tx_dropped"]).stdout
        for peer in peers:
            # 10% each way: 81 of 100 round trips on average; 60..97 is far outside chance
            assert 60 <= received(node, peer) <= 97 and 60 <= received(peer, node) <= 97, peer
        assert received("client", peers[0]) == 100
        assert lab.node_exec(node, ["cat", "/sys/class/net/eth0/statistics/rx_dropped",
                                    "/sys/class/net/eth0/statistics/tx_dropped"]
                             ).stdout == counters
        rules = lab.node_exec(node, ["iptables", "-v", "-n", "-L", "INPUT"]).stdout
        dropped = re.search(r"^\s*(\d+)\s+\d+\s+DROP.*statistic mode random", rules, re.M)
        assert (dropped is not None and int(dropped.group(1)) > 0) == counted, rules
    return check


VXLAN_CASES = [
    ("underlay_packet_loss", "switch", "node1", {}, _lossy("node1")),
    ("underlay_packet_loss", "statistic", "node1", {}, _lossy("node1", counted=True)),
    ("underlay_neighbor_wrong", "neigh", "node1", {"peer": "node2"}, _pair_cut("node1", "node2")),
    ("underlay_neighbor_wrong", "mac", "node1", {"peer": "node2"},
     _pair_cut("node1", "node2", nic_changed=True)),
    ("underlay_neighbor_wrong", "gateway", "node1", {}, _gateway_pinned),
    ("underlay_route_broken", "blackhole", "node2", {"peer": "node1"},
     _pair_cut("node2", "node1")),
    ("underlay_route_broken", "unreachable", "node1", {"peer": "node2"},
     _pair_cut("node1", "node2")),
    ("underlay_route_broken", "gateway", "node2", {"peer": "node1"},
     _pair_cut("node2", "node1")),
    ("iptables_drop_rule", "peer_in", "node2", {"peer": "node1"}, _pair_cut("node2", "node1")),
    ("iptables_drop_rule", "peer_out", "node1", {"peer": "node2"}, _pair_cut("node1", "node2")),
    ("iptables_drop_rule", "arp", "node2", {"peer": "node1"}, _pair_cut("node2", "node1")),
    ("node_pod_link_broken", "nomaster", "node2", {}, _node_and_pod_apart("nomaster")),
    ("iptables_drop_rule", "bridge", "node2", {}, _bridged_drop),
    ("bridge_nf_call_iptables_disabled", "file", "node1", {}, _bridge_nf_file),
    ("somaxconn_low", "file", "node2", {}, _somaxconn_file),
    ("tcp_window_scaling_disabled", "file", "node2", {}, _window_scaling_file),
    ("kube_proxy_rules_missing", "hang", "node2", {}, _kube_proxy_hung),
    ("kube_proxy_rules_missing", "prerouting", "node2", {}, _services_unreached("PREROUTING")),
    ("kube_proxy_rules_missing", "output", "node2", {}, _services_unreached("OUTPUT")),
    ("kube_proxy_rules_missing", "postrouting", "node1", {}, _not_masqueraded),
    ("kube_proxy_rules_missing", "nodeports", "node2", {}, _nodeports_unreached),
    ("ip_forward_disabled", "interface", "node2", {}, _forwarding_per_interface),
    ("rp_filter_strict", "interface", "node2", {}, _rp_filter_on_flannel_only),
    ("forward_chain_reject", "nft", "node2", {}, _nft_forward_reject),
    ("forward_chain_reject", "userchain", "node1", {}, _userchain_reject),
    ("iptables_drop_rule", "mangle", "node2", {}, _mangle_drop),
    ("iptables_drop_rule", "legacy", "node2", {}, _legacy_drop),
    ("iptables_drop_rule", "userchain", "node1", {}, _userchain_drop),
    ("iptables_drop_rule", "snat", "node2", {}, _snat_away),
    ("host_firewall_active", "firewalld-nft", "node2", {}, _firewalld_nft),
    ("security_software_present", "iptables", "node1", {}, _agent_iptables),
    ("vxlan_udp_blocked", "nft", "node2", {}, _vxlan_nft),
    ("vxlan_udp_blocked", "prerouting", "node1", {}, _vxlan_prerouting),
    ("vxlan_udp_blocked", "tc", "node2", {}, _vxlan_tc),
    ("vxlan_udp_blocked", "egress", "node2", {}, _vxlan_egress),
    ("conntrack_insert_failed", "snat_ports", "node2", {}, _snat_ports_exhausted),
    ("vxlan_udp_blocked", "tc_egress", "node2", {}, _vxlan_tc_egress),
    ("pod_cidr_route_missing", "blackhole", "node1", {}, _route_blackhole),
    ("pod_cidr_route_missing", "device", "node2", {}, _vxlan_device_remade_without_routes),
    ("policy_route_blackhole", "rule", "node2", {}, _policy_rule),
    ("policy_route_blackhole", "table", "node1", {}, _policy_table),
    ("mtu_mismatch", "pod", "node2", {}, _big_pod_packets_vanish("node2", "node1", 2000)),
    ("mtu_mismatch", "veth", "node2", {}, _big_pod_packets_vanish("node2", "node1", 2000)),
    ("cni_pod_not_running", "hang", "node2", {}, _flanneld_hung),
    ("coredns_unreachable", "hang", None, {}, _coredns_hung),
    ("coredns_unreachable", "dnat", None, {}, _dns_intercepted),
    ("coredns_unreachable", "loop", None, {}, _coredns_loops),
    ("coredns_zone_mismatch", "config", None, {}, _zone_mismatched),
    ("coredns_upstream_unreachable", "config", None, {}, _upstream_gone("config")),
    ("coredns_upstream_unreachable", "firewall", None, {}, _upstream_gone("firewall")),
    ("node_unreachable", "hang", "node2", {}, _sshd_hung),
    ("node_unreachable", "arp", "node2", {}, _node_off_the_network),
    ("node_unreachable", "reject", "node2", {}, _node_refuses_everything),
    ("listen_queue_overflow", "hang", "node2", {}, _listener_hung),
    ("listen_queue_overflow", "pod", "node2", {}, _listener_stuck_in_pod),
    ("udp_buffer_errors", "pod", "node2", {}, _udp_stuck_in_pod),
    ("fd_limit_reached", "leak", "node2", {}, _files_leaked),
    ("close_wait_leak", "pool", "node2", {}, _pool_keeps_closed_connections),
    ("fin_wait2_pileup", "halfclose", "node2", {}, _half_closed_and_held),
    ("udp_buffer_errors", "hang", "node2", {}, _udp_reader_hung),
    ("time_wait_pileup", "remote", "node1", {"count": "1500"}, _time_wait_toward_exporter),
    ("time_wait_pileup", "pod", "node1", {"count": "1500"}, _time_wait_in_pod),
    ("port_not_listening", "loopback", "node2", {}, _web_on_loopback),
    ("service_no_endpoints", "selector", "node2", {}, _selector_matches_nothing),
    ("service_no_endpoints", "port", "node2", {}, _target_port_renamed),
    ("vxlan_port_mismatch", "link", "node2", {}, _vxlan_link_by_hand),
    ("vxlan_vni_mismatch", "link", "node2", {}, _vxlan_vni_by_hand),
    ("vxlan_vni_mismatch", "netconf", "node2", {}, _vxlan_vni_by_config),
    ("vxlan_mac_duplicate", "clone", "node2", {}, _vtep_mac_shared),
    ("vxlan_port_in_use", "address", "node2", {}, _vxlan_port_held_on_address),
    ("vxlan_peer_entry_missing", "neigh", "node2", {"peer": "node1"}, _vxlan_neighbour_gone),
    ("vxlan_peer_entry_stale", "mac", "node2", {"peer": "node1"}, _vxlan_entry_stale("mac")),
    ("vxlan_peer_entry_stale", "dst", "node2", {"peer": "node1"}, _vxlan_entry_stale("dst")),
    ("interface_address_overlap", "pod", "node2", {"peer": "node1"}, _address_takes_peer("pod")),
    ("interface_address_overlap", "node", "node2", {"peer": "node1"},
     _address_takes_peer("node")),
    ("node_address_duplicate", "underlay", "node2", {"peer": "node1"},
     _peer_address_held("eth0")),
    ("node_address_duplicate", "lo", "node2", {"peer": "node1"}, _peer_address_held("lo")),
    ("underlay_mac_duplicate", "clone", "node2", {"peer": "node1"}, _underlay_mac_shared),
    ("socket_recv_queue_backlog", "hang", "node2", {}, _recv_queue_of_a_hung_reader),
    ("listen_port_conflict", "address", "node2", {}, _second_listener_on_the_address),
    ("syn_backlog_low", "file", "node2", {}, _syn_cookies_off_by_file),
    ("pod_egress_broken", "drop", "node2", {}, _pod_egress_dropped),
    ("pod_egress_broken", "masquerade", "node1", {}, _pod_egress_not_masqueraded),
    ("pod_egress_broken", "ipmasq", "node2", {}, _pod_egress_flanneld_without_masq),
    ("vxlan_wrong_underlay", "iface", "node2", {}, _vxlan_on_docker0),
    ("endpoint_unreachable", "allowlist", "node2", {}, _middleware_drops_node),
    ("endpoint_unreachable", "route", "node1", {}, _node_route_gone),
    ("node_address_prefix_wrong", "netmask", "node1", {}, _prefix_narrowed(route_kept=False)),
    ("node_address_prefix_wrong", "live", "node1", {}, _prefix_narrowed(route_kept=True)),
    ("node_not_ready", "kill", "node2", {}, _kubelet_silent("gone")),
    ("node_not_ready", "hang", "node2", {}, _kubelet_silent("hung")),
    ("cni_config_missing", "moved", "node2", {}, _cni_config_unusable("moved")),
    ("cni_config_missing", "deleted", "node2", {}, _cni_config_unusable("deleted")),
    ("cni_config_missing", "truncated", "node2", {}, _cni_config_unusable("truncated")),
    ("cni_config_shadowed", "containerd", "node2", {}, _cni_config_shadowed("containerd")),
    ("resolv_conf_nameserver_limit", "appended", "node2", {}, _four_nameservers),
    ("cni_config_shadowed", "leftover", "node2", {}, _cni_config_shadowed("leftover")),
    ("node_pod_link_broken", "veth", "node2", {}, _node_and_pod_apart("veth")),
    ("node_pod_link_broken", "filter", "node2", {}, _node_and_pod_apart("filter")),
    ("node_pod_link_broken", "port", "node2", {}, _node_and_pod_apart("port")),
    ("node_pod_link_broken", "noarp", "node2", {}, _pods_lose_their_gateway),
    ("overlay_device_down", "link", "node2", {}, _vxlan_device_off),
    ("notrack_rule", "iptables", "node2", {}, _dns_untracked("iptables")),
    ("notrack_rule", "nft", "node2", {}, _dns_untracked("nft")),
    ("pod_dns_misconfigured", "cluster_dns", "node2", {}, _pods_told("nameserver 10.96.0.11")),
    ("pod_dns_misconfigured", "nodelocal", "node2", {}, _pods_told("nameserver 169.254.20.10")),
    ("pod_dns_misconfigured", "domain", "node2", {},
     _pods_told("search default.svc.cluster.example")),
    ("xfrm_policy_blocks", "out", "node2", {"peer": "node1"}, _xfrm_blocked("out")),
    ("xfrm_policy_blocks", "fwd", "node2", {"peer": "node1"}, _xfrm_blocked("fwd")),
    ("xfrm_policy_blocks", "in", "node2", {"peer": "node1"}, _xfrm_blocked("in")),
    ("xfrm_sa_missing", "pod", "node2", {"peer": "node1"}, _sa_missing("pod")),
    ("xfrm_sa_missing", "node", "node2", {"peer": "node1"}, _sa_missing("node")),
    ("xfrm_sa_missing", "fwd", "node2", {"peer": "node1"}, _sa_missing("fwd")),
    ("xfrm_sa_missing", "in", "node2", {"peer": "node1"}, _sa_missing("in")),
    ("xfrm_sa_missing", "mark", "node2", {"peer": "node1"}, _sa_missing("mark")),
    ("xfrm_sa_missing", "ike", "node2", {"peer": "node1"}, _sa_missing("ike")),
    ("icmp_echo_blocked", "iptables", "node2", {}, _pings_dropped),
    ("icmp_echo_blocked", "nft", "node2", {}, _pings_dropped),
    ("icmp_echo_blocked", "file", "node2", {}, _pings_ignored_by_the_kernel),
    ("pod_bridge_down", "link", "node2", {}, _pod_bridge_off),
    # two nodes: the range no node holds is a third's
    ("pod_bridge_address_wrong", "stale", "node2", {}, _bridge_gateway_gone("10.244.3.1/24")),
    ("pod_bridge_address_wrong", "flush", "node2", {}, _bridge_gateway_gone("")),
]


def _case_id(case: tuple) -> str:
    return f"{case[0]}[via={case[1]}]@{case[2] or 'default'}"


def forget_faults(lab: Lab) -> None:
    """Lose the record of the injected faults and their parameters, as a crash would."""
    state = json.loads(lab.state_path.read_text())
    state["faults"] = []
    lab.state_path.write_text(json.dumps(state))
    lab.faults = []


# Each vxlan mechanism is healed blind (the heal with the fault's defaults must undo whichever
# way it was made); the heal with the recorded parameters is what the host-gw and calico cases,
# test_lab_faults and the scenario suite use.
@pytest.mark.parametrize("case", VXLAN_CASES, ids=_case_id)
def test_vxlan_mechanism_breaks_and_heals_exactly_even_blind(lab, case):
    fault, via, node, params, broken = case
    if fault == "mtu_mismatch":  # what breaks under the fault works on a healthy lab
        assert lab.pod_ping("node2", "node1", size=2000, df=False, timeout=1).returncode == 0
    proven(lab, fault, node, {"via": via, **params}, broken, blind=True)


# The ways of making a fault that no case above proves broken (their breakage is proven in
# test_lab_faults), healed blind too.
BLIND = sorted({
    ("ip_forward_disabled", "file"), ("host_firewall_active", "ufw"),
    ("vxlan_udp_blocked", "switch"), ("pod_cidr_route_missing", "delete"),
    ("coredns_unreachable", "stop"), ("coredns_unreachable", "drop"),
    ("nodeport_fails_from_peers", "switch")} - {
    (fault, via) for fault, via, *_ in VXLAN_CASES})


@pytest.mark.parametrize(("fault", "via"), BLIND, ids=[f"{f}[via={v}]" for f, v in BLIND])
def test_vxlan_blind_heal_undoes_any_mechanism(lab, fault, via):
    """The record of a fault's parameters lost (another process, a crash): heal with the
    fault's defaults still undoes whichever way it was made."""
    node = "node1" if fault == "coredns_unreachable" else "node2"
    before = snapshot(lab)
    try:
        lab.inject(fault, node, {"via": via})
        forget_faults(lab)
        lab.heal(fault, node)
        assert_same(before, snapshot(lab))
    finally:
        lab.heal()
    assert pods_ok(lab) and pods_ok(lab, "node2", "node1") and dns_ok(lab, "node2")


# ---- benign conditions ----------------------------------------------------------------------


def _in_force(lab: Lab, name: str) -> None:
    """What a benign condition left on its node (node2; node1 for the calico-only ones), seen
    the way an operator would look."""
    node = lab.runners.node("node2")
    if name == "benign_rp_filter_strict":
        assert sysctl(lab, "node2", "net.ipv4.conf.all.rp_filter") == "1"
    elif name == "benign_docker_installed":
        rules = node.run(["iptables", "-S", "FORWARD"]).stdout.splitlines()
        assert rules[0] == "-P FORWARD DROP" and rules[1] == "-A FORWARD -j DOCKER-USER", rules
        assert "NO-CARRIER" in node.run(["ip", "link", "show", "docker0"]).stdout
    elif name == "benign_ntp_untracked":
        assert "--dport 123 -j NOTRACK" in node.run(["iptables", "-t", "raw", "-S"]).stdout
    elif name == "benign_static_arp":
        pinned = node.run(["ip", "neigh", "show", "nud", "permanent", "dev", "eth0"]).stdout
        assert lab.node("node1").address in pinned, pinned
    elif name == "benign_podman_cni_config":
        files = sorted(node.shell("ls -A /etc/cni/net.d").stdout.split())
        assert files == ["10-flannel.conflist", "87-podman-bridge.conflist"], files
    elif name == "benign_leftover_vxlan_device":
        link = json.loads(node.run(["ip", "-j", "-d", "link", "show", "vxlan.calico"]).stdout)[0]
        assert "UP" not in link["flags"] and link["linkinfo"]["info_data"]["port"] == 4789
    elif name == "benign_fail2ban":
        rules = node.run(["iptables", "-S"]).stdout
        assert "-A INPUT -p tcp -m multiport --dports 22 -j f2b-sshd" in rules, rules
        assert "-A f2b-sshd -s 198.51.100.23/32 -j REJECT" in rules, rules
        assert ssh(lab, "node2", "true").returncode == 0  # the chain lets the rest through
    elif name == "benign_keepalived_vip":
        addrs = node.run(["ip", "-4", "-o", "address", "show", "dev", "eth0"]).stdout.split("\n")
        assert lab.node("node2").address in addrs[0] and "198.18.0.100/32" in addrs[1], addrs
    elif name == "benign_lvs_dr_real_server":
        assert "198.18.0.101/32" in node.run(["ip", "-br", "address", "show", "dev", "lo"]).stdout
        rules = node.run(["arptables", "-S"]).stdout
        assert "-A INPUT -j DROP -d 198.18.0.101" in rules, rules
    elif name == "benign_htb_unlimited":
        assert "qdisc htb 1: root" in node.run(["tc", "qdisc", "show", "dev", "eth0"]).stdout
    elif name == "benign_tcp_timestamps_off":
        assert sysctl(lab, "node2", "net.ipv4.tcp_timestamps") == "0"
    elif name == "benign_somaxconn_old_default":
        assert sysctl(lab, "node2", "net.core.somaxconn") == "128"
    elif name == "benign_coredns_stub_domain":
        corefile = api(lab, "/api/v1/namespaces/kube-system/configmaps/coredns")["data"]["Corefile"]
        assert "corp.example:53 {" in corefile and coredns.corefile_path(lab.paths).read_text(
            ) == corefile
        # the site's zone through the stub, from a pod as its resolv.conf has it
        assert lab.netprog(client_pod(lab, "node2"), "--timeout", "2", "dns", "10.96.0.10",
                           OUTSIDE_HOST_NAME).returncode == 0
    elif name == "benign_sysctl_overridden":
        files = node.shell("grep -H ip_forward /etc/sysctl.d/*.conf").stdout
        assert "10-cis-hardening.conf:net.ipv4.ip_forward = 0" in files, files
        assert sysctl(lab, "node2", "net.ipv4.ip_forward") == "1"
        # what systemd-sysctl does at boot, in a throwaway copy of the node: 1 wins
        boot = node.shell("unshare -n sh -c 'sysctl -q --system >/dev/null 2>&1; "
                          "sysctl -n net.ipv4.ip_forward'").stdout.strip()
        assert boot == "1", boot
    elif name == "benign_external_service":
        svc = api(lab, "/api/v1/namespaces/default/services/mysql")["spec"]
        assert "selector" not in svc and svc["clusterIP"] == "10.96.0.40"
        # from a pod, by the Service's address, kube-proxy's DNAT takes it to the middleware
        argv = services.netprog_argv("--timeout", "2", "tcp", "10.96.0.40", str(OUTSIDE_PORT))
        cp = lab.runners.pod(client_pod(lab, "node2")).run(argv, check=False, timeout=15)
        assert cp.returncode == 0, cp.stdout + cp.stderr
    elif name == "benign_server_time_wait":
        peers = [line.split()[-1] for line in node.run(
            ["ss", "-Htn", "state", "time-wait", "sport = :30081"]).stdout.splitlines()]
        # thousands on the server's side, each toward another client port
        assert len(peers) >= 2900 and len(set(peers)) == len(peers)
    elif name == "benign_firewalld_for_kubernetes":
        rules = node.run(["iptables", "-S"]).stdout
        assert "-A INPUT_ZONES -i cni0 -g IN_trusted" in rules, rules
        assert "-A FORWARD -j REJECT --reject-with icmp-host-prohibited" in rules, rules
        netns = lab.node("node2").netns
        assert any("/firewalld --nofork" in cmdline(pid)
                   for pid in pids_in_netns([netns]).get(netns, []))
    elif name == "benign_firewalld_nft_for_kubernetes":
        table = node.run(["nft", "list", "table", "inet", "firewalld"]).stdout
        assert "ip saddr 10.244.0.0/16 goto filter_IN_trusted" in table, table
        assert "ZONES" not in node.run(["iptables", "-S"]).stdout  # its nftables backend
        # live: a port the public zone does not open is refused by its catch-all reject
        # (icmpx admin-prohibited: "no route to host", where no firewall would reset it)
        argv = services.netprog_argv("--timeout", "2", "tcp", lab.node("node2").address, "9")
        cp = lab.node_exec("node1", argv, check=False)
        assert "No route to host" in cp.stdout + cp.stderr, cp.stdout + cp.stderr
    elif name == "benign_bridge_nf_off_routed_pods":
        assert sysctl(lab, "node1", "net.bridge.bridge-nf-call-iptables") == "0"
        assert "192.168.122.1/24" in lab.node_exec("node1", ["ip", "address", "show",
                                                             "virbr0"]).stdout
    elif name == "benign_security_agent_exempting_cluster":
        chain = node.run(["nft", "list", "chain", "inet", "wsssr_filter", "forward"]).stdout
        assert "policy drop;" in chain and "ip saddr 10.244.0.0/16 accept" in chain, chain
        netns = lab.node("node2").netns
        assert any("wsssr_defence_daemon" in cmdline(pid)
                   for pid in pids_in_netns([netns]).get(netns, []))
    elif name == "benign_nodeport_local_behind_lb":
        # the clients reach the web pod's node; the other nodes' drop rules count nothing
        web = lab.topology.pod_for_app("web").node
        wait_until(lambda: f"{lab.node(web).address}:30080" in lab.runners.outside.run(
            ["ss", "-Htn", "state", "established"]).stdout, 10,
            "the clients (started in the background) reach the web pod's node")
        for other in (n.name for n in lab.topology.nodes if n.name != web):
            saved = lab.node_exec(other, ["iptables-save", "-c", "-t", "filter"]).stdout
            drops = [line for line in saved.splitlines() if "web-local:http has no local" in line]
            assert drops and drops[0].startswith("[0:"), drops
    elif name == "benign_service_across_zones":
        # its endpoints are in both zones, and its address answers from a pod
        slices = api(lab, "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
                          "?labelSelector=kubernetes.io%2Fservice-name%3Dclient-all")["items"]
        zones = {e.get("zone") for item in slices for e in item.get("endpoints") or []}
        assert len(zones) == 2, slices
        argv = services.netprog_argv("--timeout", "2", "tcp", "10.96.0.31", "30092")
        cp = lab.runners.pod(client_pod(lab, "node2")).run(argv, check=False, timeout=15)
        assert cp.returncode == 0, cp.stdout + cp.stderr
    elif name == "benign_pod_counters_from_the_past":
        # the pod's counters keep the burst; its programs, restarted, keep up
        pod = _app_pod(lab, "node2")
        assert _pod_counter(lab, pod.name, "/proc/net/netstat", "ListenOverflows") > 0
        assert _pod_counter(lab, pod.name, "/proc/net/snmp", "RcvbufErrors") > 0
        runner = lab.runners.pod(pod.name)
        assert runner.run(["ss", "-Hlnt", "sport = :30088"]).stdout.split()[1] == "0"
        assert re.search(r",d0\)", runner.run(["ss", "-Hlnum", "sport = :30089"]).stdout)
        cp = lab.netprog(client_pod(lab, "node1"), "--timeout", "2", "tcp", pod.ip, "30088")
        assert cp.returncode == 0, cp.stdout + cp.stderr
    elif name == "benign_slow_reader":
        # the collector's queue stays full and it keeps reading: what it has read grows
        def read() -> int:
            info = lab.node_exec("node2", ["ss", "-Htni", "sport = :30071"]).stdout
            got = re.search(r"^\S+\s+(\d+).*?bytes_received:(\d+)", info, re.S)
            assert got and int(got.group(1)) >= 32768, info
            return int(got.group(2)) - int(got.group(1))
        first = read()
        time.sleep(1)
        assert read() > first
    elif name == "benign_udp_drops_from_the_past":
        # the socket's drops stay where the burst left them, and its queue stays shallow
        def skmem() -> tuple[int, int, int]:
            out = lab.node_exec("node2", ["ss", "-Hluanm", "sport = :30054"]).stdout
            got = re.search(r"skmem:\(r(\d+),rb(\d+),.*,d(\d+)\)", out)
            assert got, out
            return int(got.group(1)), int(got.group(2)), int(got.group(3))
        queued, buffer, drops = skmem()
        assert drops > 0 and queued * 4 < buffer
        time.sleep(1)
        assert skmem()[2] == drops
    elif name == "benign_ufw_for_kubernetes":
        rules = node.run(["iptables", "-S"]).stdout
        assert "-P INPUT DROP" in rules and "-P FORWARD DROP" in rules, rules
        assert "-A ufw-user-input -p udp -m udp --dport 8472 -j ACCEPT" in rules, rules
    elif name == "benign_icmp_rate_limited":
        rules = node.run(["iptables", "-S", "INPUT"]).stdout.splitlines()
        assert rules[1].endswith("--limit 2/sec -j ACCEPT"), rules
        assert rules[2].endswith("--icmp-type 8 -j DROP"), rules
        burst = lab.node_exec("node1", ["ping", "-c", "20", "-i", "0.05", "-W", "1",
                                        lab.topology.node("node2").address], check=False).stdout
        assert 0 < int(re.search(r"(\d+) received", burst).group(1)) < 20, burst
    else:
        raise AssertionError(f"no check for {name}")


def _breaks_nothing(name: str) -> Callable[[Lab], None]:
    def check(lab: Lab) -> None:
        _in_force(lab, name)
        assert pods_ok(lab, "node1", "node2") and pods_ok(lab, "node2", "node1")
        assert dns_ok(lab, "node1") and dns_ok(lab, "node2")
        assert web_ok(lab, "node1") and web_ok(lab, "node2")
        for node in ("node1", "node2"):  # the middleware, from the nodes and their pods
            for from_pod in (False, True):
                connected, said = _connect(lab, node, from_pod)
                assert connected, f"{node} (from a pod: {from_pod}): {said}"
    return check


BENIGN = sorted(name for name, spec in FAULTS.items()
                if spec.benign and spec.applies("flannel-vxlan"))


@pytest.mark.parametrize("name", BENIGN)
def test_vxlan_mechanism_of_a_benign_condition_breaks_nothing_and_heals_exactly(lab, name):
    """A benign condition must be harmless for real, or a diagnosis naming it would be right:
    every flow of the lab still works under it, and its heal (blind) is exact."""
    spec = FAULTS[name]
    node = spec.default_node(lab.topology) if spec.scope == "cluster" else "node2"
    proven(lab, name, node, {}, _breaks_nothing(name), blind=True)


def test_an_unknown_via_is_refused(lab):
    with pytest.raises(LabError, match="via must be one of input, switch, nft"):
        lab.inject("vxlan_udp_blocked", "node2", {"via": "bogus"})
    assert recorded(lab) == []


def test_a_loss_share_that_is_no_percentage_is_refused(lab):
    for pct in ("0", "100", "ten", "-5"):
        with pytest.raises(LabError, match="pct must be a whole number from 1 to 99"):
            lab.inject("underlay_packet_loss", "node1", {"pct": pct})
    assert recorded(lab) == []


# ---- flannel-host-gw ---------------------------------------------------------------------------


def _hostgw_blackhole_lasts(lab: Lab) -> None:
    # flanneld's route check (every 10 s) re-adds a deleted route, but not over a blackhole
    time.sleep(12)
    route = lab.node_exec("node2", ["ip", "route", "show", "10.244.1.0/24"]).stdout
    assert route.startswith("blackhole"), route
    assert pod_blocked(lab, "node2", "node1")


def _hostgw_flanneld_hung(lab: Lab) -> None:
    assert proc_states(lab, "node1")["flanneld"].startswith("T")
    assert container(cni_pod(lab, "node1")) == (True, 0)  # no probe in kube-flannel.yml
    # a running flanneld (host-gw) re-adds a deleted peer route within 10 s; a hung one not
    lab.node_exec("node1", ["ip", "route", "del", "10.244.2.0/24"])
    time.sleep(12)
    assert lab.node_exec("node1", ["ip", "route", "show", "10.244.2.0/24"]).stdout == ""
    assert pod_blocked(lab, "node1", "node2")


HOSTGW_CASES = [
    ("pod_cidr_route_missing", "blackhole", "node2", {}, _hostgw_blackhole_lasts),
    ("cni_pod_not_running", "hang", "node1", {}, _hostgw_flanneld_hung),
    ("ip_forward_disabled", "interface", "node2", {}, _forwarding_per_interface),
    ("mtu_mismatch", "pod", "node1", {}, _big_pod_packets_vanish("node1", "node2", 3000)),
    ("policy_route_blackhole", "table", "node1", {}, _policy_table),
    ("pod_bridge_down", "link", "node2", {}, _pod_bridge_off),
    ("pod_bridge_address_wrong", "stale", "node2", {}, _bridge_gateway_gone("10.244.3.1/24")),
    ("interface_address_overlap", "pod", "node2", {}, _address_takes_peer("pod")),
]


def test_hostgw_refuses_mechanisms_that_do_not_apply(hostgw_lab):
    # flanneld's host-gw backend re-adds a deleted route; every path is symmetric, nothing for
    # strict reverse-path filtering to drop
    with pytest.raises(LabError, match="via=delete needs CNI mode flannel-vxlan"):
        hostgw_lab.inject("pod_cidr_route_missing", "node2", {"via": "delete"})
    with pytest.raises(LabError, match="rp_filter_strict needs CNI mode flannel-vxlan"):
        hostgw_lab.inject("rp_filter_strict", "node2", {"via": "interface"})
    assert recorded(hostgw_lab) == []


@pytest.mark.parametrize("case", HOSTGW_CASES, ids=_case_id)
def test_hostgw_mechanism_breaks_and_heals_exactly(hostgw_lab, case):
    fault, via, node, params, broken = case
    if fault == "mtu_mismatch":
        assert hostgw_lab.pod_ping("node1", "node2", size=3000, df=False,
                                   timeout=1).returncode == 0
    proven(hostgw_lab, fault, node, {"via": via, **params}, broken)


# ---- calico-bgp --------------------------------------------------------------------------------


def _withdrawn(lab: Lab, at: str, cidr: str) -> None:
    # the 6 s hold time must expire before the peer drops the session
    wait_until(lambda: cidr not in lab.node_exec(at, ["ip", "route"]).stdout, 20,
               f"{at} kept the route to {cidr}")


def _bird_hung(lab: Lab) -> None:
    assert proc_states(lab, "node2")["bird"].startswith("T")
    _withdrawn(lab, "node1", "10.244.2.0/24")
    assert pod_blocked(lab, "node1", "node2")
    # calico-node's readiness probe asks BIRD, which does not answer: not Ready, no restart
    assert container(cni_pod(lab, "node2")) == (False, 0)
    assert container(cni_pod(lab, "node1")) == (True, 0)


def _bird_lost_its_peer(lab: Lab) -> None:
    """node2's bird.conf without node1: the pair has no session and no routes to each other's
    pods, while bird runs on both and calico-node stays Ready."""
    _withdrawn(lab, "node1", "10.244.2.0/24")
    _withdrawn(lab, "node2", "10.244.1.0/24")
    assert pod_blocked(lab, "node1", "node2")
    assert proc_states(lab, "node2")["bird"].startswith(("S", "R"))
    assert "198.18.0.11" not in (lab.paths.node_files("node2").dir / "bird.conf").read_text()
    assert container(cni_pod(lab, "node2")) == (True, 0)


def _bird_signs_alone(lab: Lab) -> None:
    """A BGP password in node2's bird.conf only: its sessions go down on both sides, BIRD runs
    on every node, and the kernels count the signatures they dropped, each its own way."""
    _withdrawn(lab, "node1", "10.244.2.0/24")
    _withdrawn(lab, "node2", "10.244.1.0/24")
    assert pod_blocked(lab, "node1", "node2")
    assert 'password "' in (lab.paths.node_files("node2").dir / "bird.conf").read_text()
    assert proc_states(lab, "node2")["bird"].startswith(("S", "R"))

    def md5(node: str, counter: str) -> int:
        lines = [line.split() for line in lab.node_exec(node, ["cat", "/proc/net/netstat"]
                                                          ).stdout.splitlines()
                 if line.startswith("TcpExt:")]
        return int(dict(zip(lines[0], lines[1], strict=True))[counter])

    assert md5("node2", "TCPMD5NotFound") > 0 and md5("node1", "TCPMD5Unexpected") > 0


def _bird_exports_nothing(lab: Lab) -> None:
    """node2's BIRD exports nothing: its sessions stay Established, node1 loses the route to
    node2's pods and node2 keeps node1's."""
    _withdrawn(lab, "node1", "10.244.2.0/24")
    assert "10.244.1.0/24" in lab.node_exec("node2", ["ip", "route"]).stdout
    assert pod_blocked(lab, "node1", "node2")
    assert "export none;" in (lab.paths.node_files("node2").dir / "bird.conf").read_text()
    assert proc_states(lab, "node2")["bird"].startswith(("S", "R"))
    assert container(cni_pod(lab, "node2")) == (True, 0)


def _calico_node_hung(lab: Lab) -> None:
    states = proc_states(lab, "node1")
    assert states["bird"].startswith("T") and states["calico-node"].startswith("T")
    _withdrawn(lab, "node2", "10.244.1.0/24")
    assert pod_blocked(lab, "node2", "node1")
    assert container(cni_pod(lab, "node1")) == (False, 0)


def _cali_forwarding_off(lab: Lab) -> None:
    assert sysctl(lab, "node2", "net.ipv4.ip_forward") == "1"
    off = [line for line in lab.node_exec("node2", ["sysctl", "-a"]).stdout.splitlines()
           if re.match(r"net\.ipv4\.conf\.cali\w+\.forwarding = 0", line)]
    assert len(off) == len(lab.pods_on("node2")), off
    blocked_both(lab, "node1", "node2")


def _policy_rule_over_bird(lab: Lab) -> None:
    assert "to 10.244.1.0/24 blackhole" in lab.node_exec("node2", ["ip", "rule"]).stdout
    assert "proto bird" in lab.node_exec("node2", ["ip", "route", "show",
                                                   "10.244.1.0/24"]).stdout
    dropped(lab, "node2", "node1")


def _blackhole_over_bird(lab: Lab) -> None:
    routes = lab.node_exec("node1", ["ip", "route", "show", "10.244.2.0/24"]).stdout
    assert "blackhole 10.244.2.0/24" in routes and "proto bird metric 32" in routes, routes
    time.sleep(12)  # BIRD's kernel scan (10 s) leaves the foreign route alone
    assert "blackhole" in lab.node_exec("node1", ["ip", "route", "show",
                                                  "10.244.2.0/24"]).stdout
    dropped(lab, "node1", "node2")


CALICO_CASES = [
    ("pod_cidr_route_missing", "blackhole", "node1", {}, _blackhole_over_bird),
    ("bgp_session_down", "hang", "node2", {}, _bird_hung),
    ("bgp_session_down", "config", "node2", {}, _bird_lost_its_peer),
    ("bgp_session_down", "password", "node2", {}, _bird_signs_alone),
    ("bgp_routes_not_advertised", "filter", "node2", {}, _bird_exports_nothing),
    ("cni_pod_not_running", "hang", "node1", {}, _calico_node_hung),
    ("ip_forward_disabled", "interface", "node2", {}, _cali_forwarding_off),
    ("mtu_mismatch", "pod", "node2", {}, _big_pod_packets_vanish("node2", "node1", 3000)),
    ("policy_route_blackhole", "rule", "node2", {}, _policy_rule_over_bird),
    # the kernel drops the pod's /32 with its cali veth: the heal must write it back
    ("node_pod_link_broken", "veth", "node2", {}, _node_and_pod_apart("veth")),
    ("node_pod_link_broken", "proxy_arp", "node2", {}, _node_and_pod_apart("proxy_arp")),
    ("node_pod_link_broken", "route", "node2", {}, _node_and_pod_apart("route")),
    ("interface_address_overlap", "pod", "node2", {}, _address_takes_peer("pod")),
]


@pytest.mark.parametrize("case", CALICO_CASES, ids=_case_id)
def test_calico_mechanism_breaks_and_heals_exactly(calico_lab, case):
    fault, via, node, params, broken = case
    if fault == "mtu_mismatch":
        assert calico_lab.pod_ping("node2", "node1", size=3000, df=False,
                                   timeout=1).returncode == 0
    proven(calico_lab, fault, node, {"via": via, **params}, broken)


CALICO_BENIGN = sorted(name for name, spec in FAULTS.items() if spec.benign
                       and spec.applies("calico-bgp") and not spec.applies("flannel-vxlan"))


@pytest.mark.parametrize("name", CALICO_BENIGN)
def test_calico_mechanism_of_a_benign_condition_breaks_nothing_and_heals_exactly(calico_lab,
                                                                                 name):
    # on node1, CoreDNS's: a same-node reply is what bridged traffic would keep from NAT
    proven(calico_lab, name, "node1", {}, _breaks_nothing(name), blind=True)
