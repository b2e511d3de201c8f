"""The texts an on-call engineer reads: no internal references, Chinese spaced the way Chinese is
written, no English left in the zh-CN report where a translation exists, and an unexplained
symptom that never claims a check ruled out what another finding reports.

Spacing convention of the zh-CN texts (the same one kubenetdiag/localize.py documents and
`tidy_zh` applies after placeholders are filled):

- one ASCII space between Chinese and a Latin word, a number or a {placeholder}
  ("Pod 网络", "第 {line} 行", "{node} 上");
- no space between two Chinese characters;
- no space on either side of full-width punctuation (，。：；、（）“”), and full-width
  punctuation, not ASCII, right after Chinese (no "节点: x", no "节点 (x)").
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kubenetdiag import localize
from kubenetdiag.cli import main
from kubenetdiag.engine import infer, load_ruleset
from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.facts.registry import registry
from kubenetdiag.facts.vantage import vantage_facts
from kubenetdiag.reports import i18n

ROOT = Path(__file__).parent.parent
RULES = ROOT / "src" / "kubenetdiag" / "rules"
TEMPLATES = ROOT / "src" / "kubenetdiag" / "reports" / "templates"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
EXAMPLE = ROOT / "examples" / "bundles" / "lab-three-faults"

CJK = "\u3400-\u4dbf\u4e00-\u9fff"
PUNCT = "\u3000-\u303f\uff00-\uffef\u2018\u2019\u201c\u201d\u2026"
LATIN = "A-Za-z0-9{}"

# An internal reference: a runbook by number or by name, a section sign, an issue number. A
# link to docs/runbooks.md (an anchor there) is how texts point at the runbooks, and is allowed.
RUNBOOK_LINK = re.compile(r"docs/runbooks\.md(#[\w-]+)?")
INTERNAL = [
    ("section sign", re.compile("§")),
    ("runbook by name", re.compile(r"\brunbooks?\b", re.I)),
    ("runbook in Chinese", re.compile("手册")),
    ("issue number", re.compile(r"\bissues?\s*#?\d+|(?<![\w&/])#\d+\b", re.I)),
]


def rule_texts() -> Iterator[tuple[str, str, str]]:
    """(where, language, text) of every title, explanation and remediation text of every
    shipped rule."""
    for path in sorted(RULES.rglob("*.yaml")):
        for rule in yaml.safe_load(path.read_text(encoding="utf-8")).get("rules", []):
            rid = rule["id"]
            for key in ("title", "explain"):
                for lang, text in _langs(rule.get(key)):
                    yield f"{rid}.{key}", lang, text
            for j, step in enumerate(rule.get("remediate") or []):
                for lang, text in _langs(step.get("text")):
                    yield f"{rid}.remediate[{j}]", lang, text


def _langs(text: object) -> list[tuple[str, str]]:
    if isinstance(text, str):
        return [("en", text)]
    if isinstance(text, dict):
        return [(lang, t) for lang, t in text.items() if isinstance(t, str)]
    return []


def catalog_texts() -> Iterator[tuple[str, str, str]]:
    for lang, catalog in (("en", i18n._EN), ("zh-CN", i18n._ZH)):
        for key, entry in catalog.items():
            for text in entry if isinstance(entry, tuple) else (entry,):
                yield f"i18n[{key}]", lang, text


def localized_values() -> Iterator[tuple[str, str, str]]:
    for table in (localize.PROBE_STATUS_ZH, localize.PROBE_NAME_ZH, localize.BLOCKS_ZH):
        for key, text in table.items():
            yield f"localize[{key[:30]}]", "zh-CN", text
    for words in localize._WORDS_ZH.values():
        for key, text in words.items():
            yield f"localize[{key}]", "zh-CN", text


def template_texts() -> Iterator[tuple[str, str, str]]:
    """The literal text of the report templates, without their Jinja code."""
    code = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
    for path in sorted(TEMPLATES.glob("*.j2")):
        yield path.name, "en", code.sub(" ", path.read_text(encoding="utf-8"))


def kind_docs() -> Iterator[tuple[str, str, str]]:
    for name, spec in registry().items():
        yield f"kinds[{name}]", "en", spec.doc
        for attr in spec.attrs.values():
            yield f"kinds[{name}.{attr.name}]", "en", attr.doc


def user_facing() -> Iterator[tuple[str, str, str]]:
    yield from rule_texts()
    yield from catalog_texts()
    yield from localized_values()
    yield from template_texts()
    yield from kind_docs()


def test_no_internal_references_in_what_the_operator_reads() -> None:
    problems = []
    for where, _, text in user_facing():
        bare = RUNBOOK_LINK.sub("", text)
        for what, pattern in INTERNAL:
            m = pattern.search(bare)
            if m:
                problems.append(f"{where}: {what}: …{bare[max(0, m.start() - 30):m.end() + 30]}…")
    assert not problems, "\n".join(problems)


def test_the_scan_catches_what_it_is_for() -> None:
    for bad in ("as runbook 002 §3 says", "see the runbook", "（手册 001）", "issue 16", "#16"):
        assert any(p.search(RUNBOOK_LINK.sub("", bad)) for _, p in INTERNAL), bad
    assert not any(p.search(RUNBOOK_LINK.sub("", "see docs/runbooks.md#runbook-002"))
                   for _, p in INTERNAL)


def test_every_runbooks_anchor_cited_exists() -> None:
    anchors = set(re.findall(r'<a id="([\w-]+)"></a>', RUNBOOKS.read_text(encoding="utf-8")))
    assert {"runbook-000", "runbook-001", "runbook-002", "runbook-003", "runbook-004"} <= anchors
    cited = []
    for path in [*ROOT.joinpath("src").rglob("*"), *ROOT.joinpath("docs").glob("*.md"),
                 ROOT / "README.md"]:
        if path.is_file() and path.suffix in (".py", ".yaml", ".md", ".j2"):
            for anchor in re.findall(r"runbooks\.md#([\w-]+)", path.read_text(encoding="utf-8")):
                cited.append((path.relative_to(ROOT), anchor))
    assert cited
    missing = [f"{p}: #{a}" for p, a in cited if a not in anchors]
    assert not missing, "\n".join(missing)


def spacing_problems(text: str) -> list[str]:
    """Where `text` breaks the spacing convention of the module docstring."""
    checks = [
        ("space between Chinese characters", f"[{CJK}] +[{CJK}]"),
        ("space after full-width punctuation", f"[{PUNCT}] +(?=\\S)"),
        ("space before full-width punctuation", f"(?<=\\S) +[{PUNCT}]"),
        ("no space between Chinese and Latin", f"[{CJK}][{LATIN}]|[{LATIN}][{CJK}]"),
        ("ASCII punctuation after Chinese", f"[{CJK}][,:;?!](?=\\s|$)|[{CJK}] ?\\((?=[^)])"),
    ]
    out = []
    for what, pattern in checks:
        for m in re.finditer(pattern, text):
            out.append(f"{what}: …{text[max(0, m.start() - 15):m.end() + 15]}…")
    return out


def test_chinese_texts_follow_the_spacing_convention() -> None:
    problems = []
    for where, lang, text in [*rule_texts(), *catalog_texts(), *localized_values()]:
        if lang == "zh-CN":
            problems += [f"{where}: {p}" for p in spacing_problems(text)]
    assert not problems, "\n".join(problems)


def test_the_spacing_check_catches_what_it_is_for() -> None:
    assert spacing_problems("节点 上")
    assert spacing_problems("节点： node1")
    assert spacing_problems("Pod流量")
    assert spacing_problems("节点: node1")
    assert not spacing_problems("{node} 上的 Pod 流量（第 1 条规则）：丢弃")


def test_tidy_removes_the_space_a_chinese_value_leaves() -> None:
    assert localize.tidy_zh("结果是 丢弃 。") == "结果是丢弃。"
    assert localize.tidy_zh("在 filter 表 FORWARD 链第 1 条规则 处") == \
        "在 filter 表 FORWARD 链第 1 条规则处"


# English words and messages that have a translation, as they would leak into a zh-CN report.
KNOWN_ENGLISH = [
    *(f"| {s} |" for s in localize.PROBE_STATUS_ZH),
    "not collected by",
    "| all |",
    "every check on this node",
    "is sshd running",
    "connection refused",
    "could not be reached",
    "Confidence",
    "unknown",
    "walk of ",
    " rule 1",
    "inbound",
    "outbound",
]


def _outside_code(markdown: str) -> str:
    """The prose of a Markdown report: without fenced blocks, code spans, evidence tables (raw
    fact attributes are data) and raw outputs."""
    text = re.sub(r"```.*?```", "", markdown, flags=re.S)
    text = re.sub(r"\\?`[^`\n]*\\?`", "CODE", text)
    lines = []
    for line in text.splitlines():
        if line.startswith("|") and ("=" in line or "<br>" in line):
            continue  # an evidence row: kind, node, attributes as collected
        # " — ", " · ", table bars and the terminal's runs of spaces separate the fields of a
        # line (a title and its nodes, a step and its safety mark, the cells of a row): layout,
        # not prose
        lines += [cell.strip() for cell in re.split(r" [—·] |\||  +", line)]
    return "\n".join(lines)


BUNDLES = {
    "example": EXAMPLE,
    # with a measured connectivity matrix, which the example lacks
    "conntrack": ROOT / "tests" / "fixtures" / "bundles" / "lab-conntrack-full",
}


def _render_zh(tmp: Path, source: Path) -> dict[str, str]:
    bundle = tmp / "bundle"
    shutil.copytree(source, bundle)
    out = {"md": tmp / "report.md", "txt": tmp / "report.txt"}
    args = ["analyze", str(bundle), "--lang", "zh-CN", "--format", "json"]
    for path in out.values():
        args += ["--report", str(path)]
    assert main(args) in (0, 1)
    return {fmt: path.read_text(encoding="utf-8") for fmt, path in out.items()}


@pytest.fixture(scope="module")
def zh_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return _render_zh(tmp_path_factory.mktemp("zh"), EXAMPLE)


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_zh_reports_have_no_stray_spaces(name: str, tmp_path: Path) -> None:
    zh_report = _render_zh(tmp_path, BUNDLES[name])
    for fmt in ("md", "txt"):
        # Node names, addresses and commands sit next to Chinese in table cells and after
        # markers, so "no space between Chinese and Latin" is checked in the texts above, not here.
        problems = [p for p in spacing_problems(_outside_code(zh_report[fmt]))
                    if not p.startswith("no space between Chinese and Latin")]
        assert not problems, f"{fmt}:\n" + "\n".join(problems)


def test_zh_report_of_the_example_leaves_no_known_english(zh_report: dict[str, str]) -> None:
    for fmt in ("md", "txt"):
        prose = _outside_code(zh_report[fmt])
        left = [w for w in KNOWN_ENGLISH if w in prose]
        assert not left, f"{fmt}: {left}"
    # what the example shows in Chinese, so the check above is not vacuous
    md = zh_report["md"]
    for shown in ("拒绝连接（sshd 是否在运行？）", "| 全部探测 | 节点连不上 |",
                  "该节点上的所有检查", "filter 表 FORWARD 链第 1 条规则", "置信度：高",
                  "Pod 网络 2 对中 2 对失败"):
        assert shown in md, shown


def _fact(kind: str, node: str, **attrs: object) -> Fact:
    return Fact(kind, node, dict(attrs))


def _pair_broken_n1_n2() -> list[Fact]:
    """Three nodes, every check answered, the pod network failing from n1 to n2 only."""
    facts = []
    for s in ("n1", "n2", "n3"):
        facts.append(_fact("node_status", s, reachable=True, address=s, reason=None))
        facts.append(Fact("sysctl", s, {"key": "net.ipv4.ip_forward", "value": "1", "number": 1,
                                        "present": True}, Source("sysctl")))
        for d in ("n1", "n2", "n3"):
            if s != d:
                for layer in ("underlay", "pod"):
                    ok = not (layer == "pod" and (s, d) == ("n1", "n2"))
                    facts.append(_fact("reach", s, src=s, dst=d, layer=layer, ok=ok,
                                       rtt_ms=None, detail=None, vantage=None))
    return facts


def _diagnose(facts: list[Fact]) -> list[dict]:
    return infer(load_ruleset(), [*facts, *vantage_facts(facts)])


def test_unexplained_symptom_names_what_another_finding_says_on_its_nodes() -> None:
    agent = _fact("process", "n2", name="wsssr_defence_daemon", role="security_software",
                  running=True, count=1, pids="9", args=None, state="S")
    gap = _fact("probe_status", "n1", probe="nftables", status="timeout", reason="x", blocks="y")
    found = {f["rule"]: f for f in _diagnose([*_pair_broken_n1_n2(), agent, gap])}
    open_ = found["pod-cross-node-unexplained"]
    assert open_["root_cause"] and "security-agent-beside-failing-pod-traffic" in found
    # the finding on n2 and the probe that failed on n1 are named as not ruled out
    assert "Not ruled out on n1, n2" in open_["explain"]
    assert ("Security agent wsssr_defence_daemon runs on n2, where pod traffic from n1 fails "
            "(warning)") in open_["explain"]
    assert "nftables on n1 (timeout)" in open_["explain"]
    zh = open_["i18n"]["zh-CN"]["explain"]
    assert "n2 上运行安全软件 wsssr_defence_daemon，而从 n1 到该节点的 Pod 流量失败（警告）" in zh
    assert "n1 上的 nftables（超时）" in zh
    # and the rule's own text no longer claims those checks ruled anything out
    assert "Checked and ruled out" not in open_["explain"]
    assert "已在两端节点检查并排除" not in zh


def test_unexplained_symptom_with_nothing_else_found_adds_nothing() -> None:
    (open_,) = _diagnose(_pair_broken_n1_n2())
    assert open_["rule"] == "pod-cross-node-unexplained"
    assert "Not ruled out on" not in open_["explain"]
    assert "Not checked" not in open_["explain"]


def test_every_probe_says_in_chinese_what_its_failure_leaves_unchecked() -> None:
    """A new probe's `blocks` text needs its zh-CN line in localize.BLOCKS_ZH, or the zh-CN
    report's not-checked table falls back to English for it."""
    from kubenetdiag.facts.cluster import BLOCKS
    from kubenetdiag.probes import PROBES
    from kubenetdiag.probes.active import checks
    from kubenetdiag.probes.active.common import example

    plan = example().plan
    texts = ([p.blocks for p in PROBES if isinstance(p.blocks, str)] + list(BLOCKS.values())
             + [c.blocks(target) for c in checks() for _, target in c.targets(plan)[:1]])
    missing = [t for t in texts if localize.value(t, "zh-CN") == t]
    assert not missing, "\n".join(missing)
    for status in ("failed", "missing_tool", "permission_denied", "timeout", "unreachable",
                   "not_queried"):
        assert localize.probe_status(status, "zh-CN") != status


def _collect_errors() -> list[str]:
    """Every message the collector raises (CollectError in collect/*.py), its {fields} filled
    with a sample value."""
    import ast

    out = []
    for path in sorted((ROOT / "src" / "kubenetdiag" / "collect").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "CollectError"
                    and node.args):
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    out.append(arg.value)
                elif isinstance(arg, ast.JoinedStr):
                    out.append("".join(v.value if isinstance(v, ast.Constant) else "10"
                                       for v in arg.values))
    return out


def test_the_collectors_errors_read_in_chinese() -> None:
    """A node's error is shown in the nodes table, the not-checked table and the title of the
    node-unreachable finding: a new CollectError message needs its line in localize.py."""
    messages = _collect_errors()
    assert len(messages) >= 10
    untranslated = [m for m in messages if localize.value(m, "zh-CN") == m]
    assert not untranslated, "\n".join(untranslated)


def test_values_fill_a_chinese_text_in_chinese() -> None:
    from kubenetdiag.engine.inference import render

    def zh(text: str, **values: object) -> str:
        return render(text, {k: [v] for k, v in values.items()}, ["n1"], "zh-CN")

    assert zh("（{layer} 路径）", layer="pod") == "（Pod 网络路径）"
    assert zh("不通（方向：{direction}）", direction="inbound") == "不通（方向：入方向）"
    assert zh("结果是 {verdict}", verdict="drop") == "结果是丢弃"
    assert zh("{node} 在 {at} 处拒绝", at="filter FORWARD rule 1") == \
        "n1 在 filter 表 FORWARD 链第 1 条规则处拒绝"
    assert zh("（写入者：{owner}）", owner="unknown") == "（写入者：未知）"
    assert zh("无法连接 {node}：{reason}", reason="connection refused on 10.0.0.3:22: is sshd "
              "running?") == "无法连接 n1：10.0.0.3:22 拒绝连接（sshd 是否在运行？）"
    # English texts and commands keep the values as collected
    assert render("({direction})", {"direction": ["inbound"]}, [], "en") == "(inbound)"
    assert render("echo {verdict}", {"verdict": ["drop"]}, [], "zh-CN", shell=True) == "echo drop"


def test_docs_carry_no_runbook_numbers_or_issue_numbers() -> None:
    """README and docs may talk about the runbooks (docs/runbooks.md is their summary, with its
    own section numbers), but not cite one by number or a section, nor an issue."""
    pattern = re.compile(r"§|\brunbook\s+0\d\d\b|\bissues?\s*#?\d+", re.I)
    problems = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        if path.name == "runbooks.md":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            m = pattern.search(RUNBOOK_LINK.sub("", line))
            if m:
                problems.append(f"{path.name}:{n}: {line.strip()[:120]}")
    assert not problems, "\n".join(problems)
