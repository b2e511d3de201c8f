"""The IPVS recorder for real (lab/src/kubenetdiag_lab/ipvs_shadow.py): in the session's 2-node
lab, kube-proxy's own IPVS proxier runs beside each node's kube-proxy, a diagnosis collected
over SSH is rewritten as the same cluster in ipvs mode, and that bundle says what the lab is:
healthy, then node1's kube-proxy frozen before a pod moved. Everything it started is taken
away after, whatever happens."""

from __future__ import annotations

import shutil

import pytest

from kubenetdiag.bundle import Bundle
from kubenetdiag.engine import load_ruleset
from kubenetdiag.pipeline import analyze
from kubenetdiag_lab import components, ipvs_shadow
from test_diagnose_finds_lab_faults_over_ssh import alarms, diagnose

pytestmark = pytest.mark.lab


def _as_ipvs(lab, tmp_path, name: str) -> list[dict]:
    _report, _proc = diagnose(lab, tmp_path / name)
    bundle = tmp_path / name / "bundle"
    ipvs_shadow.wait_quiet(lab.paths, lab.nodes)
    assert ipvs_shadow.splice(lab.topology, lab.paths, lab.runners, bundle) == [
        n.name for n in lab.nodes]
    return analyze(Bundle.read(bundle), load_ruleset(), save=False).report["findings"]


def test_a_bundle_recorded_with_kube_proxys_ipvs_proxier_diagnoses_as_the_lab_is(lab, tmp_path):
    why = components.missing([ipvs_shadow.BINARY])
    if why or shutil.which("ipset") is None:
        pytest.skip(why or "ipvs splice needs ipset (package ipset)")
    try:
        ipvs_shadow.start_all(lab.topology, lab.paths, lab.runners)
        node1 = lab.runners.node(lab.node("node1"))
        # kube-proxy's proxier bound the Service VIPs on a real kube-ipvs0 in the node
        assert "10.96.0.10/32" in node1.run(["ip", "-4", "addr", "show", "kube-ipvs0"]).stdout
        assert [f["rule"] for f in _as_ipvs(lab, tmp_path, "healthy")] == []

        with lab.injected("kube_proxy_out_of_sync", "node1", {"via": "moved"}):
            found = alarms({"findings": _as_ipvs(lab, tmp_path, "moved")})
        assert [(f["rule"], f["nodes"], f["root_cause"]) for f in found] == [
            ("kube-proxy-out-of-sync", ["node1"], True)]
        (sync,) = [e["attrs"] for e in found[0]["evidence"] if e["kind"] == "service_sync"]
        assert sync["backend"] == "ipvs"
    finally:
        ipvs_shadow.stop_all(lab.topology, lab.paths, lab.runners)
    assert node1.run(["ip", "link", "show", "kube-ipvs0"], check=False).returncode != 0
    assert all(not ipvs_shadow.pids(n) for n in lab.nodes)
