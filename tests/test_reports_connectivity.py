"""The connectivity section: reach facts -> report -> heatmap, Markdown table, terminal line."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from rich.console import Console

from kubenetdiag.facts.model import Fact
from kubenetdiag.facts.registry import registry, validate_fact
from kubenetdiag.findings import build_report, connectivity
from kubenetdiag.reports import (
    REPORT_SCHEMA_PATH,
    print_summary,
    render_html,
    render_json,
    render_markdown,
    validate_report,
)
from test_reports import (
    ATTR_BREAK,
    SCRIPT,
    big_report,
    make_node,
    make_report,
    page_problems,
    page_text,
)

DOCS_SCHEMA = Path(__file__).resolve().parents[1] / "docs" / "report.schema.json"


def reach(src: str, dst: str, ok: bool, layer: str = "pod", detail: str | None = None) -> Fact:
    return Fact("reach", src, {"src": src, "dst": dst, "layer": layer, "ok": ok,
                               "rtt_ms": 0.5 if ok else None, "detail": detail})


def matrix(names: list[str], broken: set[str], layers: tuple[str, ...] = ("pod",)) -> list[Fact]:
    return [
        reach(s, d, not ({s, d} & broken), layer, None if not ({s, d} & broken) else "timeout")
        for layer in layers
        for s in names
        for d in names
        if s != d
    ]


def report_with(names: list[str], facts: list[Fact], findings: list[dict] | None = None) -> dict:
    records = [{"name": n, "address": f"198.18.0.{i}", "reachable": True, "error": None,
                "duration_s": 0.2} for i, n in enumerate(names, 1)]
    meta = {"started_at": "2026-11-22T03:12:08+00:00", "finished_at": "2026-11-22T03:12:09+00:00",
            "transport": "ssh", "inventory": None}
    return build_report(meta, records, facts, findings or [], rules_count=1, rules_digest="x",
                        bundle=None)


def summary(report: dict, lang: str = "en", width: int = 100) -> str:
    buf = io.StringIO()
    print_summary(report, Console(file=buf, width=width), lang)
    return buf.getvalue()


def heatmap_svgs(html: str) -> list[str]:
    return re.findall(r"<svg class=\"matrix\".*?</svg>", html, re.S)


# --------------------------------------------------------------------------- registry, report


def test_reach_kind_is_declared() -> None:
    spec = registry()["reach"]
    assert set(spec.attrs) == {"src", "dst", "layer", "ok", "rtt_ms", "detail", "icmp_from",
                                 "vantage"}
    assert spec.attrs["rtt_ms"].nullable and spec.attrs["detail"].nullable
    assert not spec.attrs["ok"].nullable and spec.attrs["ok"].type == "bool"
    assert validate_fact(reach("a", "b", True)) == []
    assert validate_fact(Fact("reach", "a", {"src": "a", "dst": "b", "layer": "pod"})) != []


def test_connectivity_orders_nodes_and_layers() -> None:
    facts = [reach("n2", "n1", True, "underlay"), reach("n2", "n1", False, "pod", "timeout"),
             reach("n1", "outside", True, "pod"), reach("n1", "n2", True, "bgp"),
             reach("n1", "n2", True, "pod")]
    c = connectivity(facts, ["n1", "n2"])
    assert c["nodes"] == ["n1", "n2", "outside"]  # inventory order, then other targets
    assert [la["layer"] for la in c["layers"]] == ["pod", "underlay", "bgp"]
    pod = c["layers"][0]
    assert pod["matrix"] == [".11", "0..", "..."]
    assert pod["failed"] == [{"src": "n2", "dst": "n1", "rtt_ms": None, "detail": "timeout"}]
    assert c["layers"][1]["failed"] == []


def test_a_failure_is_not_hidden_by_a_later_success() -> None:
    c = connectivity([reach("a", "b", False, detail="timeout"), reach("a", "b", True)], ["a", "b"])
    assert c["layers"][0]["matrix"] == [".0", ".."]
    assert c["layers"][0]["failed"][0]["detail"] == "timeout"


def test_failed_details_are_capped_but_the_matrix_is_whole() -> None:
    names = [f"n{i}" for i in range(40)]
    c = connectivity(matrix(names, set(names)), names)
    assert len(c["layers"][0]["failed"]) == 1000
    assert sum(row.count("0") for row in c["layers"][0]["matrix"]) == 40 * 39
    validate_report(report_with(names, matrix(names, set(names))))


def test_no_reach_facts_means_not_measured() -> None:
    report = report_with(["a", "b"], [])
    assert report["connectivity"] == {"nodes": [], "layers": []}
    validate_report(report)
    html = render_html(report)
    section = html[html.index('id="connectivity"'):html.index('id="findings"')]
    assert "was not measured" in section and "unknown, not healthy" in section
    assert "<svg" not in section and "answer" not in section
    assert "not measured" in render_markdown(report)
    assert "Node-to-node connectivity was not measured" in summary(report)


def test_reports_without_the_section_still_validate_and_render() -> None:
    report = make_report([make_node("a", 1)], [], [])
    assert "connectivity" not in report
    assert "was not measured" in render_html(report)


def test_json_carries_the_section_in_schema_order() -> None:
    report = report_with(["a", "b"], matrix(["a", "b"], {"b"}))
    out = json.loads(render_json(report))
    assert list(out)[-2:] == ["connectivity", "summary"]
    assert out["connectivity"] == {"nodes": ["a", "b"], "layers": [{
        "layer": "pod", "matrix": [".0", "0."],
        "failed": [{"src": "a", "dst": "b", "rtt_ms": None, "detail": "timeout"},
                   {"src": "b", "dst": "a", "rtt_ms": None, "detail": "timeout"}]}]}


def test_published_schema_matches_the_package() -> None:
    # docs/report.schema.json is what consumers read; it must be the one the renderers enforce.
    assert json.loads(DOCS_SCHEMA.read_text("utf-8")) == json.loads(
        REPORT_SCHEMA_PATH.read_text("utf-8"))


# --------------------------------------------------------------------------- HTML


def test_heatmap_marks_the_broken_node() -> None:
    names = ["n1", "n2", "n3", "n4"]
    report = report_with(names, matrix(names, {"n3"}, ("pod", "underlay")))
    html = render_html(report)
    assert page_problems(html) == []
    svgs = heatmap_svgs(html)
    assert len(svgs) == 2  # one per layer, pod first
    pod = svgs[0]
    assert len(re.findall(r"<rect x=\"\d+\" y=\"\d+\" width=\"\d+\" height=\"\d+\" "
                          r"class=\"c-", pod)) == 16
    assert pod.count('class="c-fail"') == 6
    assert pod.count('class="c-self"') == 4
    assert pod.count('<rect class="mark"') == 2  # n3's row and column
    assert re.findall(r'class="bad"><title>([^<]*)</title>', pod) == ["n3", "n3"]
    assert "<title>n1 → n3 · Pod network: FAILED (timeout)</title>" in pod
    assert "<title>n1 → n2 · Pod network: answered</title>" in pod
    section = html[html.index('id="connectivity"'):html.index('id="findings"')]
    assert "Pod network 6 of 12 pairs fail" in section
    assert "every probe from it and to it fails" in section
    assert "Other failing pairs" not in section  # all explained by n3


def test_odd_pair_is_listed_but_marks_nobody() -> None:
    names = ["n1", "n2", "n3"]
    facts = [reach(s, d, (s, d) != ("n1", "n2"), detail="timeout")
             for s in names for d in names if s != d]
    html = render_html(report_with(names, facts))
    assert '<rect class="mark"' not in html
    pairs = html[html.index('class="pairs"'):]
    assert "<td>n1</td><td>n2</td><td>timeout</td>" in pairs


def test_root_cause_node_is_marked_only_when_probes_around_it_fail() -> None:
    names = ["n1", "n2", "n3"]
    finding = {
        "rule": "r", "fault": "forward_chain_reject", "severity": "critical", "confidence": 1,
        "title": "t", "explain": "", "nodes": ["n1"], "root_cause": True, "explained_by": [],
        "explains": [], "evidence": [], "remediation": []}
    healthy = render_html(report_with(names, matrix(names, set()), [finding]))
    assert '<rect class="mark"' not in healthy
    facts = [reach(s, d, (s, d) != ("n1", "n2")) for s in names for d in names if s != d]
    odd = render_html(report_with(names, facts, [finding]))
    assert re.findall(r'class="bad"><title>([^<]*)</title>', odd)[:1] == ["n1"]
    # A bystander of an isolated node is not marked even if a finding names it.
    isolated = render_html(report_with(names, matrix(names, {"n2"}), [finding]))
    assert re.findall(r'class="bad"><title>([^<]*)</title>', heatmap_svgs(isolated)[0]) == [
        "n2", "n2"]


def test_large_cluster_folds_healthy_nodes() -> None:
    names = [f"w{i:03d}" for i in range(1, 501)]
    broken = {"w123"}
    facts = matrix(names, broken)
    facts += [reach("w007", "w300", False, detail="timeout")]  # one odd pair among healthy
    report = report_with(names, facts)
    html = render_html(report)
    assert len(html) < 400_000
    svg = heatmap_svgs(html)[0]
    labels = re.findall(r"<text [^>]*><title>([^<]*)</title>", svg)
    # Rows: the broken node, both ends of the odd pair, and one row for the 497 others.
    assert labels[:4] == ["w007", "w123", "w300", "497 other nodes, folded"]
    assert svg.count("<rect x=") == 16
    assert "497 of 500 nodes folded into one row and column" in html
    assert "497 other nodes, folded → w123 · Pod network: 497 of 497 pairs failed" in svg
    assert "w007 → 497 other nodes, folded · Pod network: 0 of 497 pairs failed" in svg
    assert "<td>w007</td><td>w300</td>" in html


def test_hostile_names_in_the_heatmap_stay_text() -> None:
    names = ["node1", SCRIPT, ATTR_BREAK]
    report = report_with(names, matrix(names, {SCRIPT}) + [
        reach("node1", ATTR_BREAK, False, layer=f"l{SCRIPT}", detail=ATTR_BREAK)])
    html = render_html(report)
    assert page_problems(html) == []
    assert SCRIPT not in html and ATTR_BREAK not in html
    text = page_text(html)
    assert SCRIPT in text and ATTR_BREAK in text
    md = render_markdown(report)
    assert not re.search(r"(?<!\\)<(script|img)", md)


def test_zh_cn_connectivity() -> None:
    names = ["n1", "n2", "n3"]
    report = report_with(names, matrix(names, {"n2"}, ("pod", "vxlan")))
    html = render_html(report, lang="zh-CN")
    for text in ("连通性", "Pod 网络", "VXLAN 隧道", "从它发出和到它的探测全部失败", "行：源节点"):
        assert text in html
    assert "Pod network" not in page_text(html) and "answered" not in page_text(html)
    assert "连通性" in render_markdown(report, lang="zh-CN")
    assert "⚠ n2：从它发出和到它的探测全部失败" in summary(report, "zh-CN")
    assert "未测量节点间连通性" in summary(report_with(names, []), "zh-CN")


# --------------------------------------------------------------------------- Markdown, terminal


def test_markdown_matrix_for_small_clusters() -> None:
    names = ["n1", "n2", "n3"]
    md = render_markdown(report_with(names, matrix(names, {"n2"})))
    assert "| **n2** | ✗ | — | ✗ |" in md
    assert "| **n1** | — | ✗ | ✓ |" in md
    assert "- ⚠ **n2**: every probe from it and to it fails" in md


def test_markdown_large_cluster_lists_pairs_not_a_matrix() -> None:
    names = [f"w{i:02d}" for i in range(1, 31)]
    facts = matrix(names, set()) + [reach("w01", "w02", False), reach("w03", "w04", False)]
    md = render_markdown(report_with(names, facts))
    assert "| **w01** |" not in md
    assert "| Pod network | w01 | w02 | no answer |" in md


def test_terminal_line_names_the_node_first() -> None:
    names = ["n1", "n2", "n3"]
    out = summary(report_with(names, matrix(names, {"n3"}, ("pod", "underlay"))), width=80)
    line = next(ln for ln in out.splitlines() if "Connectivity" in ln)
    assert line.strip().startswith("Connectivity: ⚠ n3: every probe from it and to it fails")
    assert len(line) <= 80
    healthy = summary(report_with(names, matrix(names, set())))
    assert "Connectivity: Pod network ok (6)" in healthy


def test_terminal_summary_500_nodes_with_matrix_fits_one_screen() -> None:
    report = big_report(500)
    names = [n["name"] for n in report["nodes"]]
    report["connectivity"] = connectivity(matrix(names, {names[100]}), names)
    out = summary(report)
    lines = out.splitlines()
    assert len(lines) <= 24 and all(len(ln) <= 100 for ln in lines)
    assert "⚠ worker-0101: every probe from it and to it fails" in out
