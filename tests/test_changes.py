"""What changed since it worked: `kubenetdiag diff OLD NEW` and `--baseline`. The runs are the
shipped example bundle and a copy of it with one setting changed back to healthy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kubenetdiag.changes import changes
from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.facts.registry import _diff_spec

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "bundles" / "lab-three-faults"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> tuple[Path, Path]:
    """(good, now): the example as it is (ip_forward off on node2), and the same run as it
    would have been with forwarding on."""
    root = tmp_path_factory.mktemp("b")
    good, now = root / "good", root / "now"
    shutil.copytree(EXAMPLE, good)
    shutil.copytree(EXAMPLE, now)
    for name in ("facts.json", "report.json"):
        (good / name).unlink(missing_ok=True)
    node2 = good / "nodes" / "node2.json"
    record = json.loads(node2.read_text())
    for section in record["sections"]:
        if section["probe"] == "sysctl":  # the switch, and every interface's that follows it
            section["stdout"] = section["stdout"].replace("net/ipv4/ip_forward:0",
                                                          "net/ipv4/ip_forward:1").replace(
                "/forwarding:0", "/forwarding:1")
    node2.write_text(json.dumps(record))
    return good, now


def _kubenetdiag(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubenetdiag", *args], capture_output=True,
                          text=True, timeout=300)


def test_diff_names_the_setting_that_changed_and_the_finding_it_brought(bundles):
    good, now = bundles
    proc = _kubenetdiag("diff", str(good), str(now), "--format", "json")
    assert proc.returncode == 1, proc.stderr
    diff = json.loads(proc.stdout)
    sysctls = [(c["node"], c["key"]["key"], c["fields"], c["before"]["value"],
                c["after"]["value"]) for c in diff["facts"] if c["kind"] == "sysctl"]
    assert ("node2", "net.ipv4.ip_forward", ["number", "value"], "1", "0") in sysctls
    assert ("node2", "net.ipv4.conf.eth0.forwarding", ["number", "value"], "1", "0") in sysctls
    # and the packet paths it cut on node2 (now stopped by the forwarding switch), nothing else
    assert {(c["node"], c["kind"]) for c in diff["facts"]} == {("node2", "sysctl"),
                                                              ("node2", "path")}
    assert all(c["after"]["stage"] == "forwarding" for c in diff["facts"] if c["kind"] == "path")
    appeared = [(f["rule"], f["node"]) for f in diff["findings"]["appeared"]]
    assert ("ip-forward-disabled", "node2") in appeared
    # the faults on node1 and node3 were there in both runs (the copy keeps the checks' own
    # failures, so node2's consequences are explained differently in the two)
    assert {node for _, node in appeared} == {"node2"}
    assert {f["node"] for f in diff["findings"]["gone"]} <= {"node2"}
    text = _kubenetdiag("diff", str(good), str(now)).stdout
    assert "node2 sysctl net.ipv4.ip_forward: number 1 -> 0, value 1 -> 0" in text


def test_a_run_compared_with_itself_has_nothing_to_say(bundles):
    _, now = bundles
    proc = _kubenetdiag("diff", str(now), str(now))
    assert proc.returncode == 0 and "nothing changed" in proc.stdout


def test_the_report_shows_what_changed_beside_the_evidence(bundles, tmp_path):
    good, now = bundles
    html, md = tmp_path / "r.html", tmp_path / "r.md"
    proc = _kubenetdiag("analyze", str(now), "--baseline", str(good), "--report", str(html),
                        "--report", str(md), "--format", "json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert {"key": "net.ipv4.ip_forward"} in [c["key"] for c in report["changes"]["facts"]]
    page = html.read_text()
    assert 'id="changes"' in page
    # next to the evidence of the findings that show the setting
    assert "changed since the baseline: <code>node2 sysctl net.ipv4.ip_forward" in page
    assert "## Changed since the baseline" in md.read_text()
    summary = _kubenetdiag("analyze", str(now), "--baseline", str(good)).stdout
    assert "Changed since the baseline" in summary


def _f(fact_kind: str, node: str, **attrs) -> Fact:
    return Fact(fact_kind, node, attrs, Source("p", "cmd", 0, ""))


def _report(*nodes: str) -> dict:
    return {"nodes": [{"name": n, "reachable": True} for n in nodes], "findings": [],
            "run": {"bundle": None, "started_at": None}}


def test_what_moves_on_its_own_is_not_a_change():
    rule = dict(table="filter", chain="FORWARD", backend="nf_tables", target="ACCEPT",
                target_kind="accept", unconditional=False, spec="-A FORWARD -s 10.244.0.0/16 "
                "-j ACCEPT", comment=None, src="10.244.0.0/16", dst=None, in_if=None,
                out_if=None, proto=None, dport=None)
    old = [_f("iptables_rule", "n1", position=1, pkts=10, bytes=900, **rule),
           _f("net_counter", "n1", name="TcpExtListenOverflows", group="TcpExt",
              counter="ListenOverflows", value=40, delta=0, interval_s=2.0, rate_per_s=0.0,
              rising=False),
           _f("process", "n1", name="kubelet", role="kubelet", running=True, count=1,
              pids="101", args="kubelet --v=2", state="S", matched="name"),
           _f("interface", "n1", name="veth1a2b", kind="veth", mtu=1450)]
    new = [_f("iptables_rule", "n1", position=3, pkts=99, bytes=9999, **rule),
           _f("net_counter", "n1", name="TcpExtListenOverflows", group="TcpExt",
              counter="ListenOverflows", value=45, delta=0, interval_s=2.1, rate_per_s=0.0,
              rising=False),
           _f("process", "n1", name="kubelet", role="kubelet", running=True, count=1,
              pids="202", args="kubelet --v=2", state="R", matched="name"),
           _f("interface", "n1", name="veth9f8e", kind="veth", mtu=1450)]
    assert changes(old, _report("n1"), new, _report("n1"))["facts"] == []
    # ...but a counter that started rising, a process that stopped, are
    new[1].attrs["rising"] = True
    new[2].attrs["running"] = False
    got = [(c["kind"], c["fields"]) for c in
           changes(old, _report("n1"), new, _report("n1"))["facts"]]
    assert got == [("net_counter", ["rising"]), ("process", ["running"])]


def test_facts_a_failed_probe_did_not_give_are_unknown_not_gone():
    old = [_f("route", "n1", table="main", type="unicast", dst="10.244.2.0/24",
              gateway="198.18.0.12", dev="eth0", metric=None)]
    new = [_f("probe_status", "n1", probe="routes", status="failed", reason="timeout",
              blocks="routes", kinds=None)]
    assert changes(old, _report("n1"), new, _report("n1"))["facts"] == []
    gone = changes(old, _report("n1"), [], _report("n1"))["facts"]
    assert [(c["kind"], c["change"]) for c in gone] == [("route", "gone")]


def test_a_node_reached_in_one_run_only_is_listed_not_compared():
    old = [_f("sysctl", "n2", key="net.ipv4.ip_forward", value="1", number=1, present=True)]
    new_report = _report("n1", "n2")
    new_report["nodes"][1]["reachable"] = False
    diff = changes(old, _report("n1", "n2"), [], new_report)
    assert diff["facts"] == [] and diff["nodes"]["not_compared"] == ["n2"]


def test_a_registry_diff_naming_an_unknown_attribute_is_refused():
    with pytest.raises(ValueError, match="unknown attributes"):
        _diff_spec("sysctl", {"key": ["nope"]}, {})
