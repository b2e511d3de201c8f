"""Cluster facts from hostile cluster.json documents: garbage shapes, missing fields, wrong
types. The parser must never raise, and every fact it does produce must match the registry."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest

from kubenetdiag.bundle import read_cluster, write_json
from kubenetdiag.errors import InputError
from kubenetdiag.facts.cluster import cluster_facts
from kubenetdiag.facts.registry import validate_fact
from kubenetdiag_lab import k8s_objects

# kube-dns's slice as the lab's kube-controller-manager writes it (the lab writes none itself)
ENDPOINT_SLICE = {
    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
    "metadata": {"name": "kube-dns-x7k2p", "generateName": "kube-dns-",
                 "namespace": "kube-system",
                 "labels": {"kubernetes.io/service-name": "kube-dns",
                            "endpointslice.kubernetes.io/managed-by":
                                "endpointslice-controller.k8s.io"}},
    "addressType": "IPv4",
    "endpoints": [{"addresses": ["10.244.2.5"],
                   "conditions": {"ready": True, "serving": True, "terminating": False},
                   "targetRef": {"kind": "Pod", "namespace": "kube-system", "name": "coredns-1"},
                   "nodeName": "node2", "zone": "z0"}],
    "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}],
}


def good_doc() -> dict:
    """A cluster.json as the collector writes it, built from the lab's objects."""
    state = {
        "cni": "flannel-vxlan",
        "nodes": [{"name": f"node{i}", "address": f"198.18.0.{10 + i}",
                   "pod_cidr": f"10.244.{i}.0/24", "zone": f"z{i % 2}", "index": i}
                  for i in (1, 2)],
        "pods": [{"name": "coredns-1", "namespace": "kube-system", "node": "node2",
                  "ip": "10.244.2.5", "app": "coredns"}],
        "faults": [{"fault": "cni_pod_not_running", "node": "node1", "params": {}}],
        "network_policies": [{"name": "deny", "namespace": "x", "default_deny": True}],
    }
    objs = k8s_objects.build(state)
    cms = {c["metadata"]["name"]: c for c in objs["configmaps"]}

    def call(name, items=None, obj=None):
        return {"name": name, "path": f"/{name}", "status": "ok", "http_status": 200,
                "reason": None, "duration_s": 0.01, "items": items, "object": obj}

    return {
        "schema": "kubenetdiag/cluster/v1", "queried": True, "reason": None,
        "source": {"kubeconfig": "k", "context": "c", "server": "http://127.0.0.1:1",
                   "in_cluster": False},
        "calls": [
            call("nodes", objs["nodes"]),
            call("daemonsets", objs["daemonsets"]),
            call("pods/kube-system", [p for p in objs["pods"]
                                      if p["metadata"]["namespace"] == "kube-system"]),
            call("pods/kube-flannel", [p for p in objs["pods"]
                                       if p["metadata"]["namespace"] == "kube-flannel"]),
            call("flannel_config", obj=cms["kube-flannel-cfg"]),
            call("kube_proxy_config", obj=cms["kube-proxy"]),
            call("coredns_config", obj=cms["coredns"]),
            call("services", objs["services"]),
            call("endpointslices", [ENDPOINT_SLICE]),
            call("networkpolicies", objs["networkpolicies"]),
            call("controller_lease", obj={
                "metadata": {"name": "kube-controller-manager", "namespace": "kube-system"},
                "spec": {"holderIdentity": "node1_5e0c", "leaseDurationSeconds": 15,
                         "renewTime": "2026-12-06T05:00:00.123456Z"}}),
        ],
    }


def cms_of(doc: dict) -> dict:
    call = next(c for c in doc["calls"] if c["name"] == "flannel_config")
    return {call["object"]["metadata"]["name"]: call["object"]}


def test_flannel_port_set_in_net_conf_is_the_one_in_effect():
    doc = good_doc()
    cm = cms_of(doc)["kube-flannel-cfg"]
    cm["data"]["net-conf.json"] = json.dumps(
        {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "Port": 8475}})
    (fl,) = by_kind(cluster_facts(doc, [("node1", "198.18.0.11")]), "flannel_config")
    assert fl.attrs["port"] == 8475
    cm["data"]["net-conf.json"] = json.dumps({"Network": "10.244.0.0/16",
                                              "Backend": {"Type": "host-gw"}})
    (fl,) = by_kind(cluster_facts(doc, [("node1", "198.18.0.11")]), "flannel_config")
    assert fl.attrs["port"] is None  # no VXLAN, no port


def check(facts) -> None:
    for f in facts:
        assert validate_fact(f) == [], (f.kind, f.attrs, validate_fact(f))
        json.dumps(f.to_dict())  # serializable, as facts.json needs


def by_kind(facts, kind):
    return [f for f in facts if f.kind == kind]


def test_good_document():
    facts = cluster_facts(good_doc(), [("node1", "198.18.0.11")])
    check(facts)
    (fl,) = by_kind(facts, "flannel_config")
    # kube-flannel.yml's net-conf.json names no port: the one in effect is the kernel's 8472
    assert "Port" not in cms_of(good_doc())["kube-flannel-cfg"]["data"]["net-conf.json"]
    assert fl.attrs["port"] == 8472
    bad = [f for f in by_kind(facts, "cni_pod") if not f.attrs["ready"]]
    assert [f.node for f in bad] == ["node1"]
    assert by_kind(facts, "dns_pod")[0].node == "node2"
    assert not by_kind(facts, "probe_status")


@pytest.mark.parametrize("doc", [None, "x", 3, [], {}, {"queried": True},
                                 {"queried": True, "calls": "garbage"},
                                 {"queried": True, "calls": [1, "a", None, {"name": None}]},
                                 {"queried": "yes", "calls": []}])
def test_garbage_documents_fail_soft(doc):
    facts = cluster_facts(doc, [("node1", "a")])
    check(facts)


def test_wrong_types_inside_objects():
    doc = good_doc()
    calls = {c["name"]: c for c in doc["calls"]}
    calls["nodes"]["items"] = [
        {"metadata": []}, {"metadata": {"name": 5}, "status": "up"},
        {"metadata": {"name": "n"}, "spec": {"podCIDRs": "10.0.0.0/24"},
         "status": {"conditions": [{"type": "Ready"}, "x"], "addresses": [{"address": None}],
                    "nodeInfo": []}},
    ]
    calls["pods/kube-system"]["items"] = [
        {"metadata": {"name": "kube-flannel-ds-x", "labels": None},
         "status": {"containerStatuses": [{"restartCount": "many"}, None]}},
        "not a pod",
    ]
    calls["pods/kube-flannel"]["items"] = []
    calls["flannel_config"]["object"] = {"metadata": {}, "data": {"net-conf.json": "{not json"}}
    calls["kube_proxy_config"]["object"] = {"data": {"config.conf": ["mode: ipvs"]}}
    calls["endpointslices"]["items"] = [
        {"metadata": {"labels": {"kubernetes.io/service-name": "web"}, "namespace": "default"},
         "endpoints": [{"addresses": "10.0.0.1", "conditions": None}, 7]},
    ]
    calls["networkpolicies"]["items"] = [{"metadata": {"name": "p"}, "spec": {"podSelector": 1}}]
    facts = cluster_facts(doc)
    check(facts)
    (node,) = by_kind(facts, "k8s_node")
    assert node.attrs["ready"] is None and node.attrs["pod_cidr"] is None
    (pod,) = by_kind(facts, "cni_pod")
    assert pod.attrs["restarts"] == 0 and pod.attrs["ready"] is False
    # an unreadable net-conf.json is reported as such; other sections still produce facts
    st = by_kind(facts, "probe_status")
    assert [f.attrs["probe"] for f in st] == ["api:flannel_config"]
    assert by_kind(facts, "network_policy")[0].attrs["default_deny"] is False


def test_random_mutations_never_raise():
    rng = random.Random(5)
    garbage = [None, 0, -1, "", "x", [], {}, [None], {"a": 1}, True, 1.5, "\x1b[31m"]
    base = good_doc()
    for _ in range(300):
        doc = copy.deepcopy(base)
        for _ in range(rng.randint(1, 6)):
            # walk to a random container and replace one of its values with garbage
            node = doc
            for _ in range(rng.randint(1, 8)):
                keys = list(node) if isinstance(node, dict) else list(range(len(node)))
                if not keys:
                    break
                k = rng.choice(keys)
                if isinstance(node[k], dict | list) and node[k] and rng.random() < 0.8:
                    node = node[k]
                    continue
                node[k] = rng.choice(garbage)
                break
        check(cluster_facts(doc, [("node1", "198.18.0.11")]))


def test_failed_and_optional_calls():
    doc = good_doc()
    doc["calls"] += [
        {"name": "calico_ippools", "path": "/x", "status": "not_found", "http_status": 404,
         "reason": "HTTP 404", "duration_s": 0, "items": None},
        {"name": "services", "path": "/s", "status": "timeout", "http_status": None,
         "reason": "no answer within 1s", "duration_s": 1, "items": None},
    ]
    doc["calls"] = [c for c in doc["calls"] if not (c["name"] == "services" and c["items"])]
    facts = cluster_facts(doc)
    st = by_kind(facts, "probe_status")
    assert [(f.attrs["probe"], f.attrs["status"]) for f in st] == [("api:services", "timeout")]
    assert "Services" in st[0].attrs["blocks"]
    assert not by_kind(facts, "service_endpoints")  # unknown, never "zero endpoints"
    assert not by_kind(facts, "dns_service")


def test_bundle_refuses_a_cluster_json_with_credentials(tmp_path: Path):
    doc = good_doc()
    doc["source"]["token"] = "secret"
    write_json(tmp_path / "cluster.json", doc)
    with pytest.raises(InputError):
        read_cluster(tmp_path)
    (tmp_path / "old").mkdir()
    assert read_cluster(tmp_path / "old") is None  # bundles from before cluster.json still read
