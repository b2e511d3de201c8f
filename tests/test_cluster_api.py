"""The cluster collector against the lab's API stand-in, over real HTTP on 127.0.0.1, with the
official `kubernetes` client: every resource, pagination, expired continue tokens, 401, 403,
slow answers, faults in lab.json, node matching, and the CLI end to end."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubenetdiag.bundle import read_cluster, write_cluster
from kubenetdiag.cli import main
from kubenetdiag.collect import cluster as cc
from kubenetdiag.errors import InputError
from kubenetdiag.facts.cluster import cluster_facts
from kubenetdiag.facts.registry import validate_fact
from kubenetdiag_lab import apiserver

kubernetes = pytest.importorskip("kubernetes")


def lab_state(tmp: Path, nodes: int = 3, cni: str = "flannel-vxlan", faults=(), **extra) -> dict:
    state = {
        "prefix": "knd", "workdir": str(tmp), "cni": cni, "vxlan_port": 8472,
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


def write_state(tmp: Path, state: dict) -> Path:
    path = tmp / "lab.json"
    path.write_text(json.dumps(state))
    return path


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator:
    """start(**kw) -> (server, kubeconfig path); every server is stopped at the end."""
    servers = []

    def start(state: dict | None = None, **kw):
        path = write_state(tmp_path, state or lab_state(tmp_path))
        kubeconfig = tmp_path / "kubeconfig"
        server, _ = apiserver.start(path, kubeconfig_out=kubeconfig, **kw)
        servers.append(server)
        return server, kubeconfig

    yield start
    for s in servers:
        s.stop()


def collect(kubeconfig: Path, **kw) -> dict:
    api, source = cc.load_client(cc.ApiTarget(str(kubeconfig)))
    try:
        return cc.collect_cluster(api, source, **kw)
    finally:
        api.close()


def calls(doc: dict) -> dict[str, dict]:
    return {c["name"]: c for c in doc["calls"]}


def facts_of(doc: dict, kind: str, inventory=()) -> list:
    return [f for f in cluster_facts(doc, inventory) if f.kind == kind]


# ---------------------------------------------------------------- the stand-in itself


def test_official_client_reads_every_resource(stand_in):
    server, kubeconfig = stand_in()
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(str(kubeconfig), client_configuration=cfg)
    with client.ApiClient(cfg) as api:
        core = client.CoreV1Api(api)
        nodes = core.list_node().items
        assert [n.metadata.name for n in nodes] == ["node1", "node2", "node3"]
        n2 = nodes[1]
        assert n2.spec.pod_cidr == "10.244.2.0/24"
        assert {a.type: a.address for a in n2.status.addresses}["InternalIP"] == "198.18.0.12"
        assert {c.type: c.status for c in n2.status.conditions} == {
            "Ready": "True", "NetworkUnavailable": "False"}
        assert n2.metadata.labels["topology.kubernetes.io/zone"] == "zone-b"
        assert n2.status.node_info.kubelet_version.startswith("v1.")
        ks = [p.metadata.name for p in core.list_namespaced_pod("kube-system").items]
        assert sum(p.startswith("kube-proxy-") for p in ks) == 3 and "coredns-7db6d8ff4d-x1" in ks
        fl = core.list_namespaced_pod("kube-flannel").items
        assert len(fl) == 3 and all(p.metadata.name.startswith("kube-flannel-ds-") for p in fl)
        assert len(core.list_pod_for_all_namespaces().items) == 3 + 3 + 1 + 3
        ds = client.AppsV1Api(api).list_namespaced_daemon_set("kube-system").items
        assert [d.metadata.name for d in ds] == ["kube-proxy"]
        cm = core.read_namespaced_config_map("kube-flannel-cfg", "kube-flannel")
        net = json.loads(cm.data["net-conf.json"])
        assert net["Network"] == "10.244.0.0/16" and net["Backend"] == {
            "Type": "vxlan", "Port": 8472, "VNI": 1}
        kp = core.read_namespaced_config_map("kube-proxy", "kube-system")
        assert "mode: iptables" in kp.data["config.conf"]
        svcs = {s.metadata.name: s for s in core.list_service_for_all_namespaces().items}
        assert svcs["kube-dns"].spec.cluster_ip == "10.96.0.10" and "kubernetes" in svcs
        eps = client.DiscoveryV1Api(api).list_endpoint_slice_for_all_namespaces().items
        web = next(e for e in eps if e.metadata.labels["kubernetes.io/service-name"] == "web")
        assert [e.zone for e in web.endpoints] == ["zone-a", "zone-b", "zone-a"]
        pols = client.NetworkingV1Api(api).list_network_policy_for_all_namespaces().items
        assert {p.metadata.name for p in pols} == {"deny-all", "allow-client"}
        assert client.VersionApi(api).get_code().git_version.startswith("v1.")
        with pytest.raises(client.ApiException) as exc:  # not calico: no IPPool CRD
            client.CustomObjectsApi(api).list_cluster_custom_object(
                "crd.projectcalico.org", "v1", "ippools")
        assert exc.value.status == 404
        with pytest.raises(client.ApiException) as exc:
            core.list_node(_continue="not-a-token-this-server-gave")
        assert exc.value.status == 410
    assert {m for m, _, _ in server.requests} == {"GET"}


def test_stand_in_is_read_only_and_wants_the_token(stand_in):
    import urllib.error
    import urllib.request

    server, _ = stand_in()
    req = urllib.request.Request(f"{server.url}/api/v1/nodes", method="DELETE",
                                 headers={"Authorization": f"Bearer {server.token}"})
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=5)
    assert exc.value.code == 405
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(f"{server.url}/api/v1/nodes", timeout=5)
    assert exc.value.code == 401


def test_kubeconfig_is_private(stand_in):
    _, kubeconfig = stand_in()
    assert kubeconfig.stat().st_mode & 0o077 == 0


# ---------------------------------------------------------------- the collector


def test_collector_gets_every_call_and_only_reads(stand_in):
    server, kubeconfig = stand_in()
    doc = collect(kubeconfig)
    by = calls(doc)
    assert {n: c["status"] for n, c in by.items()} == {
        "version": "ok", "nodes": "ok", "daemonsets": "ok", "pods/kube-system": "ok",
        "pods/kube-flannel": "ok", "flannel_config": "ok", "kube_proxy_config": "ok",
        "coredns_config": "ok", "services": "ok", "endpointslices": "ok",
        "networkpolicies": "ok", "calico_ippools": "not_found",
    }
    assert doc["source"]["server"] == server.url and doc["source"]["context"]
    assert {m for m, _, _ in server.requests} == {"GET"}
    lists = [p for _, p, _ in server.requests
             if "/configmaps/" not in p and not p.startswith("/version")]
    assert lists and all("limit=" in p for p in lists), lists
    write_cluster(kubeconfig.parent, doc)  # the schema accepts what the collector writes
    assert server.token not in (kubeconfig.parent / "cluster.json").read_text()
    assert read_cluster(kubeconfig.parent)["calls"] == doc["calls"]


def test_pagination_across_pages(stand_in, tmp_path):
    server, kubeconfig = stand_in(lab_state(tmp_path, nodes=50))
    doc = collect(kubeconfig, page_size=7)
    nodes = calls(doc)["nodes"]
    assert nodes["status"] == "ok" and nodes["pages"] == 8 and nodes["restarts"] == 0
    names = [n["metadata"]["name"] for n in nodes["items"]]
    assert len(names) == 50 and len(set(names)) == 50
    assert sum(1 for _, p, _ in server.requests if p.startswith("/api/v1/nodes")) == 8


def test_expired_continue_token_restarts_the_list(stand_in, tmp_path):
    server, kubeconfig = stand_in(lab_state(tmp_path, nodes=50), expire={"nodes": 1})
    doc = collect(kubeconfig, page_size=7)
    nodes = calls(doc)["nodes"]
    assert nodes["status"] == "ok" and nodes["restarts"] == 1
    assert len({n["metadata"]["name"] for n in nodes["items"]}) == 50
    assert len(nodes["items"]) == 50  # the pages before the 410 were thrown away
    assert [c for _, _, c in server.requests].count(410) == 1


def test_tokens_that_keep_expiring_end_as_an_error_not_a_loop(stand_in, tmp_path):
    _, kubeconfig = stand_in(lab_state(tmp_path, nodes=20), expire={"nodes": 99})
    nodes = calls(collect(kubeconfig, page_size=7, max_restarts=2))["nodes"]
    assert nodes["status"] == "error" and nodes["http_status"] == 410
    assert nodes["items"] is None


def test_forbidden_pods_blocks_only_pod_checks(stand_in):
    _, kubeconfig = stand_in(forbid=["pods"])
    doc = collect(kubeconfig)
    by = calls(doc)
    assert by["pods/kube-system"]["status"] == "forbidden"
    assert by["pods/kube-system"]["http_status"] == 403
    assert "cannot list resource" in by["pods/kube-system"]["reason"]
    assert by["nodes"]["status"] == by["services"]["status"] == "ok"
    facts = cluster_facts(doc, [("node1", "198.18.0.11")])
    blocked = [f for f in facts if f.kind == "probe_status"]
    assert {f.attrs["probe"] for f in blocked} == {"api:pods/kube-system", "api:pods/kube-flannel"}
    assert all(f.attrs["status"] == "permission_denied" for f in blocked)
    assert "CNI" in blocked[0].attrs["blocks"]
    kinds = {f.kind for f in facts}
    assert {"k8s_node", "cni", "flannel_config", "service_endpoints"} <= kinds
    assert "cni_pod" not in kinds and "dns_pod" not in kinds


def test_slow_resource_times_out_and_the_rest_goes_on(stand_in):
    _, kubeconfig = stand_in(slow={"services": 3})
    started = time.monotonic()
    doc = collect(kubeconfig, read_timeout=0.5)
    assert time.monotonic() - started < 2.5
    by = calls(doc)
    assert by["services"]["status"] == "timeout" and by["services"]["duration_s"] < 1.5
    assert by["endpointslices"]["status"] == "ok"
    st = [f for f in cluster_facts(doc) if f.kind == "probe_status"]
    assert [(f.attrs["probe"], f.attrs["status"]) for f in st] == [("api:services", "timeout")]


def test_control_file_is_read_per_request(stand_in, tmp_path):
    control = tmp_path / "control.json"
    _, kubeconfig = stand_in(control_path=control)
    assert calls(collect(kubeconfig))["services"]["status"] == "ok"
    control.write_text(json.dumps({"forbid": ["services"]}))
    assert calls(collect(kubeconfig))["services"]["status"] == "forbidden"


def test_bad_token_is_unauthorized_everywhere(stand_in, tmp_path):
    server, kubeconfig = stand_in()
    apiserver.write_kubeconfig(kubeconfig, server.url, "wrong-token")
    doc = collect(kubeconfig)
    assert {c["status"] for c in doc["calls"]} == {"unauthorized"}
    assert {c["http_status"] for c in doc["calls"]} == {401}
    st = [f for f in cluster_facts(doc) if f.kind == "probe_status"]
    assert st and all(f.attrs["status"] == "permission_denied" for f in st)


def test_unreachable_api_costs_one_attempt_and_one_entry(stand_in):
    server, kubeconfig = stand_in()
    server.stop()
    doc = collect(kubeconfig)
    assert {c["status"] for c in doc["calls"]} == {"unreachable"}
    st = [f for f in cluster_facts(doc) if f.kind == "probe_status"]
    assert len(st) == 1 and st[0].attrs["probe"] == "api"
    assert "every cluster check" in st[0].attrs["blocks"]


# ---------------------------------------------------------------- faults and facts


def test_faults_in_lab_json_show_up_without_a_restart(stand_in, tmp_path):
    state = lab_state(tmp_path)
    _, kubeconfig = stand_in(state)
    healthy = collect(kubeconfig)
    assert all(f.attrs["ready"] for f in facts_of(healthy, "cni_pod"))
    web = [f for f in facts_of(healthy, "service_endpoints") if f.attrs["name"] == "web"]
    assert web[0].attrs["ready_endpoints"] == 3
    state["faults"] = [
        {"fault": "cni_pod_not_running", "node": "node2", "params": {}},
        {"fault": "service_no_endpoints", "node": "node1", "params": {"service": "web"}},
    ]
    time.sleep(0.01)  # a distinct mtime even on coarse clocks
    write_state(tmp_path, state)
    broken = collect(kubeconfig)
    pods = {f.node: f.attrs for f in facts_of(broken, "cni_pod", [("node2", "198.18.0.12")])}
    assert pods["node2"]["ready"] is False and pods["node2"]["restarts"] > 0
    assert pods["node2"]["reason"] == "CrashLoopBackOff"
    assert pods["node1"]["ready"] is True
    (cni,) = facts_of(broken, "cni")
    assert (cni.attrs["plugin"], cni.attrs["desired"], cni.attrs["ready"]) == ("flannel", 3, 2)
    svc = {f.attrs["name"]: f.attrs for f in facts_of(broken, "service_endpoints")}
    assert svc["web"]["ready_endpoints"] == 0 and svc["web"]["endpoints"] == 3
    assert svc["kube-dns"]["ready_endpoints"] == 1


def test_cluster_facts_from_a_healthy_lab(stand_in):
    _, kubeconfig = stand_in()
    facts = cluster_facts(collect(kubeconfig), [("node1", "198.18.0.11")])
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
    assert (dns.attrs["cluster_ip"], dns.attrs["cluster_domain"]) == ("10.96.0.10", "cluster.local")
    (dp,) = by["dns_pod"]
    assert (dp.node, dp.attrs["ip"], dp.attrs["ready"]) == ("node1", "10.244.1.3", True)
    web = next(f for f in by["service_endpoints"] if f.attrs["name"] == "web")
    assert (web.attrs["zones"], web.attrs["topology_aware"]) == (2, False)
    pol = {f.attrs["name"]: f.attrs["default_deny"] for f in by["network_policy"]}
    assert pol == {"deny-all": True, "allow-client": False}
    n2 = next(f for f in by["k8s_node"] if f.attrs["name"] == "node2")
    assert (n2.attrs["pod_cidr"], n2.attrs["ready"], n2.attrs["zone"]) == (
        "10.244.2.0/24", True, "zone-b")


def test_topology_aware_service_has_zone_hints(stand_in, tmp_path):
    state = lab_state(tmp_path)
    state["services"][1]["topology_aware"] = True
    _, kubeconfig = stand_in(state)
    doc = collect(kubeconfig)
    web = next(f for f in facts_of(doc, "service_endpoints") if f.attrs["name"] == "web")
    assert web.attrs["topology_aware"] is True
    slices = calls(doc)["endpointslices"]["items"]
    eps = next(s for s in slices if s["metadata"]["name"].startswith("web-"))["endpoints"]
    assert all(e["hints"]["forZones"] == [{"name": e["zone"]}] for e in eps)


def test_calico_lab(stand_in, tmp_path):
    _, kubeconfig = stand_in(lab_state(tmp_path, cni="calico-bgp"))
    doc = collect(kubeconfig)
    by = calls(doc)
    assert "flannel_config" not in by and by["calico_ippools"]["status"] == "ok"
    (cni,) = facts_of(doc, "cni")
    assert (cni.attrs["plugin"], cni.attrs["namespace"]) == ("calico", "kube-system")
    (pool,) = facts_of(doc, "calico_ippool")
    assert (pool.attrs["cidr"], pool.attrs["ipip_mode"]) == ("10.244.0.0/16", "Never")
    assert len(facts_of(doc, "cni_pod")) == 3


def test_node_matching_by_name_and_address(stand_in, tmp_path):
    _, kubeconfig = stand_in(lab_state(tmp_path, nodes=3))
    inventory = [("node1", "198.18.0.11"), ("worker-b", "198.18.0.12"),
                 ("node9", "198.18.0.99")]
    doc = collect(kubeconfig)
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


def test_diagnose_local_with_kubeconfig_end_to_end(stand_in, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    _, kubeconfig = stand_in(forbid=["pods"])
    bundle = tmp_path / "bundle"
    code = main(["diagnose", "--local", "--kubeconfig", str(kubeconfig), "--format", "json",
                 "--bundle", str(bundle), "--quiet"])
    assert code in (0, 1)
    report = json.loads(capsys.readouterr().out)
    facts = json.loads((bundle / "facts.json").read_text())["facts"]
    kinds = {f["kind"] for f in facts}
    assert {"cluster_api", "k8s_node", "node_match", "cni", "flannel_config",
            "service_endpoints"} <= kinds
    blocked = [c for c in report["not_checked"] if c["node"] == "cluster"]
    assert {c["probe"] for c in blocked} == {"api:pods/kube-system", "api:pods/kube-flannel"}
    assert all(c["status"] == "permission_denied" and "CNI" in c["blocks"] for c in blocked)
    # analyze reads the same cluster.json back, offline
    assert main(["analyze", str(bundle), "--format", "json"]) == code
    again = json.loads(capsys.readouterr().out)
    assert again["not_checked"] == report["not_checked"]


def test_diagnose_without_kubeconfig_asks_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    bundle = tmp_path / "bundle"
    main(["diagnose", "--local", "--format", "json", "--bundle", str(bundle), "--quiet"])
    report = json.loads(capsys.readouterr().out)
    # asked nothing, and says so: cluster checks not done are unknown, not healthy
    (api_entry,) = [c for c in report["not_checked"] if c["node"] == "cluster"]
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
