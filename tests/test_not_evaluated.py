"""A probe that gave no answer on a node names the rules it left unevaluated there, in every
report format: "no finding" must never read as "healthy" when the rule could not look. An older
bundle that lacks a newer probe says so ("not collected by that version"), not "failed"."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from kubenetdiag.bundle import Bundle
from kubenetdiag.engine import load_ruleset
from kubenetdiag.pipeline import analyze
from kubenetdiag.probes import probe_names
from kubenetdiag.probes.active import checks
from kubenetdiag.reports import print_summary, render_html, render_json, render_markdown
from kubenetdiag.reports.view import build_view
from test_reports import make_node, make_report

BUNDLES = Path(__file__).parent / "fixtures" / "bundles"
HOSTILE = "<script>alert(1)</script> [bold red]boom[/bold red]"


@pytest.fixture(scope="module")
def ruleset():
    return load_ruleset()


def _copy(name: str, tmp: Path) -> Path:
    out = tmp / name
    shutil.copytree(BUNDLES / name, out)
    return out


def _edit_node(bundle: Path, node: str, edit) -> None:
    for f in (bundle / "nodes").glob("*.json"):
        rec = json.loads(f.read_text())
        if rec["name"] == node:
            edit(rec)
            f.write_text(json.dumps(rec))


@pytest.fixture(scope="module")
def sysctl_failed_on_node2(tmp_path_factory, ruleset) -> dict:
    """A current bundle (every probe listed as run) whose sysctl probe failed on node2 alone,
    with an error text a hostile node could have printed."""
    bundle = _copy("lab-conntrack-full", tmp_path_factory.mktemp("b"))
    meta = json.loads((bundle / "meta.json").read_text())
    meta["probes"] = probe_names()
    meta["active_checks"] = [c.name for c in checks()]
    (bundle / "meta.json").write_text(json.dumps(meta))

    def add_missing_and_fail(rec: dict) -> None:
        for s in rec["sections"]:
            if s["probe"] == "sysctl":
                s.update(exit_code=1, stdout="", stderr=HOSTILE)

    for node in ("node1", "node2", "node3"):
        # the probes newer than the recording (ip_rule, tc, ipsets, xfrm, cni_results,
        # pod_counters, socket_reads) answered with nothing everywhere, so only sysctl is
        # missing
        _edit_node(bundle, node, lambda rec: rec["sections"].extend(
            {"probe": p, "command": "", "exit_code": 0, "stdout": "", "stderr": ""}
            for p in ("ip_rule", "tc", "ipsets", "xfrm", "cni_results", "pod_counters",
                      "socket_reads")))
    _edit_node(bundle, "node2", add_missing_and_fail)
    return analyze(Bundle.read(bundle), ruleset, save=False).report


def test_a_failed_probe_names_the_rules_it_left_unevaluated_on_that_node_only(
        sysctl_failed_on_node2):
    report = sysctl_failed_on_node2
    entries = [c for c in report["not_checked"] if c["probe"] == "sysctl"]
    assert [(c["node"], c["status"]) for c in entries] == [("node2", "failed")]
    # a rule on sysctl alone, and one that walks the node's configuration (sysctl among it)
    assert {"somaxconn-low", "ip-forward-disabled", "iptables-drop-rule"} <= set(
        entries[0]["rules"])
    # a rule that reads nothing sysctl gives is not blamed on it
    assert "filesystem-full" not in entries[0]["rules"]
    # besides the cluster-wide note that no endpoint was declared (the bundle declares none)
    assert [c["probe"] for c in report["not_checked"] if c["node"] != "node2"] == [
        "active.endpoints"]
    by_rule = {r["rule"]: r for r in report["not_evaluated"]}
    assert by_rule["somaxconn-low"]["nodes"] == ["node2"]
    assert by_rule["somaxconn-low"]["title"].startswith(
        "The accept queue on <local> on <node> is full")
    assert "<limit>" in by_rule["somaxconn-low"]["title"]  # a value nobody could read
    assert "zh-CN" in by_rule["somaxconn-low"]["i18n"]


def test_every_format_lists_the_unevaluated_rules_and_why(sysctl_failed_on_node2):
    report = sysctl_failed_on_node2
    (group,) = build_view(report).not_evaluated
    assert [n.label for n in group.nodes] == ["node2"]
    assert [(c.probe, c.status) for c in group.causes] == [("sysctl", "failed")]

    html = render_html(report)
    section = html[html.index('<section id="not-evaluated">'):html.index('<section id="run">')]
    assert "<code>somaxconn-low</code>" in section and ">node2</a>" in section
    assert ">node1<" not in section and ">node3<" not in section
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in section

    md = render_markdown(report)
    part = md[md.index("## Not evaluated"):md.index("## Run")]
    assert "- **node2** — `sysctl`: failed (" in part
    assert "`somaxconn-low` The accept queue on \\<local\\> on \\<node\\> is full" in part
    assert "<script>" not in part and "node1" not in part

    zh = render_markdown(report, "zh-CN")
    part = zh[zh.index("## 未评估的规则"):]
    assert "`sysctl`：执行失败（" in part

    assert json.loads(render_json(report))["not_evaluated"] == report["not_evaluated"]

    out = io.StringIO()
    print_summary(report, Console(file=out, width=200, color_system=None))
    text = out.getvalue()
    assert "rules not evaluated on node2 (sysctl: failed)" in text


def test_an_older_bundle_says_not_collected_by_that_version(tmp_path, ruleset):
    # recorded before the ip_rule, tc and ipsets probes existed, and before meta.json listed
    # probes
    bundle = Bundle.read(_copy("lab-tw-recycle-3.10", tmp_path))
    assert "probes" not in bundle.meta
    report = analyze(bundle, ruleset, save=False).report
    missing = {(c["node"], c["probe"]): c for c in report["not_checked"]}
    # it declared no endpoint: that branch is not checked (said once, for the cluster), which
    # is not a probe the older version lacked
    assert missing.pop(("cluster", "active.endpoints"))["status"] == "not_queried"
    # seven passive probes, and the active checks its plans had a target for (the pod's link
    # and routes, the pod's own resolver, the conntrack counts toward the DNS VIP, the node
    # and its own pod pinging each other, the DROP counters and the unanswered ARP entries
    # read after the checks)
    assert set(missing) == {(n, p) for n in ("node1", "node2", "node3")
                            for p in ("ip_rule", "tc", "ipsets", "xfrm", "cni_results",
                                      "pod_counters", "socket_reads", "active.pod.link",
                                      "active.pod.route",
                                      "active.pod.dns", "active.ct", "active.own.node_to_pod",
                                      "active.own.pod_to_node", "active.counters_after",
                                      "active.neigh_after")}
    for entry in missing.values():
        assert entry["status"] == "not_collected"
        assert entry["reason"] == (
            "not collected by the version that made this bundle (kubenetdiag 0.1.0)")
    assert "traffic-altered-outside-netfilter" in missing[("node1", "tc")]["rules"]
    assert "pod-mtu-above-overlay" in missing[("node1", "active.pod.link")]["rules"]
    # the endpoints check had no target in these plans: nothing to say it was not sent
    assert not [c for c in report["not_checked"] if "tcp" in c["probe"]]
    groups = build_view(report).not_evaluated
    assert {g.count for g in groups} == {3}  # the three nodes alike: one set of blocks
    assert {c.status for g in groups for c in g.causes} == {
        "not collected by the version that made this bundle"}
    assert "failed" not in render_markdown(report).split("## Not evaluated")[1]
    assert "生成该采集包的版本还没有这项探测" in render_html(report, "zh-CN")


def test_a_bundle_listing_its_probes_says_not_collected_only_for_the_unlisted(tmp_path, ruleset):
    path = _copy("lab-netdev-vxlan-drop", tmp_path)
    bundle = Bundle.read(path)
    # listed: ran; a node without its section would be "did not run" (failed)
    _edit_node(path, "node1", lambda rec: rec.update(
        sections=[s for s in rec["sections"] if s["probe"] != "routes"]))
    report = analyze(Bundle.read(path), ruleset, save=False).report
    statuses = {(c["node"], c["probe"]): c["status"] for c in report["not_checked"]
                if not c["probe"].startswith(("active", "api"))}
    assert statuses[("node1", "routes")] == "failed"
    assert "ip_rule" not in bundle.meta["probes"]
    assert statuses[("node2", "ip_rule")] == "not_collected"


def test_a_rule_that_fired_on_a_node_is_not_listed_as_not_evaluated_there(tmp_path, ruleset):
    import json
    import shutil

    # the example, with the policy-routing probe gone from node1's and node2's records, as if
    # it had given no answer there
    copy = tmp_path / "b"
    shutil.copytree(Path(__file__).parent.parent / "examples" / "bundles" / "lab-three-faults",
                    copy)
    for node in ("node1", "node2"):
        path = copy / "nodes" / f"{node}.json"
        record = json.loads(path.read_text())
        record["sections"] = [s for s in record["sections"] if s["probe"] != "ip_rule"]
        path.write_text(json.dumps(record))
    report = analyze(Bundle.read(copy), ruleset, save=False).report
    fired = {(f["rule"], n) for f in report["findings"] for n in f["nodes"]}
    assert ("forward-chain-reject", "node1") in fired
    rules = {(c["node"], c["probe"]): c["rules"] for c in report["not_checked"]}
    assert "forward-chain-reject" not in rules[("node1", "ip_rule")]
    assert "forward-chain-reject" in rules[("node2", "ip_rule")]
    # the node that was not reached: every rule that reads a node's facts, but the one that
    # fired because it was not reached
    assert "somaxconn-low" in rules[("node3", "all")]
    assert "node-unreachable" not in rules[("node3", "all")]


def test_fifty_nodes_with_the_same_gap_are_one_group():
    nodes = [make_node(f"worker-{i:03d}", i) for i in range(50)]
    not_checked = [
        {"node": n["name"], "probe": "iptables", "status": "failed", "reason": "exit code 4",
         "blocks": "packet filter rules", "rules": ["iptables-drop-rule"]}
        for n in nodes
    ]
    # one node also lacks its routes: it gets a group of its own for that
    not_checked.append({"node": "worker-007", "probe": "routes", "status": "timeout",
                        "reason": "killed after 15s", "blocks": "routes",
                        "rules": ["pod-cidr-route-missing"]})
    report = make_report(nodes, [], not_checked)
    report["not_evaluated"] = [
        {"rule": "iptables-drop-rule", "fault": "iptables_drop_rule",
         "title": "<node> discards cluster traffic at <at>", "nodes": [n["name"] for n in nodes],
         "i18n": {"zh-CN": {"title": "<node> 在 <at> 丢弃集群流量"}}},
        {"rule": "pod-cidr-route-missing", "fault": "pod_cidr_route_missing",
         "title": "<node> has no route", "nodes": ["worker-007"], "i18n": {}},
    ]
    groups = build_view(report).not_evaluated
    assert [(g.count, len(g.rules)) for g in groups] == [(49, 1), (1, 1), (1, 1)]
    md = render_markdown(report)
    assert md.count("`iptables-drop-rule`") == 2  # the 49, and worker-007 with its other gap
    assert "(+29 more)" in md  # 49 names, 20 shown
    html = render_html(report, "zh-CN")
    assert "&lt;node&gt; 在 &lt;at&gt; 丢弃集群流量" in html


def test_hostile_node_names_and_reasons_are_text_in_every_format():
    evil = "<img src=x onerror=alert(1)>[link=http://x]n[/link]"
    nodes = [make_node(evil, 1), make_node("node2", 2)]
    not_checked = [{"node": evil, "probe": "routes", "status": "failed",
                    "reason": "<script>alert(1)</script>", "blocks": "routes",
                    "rules": ["pod-cidr-route-missing"]}]
    report = make_report(nodes, [], not_checked)
    report["not_evaluated"] = [
        {"rule": "pod-cidr-route-missing", "fault": "pod_cidr_route_missing",
         "title": "<node> has no route to <peer>'s pod CIDR", "nodes": [evil], "i18n": {}}]
    html = render_html(report)
    section = html[html.index('<section id="not-evaluated">'):html.index('<section id="run">')]
    assert "<img" not in section and "<script>" not in section
    assert "&lt;img src=x onerror=alert(1)&gt;" in section
    md = render_markdown(report).split("## Not evaluated")[1]
    # every < is escaped, so no renderer reads a tag
    assert not re.search(r"(?<!\\)<", md) and "\\<img src=x" in md
    out = io.StringIO()
    print_summary(report, Console(file=out, width=300, color_system=None))
    # rich markup in a node name is printed, not obeyed
    assert "[link=http://x]n[/link]" in out.getvalue()


def test_a_failed_api_call_names_the_cluster_rules_it_left_unevaluated(tmp_path, ruleset):
    path = _copy("lab-conntrack-full", tmp_path)
    cluster = json.loads((path / "cluster.json").read_text())
    for call in cluster["calls"]:
        if call["name"] == "endpointslices":
            call.update(status="forbidden", http_status=403, reason="endpointslices is "
                        "forbidden", items=None)
    (path / "cluster.json").write_text(json.dumps(cluster))
    report = analyze(Bundle.read(path), ruleset, save=False).report
    (entry,) = [c for c in report["not_checked"] if c["probe"] == "api:endpointslices"]
    assert entry["node"] == "cluster" and entry["status"] == "permission_denied"
    assert {"service-without-endpoints", "endpoints-across-zones"} <= set(entry["rules"])
    # rules on what the other calls answered are not blamed on it
    assert "cni-pod-not-ready" not in entry["rules"]


def test_a_line_no_parser_knows_is_named_and_leaves_the_node_partly_checked(tmp_path, ruleset):
    bundle = _copy("lab-conntrack-full", tmp_path)

    def odd_route(rec: dict) -> None:
        for s in rec["sections"]:
            if s["probe"] == "routes":  # a JSON route in a form nothing here knows: no dst
                s["stdout"] = s["stdout"].replace(
                    "[{", '[{"encap":"mpls","labels":[200],"dev":"eth1"},{', 1)

    before = analyze(Bundle.read(bundle), ruleset, save=False).report
    _edit_node(bundle, "node2", odd_route)
    report = analyze(Bundle.read(bundle), ruleset, save=False).report
    (entry,) = [c for c in report["not_checked"] if c["probe"] == "routes"]
    assert (entry["node"], entry["status"], entry["rules"]) == ("node2", "partial", [])
    assert '{"encap":"mpls","labels":[200],"dev":"eth1"}' in entry["reason"]  # as printed
    # the routes it did read stand: the same diagnosis as before
    assert [f["rule"] for f in report["findings"]] == [f["rule"] for f in before["findings"]]
    md = render_markdown(report)
    row = next(line for line in md.splitlines() if "| routes |" in line)
    assert row.startswith("| node2 | routes | partial | 1 line(s) not understood: ")
    assert "mpls" in row


def test_routes_not_read_are_not_a_missing_route(tmp_path, ruleset):
    # a node whose routes probe failed has no route facts: the walk must not conclude that
    # the CNI's routes are missing there (a false root cause an SRE would act on)
    bundle = _copy("lab-conntrack-full", tmp_path)

    def fail(rec: dict) -> None:
        for s in rec["sections"]:
            if s["probe"] == "routes":
                s.update(exit_code=2, stdout="", stderr="RTNETLINK answers: Invalid argument")

    _edit_node(bundle, "node2", fail)
    report = analyze(Bundle.read(bundle), ruleset, save=False).report
    rules = {f["rule"]: f for f in report["findings"]}
    assert "route-stops-pod-traffic" not in rules
    assert [(c["node"], c["status"]) for c in report["not_checked"] if c["probe"] == "routes"] \
        == [("node2", "failed")]
    # what the walk could not decide is said as such, as information
    undecided = rules["path-undecidable"]
    assert undecided["nodes"] == ["node2"] and undecided["severity"] == "info"
