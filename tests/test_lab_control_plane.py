"""The lab's real control plane (etcd + kube-apiserver built from their Go modules) in a network
namespace of its own, read by the product's own collector from the client namespace: what the
read-only token may read (rbac.yaml covers every call), real 403s, a real 401, pagination across
`continue`, and a stopped apiserver that costs timeouts, not a hang.

A small network of its own, not the session lab: `<prefix>cp-sw` (bridge), `<prefix>cp-client`
(198.18.0.2) and `<prefix>cp-cp` (198.18.0.3); started once per module, removed even when a
test fails. Skipped (not failed) when not root or when the components are not built."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import standalone_api
from kubenetdiag.facts.cluster import cluster_facts
from kubenetdiag_lab import apisync, components, k8s_objects
from kubenetdiag_lab import controlplane as cpm
from kubenetdiag_lab.netns import NETNS_DIR

kubernetes = pytest.importorskip("kubernetes")

PREFIX = standalone_api.prefix_for("cp")
CLIENT = standalone_api.client_netns(PREFIX)
CP = cpm.cp_netns(PREFIX)


@dataclass
class Env:
    cp: cpm.ControlPlane
    workdir: Path
    state: dict


def _state(workdir: Path) -> dict:
    """A lab.json-shaped state for k8s_objects: 3 nodes, flannel, CoreDNS and web pods."""
    nodes = [{"name": f"node{i}", "index": i, "netns": f"x-node{i}",
              "address": f"198.18.0.{10 + i}", "pod_cidr": f"10.244.{i}.0/24",
              "zone": "zone-a" if i % 2 else "zone-b"} for i in (1, 2, 3)]
    pods = [{"name": "coredns-0", "namespace": "kube-system", "node": "node1",
             "ip": "10.244.1.3", "netns": "p", "app": "coredns"},
            *[{"name": f"web-{i}", "namespace": "default", "node": f"node{i}",
               "ip": f"10.244.{i}.2", "netns": "p", "app": "web"} for i in (1, 2, 3)]]
    services = [
        {"name": "kube-dns", "namespace": "kube-system", "cluster_ip": "10.96.0.10",
         "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "target_port": 53}],
         "app": "coredns", "endpoints": ["coredns-0"]},
        {"name": "web", "namespace": "default", "cluster_ip": "10.96.0.20",
         "ports": [{"name": "http", "port": 80, "protocol": "TCP", "target_port": 8080}],
         "app": "web", "endpoints": ["web-1", "web-2", "web-3"]},
    ]
    return {"prefix": PREFIX, "workdir": str(workdir), "cni": "flannel-vxlan",
            "vxlan_port": 8472, "cluster_domain": "cluster.local",
            "pod_network": "10.244.0.0/16", "service_network": "10.96.0.0/12",
            "nodes": nodes, "pods": pods, "services": services, "faults": [],
            "network_policies": [{"name": "deny-all", "namespace": "payments",
                                  "default_deny": True}]}


def seed(admin: cpm.AdminClient, state: dict) -> None:
    """Create the lab's objects through the API as the lab will, status through the status
    subresource afterwards (kubelet for nodes and pods, the DaemonSet controller)."""
    for kind, items in k8s_objects.build(state).items():
        for obj in items:
            meta = obj["metadata"]
            if meta.get("namespace") == "default" and meta["name"].startswith("kubernetes"):
                continue  # the apiserver's own Service and EndpointSlice
            body = {k: v for k, v in obj.items() if k != "status"}
            body["metadata"] = {k: v for k, v in meta.items()
                                if k not in ("uid", "resourceVersion", "creationTimestamp")}
            if meta.get("namespace"):
                admin.ensure_namespace(meta["namespace"])
            created = admin.create(body)
            if kind in ("nodes", "pods", "daemonsets") and obj.get("status"):
                path = f"{cpm.collection_path(body)}/{created['metadata']['name']}"
                admin.patch_status(path, obj["status"])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    workdir = tmp_path_factory.mktemp("controlplane")
    with standalone_api.control_plane(PREFIX, workdir) as cp:
        state = _state(workdir)
        seed(cp.admin(), state)
        yield Env(cp, workdir, state)


def collect(kubeconfig: Path, **kw) -> dict:
    """The product's collector, run from the client namespace (as `lab exec` would)."""
    return standalone_api.collect_from(CLIENT, kubeconfig, **kw)


def calls(doc: dict) -> dict[str, dict]:
    return {c["name"]: c for c in doc["calls"]}


# ---------------------------------------------------------------- no server needed


def test_missing_components_name_the_build_command(tmp_path):
    msg = components.missing(components.CONTROL_PLANE, root=tmp_path)
    assert msg is not None and "kube-apiserver" in msg and "etcd" in msg
    assert "bash lab/components/build.sh kube-apiserver etcd" in msg
    versions = components.read_versions()
    assert components.component("etcd", versions=versions, root=tmp_path).path == (
        tmp_path / f"etcd-{versions['ETCD_VERSION']}" / "etcd")


def test_control_plane_refuses_to_start_without_its_binaries(tmp_path):
    cp = cpm.ControlPlane(tmp_path, "no-such-netns", components_root=tmp_path / "cache")
    with pytest.raises(cpm.LabError, match="bash lab/components/build.sh kube-apiserver etcd"):
        cp.start()
    assert cp.pids == {} and not (tmp_path / "controlplane").exists()


def test_rbac_grants_only_reads():
    docs = cpm.rbac_manifest()
    assert [d["kind"] for d in docs] == ["ClusterRole", "ClusterRoleBinding"]
    verbs = {v for rule in docs[0]["rules"] for v in rule["verbs"]}
    assert verbs <= {"get", "list"}
    assert all("secrets" not in rule.get("resources", []) for rule in docs[0]["rules"])
    assert docs[1]["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                                    "name": "kubenetdiag"}]


def test_pki_names_and_modes(tmp_path):
    from cryptography import x509

    files = cpm.pki.write_control_plane_pki(tmp_path / "pki", "198.18.0.3")
    cert = x509.load_pem_x509_certificate(files.apiserver_cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {
        "198.18.0.3", "10.96.0.1", "127.0.0.1"}
    assert set(sans.get_values_for_type(x509.DNSName)) == {
        "kubernetes", "kubernetes.default", "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local"}
    for path in files.dir.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path


# ---------------------------------------------------------------- against the real server


@pytest.mark.lab
def test_control_plane_lives_in_its_namespace_only(env):
    cp = env.cp
    cp_ns = os.stat(NETNS_DIR / CP).st_ino
    root_ns = os.stat("/proc/self/ns/net").st_ino  # where this test runs
    assert set(cp.pids) == {"etcd", "kube-apiserver", "kube-controller-manager"}
    for name, pid in cp.pids.items():
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == cp_ns != root_ns, name
        assert Path(f"/proc/{pid}/exe").resolve() == components.path_of(name)
    # etcd only on the namespace's loopback, the apiserver only on 198.18.0.3
    out = subprocess.run(["ip", "netns", "exec", CP, "ss", "-ltnH"], capture_output=True,
                         text=True, check=True).stdout
    local = {line.split()[3] for line in out.splitlines()}
    assert {"198.18.0.3:6443", "127.0.0.1:2379", "127.0.0.1:10257"} <= local
    assert all(a.startswith(("127.0.0.1:", "198.18.0.3:")) for a in local), local
    for user in cpm.USERS:
        path = cp.kubeconfig(user)
        assert path.stat().st_mode & 0o777 == 0o600
        assert yaml.safe_load(path.read_text())["clusters"][0]["cluster"]["server"] == (
            "https://198.18.0.3:6443")
    assert cp.files.tokens.stat().st_mode & 0o777 == 0o600
    assert all(rss and rss > 0 for rss in cp.rss().values())


@pytest.mark.lab
def test_reader_token_reads_what_the_lab_created(env):
    doc = collect(env.cp.kubeconfig("kubenetdiag"))
    by = calls(doc)
    statuses = {c["name"]: c["status"] for c in doc["calls"]}
    # rbac.yaml covers every call the collector makes: nothing forbidden
    assert set(statuses.values()) <= {"ok", "not_found"}, statuses
    assert statuses["calico_ippools"] == "not_found"  # no calico CRD in a flannel lab
    assert by["version"]["object"]["gitVersion"] == components.component("kube-apiserver").version
    nodes = {n["metadata"]["name"]: n for n in by["nodes"]["items"]}
    assert sorted(nodes) == ["node1", "node2", "node3"]
    assert nodes["node2"]["spec"]["podCIDR"] == "10.244.2.0/24"
    pods = {p["metadata"]["name"]: p for p in by["pods"]["items"]}
    dns = pods["coredns-0"]
    # the status the test wrote through the status subresource, as kubelet would
    assert (dns["spec"]["nodeName"], dns["status"]["podIP"]) == ("node1", "10.244.1.3")
    ready = {c["type"]: c["status"] for c in dns["status"]["conditions"]}
    assert ready["Ready"] == "True"
    facts = cluster_facts(doc, [("node1", "198.18.0.11")])
    kinds = {f.kind for f in facts}
    assert {"k8s_node", "dns_pod", "cni", "flannel_config", "service_endpoints"} <= kinds
    assert not [f for f in facts if f.kind == "probe_status"
                and f.attrs["status"] == "permission_denied"]
    (dp,) = [f for f in facts if f.kind == "dns_pod"]
    assert (dp.attrs["ip"], dp.attrs["ready"]) == ("10.244.1.3", True)
    n2 = next(f for f in facts if f.kind == "k8s_node" and f.attrs["name"] == "node2")
    assert (n2.attrs["pod_cidr"], n2.attrs["ready"]) == ("10.244.2.0/24", True)


@pytest.mark.lab
def test_endpointslices_are_the_controller_managers(env):
    """The lab writes pods and Services only; kube-controller-manager's EndpointSlice
    controller writes the slices, from the pods' Ready condition and the nodes' zones."""
    apisync.wait_endpoints(env.cp.admin(), env.state)
    found = env.cp.admin().get("/apis/discovery.k8s.io/v1/endpointslices")["items"]
    mine = {s["metadata"]["labels"]["kubernetes.io/service-name"]: s for s in found
            if s["metadata"]["namespace"] != "default"
            or s["metadata"]["labels"].get("kubernetes.io/service-name") != "kubernetes"}
    assert set(mine) == {"kube-dns", "web"}
    for sl in mine.values():
        labels = sl["metadata"]["labels"]
        assert labels["endpointslice.kubernetes.io/managed-by"] == (
            "endpointslice-controller.k8s.io")
        assert sl["metadata"]["generateName"] == f"{labels['kubernetes.io/service-name']}-"
        assert sl["metadata"]["ownerReferences"][0]["kind"] == "Service"
    web = sorted(mine["web"]["endpoints"], key=lambda e: e["addresses"])
    assert [(e["addresses"], e["nodeName"], e["zone"], e["conditions"]["ready"],
             e["targetRef"]["name"]) for e in web] == [
        (["10.244.1.2"], "node1", "zone-a", True, "web-1"),
        (["10.244.2.2"], "node2", "zone-b", True, "web-2"),
        (["10.244.3.2"], "node3", "zone-a", True, "web-3")]
    assert mine["web"]["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]


@pytest.mark.lab
def test_nobody_gets_real_403s(env):
    doc = collect(env.cp.kubeconfig("nobody"))
    by = calls(doc)
    # /version is public on every cluster (system:public-info-viewer); the rest is RBAC's
    assert by.pop("version")["status"] == "ok"
    assert {c["status"] for c in by.values()} == {"forbidden"}
    assert {c["http_status"] for c in by.values()} == {403}
    assert all('User "nobody" cannot' in c["reason"] for c in by.values())
    st = [f for f in cluster_facts(doc) if f.kind == "probe_status"]
    assert {f.attrs["probe"] for f in st} >= {"api:nodes", "api:daemonsets", "api:services"}
    assert {f.attrs["status"] for f in st} == {"permission_denied"}


@pytest.mark.lab
def test_wrong_token_gets_real_401s(env):
    kubeconfig = cpm.write_kubeconfig(
        env.workdir / "kubeconfig-wrong", env.cp.server,
        env.cp.files.pki.ca_cert.read_bytes(), "intruder", "not-a-token")
    doc = collect(kubeconfig)
    assert {c["status"] for c in doc["calls"]} == {"unauthorized"}
    assert {c["http_status"] for c in doc["calls"]} == {401}
    st = [f for f in cluster_facts(doc) if f.kind == "probe_status"]
    assert st and {f.attrs["status"] for f in st} == {"permission_denied"}


@pytest.mark.lab
def test_pagination_across_continue(env):
    # collect_cluster binds PAGE_SIZE as its default when defined, so the page size is passed
    doc = collect(env.cp.kubeconfig("kubenetdiag"), page_size=2)
    by = calls(doc)
    assert by["nodes"]["pages"] == 2 and len(by["nodes"]["items"]) == 3
    assert by["pods"]["pages"] >= 2
    names = [p["metadata"]["name"] for p in by["pods"]["items"]]
    assert len(names) == len(set(names))  # no page read twice
    whole = calls(collect(env.cp.kubeconfig("kubenetdiag")))
    assert whole["pods"]["pages"] == 1
    assert sorted(names) == sorted(p["metadata"]["name"]
                                   for p in whole["pods"]["items"])


def assert_gave_up_after_one_call(doc: dict) -> None:
    first, *rest = doc["calls"]
    assert first["status"] == "timeout" and not first["reason"].startswith("not tried"), first
    assert rest, doc["calls"]
    for call in rest:
        assert call["status"] == "timeout", call
        assert call["reason"].startswith("not tried: the API server stopped answering"), call


@pytest.mark.lab
def test_stopped_apiserver_times_out_and_the_cli_exits(env, tmp_path):
    pid = env.cp.pids["kube-apiserver"]
    kubeconfig = env.cp.kubeconfig("kubenetdiag")
    os.kill(pid, signal.SIGSTOP)
    try:
        # A stopped apiserver's kernel still completes TCP handshakes; the TLS handshake then
        # never ends. One call waits out its timeout, a cheap /version check confirms nothing
        # answers, and the rest is not tried: a dead API costs two timeouts, not thirteen.
        doc = collect(kubeconfig, connect_timeout=1.0, read_timeout=1.0)
        assert_gave_up_after_one_call(doc)
        st = [f for f in cluster_facts(doc) if f.kind == "probe_status"]
        assert st and {f.attrs["status"] for f in st} == {"timeout"}
        # The CLI, end to end in the client namespace, with short timeouts (its defaults only
        # make this slower, 10 s a wait): it exits, with the API marked as not checked.
        bundle = tmp_path / "bundle"
        argv = ["ip", "netns", "exec", CLIENT, sys.executable, "-m", "kubenetdiag", "diagnose",
                "--local", "--kubeconfig", str(kubeconfig), "--command-timeout", "2",
                "--connect-timeout", "2",
                "--format", "json", "--bundle", str(bundle), "--quiet"]
        env_vars = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=150, env=env_vars)
        assert cp.returncode in (0, 1), cp.stderr[-2000:]
        assert_gave_up_after_one_call(json.loads((bundle / "cluster.json").read_text()))
        report = json.loads(cp.stdout)
        blocked = {c["status"] for c in report["not_checked"]
                   if c["node"] == "cluster" and c["probe"] != "active.endpoints"}
        assert blocked == {"timeout"}
    finally:
        os.kill(pid, signal.SIGCONT)
    # and it serves again once resumed
    deadline = time.monotonic() + 30
    while env.cp.admin().readyz()[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)


@pytest.mark.lab
def test_stop_is_idempotent_and_leaves_nothing(env):
    """Last in the file: it stops the module's control plane (the fixture's own stop after it
    is then the idempotent second one)."""
    pids = env.cp.pids
    env.cp.stop()
    env.cp.stop()
    assert env.cp.pids == {} and not env.cp.files.pids.exists()
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert cpm.in_netns(CP, lambda: subprocess.run(
        ["ss", "-ltnH"], capture_output=True, text=True).stdout) == ""
