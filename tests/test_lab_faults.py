"""Every injector, proven at the network level without the diagnoser: the fault really breaks
what it claims to, lab.json records it, and heal restores health."""

from __future__ import annotations

import json
import re
import time

import pytest

from kubenetdiag_lab import Lab, LabError, coredns
from kubenetdiag_lab.netns import proc_state

pytestmark = pytest.mark.lab


def pods_ok(lab: Lab, src: str = "node1", dst: str = "node2") -> bool:
    return lab.pod_ping(src, dst, count=2, timeout=1).returncode == 0


def pod_blocked(lab: Lab, src: str = "node1", dst: str = "node2") -> bool:
    return lab.pod_ping(src, dst, count=1, timeout=0.7).returncode != 0


def client_pod(lab: Lab, node: str) -> str:
    return lab.pods_on(node)[0].name


def dns_ok(lab: Lab, node: str) -> bool:
    cp = lab.netprog(client_pod(lab, node), "--timeout", "1", "dns", "10.96.0.10",
                     "kubernetes.default.svc.cluster.local")
    return cp.returncode == 0


def web_ok(lab: Lab, node: str = "node1") -> bool:
    cp = lab.netprog(client_pod(lab, node), "--timeout", "2", "http", "http://10.96.0.20/")
    return cp.returncode == 0


def ssh(lab: Lab, node: str, command: str):
    return lab.client_exec(lab.ssh_argv(node, command), timeout=30)


def recorded(lab: Lab) -> list[tuple[str, str]]:
    return [(f["fault"], f["node"]) for f in json.loads(lab.state_path.read_text())["faults"]]


def counter(lab: Lab, node: str, path: str, name: str) -> int:
    """A counter from /proc/net/netstat or /proc/net/snmp in the node's namespace."""
    lines = lab.node_exec(node, ["cat", path]).stdout.splitlines()
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        keys, vals = head.split()[1:], values.split()[1:]
        if name in keys:
            return int(vals[keys.index(name)])
    raise AssertionError(f"{name} not in {path}")


@pytest.fixture
def vx(lab):
    """The session (flannel-vxlan) lab, checked healthy before and healed after each test."""
    assert pods_ok(lab)
    yield lab
    lab.heal()
    assert pods_ok(lab)


# ---- kernel / sysctl ------------------------------------------------------------------------


def test_ip_forward_via_a_sysctl_d_file(vx):
    with vx.injected("ip_forward_disabled", "node2", {"via": "file"}):
        assert recorded(vx) == [("ip_forward_disabled", "node2")]
        cp = ssh(vx, "node2", "grep -H ip_forward /etc/sysctl.d/*; sysctl -n net.ipv4.ip_forward")
        assert "99-security-hardening.conf:net.ipv4.ip_forward = 0" in cp.stdout, cp
        assert cp.stdout.strip().endswith("0")
        assert ssh(vx, "node1", "ls /etc/sysctl.d").stdout.split() == ["99-kubernetes-cri.conf"]
        assert pod_blocked(vx)
    assert "hardening" not in ssh(vx, "node2", "ls /etc/sysctl.d").stdout
    assert recorded(vx) == []


def test_bridge_nf_call_iptables_off_breaks_same_node_service_replies(vx):
    assert dns_ok(vx, "node1")  # CoreDNS runs on node1: the reply is bridged on cni0
    with vx.injected("bridge_nf_call_iptables_disabled", "node1"):
        assert not dns_ok(vx, "node1")
        assert dns_ok(vx, "node2")  # routed replies are still un-DNATed
    assert dns_ok(vx, "node1")


def test_rp_filter_strict_drops_what_arrives_on_an_asymmetric_path(vx):
    n1 = vx.node("node1")
    with vx.injected("rp_filter_strict", "node2", {"peer": "node1"}):
        assert vx.node_exec("node2", ["sysctl", "-n", "net.ipv4.conf.all.rp_filter"]
                            ).stdout.strip() == "1"
        # node2 sends node1's pods their traffic over the underlay, they answer by flannel.1
        assert f"via {n1.address} dev eth0" in vx.node_exec(
            "node2", ["ip", "route", "show", n1.pod_cidr]).stdout
        assert pod_blocked(vx)
        # the asymmetric route alone does not bite (loose mode tolerates it): strict mode does
        vx.node_exec("node2", ["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=2"])
        assert pods_ok(vx)
        vx.node_exec("node2", ["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1"])
        assert pod_blocked(vx)
    assert "dev flannel.1" in vx.node_exec("node2", ["ip", "route", "show", n1.pod_cidr]).stdout


def test_somaxconn_low_caps_a_queue_that_a_burst_then_overflows(vx):
    def listener() -> list[str]:
        return vx.node_exec("node2", ["ss", "-Hlnt", "sport = :30086"]).stdout.split()

    with vx.injected("somaxconn_low", "node2", {"value": "32"}):
        assert vx.node_exec("node2", ["sysctl", "-n", "net.core.somaxconn"]).stdout == "32\n"
        # the app asked for 4096 and got 32 (Send-Q), and the burst filled it past that
        state, recv_q, send_q = listener()[:3]
        assert (state, send_q) == ("LISTEN", "32") and int(recv_q) > 32
    assert vx.node_exec("node2", ["sysctl", "-n", "net.core.somaxconn"]).stdout == "4096\n"
    assert listener() == []


# One connection over the node's loopback, as `ss -ti` shows it: `wscale:S,R` when the
# handshake agreed on window scaling.
WSCALE = (
    "import socket, subprocess\n"
    "srv = socket.create_server(('127.0.0.1', 0))\n"
    "cli = socket.create_connection(srv.getsockname(), timeout=2)\n"
    "conn, _ = srv.accept()\n"
    "port = srv.getsockname()[1]\n"
    "print(subprocess.run(['ss', '-Htin', 'state', 'established', f'dport = :{port}'],\n"
    "                     capture_output=True, text=True).stdout)\n"
)


def window_scaled(lab: Lab, node: str) -> bool:
    return "wscale:" in lab.node_exec(node, ["python3", "-c", WSCALE]).stdout


def test_tcp_window_scaling_disabled_leaves_new_connections_unscaled(vx):
    assert window_scaled(vx, "node2")
    with vx.injected("tcp_window_scaling_disabled", "node2"):
        assert vx.node_exec("node2", ["sysctl", "-n", "net.ipv4.tcp_window_scaling"]
                            ).stdout == "0\n"
        assert not window_scaled(vx, "node2") and window_scaled(vx, "node1")
    assert window_scaled(vx, "node2")


# ---- firewall -------------------------------------------------------------------------------


def test_iptables_drop_rule_for_the_pod_cidr_and_for_a_port(vx):
    with vx.injected("iptables_drop_rule", "node2"):
        assert "-A FORWARD -d 10.244.2.0/24 -j DROP" in vx.node_exec(
            "node2", ["iptables", "-S", "FORWARD"]).stdout
        assert pod_blocked(vx)
    with vx.injected("iptables_drop_rule", "node2", {"port": "8080"}):
        assert pods_ok(vx) and not web_ok(vx)
    assert web_ok(vx)


@pytest.mark.parametrize("via", ["firewalld", "ufw"])
def test_host_firewall_blocks_the_overlay_but_not_ssh(vx, via):
    with vx.injected("host_firewall_active", "node2", {"via": via}):
        rules = vx.node_exec("node2", ["iptables", "-S"]).stdout
        assert ("FORWARD_IN_ZONES" if via == "firewalld" else "ufw-before-input") in rules
        assert pod_blocked(vx)
        assert ssh(vx, "node2", "true").returncode == 0
    rules = vx.node_exec("node2", ["iptables", "-S"]).stdout
    assert "ZONES" not in rules and "ufw" not in rules and "-P INPUT ACCEPT" in rules


def test_security_software_is_a_process_and_drops_forwarding(vx):
    with vx.injected("security_software_present", "node2"):
        assert "wsssr_defence_d" in ssh(vx, "node2", "ps -eo comm").stdout.split()
        assert pod_blocked(vx)
    assert "wsssr" not in ssh(vx, "node2", "ps -eo comm").stdout


# ---- overlay / routing ------------------------------------------------------------------------


def test_vxlan_udp_blocked_inbound(vx):
    with vx.injected("vxlan_udp_blocked", "node2"):
        assert pod_blocked(vx) and pod_blocked(vx, "node2", "node1")


def test_vxlan_port_mismatch(vx):
    with vx.injected("vxlan_port_mismatch", "node2"):
        assert "dstport 8475" in vx.node_exec("node2", ["ip", "-d", "link", "show",
                                                        "flannel.1"]).stdout
        nodes = json.loads(vx.state_path.read_text())["nodes"]
        assert [n["vxlan_port"] for n in nodes] == [8472, 8475]
        assert pod_blocked(vx)
    assert "dstport 8472" in vx.node_exec("node2", ["ip", "-d", "link", "show",
                                                    "flannel.1"]).stdout


def test_vxlan_port_in_use_keeps_flannel_1_down(vx):
    with vx.injected("vxlan_port_in_use", "node2"):
        # a program, not the kernel, owns the port: ss names its process
        held = vx.node_exec("node2", ["ss", "-Hulnp", "sport = :8472"]).stdout
        assert "0.0.0.0:8472" in held and "pid=" in held, held
        cp = vx.node_exec("node2", ["ip", "link", "set", "flannel.1", "up"], check=False)
        assert cp.returncode != 0 and "in use" in cp.stderr, cp.stderr
        assert pod_blocked(vx) and pod_blocked(vx, "node2", "node1")
    assert pods_ok(vx) and pods_ok(vx, "node2", "node1")
    assert "pid=" not in vx.node_exec("node2", ["ss", "-Hulnp", "sport = :8472"]).stdout


def test_vxlan_peer_fdb_entry_missing_cuts_one_pair(vx):
    with vx.injected("vxlan_peer_entry_missing", "node2", {"via": "fdb", "peer": "node1"}):
        fdb = vx.node_exec("node2", ["bridge", "fdb", "show", "dev", "flannel.1"]).stdout
        assert "dst 198.18.0.11" not in fdb
        assert pod_blocked(vx, "node2", "node1") and pod_blocked(vx, "node1", "node2")
    assert pods_ok(vx, "node2", "node1")


def test_pod_cidr_route_missing(vx):
    with vx.injected("pod_cidr_route_missing", "node1"):
        assert vx.node_exec("node1", ["ip", "route", "show", "10.244.2.0/24"]).stdout == ""
        assert pod_blocked(vx)


def test_mtu_mismatch_drops_only_big_packets(vx):
    assert vx.pod_ping("node1", "node2", size=1400, timeout=1).returncode == 0
    with vx.injected("mtu_mismatch", "node2"):
        assert vx.pod_ping("node1", "node2", count=2, timeout=1).returncode == 0
        assert vx.pod_ping("node1", "node2", size=1400, timeout=1).returncode != 0
    assert vx.pod_ping("node1", "node2", size=1400, timeout=1).returncode == 0


def test_cni_pod_not_running(vx):
    with vx.injected("cni_pod_not_running", "node2"):
        assert "flanneld" not in ssh(vx, "node2", "ps -eo comm").stdout.split()
        nodes = json.loads(vx.state_path.read_text())["nodes"]
        assert [n["cni_pod_ready"] for n in nodes] == [True, False]
    assert "flanneld" in ssh(vx, "node2", "ps -eo comm").stdout.split()


# ---- service / DNS ----------------------------------------------------------------------------


def api(lab: Lab, path: str) -> dict:
    lab.controlplane.attach()
    return lab.controlplane.admin().get(path)


def pod_ready(lab: Lab, namespace: str, pod: str) -> bool:
    status = api(lab, f"/api/v1/namespaces/{namespace}/pods/{pod}")["status"]
    return {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"


def slice_endpoints(lab: Lab, namespace: str, service: str) -> list[tuple[str, bool]]:
    """(address, ready) in the service's EndpointSlices, which kube-controller-manager writes."""
    found = api(lab, f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
                     f"?labelSelector=kubernetes.io/service-name%3D{service}")["items"]
    assert all(s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] ==
               "endpointslice-controller.k8s.io" for s in found)
    return [(e["addresses"][0], e["conditions"]["ready"]) for s in found
            for e in s.get("endpoints") or []]


@pytest.mark.parametrize("via", ["stop", "drop"])
def test_coredns_unreachable(vx, via):
    dns_pod = vx.pod_for_app("coredns")
    with vx.injected("coredns_unreachable", params={"via": via}):
        assert recorded(vx) == [("coredns_unreachable", "node1")]
        assert not dns_ok(vx, "node2")
        # direct to the pod too: nothing answers there (stop) or the node drops it (drop)
        cp = vx.netprog(client_pod(vx, "node2"), "--timeout", "1", "dns", dns_pod.ip,
                        "kubernetes.default.svc.cluster.local")
        assert cp.returncode != 0
        stopped = via == "stop"
        assert bool(coredns.pids(vx.topology)) is not stopped
        # a crashed CoreDNS is not Ready (as the kubelet reports it) and kube-dns loses its
        # endpoint; a dropped path leaves the pod Ready
        assert pod_ready(vx, "kube-system", dns_pod.name) is not stopped
        assert slice_endpoints(vx, "kube-system", "kube-dns") == [(dns_pod.ip, not stopped)]
        svcs = {s["name"]: s for s in json.loads(vx.state_path.read_text())["services"]}
        assert svcs["kube-dns"]["endpoints"] == ([] if stopped else [dns_pod.name])
    assert dns_ok(vx, "node2")
    assert pod_ready(vx, "kube-system", dns_pod.name)
    assert slice_endpoints(vx, "kube-system", "kube-dns") == [(dns_pod.ip, True)]


def test_service_no_endpoints(vx):
    web = vx.pod_for_app("web")
    with vx.injected("service_no_endpoints"):
        svcs = {s["name"]: s for s in json.loads(vx.state_path.read_text())["services"]}
        assert svcs["web"]["endpoints"] == [] and svcs["kube-dns"]["endpoints"]
        # the real way: the pod fails its readiness probe, the controller empties the slice
        assert not pod_ready(vx, "default", web.name)
        assert slice_endpoints(vx, "default", "web") == [(web.ip, False)]
        for node in ("node1", "node2"):
            rules = vx.node_exec(node, ["iptables-save"]).stdout
            assert "default/web:http has no endpoints" in rules
            assert "--to-destination 10.244.2.3:8080" not in rules
        assert not web_ok(vx)
    assert web_ok(vx)
    assert pod_ready(vx, "default", web.name)
    assert slice_endpoints(vx, "default", "web") == [(web.ip, True)]


def controller_lease(lab: Lab) -> dict:
    return api(lab, "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/"
                    "kube-controller-manager")["spec"]


def test_endpoints_controller_lagging(vx):
    # via=hang; via=stop (the process gone) is tests/test_diagnose_finds_lab_faults_over_ssh.py's
    web = vx.pod_for_app("web")
    holder = controller_lease(vx)["holderIdentity"]
    assert holder and vx.controlplane.recorded_pid("kube-controller-manager")
    with vx.injected("endpoints_controller_lagging", params={"via": "hang"}):
        pid = vx.controlplane.recorded_pid("kube-controller-manager")
        assert pid is not None and proc_state(pid) == "T"  # stopped, still there
        lease = controller_lease(vx)
        assert lease["holderIdentity"] == holder  # nobody took over
        # the API says the pod is not Ready; its slice, and kube-proxy, still send to it
        assert not pod_ready(vx, "default", web.name)
        assert slice_endpoints(vx, "default", "web") == [(web.ip, True)]
        assert f"--to-destination {web.ip}:8080" in vx.node_exec("node1", ["iptables-save"]).stdout
        svcs = {s["name"]: s for s in json.loads(vx.state_path.read_text())["services"]}
        assert svcs["web"]["endpoints"] == [web.name]
    assert pod_ready(vx, "default", web.name)
    # a new instance leads, and follows the pods again
    assert controller_lease(vx)["holderIdentity"] not in (holder, "")
    assert slice_endpoints(vx, "default", "web") == [(web.ip, True)]
    with vx.injected("service_no_endpoints"):
        assert slice_endpoints(vx, "default", "web") == [(web.ip, False)]


def kube_proxy_ready(lab: Lab) -> dict[str, bool]:
    lab.controlplane.attach()
    pods = lab.controlplane.admin().get(
        "/api/v1/namespaces/kube-system/pods?labelSelector=k8s-app%3Dkube-proxy")["items"]
    return {p["spec"]["nodeName"]: p["status"]["containerStatuses"][0]["ready"] for p in pods}


def test_kube_proxy_rules_missing(vx):
    with vx.injected("kube_proxy_rules_missing", "node2"):
        assert not dns_ok(vx, "node2")
        assert dns_ok(vx, "node1")
        # the API says what the kubelet would: node2's kube-proxy container is down
        assert kube_proxy_ready(vx) == {"node1": True, "node2": False}
    assert dns_ok(vx, "node2")
    assert kube_proxy_ready(vx) == {"node1": True, "node2": True}


def test_port_not_listening(vx):
    with vx.injected("port_not_listening"):
        cp = vx.netprog(client_pod(vx, "node1"), "tcp", "10.96.0.20", "80")
        assert cp.returncode != 0 and "refused" in cp.stderr, cp
    assert web_ok(vx)


# ---- sockets ------------------------------------------------------------------------------------


def test_listen_queue_overflow_counts(vx):
    before = counter(vx, "node2", "/proc/net/netstat", "ListenOverflows")
    with vx.injected("listen_queue_overflow", "node2"):
        assert counter(vx, "node2", "/proc/net/netstat", "ListenOverflows") > before
        assert vx.node_exec("node2", ["ss", "-Hlnt", "sport = :30080"]).stdout.strip()
    assert not vx.node_exec("node2", ["ss", "-Hlnt", "sport = :30080"]).stdout.strip()


def fd_count_and_limit(lab, node: str, port: int) -> tuple[list[str], int, int]:
    """The listener's ss line, and its process's open descriptors and soft limit."""
    line = lab.node_exec(node, ["ss", "-Hlntp", f"sport = :{port}"]).stdout.split()
    pid = re.search(r"pid=(\d+)", " ".join(line)).group(1)
    # the pid as the node's own PID namespace numbers it, so read from inside the node
    fds = lab.node_exec(node, ["ls", f"/proc/{pid}/fd"]).stdout.split()
    limits = lab.node_exec(node, ["cat", f"/proc/{pid}/limits"]).stdout
    soft = int(re.search(r"Max open files\s+(\d+)", limits).group(1))
    return line, len(fds), soft


def test_fd_limit_reached_leaves_the_accept_queue_full(vx):
    before = counter(vx, "node2", "/proc/net/netstat", "ListenOverflows")
    with vx.injected("fd_limit_reached", "node2"):
        line, open_, soft = fd_count_and_limit(vx, "node2", 30082)
        assert (open_, soft) == (64, 64)
        assert line[:3] == ["LISTEN", "129", "128"], line  # Recv-Q past Send-Q: full
        assert counter(vx, "node2", "/proc/net/netstat", "ListenOverflows") > before
        # one more client is not accepted: its handshake is dropped, it times out
        cp = vx.netprog(client_pod(vx, "node1"), "--timeout", "1", "tcp", "198.18.0.12", "30082")
        assert cp.returncode != 0 and "timed out" in cp.stderr, cp
    assert not vx.node_exec("node2", ["ss", "-Hlnt", "sport = :30082"]).stdout.strip()


def close_wait_owners(lab, node: str) -> dict[str, int]:
    """The node's CLOSE-WAIT sockets counted by the local port or peer they belong to."""
    rows = lab.node_exec(node, ["ss", "-Htn", "state", "close-wait"]).stdout.splitlines()
    owners: dict[str, int] = {}
    for row in rows:
        local, peer = row.split()[2:4]
        key = local.rsplit(":", 1)[1] if local.endswith(":30083") else peer
        owners[key] = owners.get(key, 0) + 1
    return owners


def test_close_wait_leak_keeps_the_connections_its_clients_closed(vx):
    with vx.injected("close_wait_leak", "node2"):
        assert close_wait_owners(vx, "node2") == {"30083": 300}
        # the server is alive and still accepts: the leak, not a dead process, holds them
        cp = vx.netprog(client_pod(vx, "node1"), "--timeout", "2", "tcp", "198.18.0.12", "30083")
        assert cp.returncode == 0, cp
    assert close_wait_owners(vx, "node2") == {}
    assert not vx.node_exec("node2", ["ss", "-Hlnt", "sport = :30083"]).stdout.strip()


def fin_wait2_peers(lab, node: str) -> dict[str, int]:
    """The node's FIN-WAIT-2 sockets counted by peer (address:port)."""
    rows = lab.node_exec(node, ["ss", "-Htn", "state", "fin-wait-2"]).stdout.splitlines()
    peers: dict[str, int] = {}
    for row in rows:
        peer = row.split()[3]
        peers[peer] = peers.get(peer, 0) + 1
    return peers


def test_fin_wait2_pileup_keeps_orphans_for_the_raised_timeout(vx):
    server = client_pod(vx, "node2")
    with vx.injected("fin_wait2_pileup", "node2"):
        ip = vx.pods_on("node2")[0].ip
        assert fin_wait2_peers(vx, "node2") == {f"{ip}:30084": 1200}
        # nothing on the node holds them: they are the kernel's, kept by the raised timeout
        owned = vx.node_exec("node2", ["ss", "-Htnp", "state", "fin-wait-2"]).stdout
        assert "users:" not in owned
        assert vx.node_exec("node2", ["sysctl", "-n", "net.ipv4.tcp_fin_timeout"]
                            ).stdout.strip() == "600"
    assert fin_wait2_peers(vx, "node2") == {}
    assert not vx.node_exec("node2", ["ss", "-Htn", "dport = :30084"]).stdout.strip()
    assert vx.node_exec("node2", ["sysctl", "-n", "net.ipv4.tcp_fin_timeout"]
                        ).stdout.strip() == "60"
    assert not vx.runners.pod(server).run(["ss", "-Hltn", "sport = :30084"]).stdout.strip()


def test_udp_buffer_errors_count(vx):
    before = counter(vx, "node2", "/proc/net/snmp", "RcvbufErrors")
    with vx.injected("udp_buffer_errors", "node2"):
        assert counter(vx, "node2", "/proc/net/snmp", "RcvbufErrors") > before
    assert not vx.node_exec("node2", ["ss", "-Hlnu", "sport = :30053"]).stdout.strip()


def test_socket_recv_queue_backlog_leaves_unread_bytes(vx):
    with vx.injected("socket_recv_queue_backlog", "node2"):
        rows = [line.split() for line in vx.node_exec(
            "node2", ["ss", "-Htn", "state", "established", "sport = :30070"]).stdout.splitlines()]
        assert rows and int(rows[0][0]) >= 65536, rows  # Recv-Q on the server's side
    assert not vx.node_exec("node2", ["ss", "-Htn", "sport = :30070"]).stdout.strip()
    assert not vx.node_exec("node2", ["ss", "-Hltn", "sport = :30070"]).stdout.strip()


def test_listen_port_conflict_two_programs_one_port(vx):
    with vx.injected("listen_port_conflict", "node2"):
        out = vx.node_exec("node2", ["ss", "-Hltnp", "sport = :9100"]).stdout
        assert len(out.splitlines()) == 2 and "node_exporter" in out and "legacy-export" in out
        # both answer: the kernel spreads the connections between them
        assert vx.netprog(client_pod(vx, "node2"), "tcp", "198.18.0.12", "9100").returncode == 0
    assert not vx.node_exec("node2", ["ss", "-Hltn", "sport = :9100"]).stdout.strip()


def test_syn_backlog_low_turns_cookies_off(vx):
    before = ssh(vx, "node2", "sysctl -n net.ipv4.tcp_max_syn_backlog").stdout.strip()
    with vx.injected("syn_backlog_low", "node2"):
        cp = ssh(vx, "node2", "sysctl -n net.ipv4.tcp_syncookies net.ipv4.tcp_max_syn_backlog")
        assert cp.stdout.split() == ["0", "128"]
    cp = ssh(vx, "node2", "sysctl -n net.ipv4.tcp_syncookies net.ipv4.tcp_max_syn_backlog")
    assert cp.stdout.split() == ["1", before]


def test_time_wait_pileup(vx):
    with vx.injected("time_wait_pileup", "node1", {"count": "1500"}):
        out = vx.node_exec("node1", ["ss", "-Htan", "state", "time-wait"]).stdout
        assert len(out.splitlines()) >= 1400
    assert ("time_wait_pileup", "node1") not in recorded(vx)


# ---- bookkeeping --------------------------------------------------------------------------------


def test_heal_without_arguments_heals_every_recorded_fault(vx):
    vx.inject("vxlan_udp_blocked", "node2")
    vx.inject("ip_forward_disabled", "node1")
    assert sorted(recorded(vx)) == [("ip_forward_disabled", "node1"),
                                    ("vxlan_udp_blocked", "node2")]
    faults = json.loads(vx.state_path.read_text())["faults"]
    assert {"fault": "ip_forward_disabled", "node": "node1",
            "params": {"via": "sysctl", "dev": ""}} in faults
    with pytest.raises(LabError, match="already active"):
        vx.inject("vxlan_udp_blocked", "node2")
    Lab.load(vx.workdir).heal()  # from "another process"
    assert recorded(vx) == [] and pods_ok(vx)


def test_bad_parameters_modes_and_fixture_only_are_refused(vx):
    with pytest.raises(LabError, match="takes no parameter bogus"):
        vx.inject("mtu_mismatch", "node2", {"bogus": "1"})
    with pytest.raises(LabError, match="needs CNI mode calico-bgp"):
        vx.inject("bgp_session_down", "node2")
    with pytest.raises(LabError, match="fixture"):
        vx.inject("tw_recycle_with_timestamps", "node2")
    assert recorded(vx) == []


# ---- calico-bgp ---------------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["stop", "block"])
def test_bgp_session_down_withdraws_routes(calico_lab, via):
    lab = calico_lab
    assert pods_ok(lab)
    with lab.injected("bgp_session_down", "node2", {"via": via}):
        deadline = time.monotonic() + 20  # block: the 6 s hold time must expire first
        while "10.244.2.0/24" in lab.node_exec("node1", ["ip", "route"]).stdout:
            assert time.monotonic() < deadline, "node1 kept node2's route"
            time.sleep(0.5)
        assert pod_blocked(lab)
    assert pods_ok(lab)


def test_calico_cni_pod_not_running_stops_bird(calico_lab):
    lab = calico_lab
    with lab.injected("cni_pod_not_running", "node2"):
        procs = ssh(lab, "node2", "ps -eo comm").stdout.split()
        assert "calico-node" not in procs and "bird" not in procs
        assert pod_blocked(lab)
    assert pods_ok(lab)
    assert re.search(r"\bbird\b", ssh(lab, "node2", "ps -eo comm").stdout)
