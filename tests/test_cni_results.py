"""The pod behind each veth, from libcni's cached CNI results: the probe's node-side command
(what it keeps out of the bundle), its parser on real and old forms, and the pod a broken
veth's finding names."""

from __future__ import annotations

import base64
import json
import os
import subprocess

import pytest

from kubenetdiag.facts.bridges import pod_bridge_facts
from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.facts.pod_veths import pod_veth_facts
from kubenetdiag.probes import BY_NAME
from kubenetdiag.probes.base import Section
from kubenetdiag.probes.cni_results import COMMAND, RESULTS_DIR
from probe_sections import section

PROBE = BY_NAME["cni_results"]
SECRET = "s3cr3t-t0ken-planted"


def parse(name: str) -> list[Fact]:
    return PROBE.parse(section("cni_results", name), "node2")


def attachments(facts: list[Fact]) -> list[dict]:
    return [f.attrs for f in facts if f.kind == "cni_attachment"]


def test_lab_flannel_results_name_each_pod_and_its_host_veth():
    got = sorted((a["pod"], a["bridge"], a["addresses"], a["network"], a["ifname"])
                 for a in attachments(parse("lab-flannel-node2")))
    assert got == [("default/client-node2-1", "cni0", "10.244.2.2", "cbr0", "eth0"),
                   ("default/web-0", "cni0", "10.244.2.3", "cbr0", "eth0")]
    assert all(a["host_veth"].startswith("veth") for a in attachments(parse("lab-flannel-node2")))


def test_calico_result_has_the_host_veth_alone():
    (a,) = attachments(parse("calico-3.28-containerd"))
    assert (a["pod"], a["host_veth"], a["bridge"], a["addresses"], a["network"]) == (
        "shop/cart-7d9f8b6c5-x2x4q", "cali6a1f0e2b9c4", None, "10.233.64.17", "k8s-pod-network")


def test_libcni_06_result_alone_gives_the_address_and_no_pod():
    (a,) = attachments(parse("libcni-0.6-result-only"))
    assert (a["pod"], a["host_veth"], a["addresses"], a["network"]) == (
        None, None, "10.244.3.7", None)


def test_a_login_that_cannot_read_them_is_told_not_guessed():
    facts = parse("nonroot-denied")
    assert not attachments(facts)
    (status,) = [f.attrs for f in facts if f.kind == "probe_status"]
    assert status["status"] == "permission_denied" and "2 cached CNI result(s)" in status["reason"]
    assert status["kinds"] == "cni_attachment"


def test_a_file_that_is_not_json_is_partial_with_its_line():
    out = "##knd:file /var/lib/cni/results/x\n|{not json\n"
    facts = PROBE.parse(Section("cni_results", COMMAND, 0, 0.0, out, ""), "node2")
    (status,) = [f.attrs for f in facts if f.kind == "probe_status"]
    assert status["status"] == "partial" and "/var/lib/cni/results/x" in status["reason"]


def _cache(tmp_path, name: str, doc: dict) -> None:
    (tmp_path / name).write_text(json.dumps(doc, separators=(",", ":")))  # libcni: no newline


def _run_on(tmp_path) -> str:
    """The probe's own command, as the node script runs it (a function of a POSIX sh), on
    a directory of planted cache files."""
    body = COMMAND.replace(RESULTS_DIR, str(tmp_path))
    return subprocess.run(["sh", "-c", f"f() {{ {body}\n}}; f"], capture_output=True,
                          text=True, timeout=10, check=True).stdout


def _planted(with_result: bool) -> dict:
    conf = {"name": "k8s-pod-network", "plugins": [{"type": "calico", "etcd_key": SECRET}]}
    doc = {"kind": "cniCacheV1", "containerId": "c1",
           "config": base64.b64encode(json.dumps(conf).encode()).decode(),
           "ifName": "eth0", "networkName": "k8s-pod-network", "netns": "/var/run/netns/cni-1",
           "cniArgs": [["K8S_POD_NAMESPACE", "shop"], ["K8S_POD_NAME", "cart-0"]],
           # containerd passes the pod's annotations; one named "result", one a secret
           "capabilityArgs": {"io.kubernetes.cri.pod-annotations": {
               "result": "x", "deploy/token": f'{SECRET} "result": {{}}'}}}
    if with_result:
        doc["result"] = {"cniVersion": "1.0.0", "interfaces": [{"name": "cali0a1b2c3d4e5"}],
                         "ips": [{"address": "10.233.64.9/32"}]}
    return doc


def test_node_side_drops_the_cached_config_and_the_pod_annotations(tmp_path):
    _cache(tmp_path, "k8s-pod-network-c1-eth0", _planted(with_result=True))
    _cache(tmp_path, "k8s-pod-network-c2-eth0", _planted(with_result=False))
    out = _run_on(tmp_path)
    assert SECRET not in out and "etcd_key" not in out
    assert "capabilityArgs" not in out and "pod-annotations" not in out
    got = attachments(PROBE.parse(Section("cni_results", COMMAND, 0, 0.0, out, ""), "n1"))
    # the result behind the annotations is kept whole; without one, nothing after them is
    assert sorted(((a["pod"], a["host_veth"], a["addresses"]) for a in got), key=str) == [
        ("shop/cart-0", "cali0a1b2c3d4e5", "10.233.64.9"), ("shop/cart-0", None, None)]


def test_node_side_skips_fifos_and_devices(tmp_path):
    _cache(tmp_path, "cbr0-ok-eth0", {"kind": "cniCacheV1", "cniArgs": [
        ["K8S_POD_NAMESPACE", "a"], ["K8S_POD_NAME", "b"]], "result": {"ips": []}})
    os.mkfifo(tmp_path / "cbr0-fifo-eth0")  # read by the shell, it would block the script
    (tmp_path / "cbr0-zero-eth0").symlink_to("/dev/zero")
    out = _run_on(tmp_path)
    assert "cbr0-fifo-eth0" not in out and "cbr0-zero-eth0" not in out
    assert "cbr0-ok-eth0" in out


def _veth(node: str, name: str, **attrs) -> Fact:
    base = {"name": name, "kind": "veth", "mtu": 1450, "state": "UP", "admin_up": True,
            "lower_up": True, "master": "cni0", "hairpin": True, "peer_addresses": None}
    return Fact("interface", node, base | attrs, Source("links", "ip -j -d link", 0, ""))


def _attachment(node: str, veth: str, pod: str) -> Fact:
    return Fact("cni_attachment", node, {
        "file": f"/var/lib/cni/results/cbr0-{veth}-eth0", "network": "cbr0", "container_id": "c",
        "ifname": "eth0", "netns": "/run/netns/x", "pod": pod, "host_veth": veth,
        "bridge": "cni0", "addresses": "10.244.2.2"}, Source("cni_results", "cat", 0, ""))


API = {"queried": True, "calls": [{"name": "pods", "status": "ok", "items": [
    {"metadata": {"namespace": "default", "name": "web-0"}, "spec": {},
     "status": {"phase": "Running", "podIP": "10.244.2.3"}}]}]}


@pytest.mark.parametrize("cached", [True, False])
def test_a_veth_set_down_still_names_its_pod_from_the_cache_only(cached):
    # down: the bridge forgot what it learned on the port, the neighbour table names no one
    down = _veth("node2", "veth1a2b3c4d", admin_up=False, lower_up=False, state="DOWN")
    up = _veth("node2", "veth9f8e7d6c", peer_addresses="10.244.2.3")
    facts = [down, up] + ([_attachment("node2", "veth1a2b3c4d", "default/client-1")]
                          if cached else [])
    got = {f.attrs["dev"]: (f.attrs["holder"], f.attrs["known_by"])
           for f in pod_veth_facts(facts, API)}
    assert got["veth9f8e7d6c"] == ("pod default/web-0", "neighbours")
    assert got["veth1a2b3c4d"] == (("pod default/client-1", "cni_results") if cached
                                   else ("a pod", None))


def test_only_pod_veths_get_a_holder():
    lab_uplink = _veth("node2", "eth0", master=None)  # the lab's own uplink is a veth too
    out = pod_veth_facts([lab_uplink, _veth("node2", "cali0a1b2c3d4e5", master=None)], API)
    assert [f.attrs["dev"] for f in out] == ["cali0a1b2c3d4e5"]


def test_hairpin_off_ports_name_their_pod_from_the_cache():
    bridge = Fact("interface", "node2", {"name": "cni0", "kind": "bridge", "mtu": 1450,
                                         "state": "UP", "admin_up": True, "lower_up": True,
                                         "addresses": "10.244.2.1/24", "promisc": False},
                  Source("links", "ip -j -d link", 0, ""))
    port = _veth("node2", "veth1a2b3c4d", hairpin=False)
    (fact,) = pod_bridge_facts([bridge, port, _attachment("node2", "veth1a2b3c4d",
                                                          "default/web-0")], API)
    assert fact.attrs["hairpin_off_pods"] == "default/web-0"


def _gone(facts: list[Fact]) -> list[tuple[str, str, str]]:
    return [(f.attrs["dev"], f.attrs["holder"], f.attrs["addresses"])
            for f in pod_veth_facts(facts, API) if not f.attrs["present"]]


def test_a_deleted_veth_of_a_pod_the_api_still_runs_is_reported_gone():
    there = _veth("node2", "veth9f8e7d6c", peer_addresses="10.244.2.2")
    deleted = _attachment("node2", "veth1a2b3c4d", "default/web-0")
    deleted.attrs["addresses"] = "10.244.2.3"  # the API's web-0 holds it
    assert _gone([there, deleted]) == [("veth1a2b3c4d", "pod default/web-0", "10.244.2.3")]


def test_a_leftover_result_says_nothing():
    there = _veth("node2", "veth9f8e7d6c")
    # a pod the API no longer runs at that address: a CNI DEL that never ran
    stale = _attachment("node2", "veth1a2b3c4d", "default/old-0")
    assert _gone([there, stale]) == []
    # the same pod attached again (a new sandbox, a present veth): the old file is history
    old = _attachment("node2", "veth1a2b3c4d", "default/web-0")
    old.attrs["addresses"] = "10.244.2.3"
    new = _attachment("node2", "veth9f8e7d6c", "default/web-0")
    assert _gone([there, old, new]) == []
    # no interface facts from the node (its links probe failed): nothing can be said
    assert _gone([old]) == []


def test_a_calico_veth_set_down_names_its_pod_by_the_name_calico_gave_it():
    # Calico's plugin keeps no cached result and a veth set down has no neighbour: its name,
    # cali + SHA-1 of namespace.name, still says whose it is, on the pod's own node only
    api = {"queried": True, "calls": [{"name": "pods", "status": "ok", "items": [
        {"metadata": {"namespace": "default", "name": "web-0"}, "spec": {"nodeName": "node2"},
         "status": {"phase": "Running", "podIP": "10.244.2.3"}},
        {"metadata": {"namespace": "default", "name": "old-0"}, "spec": {"nodeName": "node2"},
         "status": {"phase": "Succeeded"}}]}]}
    down = dict(admin_up=False, lower_up=False, state="DOWN", master=None)
    facts = [_veth("node2", "cali0d7763386da", **down), _veth("node1", "cali0d7763386da", **down),
             _veth("node2", "calie6746e609ac", **down)]
    got = {(f.node, f.attrs["dev"]): (f.attrs["holder"], f.attrs["known_by"])
           for f in pod_veth_facts(facts, api)}
    assert got == {("node2", "cali0d7763386da"): ("pod default/web-0", "calico_name"),
                   ("node1", "cali0d7763386da"): ("a pod", None),
                   ("node2", "calie6746e609ac"): ("a pod", None)}
