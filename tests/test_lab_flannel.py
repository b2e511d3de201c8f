"""The lab's pod network is the real flanneld's work, and behaves as flanneld does on a real
node: it writes subnet.env, annotates its Node, programs its peers, repairs what it repairs
and leaves alone what it does not."""

from __future__ import annotations

import json
import time

import pytest

from kubenetdiag_lab import Lab, flannel

pytestmark = pytest.mark.lab


def node_object(lab: Lab, name: str) -> dict:
    lab.controlplane.attach()
    return lab.controlplane.admin().get(f"/api/v1/nodes/{name}")


def routes(lab: Lab, node: str) -> dict[str, dict]:
    out = lab.node_exec(node, ["ip", "-j", "route", "show"]).stdout
    return {route["dst"]: route for route in json.loads(out)}


def test_flanneld_writes_its_own_state(lab):
    n1, n2 = lab.node("node1"), lab.node("node2")
    # the process an SRE finds on the node is flanneld itself, as the DaemonSet runs it
    ps = lab.client_exec(lab.ssh_argv("node1", "ps -eo args"), timeout=30).stdout
    assert "/opt/bin/flanneld --ip-masq --kube-subnet-mgr" in ps
    env = lab.paths.node_files("node1").subnet_env.read_text()
    assert f"FLANNEL_SUBNET={n1.pod_gateway}/24" in env
    assert "FLANNEL_MTU=1450" in env
    annotations = node_object(lab, "node2")["metadata"]["annotations"]
    assert annotations["flannel.alpha.coreos.com/public-ip"] == n2.address
    vtep_mac = json.loads(annotations["flannel.alpha.coreos.com/backend-data"])["VtepMAC"]
    # node1 sends node2's pod traffic to node2's VTEP: flanneld's FDB entry and route
    fdb = lab.node_exec("node1", ["bridge", "fdb", "show", "dev", "flannel.1"]).stdout
    assert f"{vtep_mac} dst {n2.address}" in fdb
    assert routes(lab, "node1")[n2.pod_cidr]["dev"] == "flannel.1"
    conditions = {c["type"]: c for c in node_object(lab, "node1")["status"]["conditions"]}
    assert conditions["NetworkUnavailable"]["reason"] == "FlannelIsUp"
    saved = lab.node_exec("node1", ["iptables-save"]).stdout
    assert '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD' in saved


def test_vxlan_route_deleted_stays_deleted_until_flanneld_restarts(lab):
    n1, n2 = lab.node("node1"), lab.node("node2")
    lab.node_exec("node1", ["ip", "route", "del", n2.pod_cidr])
    try:
        time.sleep(11)  # longer than host-gw's route check: vxlan has none
        assert n2.pod_cidr not in routes(lab, "node1")
    finally:
        flannel.restart(lab.topology, lab.paths, n1, lab.runners.node(n1))
    assert routes(lab, "node1")[n2.pod_cidr]["dev"] == "flannel.1"


def test_host_gw_route_deleted_is_put_back_by_flanneld(hostgw_lab):
    lab = hostgw_lab
    n2 = lab.node("node2")
    assert routes(lab, "node1")[n2.pod_cidr]["gateway"] == n2.address
    lab.node_exec("node1", ["ip", "route", "del", n2.pod_cidr])
    deadline = time.monotonic() + 25
    while n2.pod_cidr not in routes(lab, "node1"):
        assert time.monotonic() < deadline, "flanneld did not re-add the host-gw route"
        time.sleep(0.5)
    assert routes(lab, "node1")[n2.pod_cidr]["gateway"] == n2.address


def test_vxlan_port_mismatch_is_flanneld_on_another_config(lab):
    runner = lab.runners.node("node2")
    with lab.injected("vxlan_port_mismatch", "node2", {"port": "8475"}):
        assert flannel.vxlan_port(runner) == 8475
        assert flannel.vxlan_port(lab.runners.node("node1")) == 8472
        assert lab.pod_ping("node1", "node2", count=1, timeout=0.7).returncode != 0
    assert flannel.vxlan_port(runner) == 8472
    assert lab.pod_ping("node1", "node2", count=2, timeout=1).returncode == 0


def test_cni_pod_not_running_kills_flanneld_and_heal_restarts_it(lab):
    n2 = lab.node("node2")
    with lab.injected("cni_pod_not_running", "node2"):
        assert not flannel.pids(n2)
        # a dead flanneld leaves its device and routes: traffic keeps flowing
        assert lab.pod_ping("node1", "node2", count=2, timeout=1).returncode == 0
    assert flannel.pids(n2)
