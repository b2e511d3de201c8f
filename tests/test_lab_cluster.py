"""The cluster lab when healthy, in every CNI mode: pods reach pods across nodes, DNS and the
app answer through their service VIPs, the outside host answers, and lab.json / `lab status`
describe it. Network checks only: the diagnoser is not involved."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubenetdiag_lab import Lab, coredns
from kubenetdiag_lab.cli import fault_list

pytestmark = pytest.mark.lab

MODES = ["flannel-vxlan", "flannel-host-gw", "calico-bgp"]


@pytest.fixture(params=MODES)
def any_lab(request) -> Lab:
    name = {"flannel-vxlan": "lab", "flannel-host-gw": "hostgw_lab",
            "calico-bgp": "calico_lab"}[request.param]
    lab = request.getfixturevalue(name)
    assert lab.cni == request.param
    return lab


def dns(lab: Lab, pod: str, name: str, *extra: str) -> subprocess.CompletedProcess:
    return lab.netprog(pod, "dns", "10.96.0.10", name, *extra)


def test_healthy_cluster_in_every_cni_mode(any_lab):
    lab = any_lab
    # every pod reaches every pod on the other node
    for src in lab.pods:
        for dst in lab.pods:
            if src.node != dst.node:
                cp = lab.ping(src.name, dst.ip, count=1, timeout=2)
                assert cp.returncode == 0, (lab.cni, src.name, dst.name, cp.stdout)
    # DNS through the kube-dns VIP (UDP and TCP) from a pod on each node
    for node in lab.nodes:
        pod = lab.pods_on(node.name)[0].name
        cp = dns(lab, pod, "kubernetes.default.svc.cluster.local")
        assert cp.returncode == 0 and cp.stdout.split()[-1] == "10.96.0.1", (lab.cni, cp)
        cp = dns(lab, pod, "web.default.svc.cluster.local", "--tcp")
        assert cp.returncode == 0 and cp.stdout.split()[-1] == "10.96.0.20", (lab.cni, cp)
    # the app's VIP from a pod on another node than the app, and CoreDNS's metrics
    web_node = lab.pod_for_app("web").node
    other = next(p for p in lab.pods if p.node != web_node)
    cp = lab.netprog(other.name, "http", "http://10.96.0.20/")
    assert cp.returncode == 0 and cp.stdout.startswith("200"), cp
    cp = lab.netprog(other.name, "http", "http://10.96.0.10:9153/metrics")
    assert cp.returncode == 0 and "coredns_build_info" in cp.stdout, cp
    # the outside world, through the CNI's masquerade
    cp = lab.netprog(other.name, "tcp", "203.0.113.10", "3306")
    assert cp.returncode == 0 and "mysql" in cp.stdout, cp


API_NODE_LIST = """
import sys
from kubernetes import client, config
api = client.ApiClient(config.new_client_from_config(sys.argv[1]).configuration)
nodes = client.CoreV1Api(api).list_node(_request_timeout=(3, 10)).items
for n in nodes:
    ip = next(a.address for a in n.status.addresses if a.type == "InternalIP")
    print(n.metadata.name, n.spec.pod_cidr, ip)
"""


def test_real_apiserver_lists_the_lab_nodes_to_the_official_client(any_lab):
    """From the client namespace, as the diagnoser would: the official kubernetes client with
    the lab's read-only kubeconfig, over TLS to the lab's kube-apiserver, which holds this
    lab's nodes (written at `up`)."""
    lab = any_lab
    cp = lab.client_exec([sys.executable, "-c", API_NODE_LIST, str(lab.kubeconfig_path)],
                         timeout=60)
    assert cp.returncode == 0, cp.stderr
    listed = sorted(tuple(line.split()) for line in cp.stdout.splitlines())
    assert listed == sorted((n.name, n.pod_cidr, n.address) for n in lab.nodes)


def admin_get(lab: Lab, path: str) -> dict:
    lab.controlplane.attach()
    return lab.controlplane.admin().get(path)


def test_real_coredns_serves_the_cluster_from_the_api(lab):
    """The real CoreDNS in coredns-0: Service names from the API through the kube-dns VIP,
    the middleware's name through `forward` to the site's resolver in the outside namespace,
    its own /metrics, and the Corefile it runs is the ConfigMap's."""
    pod = next(p for p in lab.pods if p.node != "node1").name  # across the pod network
    for name, address in (("kube-dns.kube-system.svc.cluster.local", "10.96.0.10"),
                          ("web.default.svc.cluster.local", "10.96.0.20"),
                          ("mysql.corp.example", "203.0.113.10")):
        for extra in ((), ("--tcp",)):
            cp = dns(lab, pod, name, *extra)
            assert cp.returncode == 0 and cp.stdout.split()[-1] == address, (name, extra, cp)
    cp = dns(lab, pod, "nothing.corp.example")
    assert cp.returncode == 1 and "rcode=3" in cp.stdout, cp  # NXDOMAIN, from the upstream
    cp = lab.netprog(pod, "http", "http://10.96.0.10:9153/metrics")
    assert cp.returncode == 0, cp
    assert 'coredns_build_info{goversion="go1.' in cp.stdout, cp.stdout[:500]
    assert 'version="1.14.7"' in cp.stdout and "coredns_dns_requests_total" in cp.stdout
    assert "coredns_kubernetes_rest_client_requests_total" in cp.stdout
    state = json.loads(lab.state_path.read_text())
    running = Path(state["coredns"]["corefile"]).read_text()
    served = admin_get(lab, "/api/v1/namespaces/kube-system/configmaps/coredns")
    assert served["data"]["Corefile"] == running
    for plugin in ("kubernetes cluster.local", "forward . 198.18.0.250", "prometheus :9153",
                   "health", "ready", "cache 30", "errors", "loop", "reload", "loadbalance"):
        assert plugin in running, plugin
    assert "/etc/resolv.conf" not in running
    [pid] = coredns.pids(lab.topology)
    assert f"-conf {state['coredns']['corefile']}" in Path(f"/proc/{pid}/cmdline").read_text(
        ).replace("\0", " ")
    pod_ns = os.stat(Path("/run/netns") / lab.pod_for_app("coredns").netns).st_ino
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == pod_ns


def test_endpointslices_are_written_by_kube_controller_manager(lab):
    slices = admin_get(lab, "/apis/discovery.k8s.io/v1/endpointslices")["items"]
    by_service = {s["metadata"]["labels"]["kubernetes.io/service-name"]: s for s in slices}
    for name, pod in (("kube-dns", lab.pod_for_app("coredns")), ("web", lab.pod_for_app("web"))):
        sl = by_service[name]
        assert sl["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == (
            "endpointslice-controller.k8s.io")
        [endpoint] = sl["endpoints"]
        assert endpoint["addresses"] == [pod.ip] and endpoint["conditions"]["ready"] is True
        assert endpoint["targetRef"]["name"] == pod.name and endpoint["nodeName"] == pod.node
    assert "kube-controller-manager" in lab.controlplane.files.pids.read_text()


def test_calico_routes_come_from_bird_and_birdc_works(calico_lab):
    lab = calico_lab
    state = json.loads(lab.state_path.read_text())
    for node in lab.nodes:
        routes = lab.node_exec(node.name, ["ip", "route", "show", "proto", "bird"]).stdout
        peers = [p for p in lab.nodes if p is not node]
        assert all(f"{p.pod_cidr} via {p.address} dev eth0" in routes for p in peers), routes
        # the node's own IPAM block, as calico-node's BIRD programs it
        assert f"blackhole {node.pod_cidr} " in routes, routes  # (listed by proto bird)
        sock = state["bird_sockets"][node.name]
        cp = lab.node_exec(node.name, ["birdc", "-s", sock, "show", "protocols"])
        assert cp.stdout.count("Established") == len(peers), cp.stdout
    # On the node, as on a real calico node, BIRD's client is not on the host: only inside
    # the calico-node "container", i.e. bird's own mount namespace, through its socket.
    cp = lab.client_exec(lab.ssh_argv("node1", "sh -c 'command -v birdc || echo none'"))
    assert cp.stdout.strip() == "none", cp.stdout
    cp = lab.client_exec(lab.ssh_argv(
        "node1", "nsenter -t $(pgrep -x bird) -m birdc -s /var/run/calico/bird.ctl "
                 "show protocols; ps -eo comm"))
    assert "Mesh_198_18_0_12" in cp.stdout and "calico-node" in cp.stdout, cp.stderr


def test_calico_pods_sit_behind_proxy_arp_with_no_gateway_address(calico_lab):
    lab = calico_lab
    pod = lab.pods_on("node1")[0]
    routes = lab.runners.pod(pod.name).run(["ip", "route"]).stdout
    assert "default via 169.254.1.1 dev eth0" in routes, routes
    assert lab.runners.pod(pod.name).run(["ip", "-4", "-o", "addr", "show", "eth0"]
                                         ).stdout.split()[3] == f"{pod.ip}/32"
    node_routes = lab.node_exec("node1", ["ip", "-o", "route"]).stdout
    veth = next(line.split()[2] for line in node_routes.splitlines()
                if line.startswith(f"{pod.ip} dev cali"))
    assert lab.node_exec("node1", ["sysctl", "-n", f"net.ipv4.conf.{veth}.proxy_arp"]
                         ).stdout.strip() == "1"
    # nothing on the node holds a gateway address for its pods
    assert "169.254.1.1" not in lab.node_exec("node1", ["ip", "-o", "addr"]).stdout
    assert "cni0" not in lab.node_exec("node1", ["ip", "-o", "link"]).stdout
    assert lab.pod_ping("node1", "node2", count=2, timeout=1).returncode == 0


def test_vxlan_device_is_what_flanneld_programs(lab):
    n1, n2 = lab.nodes[0], lab.nodes[1]
    details = lab.node_exec(n1.name, ["ip", "-d", "link", "show", "flannel.1"]).stdout
    assert "vxlan id 1 " in details and "dstport 8472" in details and "nolearning" in details
    assert "mtu 1450" in details
    fdb = lab.node_exec(n1.name, ["bridge", "fdb", "show", "dev", "flannel.1"]).stdout
    assert f"dst {n2.address} self permanent" in fdb
    neigh = lab.node_exec(n1.name, ["ip", "neigh", "show", "dev", "flannel.1"]).stdout
    assert "10.244.2.0 lladdr" in neigh and "PERMANENT" in neigh
    route = lab.node_exec(n1.name, ["ip", "route", "show", "10.244.2.0/24"]).stdout
    assert route.strip() == "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink"


def test_a_node_over_ssh_looks_like_a_node(lab):
    cp = lab.client_exec(lab.ssh_argv(
        "node2", "ps -eo comm; echo ---; ls /etc/sysctl.d; cat /run/flannel/subnet.env"))
    assert cp.returncode == 0, cp.stderr
    procs, files = cp.stdout.split("---")
    for name in ("flanneld", "kube-proxy", "kubelet", "containerd", "sshd"):
        assert name in procs.split(), procs
    assert "coredns" not in procs  # another node's (pod's) processes are not visible
    assert "99-kubernetes-cri.conf" in files and "FLANNEL_SUBNET=10.244.2.1/24" in files


def test_a_login_to_a_node_runs_the_nodes_own_start_up_files(lab):
    """As on a real node, and not this machine's, which may start a version manager on every
    login: the collector's cost on a node is measured without it."""
    machine = Path.home() / ".bashrc"
    before = machine.read_bytes() if machine.is_file() else None
    cp = lab.client_exec(lab.ssh_argv("node1", "cat ~/.bashrc 2>/dev/null; echo \"[$PYENV_ROOT]\""))
    assert cp.returncode == 0, cp.stderr
    skel = Path("/etc/skel/.bashrc")
    own = skel.read_text() if skel.is_file() else ""
    assert cp.stdout == own + "[]\n"
    assert (machine.read_bytes() if machine.is_file() else None) == before


def test_a_node_resolves_with_the_sites_resolver_not_this_machines(lab):
    """A node's own /etc/resolv.conf names the site's resolver (the outside namespace), so
    it resolves the middleware's name as a real node would, and no lab query is aimed at this
    machine's resolver; the machine's file is untouched."""
    machine = Path("/etc/resolv.conf").read_bytes()
    cp = lab.client_exec(lab.ssh_argv("node1", "cat /etc/resolv.conf; "
                                      "getent hosts mysql.corp.example"))
    assert cp.returncode == 0, cp.stderr
    assert "nameserver 198.18.0.250" in cp.stdout.splitlines()
    assert cp.stdout.rstrip().endswith("mysql.corp.example") and "203.0.113.10" in cp.stdout
    assert Path("/etc/resolv.conf").read_bytes() == machine


def test_lab_json_is_the_documented_contract(lab):
    state = json.loads(lab.state_path.read_text())
    for key in ("prefix", "workdir", "cni", "vxlan_port", "cluster_domain", "pod_network",
                "service_network", "nodes", "pods", "services", "faults", "bird_sockets",
                "kubeconfig", "inventory", "login"):
        assert key in state, key
    assert (state["cni"], state["vxlan_port"], state["cluster_domain"]) == (
        "flannel-vxlan", 8472, "cluster.local")
    assert (state["pod_network"], state["service_network"]) == ("10.244.0.0/16", "10.96.0.0/12")
    assert [(n["name"], n["zone"], n["index"]) for n in state["nodes"]] == [
        ("node1", "zone-a", 1), ("node2", "zone-b", 2)]
    apps = {p["app"]: p for p in state["pods"]}
    assert apps["coredns"]["node"] == "node1" and apps["coredns"]["namespace"] == "kube-system"
    assert apps["web"]["node"] == "node2"
    assert sum(p["node"] == "node1" for p in state["pods"]) >= 2
    svcs = {s["name"]: s for s in state["services"]}
    assert svcs["kube-dns"]["cluster_ip"] == "10.96.0.10"
    assert {(p["port"], p["protocol"]) for p in svcs["kube-dns"]["ports"]} >= {
        (53, "UDP"), (53, "TCP"), (9153, "TCP")}
    assert svcs["web"]["endpoints"] == [apps["web"]["name"]]
    assert svcs["web"]["ports"] == [{"name": "http", "port": 80, "protocol": "TCP",
                                     "target_port": 8080, "node_port": 30085}]
    assert "node_port" not in svcs["kube-dns"]["ports"][0]  # a ClusterIP Service has none
    assert state["faults"] == []


def lab_cli(lab: Lab, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kubenetdiag_lab", *args,
                           "--workdir", str(lab.workdir)] if args[0] != "exec" else
                          [sys.executable, "-m", "kubenetdiag_lab", "exec", "--workdir",
                           str(lab.workdir), *args[1:]],
                          capture_output=True, text=True, timeout=60)


def test_cli_status_exec_and_fault_list(lab):
    cp = lab_cli(lab, "status", "--json")
    assert cp.returncode == 0, cp.stderr
    view = json.loads(cp.stdout)
    assert view["client_netns"] == lab.client_netns
    assert view["kubeconfig"] == str(lab.workdir / "kubeconfig")
    assert view["inventory"] == str(lab.inventory_path)
    assert [(n["name"], n["address"], n["pod_cidr"]) for n in view["nodes"]] == [
        ("node1", "198.18.0.11", "10.244.1.0/24"), ("node2", "198.18.0.12", "10.244.2.0/24")]
    assert view["faults"] == [] and len(view["pods"]) == len(lab.pods)
    # exec runs in the client namespace and passes the exit code through
    cp = lab_cli(lab, "exec", "--", "sh", "-c", "ip -br addr show eth0; exit 3")
    assert cp.returncode == 3 and "198.18.0.2/24" in cp.stdout, cp
    listing = fault_list()
    assert "tw_recycle_with_timestamps" in listing and "fixture only" in listing
    cp = subprocess.run([sys.executable, "-m", "kubenetdiag_lab", "inject", "--list"],
                        capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0 and "vxlan_udp_blocked" in cp.stdout
    # into a pipe: a header, then one tab-separated line per fault; --format json: the same
    rows = [line.split("\t") for line in cp.stdout.splitlines()]
    assert rows[0][:2] == ["name", "description"] and all(len(r) == 6 for r in rows)
    cp = subprocess.run([sys.executable, "-m", "kubenetdiag_lab", "inject", "--list", "--format",
                         "json"], capture_output=True, text=True, timeout=30)
    faults = {f["name"]: f for f in json.loads(cp.stdout)}
    assert set(faults) == {r[0] for r in rows[1:]}
    assert faults["tw_recycle_with_timestamps"]["fixture_only"] is True
    # the benign conditions are listed as such, so nobody takes one for a fault to find
    assert faults["benign_docker_installed"]["benign"] is True
    assert faults["vxlan_udp_blocked"]["benign"] is False
    benign = {r[0]: r[1] for r in rows[1:] if r[0].startswith("benign_")}
    assert benign and all(d.startswith("benign, expect no finding: ") for d in benign.values())
