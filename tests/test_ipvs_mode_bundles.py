"""kube-proxy in ipvs mode, as recorded from the lab with kube-proxy's own IPVS proxier
(tests/fixtures/bundles/record-ipvs.sh; this kernel has no ip_vs): a healthy cluster raises
nothing and walks every Service flow through IPVS, and each fault is the one root cause on its
node."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kubenetdiag.bundle import Bundle
from kubenetdiag.engine import load_ruleset
from kubenetdiag.pipeline import analyze
from kubenetdiag.reports import render_markdown

BUNDLES = Path(__file__).parent / "fixtures" / "bundles"


@pytest.fixture(scope="module")
def ruleset():
    return load_ruleset()


def _analyze(name: str, tmp: Path, ruleset, edit=None) -> tuple[dict, list]:
    out = tmp / name
    shutil.copytree(BUNDLES / name, out)
    if edit:
        for path in (out / "nodes").glob("*.json"):
            doc = json.loads(path.read_text())
            edit(doc)
            path.write_text(json.dumps(doc))
    result = analyze(Bundle.read(out), ruleset, save=False)
    return result.report, result.facts


def _causes(report: dict) -> list[tuple[str, list[str]]]:
    return [(f["rule"], f["nodes"]) for f in report["findings"] if f["root_cause"]]


def test_a_healthy_ipvs_cluster_raises_nothing_and_walks_its_services_through_ipvs(
        tmp_path, ruleset):
    report, facts = _analyze("lab-ipvs-healthy", tmp_path, ruleset)
    assert report["findings"] == []
    walks = {f.node: f.attrs for f in facts if f.kind == "path_walk"}
    assert sorted(walks) == ["node1", "node2", "node3"]
    for attrs in walks.values():
        assert "service" in attrs["kinds"].split(",") and attrs["unknown"] == 0
    sync = {f.node: f.attrs for f in facts if f.kind == "kube_proxy_sync"}
    assert {a["backend"] for a in sync.values()} == {"ipvs"}
    assert all(a["differing"] == 0 for a in sync.values())


def test_the_recording_looks_like_an_ipvs_node(tmp_path, ruleset):
    _report, facts = _analyze("lab-ipvs-healthy", tmp_path, ruleset)
    node1 = [f for f in facts if f.node == "node1"]
    vips = {(f.attrs["address"], f.attrs["port"], f.attrs["proto"]) for f in node1
            if f.kind == "ipvs_service"}
    assert {("10.96.0.10", 53, "UDP"), ("10.96.0.1", 443, "TCP"), ("10.96.0.20", 80, "TCP")} <= vips
    ipvs0 = next(f.attrs for f in node1
                 if f.kind == "interface" and f.attrs["name"] == "kube-ipvs0")
    assert ipvs0["kind"] == "dummy"
    assert set(ipvs0["addresses"].split(",")) >= {"10.96.0.10/32", "10.96.0.20/32"}
    sets = {f.attrs["name"] for f in node1 if f.kind == "ipset"}
    assert {"KUBE-CLUSTER-IP", "KUBE-IPVS-IPS", "KUBE-LOOP-BACK"} <= sets
    # kube-proxy's ipvs-mode rules, not its iptables-mode chains
    chains = {f.attrs["chain"] for f in node1 if f.kind == "iptables_chain"}
    assert "KUBE-IPVS-FILTER" in chains and not any(c.startswith("KUBE-SVC-") for c in chains)
    # the recorder's own process left no trace
    for path in (BUNDLES / "lab-ipvs-healthy" / "nodes").glob("*.json"):
        assert "knd-ipvs-proxie" not in path.read_text()


def test_without_the_ipsets_the_walk_says_what_it_could_not_decide(tmp_path, ruleset):
    # a bundle from before the ipsets probe: kube-proxy's set matches cannot be decided
    def drop_ipsets(doc):
        doc["sections"] = [s for s in doc["sections"] if s["probe"] != "ipsets"]

    report, _ = _analyze("lab-ipvs-healthy", tmp_path, ruleset, drop_ipsets)
    assert [f["rule"] for f in report["findings"]] == ["path-undecidable"]
    assert "-m set --match-set KUBE-" in report["findings"][0]["explain"]
    assert all(f["severity"] == "info" for f in report["findings"])


@pytest.mark.parametrize(("bundle", "rule", "node", "named"), [
    # node1's kube-proxy froze before the web canary's pod moved: a stale real server
    ("lab-ipvs-kube-proxy-out-of-sync", "kube-proxy-out-of-sync", "node1",
     "default/web-canary:http endpoints_differ"),
    # node2's froze before a Service was created: no virtual server for it
    ("lab-ipvs-missing-virtual-server", "kube-proxy-out-of-sync", "node2",
     "default/web-canary:http missing"),
    # node3's froze before a Service was deleted: its virtual server stays, named by its VIP
    # (the API no longer has a name for it)
    ("lab-ipvs-stale-virtual-server", "kube-proxy-out-of-sync", "node3",
     "10.96.0.21:80/TCP stale_service"),
    # node3 lost the web Service's VIP from kube-ipvs0
    ("lab-ipvs-vip-unbound", "ipvs-vip-not-local", "node3", "10.96.0.20:80"),
])
def test_each_ipvs_fault_is_the_one_root_cause_on_its_node(tmp_path, ruleset, bundle, rule,
                                                          node, named):
    report, _ = _analyze(bundle, tmp_path, ruleset)
    assert _causes(report) == [(rule, [node])]
    [finding] = report["findings"]
    assert named in finding["title"] + finding["explain"]
    if rule == "kube-proxy-out-of-sync":
        assert "ipvs rules" in finding["explain"]


def _inactive_at(node: str, vs: str, conns: int):
    """An edit that gives `vs`'s real server `conns` inactive connections on `node`: what the
    kernel's IPVS counts for clients whose connections never open. The recording's IPVS table
    is kube-proxy's in-memory fake, which counts no connection."""
    def edit(doc: dict) -> None:
        if doc.get("name") != node:
            return
        [section] = [s for s in doc["sections"] if s["probe"] == "ipvs"]
        head = f"TCP  {vs} rr\n  -> 10.244.2.3:8080              Masq    1      0          0"
        assert head in section["stdout"]
        section["stdout"] = section["stdout"].replace(head, head[:-1] + str(conns))
    return edit


def test_a_local_nodeport_where_kube_proxy_sends_it_to_another_nodes_pod(tmp_path, ruleset):
    # web-local (externalTrafficPolicy Local) has its pod on node2. kube-proxy's own IPVS code
    # gives node1 and node3 the NodePort anyway, sent to node2's pod: by design, no finding
    report, facts = _analyze("lab-ipvs-local-nodeport", tmp_path, ruleset)
    assert report["findings"] == []
    held = {f.node: f.attrs for f in facts if f.kind == "ipvs_local_nodeport"}
    assert {n: (a["local_endpoint"], a["backends"]) for n, a in held.items()} == {
        "node1": (False, "10.244.2.3:8080"), "node2": (True, "10.244.2.3:8080"),
        "node3": (False, "10.244.2.3:8080")}
    # the NodePort checks connect only where a node must answer it
    checked = {f.attrs["dst"] for f in facts if f.kind == "nodeport_check"
               and f.attrs["service"] == "default/web-local:http"}
    assert checked == {"node2"}


def test_clients_that_reach_a_node_without_a_local_endpoint_are_its_root_cause(
        tmp_path, ruleset):
    report, _ = _analyze("lab-ipvs-local-nodeport", tmp_path, ruleset,
                         _inactive_at("node1", "198.18.0.11:30080", 5))
    assert _causes(report) == [("nodeport-ipvs-traffic-to-node-without-local-endpoint",
                                ["node1"])]
    [finding] = report["findings"]
    assert "default/web-local:http" in finding["title"] and "198.18.0.11" in finding["explain"]
    # computed from other facts, it ran no command: no exit code, never "did not finish"
    row = next(line for line in render_markdown(report).splitlines()
               if line.startswith("| ipvs_local_nodeport |"))
    assert row.endswith("API's Services | — |")
    # the same count on node2, which holds the pod, is its own clients served
    report, _ = _analyze("lab-ipvs-local-nodeport", tmp_path / "2", ruleset,
                         _inactive_at("node2", "198.18.0.12:30080", 5))
    assert report["findings"] == []
