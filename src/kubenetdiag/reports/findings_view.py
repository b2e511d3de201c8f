"""The findings as the report shows them: in reading order, translated, cross-linked.

Causes come first because they are what the on-call engineer acts on; a finding that names the
rule that explains it links to that finding, wherever it is in the document.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from kubenetdiag import localize
from kubenetdiag.changes import ChangeIndex
from kubenetdiag.facts.producers import DERIVED_SOURCES
from kubenetdiag.findings import ALARMING
from kubenetdiag.reports.changes_view import fact_line
from kubenetdiag.reports.i18n import UI
from kubenetdiag.reports.sanitize import clean_block, clean_line
from kubenetdiag.reports.viewmodel import Evidence, FindingView, Link, Step
from kubenetdiag.vocabulary import SEVERITY_RANK

# Display order of findings: causes are what the on-call engineer acts on, unexplained problems
# still need a human, explained consequences go last because fixing their cause fixes them.
ROLE_RANK = {"root": 0, "other": 1, "consequence": 2}


class FindingGroups(NamedTuple):
    """The findings sorted by what the verdict says about them."""

    roots: list[FindingView]
    others: list[FindingView]  # unexplained and not only informational: still need a human
    consequences: list[FindingView]
    info_only: list[FindingView]  # informational findings that are not root causes


def format_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return clean_line(value)


def _format_confidence(value: float | str, ui: UI) -> str:
    if isinstance(value, str):
        return ui(f"confidence_{value}")
    return f"{round(value * 100)}%"


def _role(finding: dict) -> str:
    if finding["root_cause"]:
        return "root"
    return "consequence" if finding["explained_by"] else "other"


def _texts(finding: dict, lang: str) -> tuple[str, str, list[str]]:
    """Title, explanation and step texts in `lang`, each falling back to English on its own."""
    title, explain = finding["title"], finding["explain"]
    steps = [s["text"] for s in finding["remediation"]]
    local = (finding.get("i18n") or {}).get(lang) if lang != "en" else None
    if local:
        title = local.get("title") or title
        explain = local.get("explain") or explain
        translated = local.get("remediation") or []
        # A translation list of another length would pair texts with the wrong commands.
        if len(translated) == len(steps):
            steps = [t or s for t, s in zip(translated, steps, strict=True)]
    return title, explain, steps


class _FindingIndex:
    """Where each finding sits in reading order, so that rule ids and fault codes named in
    another finding become links to it."""

    def __init__(self, ordered: list[dict], lang: str) -> None:
        self.anchors = [f"f-{i}" for i in range(1, len(ordered) + 1)]
        self.by_rule: dict[str, int] = {}
        self.by_fault: dict[str, int] = {}
        for i, finding in enumerate(ordered):
            self.by_rule.setdefault(finding["rule"], i)
            self.by_fault.setdefault(finding["fault"], i)
        # A rule without a title must not leave a blank heading: the fault code is the next
        # best name.
        self.titles = [
            clean_line(_texts(f, lang)[0]) or clean_line(f["fault"]) for f in ordered
        ]

    def _link(self, name: str, position: int | None) -> Link:
        """A link to the finding that `name` refers to, or plain text when none fired."""
        if position is None:
            return Link(clean_line(name))
        return Link(self.titles[position], self.anchors[position], clean_line(name))

    def rule_link(self, rule: str) -> Link:
        return self._link(rule, self.by_rule.get(rule))

    def fault_link(self, fault: str) -> Link:
        return self._link(fault, self.by_fault.get(fault))


# Sources that run no command on a node, so have no exit code to show: the parse stage's
# derivations (the packet-path walk, the census, kube-proxy against the API...) compute over
# other facts, the API is asked over HTTP, and a failed login or a skipped active phase ran
# nothing at all. Only a node command without an exit code did not finish.
_NO_EXIT_CODE = DERIVED_SOURCES | {"api", "connect", "active"}


def _evidence(fact: dict, ui: UI, node_link: Callable[[str], Link],
              changed: ChangeIndex) -> Evidence:
    source = fact.get("source") or {}
    change = changed.of(fact)
    exit_code = source.get("exit_code")
    if not source:
        shown_exit = ""
    elif str(source.get("probe", "")).split(":")[0] == "api" and isinstance(exit_code, int):
        shown_exit = f"HTTP {exit_code}"  # an API call has no exit code: its answer's status
    elif exit_code is None and str(source.get("probe", "")).split(":")[0] in _NO_EXIT_CODE:
        shown_exit = ui("none")
    elif exit_code is None:
        shown_exit = ui("not_finished")
    else:
        shown_exit = str(exit_code)
    return Evidence(
        kind=clean_line(fact["kind"]),
        node=node_link(fact["node"]),
        # unknown (null) attributes say nothing about this fault: leave them out
        attrs=[
            (clean_line(k), format_scalar(v)) for k, v in fact["attrs"].items() if v is not None
        ],
        probe=clean_line(source.get("probe", "")),
        command=clean_block(localize.value(source.get("command", ""), ui.lang)),
        exit_code=shown_exit,
        excerpt=clean_block(source.get("excerpt", "")),
        changed=fact_line(change) if change else "",
    )


def _finding_view(
    finding: dict,
    position: int,
    index: _FindingIndex,
    lang: str,
    ui: UI,
    node_link: Callable[[str], Link],
    changed: ChangeIndex,
) -> FindingView:
    _, explain, step_texts = _texts(finding, lang)
    role = _role(finding)
    return FindingView(
        anchor=index.anchors[position],
        rule=clean_line(finding["rule"]),
        fault=clean_line(finding["fault"]),
        severity=finding["severity"],
        severity_label=ui.severity(finding["severity"]),
        confidence=_format_confidence(finding["confidence"], ui),
        title=index.titles[position],
        explain=clean_block(explain).strip(),
        role=role,
        role_label=ui(f"role_{role}"),
        nodes=[node_link(n) for n in finding["nodes"]],
        explained_by=[index.rule_link(rule) for rule in finding["explained_by"]],
        explains=[index.fault_link(fault) for fault in finding["explains"]],
        evidence=[_evidence(fact, ui, node_link, changed) for fact in finding["evidence"]],
        remediation=[
            Step(
                clean_block(text).strip(),
                clean_block(step["command"] or "").strip(),
                bool(step["changes_state"]),
            )
            for text, step in zip(step_texts, finding["remediation"], strict=True)
        ],
    )


def finding_views(
    findings: list[dict], lang: str, ui: UI, node_link: Callable[[str], Link],
    changed: ChangeIndex | None = None,
) -> list[FindingView]:
    """The report's findings in reading order: root causes, other problems, consequences, each
    by severity. `changed`: with a baseline, the changes to show beside the evidence."""
    changed = changed or ChangeIndex(None)
    ordered = sorted(
        findings, key=lambda f: (ROLE_RANK[_role(f)], SEVERITY_RANK[f["severity"]])
    )
    index = _FindingIndex(ordered, lang)
    return [
        _finding_view(finding, i, index, lang, ui, node_link, changed)
        for i, finding in enumerate(ordered)
    ]


def group_findings(findings: list[FindingView]) -> FindingGroups:
    return FindingGroups(
        roots=[f for f in findings if f.role == "root"],
        others=[f for f in findings if f.role == "other" and f.severity in ALARMING],
        consequences=[f for f in findings if f.role == "consequence"],
        info_only=[f for f in findings if f.role != "root" and f.severity == "info"],
    )
