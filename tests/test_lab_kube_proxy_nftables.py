"""kube-proxy in nftables mode, for real: a 2-node lab with `--proxy-mode nftables`, the
diagnoser over SSH finds nothing while it is healthy and, with node1's kube-proxy frozen
before the canary Service's targetPort moved, names node1 alone (its nftables table still
DNATs to the old port); with the NodePort range filtered on the way to node2 (a security
group), names node2's NodePort as answering node2 alone. Kept lean: one lab, three runs of
the diagnoser."""

from __future__ import annotations

import pytest

from test_diagnose_finds_lab_faults_over_ssh import alarms, diagnose

pytestmark = pytest.mark.lab


def test_nft_mode_kube_proxy_out_of_sync_is_named_on_its_node(nft_lab, tmp_path):
    lab = nft_lab
    # kube-proxy wrote its own table, and no KUBE-SERVICES chain
    node1 = lab.runners.node(lab.node("node1"))
    assert "table ip kube-proxy" in node1.run(["nft", "list", "tables"]).stdout
    assert "KUBE-SERVICES" not in node1.run(["iptables-save"]).stdout
    report, proc = diagnose(lab, tmp_path / "healthy")
    assert alarms(report) == [] and proc.returncode == 0, report["findings"]

    web = next(p for p in lab.pods if p.app == "web")
    with lab.injected("kube_proxy_out_of_sync", "node1", {"via": "moved"}):
        report, proc = diagnose(lab, tmp_path / "moved")
    found = alarms(report)
    assert [(f["fault"], f["nodes"], f["root_cause"]) for f in found] == [
        ("kube_proxy_out_of_sync", ["node1"], True)]
    (sync,) = [e["attrs"] for e in found[0]["evidence"] if e["kind"] == "service_sync"]
    assert (sync["backend"], sync["service"], sync["missing"], sync["stale"]) == (
        "nftables", "default/web-canary:http", f"{web.ip}:8081", f"{web.ip}:8080")


def test_nft_mode_nodeport_filtered_upstream_answers_its_own_node_only(nft_lab, tmp_path):
    lab = nft_lab
    with lab.injected("nodeport_fails_from_peers", "node2"):
        report, _proc = diagnose(lab, tmp_path / "filtered")
    found = alarms(report)
    assert [(f["fault"], f["nodes"], f["root_cause"]) for f in found] == [
        ("nodeport_fails_from_peers", ["node2"], True)]
    checks = [e["attrs"] for e in found[0]["evidence"] if e["kind"] == "nodeport_check"]
    # node1's connect timed out (the filter drops it); node2's own was accepted
    assert {(c["dst"], c["own"], c["ok"]) for c in checks} >= {("node2", False, False)}
