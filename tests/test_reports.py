"""Renderers: schema, HTML safety and layout, Markdown escaping, terminal summary."""

from __future__ import annotations

import copy
import io
import json
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jinja2 import StrictUndefined, UndefinedError
from rich.console import Console

from kubenetdiag.reports import (
    REPORT_SCHEMA_PATH,
    print_summary,
    render_html,
    render_json,
    render_markdown,
    validate_report,
)
from kubenetdiag.reports.html_report import _env as _html_env
from kubenetdiag.reports.markdown_report import md_cell, md_fence
from kubenetdiag.reports.sanitize import clean_block, clean_line
from probe_sections import example_report

SCRIPT = "<script>alert(1)</script>"
ATTR_BREAK = '"><img src=x onerror=alert(1)>'
ANSI_NAME = "node-\x1b[5m\x1b]0;pwned\x07blink\x1b[0m"
SEVERITY_ORDER = ("critical", "error", "warning", "info")


# --------------------------------------------------------------------------- report builders


def make_node(
    name: str, i: int, *, reachable: bool = True, errors: list[str] | None = None
) -> dict:
    return {
        "name": name,
        "address": f"198.18.{i // 250}.{i % 250 + 1}",
        "reachable": reachable,
        "errors": errors or [],
        "duration_s": round(1.4 + (i % 7) * 0.13, 2) if reachable else 10.0,
        "kernel": "5.15.0-91-generic" if reachable else None,
    }


def make_report(nodes: list[dict], findings: list[dict], not_checked: list[dict]) -> dict:
    """A report as findings.build_report would make it, with a summary that adds up."""
    by_sev = {s: sum(1 for f in findings if f["severity"] == s) for s in SEVERITY_ORDER}
    unreachable = sum(1 for n in nodes if not n["reachable"])
    if nodes and unreachable == len(nodes):
        exit_code = 3
    elif by_sev["critical"] + by_sev["error"] + by_sev["warning"]:
        exit_code = 1
    else:
        exit_code = 0
    return {
        "schema": "kubenetdiag/report/v1",
        "tool": {"name": "kubenetdiag", "version": "0.1.0"},
        "rules": {"count": 42, "digest": "sha256:6f1c2d0e9b7a44c1"},
        "run": {
            "started_at": "2026-11-22T03:12:08+00:00",
            "finished_at": "2026-11-22T03:12:19.5+00:00",
            "transport": "ssh",
            "inventory": "inventories/prod-east.yaml",
            "bundle": "bundles/2026-11-22T031208",
        },
        "nodes": nodes,
        "findings": findings,
        "not_checked": not_checked,
        "summary": {
            "nodes": len(nodes),
            "unreachable": unreachable,
            "findings": len(findings),
            "root_causes": sum(1 for f in findings if f["root_cause"]),
            "by_severity": by_sev,
            "exit_code": exit_code,
        },
    }


def ip_forward_finding(nodes: list[str], excerpt: str = "net.ipv4.ip_forward = 0") -> dict:
    return {
        "rule": "ip-forward-disabled",
        "fault": "ip_forward_disabled",
        "severity": "critical",
        "confidence": 0.95,
        "title": "IP forwarding is disabled",
        "explain": (
            "net.ipv4.ip_forward is 0, so the kernel drops every packet it would have to route.\n"
            "Pods on these nodes cannot reach pods on other nodes or services."
        ),
        "nodes": nodes,
        "root_cause": True,
        "explained_by": [],
        "explains": ["pod_cidr_unreachable"],
        "evidence": [
            {
                "kind": "sysctl",
                "node": n,
                "attrs": {"key": "net.ipv4.ip_forward", "value": "0", "number": 0, "present": True},
                "source": {
                    "probe": "sysctl",
                    "command": "sysctl -a",
                    "exit_code": 0,
                    "excerpt": excerpt,
                },
            }
            for n in nodes
        ],
        "remediation": [
            {
                "text": "Confirm the running value.",
                "command": "sysctl net.ipv4.ip_forward",
                "changes_state": False,
            },
            {
                "text": "Enable forwarding now and keep it across reboots.",
                "command": "sysctl -w net.ipv4.ip_forward=1\n"
                "echo 'net.ipv4.ip_forward = 1' > /etc/sysctl.d/99-kubernetes.conf",
                "changes_state": True,
            },
        ],
        "i18n": {
            "zh-CN": {
                "title": "IP 转发已关闭",
                "explain": "net.ipv4.ip_forward 为 0，内核会丢弃所有需要转发的数据包。",
                "remediation": ["确认当前值。", "立即开启转发并持久化。"],
            }
        },
    }


def forward_reject_finding(node: str, comment: str) -> dict:
    spec = (
        f'-A FORWARD -m comment --comment "{comment}" '
        "-j REJECT --reject-with icmp-host-prohibited"
    )
    return {
        "rule": "forward-chain-reject",
        "fault": "forward_chain_reject",
        "severity": "error",
        "confidence": "high",
        "title": "The FORWARD chain rejects pod traffic",
        "explain": "An unconditional REJECT sits before the CNI's ACCEPT rules in filter/FORWARD.",
        "nodes": [node],
        "root_cause": True,
        "explained_by": [],
        "explains": ["pod_cidr_unreachable"],
        "evidence": [
            {
                "kind": "iptables_rule",
                "node": node,
                "attrs": {
                    "table": "filter",
                    "chain": "FORWARD",
                    "position": 1,
                    "target": "REJECT",
                    "target_kind": "reject",
                    "unconditional": True,
                    "spec": spec,
                    "comment": comment,
                    "pkts": 1834,
                    "bytes": 110040,
                },
                "source": {
                    "probe": "iptables",
                    "command": "iptables-save -c",
                    "exit_code": 0,
                    "excerpt": f"*filter\n:FORWARD ACCEPT [0:0]\n[1834:110040] {spec}\nCOMMIT",
                },
            }
        ],
        "remediation": [
            {
                "text": "List the FORWARD chain with positions.",
                "command": "iptables -L FORWARD -n -v --line-numbers",
                "changes_state": False,
            },
            {
                "text": "Delete the REJECT rule (check the position first).",
                "command": "iptables -D FORWARD 1",
                "changes_state": True,
            },
        ],
    }


def consequence_finding(nodes: list[str]) -> dict:
    return {
        "rule": "cross-node-pod-traffic-fails",
        "fault": "pod_cidr_unreachable",
        "severity": "error",
        "confidence": 0.8,
        "title": "Pods cannot reach pods on other nodes",
        "explain": "Pings between pod CIDRs fail while the underlay between the same nodes works.",
        "nodes": nodes,
        "root_cause": False,
        "explained_by": ["ip-forward-disabled", "forward-chain-reject"],
        "explains": [],
        "evidence": [
            {
                "kind": "symptom",
                "node": nodes[0],
                "attrs": {"name": "pod_cidr_unreachable", "target": nodes[-1]},
            }
        ],
        "remediation": [],
    }


def healthy_report() -> dict:
    nodes = [make_node(f"node{i}", i) for i in range(1, 4)]
    return make_report(nodes, [], [])


def one_root_cause_report() -> dict:
    nodes = [make_node(f"node{i}", i) for i in range(1, 4)]
    return make_report(nodes, [ip_forward_finding(["node2"])], [])


def two_causes_report(comment: str = "block pods") -> dict:
    nodes = [make_node(f"node{i}", i) for i in range(1, 4)]
    # Deliberately not in display order: renderers must sort, not trust the producer.
    findings = [
        consequence_finding(["node1", "node2", "node3"]),
        forward_reject_finding("node3", comment),
        ip_forward_finding(["node2"]),
    ]
    return make_report(nodes, findings, [])


def unreachable_report() -> dict:
    nodes = [
        make_node("node1", 1),
        make_node("node2", 2),
        make_node("node3", 3, reachable=False, errors=["ssh: connect timed out after 10 s"]),
    ]
    not_checked = [
        {
            "node": "node3",
            "probe": "*",
            "status": "unreachable",
            "reason": "ssh: connect timed out after 10 s",
            "blocks": "every check on node3",
        },
        {
            "node": "node1",
            "probe": "conntrack",
            "status": "missing_tool",
            "reason": "conntrack: command not found",
            "blocks": "conntrack_table_full, conntrack_insert_failed",
        },
    ]
    return make_report(nodes, [], not_checked)


def hostile_report() -> dict:
    """Every string a node controls, set to something that would be markup somewhere."""
    names = ["node1", SCRIPT, ATTR_BREAK, ANSI_NAME, "edge|01", "[bold red]boom[/]"]
    nodes = [make_node(n, i) for i, n in enumerate(names, 1)]
    nodes[1]["errors"] = [f"banner: {SCRIPT}"]
    nodes[2]["kernel"] = ATTR_BREAK
    excerpt = f"net.ipv4.ip_forward = 0\n\x1b[31mred\x1b[0m {SCRIPT}\x07\x00\ttab\r\nend\u202e"
    findings = [
        ip_forward_finding([SCRIPT, ATTR_BREAK], excerpt=excerpt),
        forward_reject_finding(ANSI_NAME, f"{ATTR_BREAK} `tick` | pipe {SCRIPT}"),
        consequence_finding(["node1", SCRIPT]),
    ]
    findings[0]["title"] = f"IP forwarding is disabled {SCRIPT}"
    not_checked = [
        {
            "node": "edge|01",
            "probe": "ss",
            "status": "failed",
            "reason": f"process {SCRIPT} held the socket\x1b[2J",
            "blocks": "listen_queue_overflow",
        }
    ]
    return make_report(nodes, findings, not_checked)


def big_report(n: int = 500) -> dict:
    names = [f"worker-{i:04d}" for i in range(1, n + 1)]
    nodes = [make_node(name, i) for i, name in enumerate(names, 1)]
    for i in (n - 4, n - 2):  # unreachable nodes late in inventory order: must still come first
        nodes[i]["reachable"] = False
        nodes[i]["kernel"] = None
        nodes[i]["errors"] = ["ssh: Error reading SSH protocol banner"]
    affected = names[100:130]
    findings = [
        consequence_finding(affected),
        ip_forward_finding(affected),
        forward_reject_finding(names[300], "k8s block"),
    ]
    not_checked = [
        {"node": names[i], "probe": "*", "status": "unreachable",
         "reason": "ssh: Error reading SSH protocol banner", "blocks": "every check"}
        for i in (n - 4, n - 2)
    ]
    return make_report(nodes, findings, not_checked)


ALL_REPORTS = {
    "healthy": healthy_report,
    "one_root_cause": one_root_cause_report,
    "two_causes": two_causes_report,
    "unreachable": unreachable_report,
    "hostile": hostile_report,
    "big": big_report,
}


# --------------------------------------------------------------------------- HTML inspection


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.style: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        (self.style if self._in_style else self.text).append(data)


# Inline SVG is allowed (the heatmap), but not the SVG elements that load, link or animate.
FORBIDDEN_TAGS = {"script", "link", "img", "iframe", "object", "embed", "base", "form",
                  "video", "audio", "source", "input", "image", "use", "foreignobject",
                  "feimage", "animate", "set"}
FETCHING_ATTRS = {"src", "srcset", "action", "formaction", "background", "poster", "data"}


def page_problems(html: str) -> list[str]:
    """Everything that would let the page run code or fetch anything outside itself."""
    page = _Page()
    page.feed(html)
    page.close()
    problems = []
    ids = {a["id"] for _, a in page.tags if a.get("id")}
    for tag, attrs in page.tags:
        if tag in FORBIDDEN_TAGS:
            problems.append(f"<{tag}> tag")
        for name, value in attrs.items():
            if name.startswith("on"):
                problems.append(f"event handler {name} on <{tag}>")
            if name in FETCHING_ATTRS:
                problems.append(f"{name}= on <{tag}>")
            if name == "style":
                problems.append(f"inline style attribute on <{tag}>")
            if name in ("href", "xlink:href"):
                if not value or not value.startswith("#"):
                    problems.append(f"href={value!r} is not a #fragment")
                elif value[1:] not in ids:
                    problems.append(f"href={value!r} points to no element")
        if tag == "meta" and (attrs.get("http-equiv") or "").lower() == "refresh":
            problems.append("meta refresh")
    css = "".join(page.style)
    for needle in ("url(", "@import", "http:", "https:", "//"):
        if needle in css.replace("/*", "").replace("*/", ""):
            problems.append(f"stylesheet contains {needle}")
    return problems


def page_text(html: str) -> str:
    page = _Page()
    page.feed(html)
    return "".join(page.text)


def finding_articles(html: str) -> list[str]:
    return re.findall(r'<article class="finding[^"]*" id="f-\d+">.*?</article>', html, re.S)


# --------------------------------------------------------------------------- schema


@pytest.mark.parametrize("name", sorted(ALL_REPORTS))
def test_fixture_reports_validate(name: str) -> None:
    validate_report(ALL_REPORTS[name]())


def test_schema_file_is_draft_2020_12() -> None:
    schema = json.loads(REPORT_SCHEMA_PATH.read_text("utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_validate_rejects_finding_without_fault() -> None:
    report = two_causes_report()
    del report["findings"][1]["fault"]
    with pytest.raises(ValueError, match=r"\$\.findings\[1\]\.fault: required property"):
        validate_report(report)


def test_validate_reports_the_first_problem_in_document_order() -> None:
    report = big_report()
    report["nodes"][12]["reachable"] = "no"
    report["nodes"][3]["duration_s"] = -1
    report["findings"][0]["severity"] = "fatal"
    with pytest.raises(ValueError, match=r"\$\.nodes\[3\]\.duration_s"):
        validate_report(report)


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda r: r["findings"][0]["evidence"][0]["source"].update(exit_code="0"),
         r"\$\.findings\[0\]\.evidence\[0\]\.source\.exit_code"),
        (lambda r: r["findings"][0]["remediation"][0].pop("changes_state"),
         r"\$\.findings\[0\]\.remediation\[0\]\.changes_state"),
        (lambda r: r["findings"][0]["i18n"].update({"zh-CN": {"title": 3}}),
         r'\$\.findings\[0\]\.i18n\["zh-CN"\]\.title'),
        (lambda r: r.update(schema="kubenetdiag/report/v2"), r"\$\.schema"),
        (lambda r: r["findings"][0].update(confidence=1.5), r"\$\.findings\[0\]\.confidence"),
        (lambda r: r["summary"].update(exit_code=2), r"\$\.summary\.exit_code"),
    ],
)
def test_validate_names_the_path(mutate: Callable[[dict], object], path: str) -> None:
    report = one_root_cause_report()
    mutate(report)
    with pytest.raises(ValueError, match=path):
        validate_report(report)


def test_build_report_refuses_a_report_that_breaks_the_schema() -> None:
    """The run checks its report where it is built, before anything is written or rendered."""
    from kubenetdiag.findings import build_report

    records = [{"name": "", "address": "10.0.0.1", "reachable": False, "error": "refused"}]
    meta = {"started_at": "t", "finished_at": "t", "transport": "ssh", "inventory": None}
    with pytest.raises(ValueError, match=r"\$\.nodes\[0\]\.name"):
        build_report(meta, records, [], [], rules_count=1, rules_digest="x", bundle=None)


def test_every_renderer_refuses_an_invalid_report() -> None:
    report = one_root_cause_report()
    del report["findings"][0]["fault"]
    for render in (render_html, render_markdown, render_json):
        with pytest.raises(ValueError, match="fault"):
            render(report)
    with pytest.raises(ValueError, match="fault"):
        print_summary(report, Console(file=io.StringIO()))


# --------------------------------------------------------------------------- JSON


def test_json_round_trips_with_stable_key_order() -> None:
    report = two_causes_report()
    scrambled = json.loads(json.dumps(report, sort_keys=True))  # producer's key order lost
    out = render_json(scrambled)
    assert json.loads(out) == report
    assert out == render_json(report)
    top = list(json.loads(out))
    assert top == ["schema", "tool", "rules", "run", "nodes", "findings", "not_checked", "summary"]
    assert list(json.loads(out)["findings"][0])[:4] == ["rule", "fault", "severity", "confidence"]
    assert out.startswith('{\n  "schema": ')


def test_json_keeps_control_characters_inert() -> None:
    out = render_json(hostile_report())
    assert "\x1b" not in out and "\x9b" not in out and "\u202e" not in out
    assert json.loads(out)["nodes"][3]["name"] == ANSI_NAME  # data itself is not altered


# --------------------------------------------------------------------------- HTML


@pytest.mark.parametrize("name", sorted(ALL_REPORTS))
def test_html_is_self_contained(name: str) -> None:
    html = render_html(ALL_REPORTS[name]())
    assert "<script" not in html.lower()
    assert page_problems(html) == []
    assert "<style>" in html and ".badge" in html  # CSS inlined, not linked


def test_page_checker_catches_injection() -> None:
    # The checks above are only worth something if they can fail.
    assert page_problems(f"<p>{ATTR_BREAK}</p>")
    assert page_problems(f"<p>{SCRIPT}</p>")
    assert page_problems('<a href="https://example.invalid/">x</a>')
    assert page_problems('<style>body{background:url(x.png)}</style>')
    assert page_problems('<a href="#nowhere">x</a>')


def test_html_escapes_hostile_strings() -> None:
    html = render_html(hostile_report())
    assert page_problems(html) == []
    assert SCRIPT not in html and ATTR_BREAK not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    text = page_text(html)
    # Shown to the reader as the literal strings they are.
    assert SCRIPT in text
    assert '"><img src=x onerror=alert(1)>' in text
    assert "[bold red]boom[/]" in text


def test_html_strips_control_characters() -> None:
    html = render_html(hostile_report())
    for ch in ("\x1b", "\x07", "\x00", "\r", "\u202e"):
        assert ch not in html
    text = page_text(html)
    assert "node-blink" in text  # the name survives without its escape sequences
    assert "red <script>alert(1)</script>\ttab\nend" in text  # newline and tab kept


def test_html_root_causes_first_by_severity() -> None:
    html = render_html(two_causes_report())
    articles = finding_articles(html)
    assert len(articles) == 3
    assert "IP forwarding is disabled" in articles[0] and "sev-critical" in articles[0]
    assert "FORWARD chain rejects" in articles[1] and "sev-error" in articles[1]
    assert "Pods cannot reach pods" in articles[2] and "role-consequence" in articles[2]
    banner = html[html.index('id="verdict"'):html.index("</header>")]
    assert banner.index("IP forwarding") < banner.index("FORWARD chain")
    assert "Pods cannot reach pods" not in banner  # folded into a count
    assert "1 consequence, explained by the root causes above" in banner
    assert "2 root causes found" in banner


def test_html_links_consequence_to_its_causes() -> None:
    html = render_html(two_causes_report())
    consequence = finding_articles(html)[2]
    assert "Explained by" in consequence
    assert 'href="#f-1"' in consequence and 'href="#f-2"' in consequence
    assert "Explains" in finding_articles(html)[0]


def test_html_marks_state_changing_commands() -> None:
    html = render_html(one_root_cause_report())
    steps = re.findall(r'<li class="step (step-r[ow])">(.*?)</li>', html, re.S)
    assert len(steps) == 2
    by_cmd = {("sysctl -w" in body): (cls, body) for cls, body in steps}
    cls, body = by_cmd[True]
    assert cls == "step-rw" and "changes state" in body and "<code>sysctl -w" in body
    cls, body = by_cmd[False]
    assert cls == "step-ro" and "read-only" in body and "changes state" not in body
    assert ".step-rw .cmd" in html  # styled apart, not only labelled


def test_html_evidence_table() -> None:
    html = render_html(two_causes_report())
    article = finding_articles(html)[1]
    assert "<th>Kind</th>" in article
    assert "<code>iptables_rule</code>" in article
    assert "<code>iptables-save -c</code>" in article
    assert "<code>target=REJECT</code>" in article
    assert "<pre>*filter\n:FORWARD ACCEPT [0:0]" in article


def test_html_template_environment_is_strict() -> None:
    env = _html_env()
    assert env.autoescape is True  # not select_autoescape, which skips .j2 files
    assert env.undefined is StrictUndefined
    with pytest.raises(UndefinedError):
        env.get_template("report.html.j2").render()


def test_html_healthy_says_no_problems() -> None:
    html = render_html(healthy_report())
    assert 'class="verdict level-ok"' in html
    assert "No problems found" in html
    assert "could not be checked" not in html


def test_html_unreachable_nodes_are_not_called_healthy() -> None:
    html = render_html(unreachable_report())
    assert "No problems found in what could be checked" in html
    assert "1 node could not be checked" in html
    assert "What was not checked is unknown, not healthy." in html
    section = html[html.index('id="not-checked"'):html.index('id="run"')]
    assert "conntrack: command not found" in section and "every check on node3" in section
    overview = html[html.index('id="overview"'):html.index('id="not-checked"')]
    assert overview.index("node3") < overview.index("node1")  # unreachable first
    assert "2 healthy nodes" not in overview  # node1 has a probe that could not run
    assert "1 healthy node" in overview


def test_html_all_nodes_unreachable() -> None:
    report = make_report([make_node("a", 1, reachable=False), make_node("b", 2, reachable=False)],
                         [], [])
    assert report["summary"]["exit_code"] == 3
    html = render_html(report)
    assert "Nothing could be checked" in html and "No problems found" not in html


def test_html_500_nodes() -> None:
    html = render_html(big_report(500))
    assert page_problems(html) == []
    overview = html[html.index('id="overview"'):html.index('id="not-checked"')]
    rows = re.findall(r'<tr id="n-(\d+)" class="state-(\w+)">', overview)
    states = [s for _, s in rows]
    # Every node that needs someone keeps its row, the ones nobody can reach first.
    assert states[:2] == ["unreachable", "unreachable"]
    assert states[2:] == ["affected"] * 31  # 30 + 1 nodes named by findings
    # The 467 healthy ones are counted and named, and the page says where their rows are.
    assert "467 healthy nodes are counted here, not given rows" in overview
    assert "Their rows are in the JSON report, bundles/2026-11-22T031208/report.json." in overview
    names = re.search(r'<p class="names">([^<]*)</p>', overview).group(1).split(", ")
    assert len(names) == 467 and names[0] == "worker-0001"
    assert len(html) < 300_000
    # A finding on 30 nodes names 20 and folds the rest; so does its evidence beyond 10 rows.
    article = finding_articles(html)[0]
    assert "<details><summary>+10 more</summary>" in article
    assert "<details><summary>20 more evidence items</summary>" in article


def test_html_5000_nodes_shows_every_broken_node_and_counts_the_healthy() -> None:
    report = big_report(5000)
    report["nodes"][4200]["errors"] = ["sudo: a password is required"]
    # Evidence gathered on a healthy node: it has no row to link to, so its name stays as text.
    report["findings"][2]["evidence"][0]["node"] = "worker-0007"
    html = render_html(report)
    assert page_problems(html) == []  # no link points at a row that was folded
    overview = html[html.index('id="overview"'):html.index('id="not-checked"')]
    rows = re.findall(r'<tr id="n-\d+" class="state-(\w+)">\n<td>([^<]*)</td>', overview)
    assert rows[:2] == [("unreachable", "worker-4997"), ("unreachable", "worker-4999")]
    assert rows[2:33] == [("affected", f"worker-{i:04d}") for i in (*range(101, 131), 301)]
    assert rows[33:] == [("partial", "worker-4201")]
    assert "4966 healthy nodes are counted here" in overview
    assert "worker-0007" in re.search(r'<p class="names">([^<]*)</p>', overview).group(1)
    reject = next(a for a in finding_articles(html) if "forward-chain-reject" in a)
    assert "<td>worker-0007</td>" in reject
    assert len(html) < 500_000


def ipvsadm_missing_everywhere(report: dict) -> tuple[dict, list[str]]:
    reachable = [n["name"] for n in report["nodes"] if n["reachable"]]
    report["not_checked"] += [
        {"node": n, "probe": "ipvs", "status": "missing_tool", "reason": "ipvsadm: not found",
         "blocks": "IPVS virtual servers"}
        for n in reachable
    ]
    return report, reachable


def test_html_groups_what_was_not_checked() -> None:
    report, reachable = ipvsadm_missing_everywhere(big_report(400))
    report["not_checked"] += [
        {"node": n, "probe": "bgp", "status": "failed", "reason": "birdc: socket refused",
         "blocks": "BGP sessions"}
        for n in reachable[:25]
    ]
    html = render_html(report)
    assert page_problems(html) == []
    section = html[html.index('id="not-checked"'):html.index('id="run"')]
    rows = re.findall(r"<tr>\n<td>(.*?)</td>\n<td><code>(.*?)</code>", section, re.S)
    assert [probe for _, probe in rows] == ["*", "ipvs", "bgp"]  # unreachable nodes first
    unreachable, everyone, some = (cell for cell, _ in rows)
    assert re.findall(r">(worker-\d+)</a>", unreachable) == ["worker-0397", "worker-0399"]
    assert everyone == "all 398 reachable nodes"
    # A group that is not everyone names every one of its nodes: 20, then 5 folded.
    assert re.findall(r">(worker-\d+)</a>", some) == reachable[:25]
    assert "<details><summary>+5 more</summary>" in some


def test_html_folds_nodes_partly_checked_only_like_every_node() -> None:
    """ipvsadm missing on every node makes every node 'partly checked'; the overview still
    shows only the nodes that differ, and says what the others are."""
    report, _ = ipvsadm_missing_everywhere(big_report(400))
    report["not_checked"].append({"node": "worker-0042", "probe": "bgp", "status": "failed",
                                  "reason": "birdc: socket refused", "blocks": "BGP sessions"})
    html = render_html(report)
    assert page_problems(html) == []
    overview = html[html.index('id="overview"'):html.index('id="not-checked"')]
    rows = re.findall(r'<tr id="n-\d+" class="state-(\w+)">\n<td>([^<]*)</td>', overview)
    assert [s for s, _ in rows] == ["unreachable"] * 2 + ["affected"] * 31 + ["partial"]
    assert rows[-1] == ("partial", "worker-0042")  # a gap of its own: it keeps its row
    assert ("366 nodes are counted here, not given rows: they are only partly checked where "
            "every reachable node is (see Not checked)") in overview
    names = re.search(r'<details class="partial">\n<summary>366 partly checked nodes</summary>'
                      r'\n<p class="names">([^<]*)</p>', overview).group(1).split(", ")
    assert len(names) == 366 and "worker-0001" in names and "worker-0042" not in names
    assert "healthy" not in overview  # partly checked is unknown, never healthy


def test_html_zh_cn() -> None:
    html = render_html(two_causes_report(), lang="zh-CN")
    assert '<html lang="zh-CN">' in html
    for ui in ("证据", "修复步骤", "集群概览", "未检查项", "会改变状态", "只读", "置信度"):
        assert ui in html
    assert '<span class="tag role-root">根因</span>' in html
    assert '<span class="tag role-consequence">连带问题</span>' in html
    assert '<span class="badge sev-critical">严重</span>' in html
    assert "IP 转发已关闭" in html and "立即开启转发并持久化。" in html
    # No Chinese text for this rule: English, not an empty title.
    assert "The FORWARD chain rejects pod traffic" in html
    assert "Root cause" not in html and "Evidence" not in html
    assert page_problems(html) == []


def test_untitled_finding_shows_its_fault_code() -> None:
    report = one_root_cause_report()
    report["findings"][0]["title"] = ""
    report["findings"][0]["i18n"]["zh-CN"]["title"] = ""
    for lang in ("en", "zh-CN"):
        html = render_html(report, lang=lang)
        assert "<h3>ip_forward_disabled</h3>" in html


def test_unknown_language_is_an_error() -> None:
    with pytest.raises(ValueError, match="zh-CN"):
        render_html(healthy_report(), lang="fr")
    assert '<html lang="zh-CN">' in render_html(healthy_report(), lang="zh_CN")


# --------------------------------------------------------------------------- Markdown


def _table_rows(md: str) -> list[str]:
    return [ln for ln in md.splitlines() if ln.startswith("|")]


def _cells(row: str) -> int:
    return len(re.findall(r"(?<!\\)\|", row)) - 1


def test_markdown_escapes_pipe_in_hostname() -> None:
    md = render_markdown(hostile_report())
    assert "edge\\|01" in md
    assert "edge|01" not in md.replace("edge\\|01", "")
    for block in md.split("\n\n"):
        rows = _table_rows(block)
        if rows:
            assert len({_cells(r) for r in rows}) == 1, rows  # no row grew an extra cell


def test_markdown_hostile_strings_stay_text() -> None:
    md = render_markdown(hostile_report())
    outside_fences = re.sub(r"(`{3,})[a-z]*\n.*?\n\1", "", md, flags=re.S)
    assert not re.search(r"(?<!\\)<(script|img)", outside_fences)
    assert "\\<script\\>" in outside_fences
    assert "\\[bold red\\]boom\\[/\\]" in outside_fences
    assert "\\`tick\\`" in outside_fences
    assert "\x1b" not in md and "\x07" not in md


def test_markdown_commands_are_fenced_and_marked() -> None:
    md = render_markdown(one_root_cause_report())
    assert "```sh\nsysctl net.ipv4.ip_forward\n```" in md
    assert "```sh\nsysctl -w net.ipv4.ip_forward=1\necho" in md
    ro = md.index("Confirm the running value. — **read-only**")
    rw = md.index("Enable forwarding now and keep it across reboots. — ⚠ **changes state**")
    assert ro < rw
    assert md.startswith("# 1 root cause found\n")
    assert "## Findings" in md and "## Cluster overview" in md and "## Not checked" in md


def test_markdown_escaping_helpers() -> None:
    assert md_cell("a|b`c\nd") == "a\\|b\\`c<br>d"
    fenced = md_fence("echo ```x```")
    assert fenced.startswith("````sh\n") and fenced.endswith("\n````")


def test_markdown_500_nodes_stays_ticket_sized() -> None:
    md = render_markdown(big_report(500))
    assert "467 healthy nodes" in md
    assert "worker-0001 " not in md  # healthy nodes are counted, not listed
    assert len(md) < 60_000


def test_markdown_zh_cn() -> None:
    md = render_markdown(two_causes_report(), lang="zh-CN")
    assert "发现 2 个根因" in md and "## 诊断结果" in md and "会改变状态" in md


# --------------------------------------------------------------------------- terminal


def _summary(report: dict, *, terminal: bool = False, lang: str = "en", **kw) -> str:
    buf = io.StringIO()
    console = Console(file=buf, record=True, force_terminal=terminal, width=100,
                      color_system="truecolor" if terminal else None)
    print_summary(report, console, lang, **kw)
    return buf.getvalue()


def test_terminal_summary_content() -> None:
    out = _summary(two_causes_report(), full_report="incident.html")
    lines = out.splitlines()
    assert lines[0].startswith("kubenetdiag  2 root causes found")
    assert "3 nodes" in lines[0] and "3 findings (1 critical, 2 error)" in lines[0]
    assert out.index("IP forwarding is disabled") < out.index("FORWARD chain rejects")
    assert "$ sysctl net.ipv4.ip_forward   read-only" in out
    assert "$ iptables -L FORWARD -n -v --line-numbers   read-only" in out
    assert "Pods cannot reach pods" not in out
    assert "1 consequence, explained by the root causes above" in out
    assert lines[-1] == "Full report: incident.html"


def test_terminal_summary_unreachable_and_hint() -> None:
    out = _summary(unreachable_report())
    assert "1 node could not be checked: node3" in out
    assert "What was not checked is unknown, not healthy." in out
    assert "bundles/2026-11-22T031208" in out.splitlines()[-1]


def test_terminal_summary_says_middleware_was_not_checked_and_how_to_declare_it() -> None:
    nodes = [make_node(f"node{i}", i) for i in range(1, 4)]
    entry = {"node": "cluster", "probe": "active.endpoints", "status": "not_queried",
             "reason": "no endpoint is declared in the inventory",
             "blocks": "connect timeouts to middleware"}
    out = _summary(make_report(nodes, [], [entry]))
    assert "Connect timeouts to middleware were not checked" in out
    assert "kubenetdiag_endpoints" in out
    assert "kubenetdiag_endpoints" in _summary(make_report(nodes, [], [entry]), lang="zh-CN")
    assert "kubenetdiag_endpoints" not in _summary(healthy_report())


def test_terminal_summary_neutralises_hostile_names() -> None:
    plain = _summary(hostile_report())
    assert "\x1b" not in plain and "\x07" not in plain
    assert "node-blink" in plain
    colored = _summary(hostile_report(), terminal=True)
    assert "\x1b[" in colored  # rich's own styling is there...
    assert "\x1b]" not in colored and "\x1b[5m" not in colored and "\x07" not in colored
    assert "\x1b[2J" not in colored  # ...but nothing the data asked for


def test_terminal_summary_does_not_interpret_markup() -> None:
    report = one_root_cause_report()
    report["nodes"][1]["name"] = "[bold red]boom[/]"
    report["findings"][0]["nodes"] = ["[bold red]boom[/]"]
    report["findings"][0]["evidence"][0]["node"] = "[bold red]boom[/]"
    out = _summary(report, full_report="[link=https://x.invalid]here[/link] :warning:")
    assert "[bold red]boom[/]" in out
    assert "[link=https://x.invalid]here[/link] :warning:" in out


def test_terminal_summary_fits_one_screen_at_500_nodes() -> None:
    out = _summary(big_report(500))
    lines = out.splitlines()
    assert len(lines) <= 24
    assert all(len(line) <= 100 for line in lines)
    assert "+25 more" in out  # 30 affected nodes, 5 shown
    assert "2 nodes could not be checked: worker-0497, worker-0499" in out


def test_terminal_summary_healthy_and_zh() -> None:
    assert "No problems found" in _summary(healthy_report()).splitlines()[0]
    zh = _summary(two_causes_report(), lang="zh-CN")
    assert "发现 2 个根因" in zh and "会改变状态" not in zh.splitlines()[0]
    assert "只读" in zh


# --------------------------------------------------------------------------- sanitizer


def test_sanitizer() -> None:
    raw = "a\x1b[31mb\x1b[0m\x1b]8;;http://x\x1b\\c\x9b2Jd\te\nf\r\n"
    assert clean_block(raw) == "abcd\te\nf\n"
    assert clean_line("x\ny\tz\u202e\u2066w\x00") == "x y zw"
    assert clean_block(None) == ""


BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


@given(st.text(alphabet=st.sampled_from("ab ;[]0m\\\t\n\r\x00\x07\x1b\x7f\x9b\x9c"
                                        "\u00a0\u2028中" + BIDI)) | st.text())
def test_sanitizer_leaves_no_control_and_keeps_plain_text(text: str) -> None:
    block, line = clean_block(text), clean_line(text)
    for out in (block, line):
        assert not any(c in BIDI for c in out)
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", out)
    assert "\n" not in line and "\t" not in line
    if text.isprintable():  # nothing to remove: names and cells come through as they are
        assert block == text and line == text.strip()


def test_renderers_do_not_mutate_the_report() -> None:
    report = hostile_report()
    before = copy.deepcopy(report)
    render_html(report)
    render_markdown(report)
    render_json(report)
    _summary(report)
    assert report == before


def test_evidence_from_the_api_shows_the_http_status_not_an_exit_code():
    """A fact the Kubernetes API gave has no exit code: the evidence table shows the status
    of the answer it was read from."""
    from kubenetdiag.bundle import Bundle
    from kubenetdiag.engine import load_ruleset
    from kubenetdiag.pipeline import analyze
    from kubenetdiag.reports import render_markdown

    example = Path(__file__).resolve().parent.parent / "examples" / "bundles" / "lab-three-faults"
    report = analyze(Bundle.read(example), load_ruleset(), save=False).report
    api = [e for f in report["findings"] for e in f["evidence"]
           if e["source"]["probe"].startswith("api:")]
    assert api and all(e["source"]["exit_code"] == 200 for e in api)
    md = render_markdown(report)
    assert "| GET /api/v1/pods | HTTP 200 |" in md


def test_evidence_computed_from_other_facts_shows_its_source_and_no_exit_code():
    """The parse stage's derivations (the failures read together, the path walk...) ran no
    command: their evidence names what they were computed from, and never reads as a node
    command that did not finish."""
    from kubenetdiag.bundle import Bundle
    from kubenetdiag.engine import load_ruleset
    from kubenetdiag.pipeline import analyze
    from kubenetdiag.reports import render_markdown

    example = Path(__file__).resolve().parent.parent / "examples" / "bundles" / "lab-three-faults"
    report = analyze(Bundle.read(example), load_ruleset(), save=False).report
    md = render_markdown(report)
    rows = [line for line in md.splitlines() if line.startswith("| target_failure |")]
    assert rows and all(r.endswith("| every node's active checks, read together | — |")
                        for r in rows)
    assert "did not finish" not in md
    zh = render_markdown(report, lang="zh-CN")
    assert "| 所有节点的主动检查，合并分析 | — |" in zh


def test_a_probe_refused_for_want_of_root_says_how_to_log_in_in_every_format() -> None:
    # node1's iptables-save as recorded from a login that is not root, through the real
    # pipeline: the refusal is a not-checked entry, and every format says what to change
    report = example_report("iptables", "nonroot", exit_code=1)
    assert [(c["node"], c["probe"], c["status"]) for c in report["not_checked"]
            if c["status"] == "permission_denied"] == [("node1", "iptables", "permission_denied")]
    hint = "set ansible_become: true"
    assert hint in _summary(report) and hint in render_html(report)
    assert hint in render_markdown(report).replace("\\_", "_")
    assert "ansible_become" in _summary(report, lang="zh-CN")
    # a refusal by the Kubernetes API is RBAC, not the login: no such advice
    nodes = [make_node(f"node{i}", i) for i in range(1, 4)]
    rbac = {"node": "cluster", "probe": "api.pods", "status": "permission_denied",
            "reason": "403 Forbidden", "blocks": "pods"}
    assert "ansible_become" not in _summary(make_report(nodes, [], [rbac]))
    assert "ansible_become" not in _summary(healthy_report())
