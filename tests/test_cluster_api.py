"""The cluster collector against the lab's real kube-apiserver (+ etcd), over TLS from the
client namespace, with the official `kubernetes` client: every resource, read-only (the
apiserver's own audit log), pagination, expired continue tokens (a real 410 after etcd
compacts past the token), 401, RBAC 403s on pods only, an unreachable API, faults injected in
the lab, node matching, and the CLI end to end.

Most tests share one control plane of this module's own (`<prefix>ca-sw`, `-client`, `-cp`),
whose objects are reconciled to each test's lab.json-shaped state by the lab's own apisync;
the injected-fault test uses the session lab. Skipped (not failed) without root or without
the built components. The stopped-apiserver case is tests/test_lab_control_plane.py's."""

from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import standalone_api
from kubenetdiag.bundle import read_cluster, write_cluster
from kubenetdiag.cli import main
from kubenetdiag.collect import cluster as cc
from kubenetdiag.errors import InputError
from kubenetdiag.facts.cluster import cluster_facts
from kubenetdiag.facts.registry import validate_fact
from kubenetdiag_lab import apisync, components
from kubenetdiag_lab import controlplane as cpm

kubernetes = pytest.importorskip("kubernetes")

PREFIX = standalone_api.prefix_for("ca")
CLIENT = standalone_api.client_netns(PREFIX)
CP = cpm.cp_netns(PREFIX)


def lab_state(nodes: int = 3, cni: str = "flannel-vxlan", faults=(), **extra) -> dict:
    state = {
        "prefix": "knd", "cni": cni, "vxlan_port": 8472,
        "cluster_domain": "cluster.local", "pod_network": "10.244.0.0/16",
        "service_network": "10.96.0.0/12",
        "nodes": [
            {"name": f"node{i}", "netns": f"knd-node{i}", "address": f"198.18.0.{10 + i}",
             "pod_cidr": f"10.244.{i}.0/24", "zone": "zone-a" if i % 2 else "zone-b", "index": i}
            for i in range(1, nodes + 1)
        ],
        "pods": [
            {"name": "coredns-7db6d8ff4d-x1", "namespace": "kube-system", "node": "node1",
             "ip": "10.244.1.3", "netns": "p", "app": "coredns"},
            *[{"name": f"web-{i}", "namespace": "default", "node": f"node{i}",
               "ip": f"10.244.{i}.2", "netns": "p", "app": "web"}
              for i in range(1, min(nodes, 3) + 1)],
        ],
        "services": [
            {"name": "kube-dns", "namespace": "kube-system", "cluster_ip": "10.96.0.10",
             "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "target_port": 53}],
             "app": "coredns", "endpoints": ["coredns-7db6d8ff4d-x1"]},
            {"name": "web", "namespace": "default", "cluster_ip": "10.96.0.20",
             "ports": [{"name": "http", "port": 80, "protocol": "TCP", "target_port": 8080}],
             "app": "web", "endpoints": [f"web-{i}" for i in range(1, min(nodes, 3) + 1)]},
        ],
        "network_policies": [
            {"name": "deny-all", "namespace": "payments", "default_deny": True},
            {"name": "allow-client", "namespace": "default", "default_deny": False},
        ],
        "faults": list(faults),
        **extra,
    }
    return state


@dataclass
class Api:
    cp: cpm.ControlPlane
    workdir: Path
    applied: dict | None = None
    state: dict = field(default_factory=dict)

    def use(self, state: dict) -> None:
        """Reconcile the server's objects to `state`, as the lab does after a fault."""
        self.applied = apisync.sync(self.cp.admin(), state, self.applied)
        self.state = state

    def kubeconfig(self, user: str = cpm.READER_USER) -> Path:
        return self.cp.kubeconfig(user)

    def audit(self, user: str = cpm.READER_USER) -> list[dict]:
        lines = self.cp.files.audit_log.read_text().splitlines()
        return [e for e in map(json.loads, lines) if e["user"]["username"] == user]

    def etcd(self, path: str, body: dict) -> dict:
        """etcd's JSON gateway, from inside the control plane's namespace (its only listener)."""
        def call() -> dict:
            conn = http.client.HTTPConnection("127.0.0.1", 2379, timeout=5)
            try:
                conn.request("POST", path, body=json.dumps(body))
                resp = conn.getresponse()
                data = json.loads(resp.read())
                assert resp.status == 200, data
                return data
            finally:
                conn.close()

        return cpm.in_netns(CP, call)

    def compact(self) -> int:
        """Write a key (a new revision), then compact etcd up to it: every continue token
        handed out before is now older than what etcd keeps."""
        key = base64.b64encode(b"/kubenetdiag-test/compaction").decode()
        put = self.etcd("/v3/kv/put", {"key": key, "value": key})
        revision = int(put["header"]["revision"])
        self.etcd("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    # Continue tokens from etcd, not from the watch cache's snapshots (on by default since
    # 1.34), so compacting etcd expires them as it does on a server whose cache is cold or
    # that drops snapshots when it compacts: the real 410 the collector must handle.
    with standalone_api.control_plane(
        PREFIX, tmp_path_factory.mktemp("cluster-api"),
        apiserver_args=["--feature-gates=ListFromCacheSnapshot=false"],
    ) as cp:
        yield Api(cp, cp.workdir)


@pytest.fixture
def served(api: Api) -> Callable[..., Path]:
    """served(state=None, user=reader) -> kubeconfig: the server now holds that state."""
    def serve(state: dict | None = None, user: str = cpm.READER_USER) -> Path:
        api.use(state or lab_state())
        return api.kubeconfig(user)

    return serve


def collect(kubeconfig: Path, netns: str = CLIENT, **kw) -> dict:
    return standalone_api.collect_from(netns, kubeconfig, **kw)


def calls(doc: dict) -> dict[str, dict]:
    return {c["name"]: c for c in doc["calls"]}


def facts_of(doc: dict, kind: str, inventory=()) -> list:
    return [f for f in cluster_facts(doc, inventory) if f.kind == kind]


# ---------------------------------------------------------------- the lab's objects


@pytest.mark.lab
def test_official_client_reads_every_resource(served):
    kubeconfig = served()
    from kubernetes import client, config

    def read() -> None:
        cfg = client.Configuration()
        config.load_kube_config(str(kubeconfig), client_configuration=cfg)
        with client.ApiClient(cfg) as api:
            core = client.CoreV1Api(api)
            nodes = core.list_node().items
            assert [n.metadata.name for n in nodes] == ["node1", "node2", "node3"]
            n2 = nodes[1]
            assert n2.spec.pod_cidr == "10.244.2.0/24"
            assert {a.type: a.address for a in n2.status.addresses}["InternalIP"] == (
                "198.18.0.12")
            # the kubelet's condition; NetworkUnavailable is flanneld's, and none runs here
            assert {c.type: c.status for c in n2.status.conditions} == {"Ready": "True"}
            assert n2.metadata.labels["topology.kubernetes.io/zone"] == "zone-b"
            assert n2.status.node_info.kubelet_version.startswith("v1.")
            ks = [p.metadata.name for p in core.list_namespaced_pod("kube-system").items]
            assert sum(p.startswith("kube-proxy-") for p in ks) == 3
            assert "coredns-7db6d8ff4d-x1" in ks
            fl = core.list_namespaced_pod("kube-flannel").items
            assert len(fl) == 3 and all(p.metadata.name.startswith("kube-flannel-ds-")
                                        for p in fl)
            assert len(core.list_pod_for_all_namespaces().items) == 3 + 3 + 1 + 3
            ds = client.AppsV1Api(api).list_namespaced_daemon_set("kube-system").items
            assert [d.metadata.name for d in ds] == ["kube-proxy"]
            cm = core.read_namespaced_config_map("kube-flannel-cfg", "kube-flannel")
            net = json.loads(cm.data["net-conf.json"])
            # as kube-flannel.yml ships it: no Port, no VNI (the kernel's 8472, VNI 1)
            assert net["Network"] == "10.244.0.0/16" and net["Backend"] == {"Type": "vxlan"}
            kp = core.read_namespaced_config_map("kube-proxy", "kube-system")
            assert "mode: iptables" in kp.data["config.conf"]
            svcs = {s.metadata.name: s for s in core.list_service_for_all_namespaces().items}
            # kubernetes: the apiserver's own Service, on the first address of the range
            assert svcs["kube-dns"].spec.cluster_ip == "10.96.0.10"
            assert svcs["kubernetes"].spec.cluster_ip == "10.96.0.1"
            eps = client.DiscoveryV1Api(api).list_endpoint_slice_for_all_namespaces().items
            web = next(e for e in eps if e.metadata.labels["kubernetes.io/service-name"] == "web")
            # kube-controller-manager's, in its order
            assert web.metadata.labels["endpointslice.kubernetes.io/managed-by"] == (
                "endpointslice-controller.k8s.io")
            assert sorted((e.addresses[0], e.zone) for e in web.endpoints) == [
                ("10.244.1.2", "zone-a"), ("10.244.2.2", "zone-b"), ("10.244.3.2", "zone-a")]
            pols = client.NetworkingV1Api(api).list_network_policy_for_all_namespaces().items
            assert {p.metadata.name for p in pols} == {"deny-all", "allow-client"}
            version = client.VersionApi(api).get_code().git_version
            assert version == components.component("kube-apiserver").version
            with pytest.raises(client.ApiException) as exc:  # not calico: no IPPool CRD
                client.CustomObjectsApi(api).list_cluster_custom_object(
                    "crd.projectcalico.org", "v1", "ippools")
            assert exc.value.status == 404
            with pytest.raises(client.ApiException) as exc:  # read-only: RBAC says no
                core.delete_node("node3")
            assert exc.value.status == 403

    cpm.in_netns(CLIENT, read, timeout=120)


@pytest.mark.lab
def test_kubeconfig_is_private(served):
    assert served().stat().st_mode & 0o077 == 0


# ---------------------------------------------------------------- the collector


@pytest.mark.lab
def test_collector_gets_every_call_and_only_reads(api, served, tmp_path):
    kubeconfig = served()
    before = len(api.audit())
    doc = collect(kubeconfig)
    by = calls(doc)
    assert {n: c["status"] for n, c in by.items()} == {
        "version": "ok", "nodes": "ok", "daemonsets": "ok", "pods": "ok",
        "namespaces": "ok", "flannel_config": "ok", "kube_proxy_config": "ok",
        "coredns_config": "ok", "services": "ok", "endpointslices": "ok",
        "networkpolicies": "ok", "controller_lease": "ok", "calico_ippools": "not_found",
    }
    assert doc["source"]["server"] == "https://198.18.0.3:6443" and doc["source"]["context"]
    # The apiserver's audit log: every request this collection made, as the server saw it.
    seen = api.audit()[before:]
    assert len(seen) == len(doc["calls"])
    assert {e["verb"] for e in seen} == {"get", "list"}
    lists = [e["requestURI"] for e in seen if e["verb"] == "list"]
    assert lists and all("limit=" in uri for uri in lists), lists
    write_cluster(tmp_path, doc)  # the schema accepts what the collector writes
    token = api.cp.tokens[cpm.READER_USER]
    assert token not in (tmp_path / "cluster.json").read_text()
    assert read_cluster(tmp_path)["calls"] == doc["calls"]


@pytest.mark.lab
def test_pagination_across_pages(api, served):
    kubeconfig = served(lab_state(nodes=20))
    before = len(api.audit())
    doc = collect(kubeconfig, page_size=7)
    nodes = calls(doc)["nodes"]
    assert nodes["status"] == "ok" and nodes["pages"] == 3 and nodes["restarts"] == 0
    names = [n["metadata"]["name"] for n in nodes["items"]]
    assert len(names) == 20 and len(set(names)) == 20
    uris = [e["requestURI"] for e in api.audit()[before:]]
    node_lists = [u for u in uris if u.startswith("/api/v1/nodes?")]
    assert len(node_lists) == 3 and sum("continue=" in u for u in node_lists) == 2


def _compacting_after(monkeypatch, api: Api, every_page: bool) -> list[int]:
    """Compact etcd after the first node page (or after every one) the collector reads."""
    from kubernetes import client

    original = client.CoreV1Api.list_node
    compactions: list[int] = []

    def list_node(self, *args, **kw):
        resp = original(self, *args, **kw)
        if every_page or not compactions:
            compactions.append(api.compact())
        return resp

    monkeypatch.setattr(client.CoreV1Api, "list_node", list_node)
    return compactions


@pytest.mark.lab
def test_expired_continue_token_restarts_the_list(api, served, monkeypatch):
    kubeconfig = served(lab_state(nodes=20))
    compactions = _compacting_after(monkeypatch, api, every_page=False)
    before = len(api.audit())
    doc = collect(kubeconfig, page_size=7)
    nodes = calls(doc)["nodes"]
    assert len(compactions) == 1
    assert nodes["status"] == "ok" and nodes["restarts"] == 1
    assert len({n["metadata"]["name"] for n in nodes["items"]}) == 20
    assert len(nodes["items"]) == 20  # the page before the 410 was thrown away
    codes = [e["responseStatus"]["code"] for e in api.audit()[before:]
             if e["requestURI"].startswith("/api/v1/nodes?")]
    assert codes == [200, 410, 200, 200, 200]


@pytest.mark.lab
def test_tokens_that_keep_expiring_end_as_an_error_not_a_loop(api, served, monkeypatch):
    kubeconfig = served(lab_state(nodes=20))
    compactions = _compacting_after(monkeypatch, api, every_page=True)
    nodes = calls(collect(kubeconfig, page_size=7, max_restarts=2))["nodes"]
    assert nodes["status"] == "error" and nodes["http_status"] == 410
    assert nodes["items"] is None
    assert len(compactions) == 3  # first list + two restarts, each stopped by a 410


@pytest.mark.lab
def test_forbidden_pods_blocks_only_pod_checks(served):
    doc = collect(served(user=cpm.NO_PODS_USER))
    by = calls(doc)
    assert by["pods"]["status"] == "forbidden"
    assert by["pods"]["http_status"] == 403
    assert "cannot list resource" in by["pods"]["reason"]
    assert by["nodes"]["status"] == by["services"]["status"] == "ok"
    facts = cluster_facts(doc, [("node1", "198.18.0.11")])
    blocked = [f for f in facts if f.kind == "probe_status"]
    assert {f.attrs["probe"] for f in blocked} == {"api:pods"}
    assert all(f.attrs["status"] == "permission_denied" for f in blocked)
    assert "CNI" in blocked[0].attrs["blocks"]
    kinds = {f.kind for f in facts}
    assert {"k8s_node", "cni", "flannel_config", "service_endpoints"} <= kinds
    assert "cni_pod" not in kinds and "dns_pod" not in kinds


def test_one_slow_resource_on_a_live_server_does_not_stop_the_rest():
    """A unit test of the collector's session: the live-server half of the timeout logic (a
    stopped server is tests/test_lab_control_plane.py's). A real apiserver has no way to
    make one resource slow, so the call that times out is a function that raises."""
    import urllib3.exceptions as ue

    session = cc._Session(None, 1.0, 0.5, 500, 2)
    session.health = lambda: {"gitVersion": "v1"}  # /version still answers

    def slow() -> tuple:
        raise ue.ReadTimeoutError(None, "/api/v1/services", "Read timed out.")

    assert session.run("services", "/api/v1/services", slow)["status"] == "timeout"
    assert session.given_up is None
    rec = session.run("endpointslices", "/apis/...", lambda: ([{"a": 1}], {"pages": 1}))
    assert rec["status"] == "ok" and rec["items"] == [{"a": 1}]


@pytest.mark.lab
def test_bad_token_is_unauthorized_everywhere(api, served):
    served()
    kubeconfig = cpm.write_kubeconfig(api.workdir / "kubeconfig-wrong", api.cp.server,
                                      api.cp.files.pki.ca_cert.read_bytes(), "x", "wrong-token")
    doc = collect(kubeconfig)
    assert {c["status"] for c in doc["calls"]} == {"unauthorized"}
    assert {c["http_status"] for c in doc["calls"]} == {401}
    st = [f for f in cluster_facts(doc) if f.kind == "probe_status"]
    assert st and all(f.attrs["status"] == "permission_denied" for f in st)


@pytest.mark.lab
def test_unreachable_api_costs_one_attempt_and_one_entry(api):
    # the control plane's address, a port nothing listens on: refused at once
    kubeconfig = cpm.write_kubeconfig(api.workdir / "kubeconfig-closed", "https://198.18.0.3:6444",
                                      api.cp.files.pki.ca_cert.read_bytes(), "kubenetdiag",
                                      "any")
    doc = collect(kubeconfig)
    assert {c["status"] for c in doc["calls"]} == {"unreachable"}
    assert sum(not c["reason"].startswith("not tried") for c in doc["calls"]) == 1
    st = [f for f in cluster_facts(doc) if f.kind == "probe_status"]
    assert len(st) == 1 and st[0].attrs["probe"] == "api"
    assert "every cluster check" in st[0].attrs["blocks"]


# ---------------------------------------------------------------- faults and facts


@pytest.mark.lab
def test_faults_injected_in_the_lab_show_up_through_the_api(lab):
    kubeconfig = lab.kubeconfig_path
    healthy = collect(kubeconfig, netns=lab.client_netns)
    assert all(f.attrs["ready"] for f in facts_of(healthy, "cni_pod"))
    web = [f for f in facts_of(healthy, "service_endpoints") if f.attrs["name"] == "web"]
    assert web[0].attrs["ready_endpoints"] == 1
    with lab.injected("cni_pod_not_running", "node2"), lab.injected("service_no_endpoints"):
        broken = collect(kubeconfig, netns=lab.client_netns)
    pods = {f.node: f.attrs for f in facts_of(broken, "cni_pod", [("node2", "198.18.0.12")])}
    assert pods["node2"]["ready"] is False and pods["node2"]["restarts"] > 0
    assert pods["node2"]["reason"] == "CrashLoopBackOff"
    assert pods["node1"]["ready"] is True
    (cni,) = facts_of(broken, "cni")
    assert (cni.attrs["plugin"], cni.attrs["desired"], cni.attrs["ready"]) == ("flannel", 2, 1)
    svc = {f.attrs["name"]: f.attrs for f in facts_of(broken, "service_endpoints")}
    assert svc["web"]["ready_endpoints"] == 0
    assert svc["kube-dns"]["ready_endpoints"] == 1
    # healed: the API says so again
    again = collect(kubeconfig, netns=lab.client_netns)
    assert all(f.attrs["ready"] for f in facts_of(again, "cni_pod"))
    web = [f for f in facts_of(again, "service_endpoints") if f.attrs["name"] == "web"]
    assert web[0].attrs["ready_endpoints"] == 1


@pytest.mark.lab
def test_cluster_facts_from_a_healthy_lab(served):
    facts = cluster_facts(collect(served()), [("node1", "198.18.0.11")])
    for f in facts:
        assert validate_fact(f) == [], (f.kind, validate_fact(f))
    by = {}
    for f in facts:
        by.setdefault(f.kind, []).append(f)
    (fl,) = by["flannel_config"]
    assert fl.attrs == {"namespace": "kube-flannel", "network": "10.244.0.0/16",
                        "backend": "vxlan", "port": 8472}
    (kp,) = by["kube_proxy"]
    assert kp.attrs == {"mode": "iptables", "pods_ready": 3, "pods_desired": 3}
    (dns,) = by["dns_service"]
    assert (dns.attrs["cluster_ip"], dns.attrs["cluster_domain"], dns.attrs["upstream"]) == (
        "10.96.0.10", "cluster.local", "/etc/resolv.conf")  # the manifest's `forward .`
    (dp,) = by["dns_pod"]
    assert (dp.node, dp.attrs["ip"], dp.attrs["ready"]) == ("node1", "10.244.1.3", True)
    web = next(f for f in by["service_endpoints"] if f.attrs["name"] == "web")
    assert (web.attrs["zones"], web.attrs["topology_aware"]) == (2, False)
    pol = {f.attrs["name"]: f.attrs["default_deny"] for f in by["network_policy"]}
    assert pol == {"deny-all": True, "allow-client": False}
    n2 = next(f for f in by["k8s_node"] if f.attrs["name"] == "node2")
    assert (n2.attrs["pod_cidr"], n2.attrs["ready"], n2.attrs["zone"]) == (
        "10.244.2.0/24", True, "zone-b")


def web_endpoints(doc: dict) -> list[dict]:
    slices = calls(doc)["endpointslices"]["items"]
    return next(s for s in slices if s["metadata"]["name"].startswith("web-"))["endpoints"]


@pytest.mark.lab
def test_topology_aware_service_has_zone_hints(served):
    """The hints are kube-controller-manager's. It weighs zones by the allocatable CPU of their
    nodes, leaving out control-plane nodes (node1, zone-a), so zone-a (node3) and zone-b
    (node2) weigh the same; it gives no hints at all when it cannot give every zone its share
    within its overload threshold: with lab_state()'s 3 endpoints none
    ("TopologyAwareHintsDisabled"); with 6 (4 in zone-a, 2 in zone-b) each zone is hinted 3,
    zone-b's own two and one of zone-a's."""
    state = lab_state()
    state["pods"] += [{"name": f"web-{i + 3}", "namespace": "default", "node": f"node{i}",
                       "ip": f"10.244.{i}.4", "netns": "p", "app": "web"} for i in (1, 2, 3)]
    state["services"][1]["endpoints"] += ["web-4", "web-5", "web-6"]
    state["services"][1]["topology_aware"] = True
    kubeconfig = served(state)
    deadline = time.monotonic() + 30  # hints follow the slice's addresses, which sync waits for
    doc = collect(kubeconfig)
    while not all("hints" in e for e in web_endpoints(doc)):
        assert time.monotonic() < deadline, web_endpoints(doc)
        time.sleep(0.2)
        doc = collect(kubeconfig)
    web = next(f for f in facts_of(doc, "service_endpoints") if f.attrs["name"] == "web")
    assert web.attrs["topology_aware"] is True and web.attrs["ready_endpoints"] == 6
    hinted = [(e["zone"], [z["name"] for z in e["hints"]["forZones"]]) for e in web_endpoints(doc)]
    assert sorted(hinted) == [("zone-a", ["zone-a"])] * 3 + [("zone-a", ["zone-b"])] + [
        ("zone-b", ["zone-b"])] * 2, hinted


@pytest.mark.lab
def test_calico_lab(served):
    # IPPools through calico's CRD, which the lab creates and waits for (Established)
    doc = collect(served(lab_state(cni="calico-bgp")))
    by = calls(doc)
    assert "flannel_config" not in by and by["calico_ippools"]["status"] == "ok"
    (cni,) = facts_of(doc, "cni")
    assert (cni.attrs["plugin"], cni.attrs["namespace"]) == ("calico", "kube-system")
    (pool,) = facts_of(doc, "calico_ippool")
    assert (pool.attrs["cidr"], pool.attrs["ipip_mode"]) == ("10.244.0.0/16", "Never")
    assert len(facts_of(doc, "cni_pod")) == 3
    # back to flannel: the CRD goes with the last IPPool, as on a cluster without calico
    assert calls(collect(served()))["calico_ippools"]["status"] == "not_found"


@pytest.mark.lab
def test_node_matching_by_name_and_address(served):
    inventory = [("node1", "198.18.0.11"), ("worker-b", "198.18.0.12"),
                 ("node9", "198.18.0.99")]
    doc = collect(served(lab_state(nodes=3)))
    m = {f.node: f.attrs for f in facts_of(doc, "node_match", inventory)}
    assert m["node1"]["matched_by"] == "name"
    assert (m["worker-b"]["api_name"], m["worker-b"]["matched_by"]) == ("node2", "address")
    assert (m["node9"]["in_inventory"], m["node9"]["in_api"]) == (True, False)
    assert (m["node3"]["in_inventory"], m["node3"]["in_api"]) == (False, True)
    # facts about an API node carry the inventory name, so rules can join them with node facts
    k8s = {f.node for f in facts_of(doc, "k8s_node", inventory)}
    assert k8s == {"node1", "worker-b", "node3"}


# ---------------------------------------------------------------- when to ask the API


def test_no_flag_and_no_kubeconfig_env_means_no_call(tmp_path):
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text("{}")
    target, why = cc.resolve_target(None, None, False, environ={}, home=tmp_path)
    assert target is None and "not queried" in why
    target, _ = cc.resolve_target(None, None, False, environ={"KUBECONFIG": "/k"}, home=tmp_path)
    assert target == cc.ApiTarget("/k", None)
    target, _ = cc.resolve_target(None, "prod", False, environ={}, home=tmp_path)
    assert target == cc.ApiTarget(str(tmp_path / ".kube" / "config"), "prod")
    with pytest.raises(InputError):
        cc.resolve_target(None, "prod", False, environ={}, home=tmp_path / "nowhere")
    with pytest.raises(InputError):
        cc.resolve_target("/k", None, True, environ={})


def test_unusable_kubeconfig_is_an_input_error(tmp_path):
    with pytest.raises(InputError):
        cc.load_client(cc.ApiTarget(str(tmp_path / "missing")))
    bad = tmp_path / "kubeconfig"
    bad.write_text("apiVersion: v1\nkind: Config\ncontexts: []\nclusters: []\nusers: []\n")
    with pytest.raises(InputError):
        cc.load_client(cc.ApiTarget(str(bad), "nope"))


# ---------------------------------------------------------------- end to end


@pytest.mark.lab
def test_diagnose_local_with_kubeconfig_end_to_end(served, tmp_path, capsys):
    kubeconfig = served(user=cpm.NO_PODS_USER)
    bundle = tmp_path / "bundle"
    # The CLI as an SRE runs it, in the client namespace (the only one reaching the API).
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    run = subprocess.run(
        ["ip", "netns", "exec", CLIENT, sys.executable, "-m", "kubenetdiag", "diagnose",
         "--local", "--kubeconfig", str(kubeconfig), "--format", "json",
         "--bundle", str(bundle), "--quiet"],
        capture_output=True, text=True, timeout=180, env=env)
    code = run.returncode
    assert code in (0, 1), run.stderr[-2000:]
    report = json.loads(run.stdout)
    facts = json.loads((bundle / "facts.json").read_text())["facts"]
    kinds = {f["kind"] for f in facts}
    assert {"cluster_api", "k8s_node", "node_match", "cni", "flannel_config",
            "service_endpoints"} <= kinds
    # (the run declares no endpoint: that branch is listed as not checked, with how to declare)
    blocked = [c for c in report["not_checked"]
               if c["node"] == "cluster" and c["probe"] != "active.endpoints"]
    assert {c["probe"] for c in blocked} == {"api:pods"}
    assert all(c["status"] == "permission_denied" and "CNI" in c["blocks"] for c in blocked)
    # analyze reads the same cluster.json back, offline (no API needed)
    assert main(["analyze", str(bundle), "--format", "json"]) == code
    again = json.loads(capsys.readouterr().out)
    assert again["not_checked"] == report["not_checked"]


def test_diagnose_without_kubeconfig_asks_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    bundle = tmp_path / "bundle"
    main(["diagnose", "--local", "--format", "json", "--bundle", str(bundle), "--quiet"])
    report = json.loads(capsys.readouterr().out)
    # asked nothing, and says so: cluster checks not done are unknown, not healthy
    (api_entry,) = [c for c in report["not_checked"]
                    if c["node"] == "cluster" and c["probe"] != "active.endpoints"]
    assert api_entry["status"] == "not_queried" and "--kubeconfig" in api_entry["blocks"]
    doc = read_cluster(bundle)
    assert doc["queried"] is False and "not queried" in doc["reason"]
    facts = json.loads((bundle / "facts.json").read_text())["facts"]
    (api,) = [f for f in facts if f["kind"] == "cluster_api"]
    assert api["attrs"]["queried"] is False


def test_bad_kubeconfig_exits_2_before_any_node(tmp_path, capsys):
    bundle = tmp_path / "bundle"
    code = main(["diagnose", "--local", "--kubeconfig", str(tmp_path / "nope"),
                 "--bundle", str(bundle)])
    assert code == 2 and not bundle.exists()
    assert "kubeconfig" in capsys.readouterr().err


def test_the_files_the_client_writes_from_inline_credentials_can_be_dropped(tmp_path):
    """The Kubernetes client writes a kubeconfig's inline CA, certificate and key to files in
    the temporary directory and deletes them at exit; a Ctrl-C leaves with os._exit, which
    deletes them first through drop_credentials (a private key must not stay behind)."""
    import yaml

    from kubenetdiag.collect.cluster import ApiTarget, drop_credentials, load_client

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {
            "server": "https://127.0.0.1:1",
            "certificate-authority-data": b64("-----BEGIN CERTIFICATE-----\nca\n")}}],
        "users": [{"name": "u", "user": {
            "client-certificate-data": b64("-----BEGIN CERTIFICATE-----\ncert\n"),
            "client-key-data": b64("-----BEGIN PRIVATE KEY-----\nkey\n")}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
    }))
    api, _ = load_client(ApiTarget(kubeconfig=str(kubeconfig)))
    cfg = api.configuration
    written = [Path(p) for p in (cfg.ssl_ca_cert, cfg.cert_file, cfg.key_file)]
    assert all(p.is_file() for p in written)
    drop_credentials()
    assert not any(p.exists() for p in written)
