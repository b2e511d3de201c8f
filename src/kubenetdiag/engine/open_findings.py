"""What an unexplained symptom's text must not leave out: the rest of what was found and what
could not be checked on its nodes.

A symptom rule that fires because no cause was asserted (its `when` has `not: {cause: ...}`) says
which checks found nothing. That is only true of the rules that assert causes: a finding on the
same node that asserts none (a warning such as a security agent that was seen running, a
conntrack table nearly full) or a probe that failed there means those places were not ruled out.
The engine knows both once every rule has run, so it adds them to the finding's explanation, in
every language the finding has, instead of leaving the rule's text to claim more than was shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kubenetdiag.facts.model import Fact
from kubenetdiag.localize import ZH, probe_name, probe_status, tidy_zh
from kubenetdiag.vocabulary import ALARMING

from .model import Rule

_SEVERITY_ZH = {"critical": "严重", "error": "错误", "warning": "警告", "info": "提示"}
# A note names at most this many findings and this many failed probes, then counts the rest:
# on a large cluster a symptom can touch many nodes.
_MAX_LISTED = 5


def is_open_symptom(rule: Rule) -> bool:
    """A rule that reports a symptom because no cause explained it."""
    return rule.fault is not None and any(p.negated and p.kind == "cause" for p in rule.when)


def _places(finding: dict[str, Any], names: set[str]) -> list[str]:
    """The nodes a finding is about: its own, and the nodes its evidence names (the peer of a
    failed pair is an attribute of the evidence, not the node it was measured on)."""
    out = list(finding["nodes"])
    for fact in finding["evidence"]:
        for v in (fact["node"], *fact["attrs"].values()):
            if isinstance(v, str) and v in names and v not in out:
                out.append(v)
    return out


def _title(finding: dict[str, Any], lang: str) -> str:
    local = (finding.get("i18n") or {}).get(lang) or {}
    return local.get("title") or finding["title"] or finding["fault"]


def note_open_findings(rules: Sequence[Rule], found: list[dict[str, Any]],
                       facts: Sequence[Fact]) -> list[dict[str, Any]]:
    """`found` with each open symptom's explanation completed (in place, and returned)."""
    by_id = {r.id: r for r in rules}
    open_ids = {r.id for r in rules if is_open_symptom(r)}
    names = {f.node for f in facts if f.kind == "node_status" and isinstance(f.node, str)}
    unreachable = {f.node for f in facts
                   if f.kind == "node_status" and f.attrs.get("reachable") is False}
    gaps: dict[str, list[tuple[str, str]]] = {}
    for f in facts:
        if f.kind == "probe_status" and f.attrs.get("status") != "not_queried":
            gaps.setdefault(str(f.node), []).append(
                (str(f.attrs.get("probe")), str(f.attrs.get("status"))))
    for finding in found:
        rule = by_id.get(finding["rule"])
        if rule is None or finding["rule"] not in open_ids or not finding["root_cause"]:
            continue
        places = _places(finding, names)
        others = [
            g for g in found
            if g is not finding and g["rule"] not in open_ids and g["severity"] in ALARMING
            and not g["explained_by"] and set(g["nodes"]) & set(places)
        ]
        down = [n for n in places if n in unreachable]
        missing = [(n, p, s) for n in places if n not in unreachable for p, s in gaps.get(n, [])]
        if not (others or down or missing):
            continue
        finding["explain"] = _join(finding["explain"], _english(places, others, down, missing))
        local = (finding.get("i18n") or {}).get(ZH)
        if local is not None and local.get("explain"):
            local["explain"] = tidy_zh(local["explain"] + _chinese(places, others, down, missing))
    return found


def _join(text: str, note: str) -> str:
    return f"{text.rstrip()} {note}" if text else note


def _english(places: list[str], others: list[dict], down: list[str],
             missing: list[tuple[str, str, str]]) -> str:
    parts = []
    if others:
        listed = "; ".join(f"{_title(g, 'en')} ({g['severity']})" for g in others[:_MAX_LISTED])
        listed += f"; {len(others) - _MAX_LISTED} more" if len(others) > _MAX_LISTED else ""
        parts.append(
            f"Not ruled out on {', '.join(places)}: no rule links these findings there to this "
            f"symptom, but they may play a part: {listed}."
        )
    if down:
        parts.append(f"Nothing on {', '.join(down)} could be checked (the collector could not "
                     "reach it), so no cause there is ruled out.")
    if missing:
        listed = "; ".join(f"{p} on {n} ({s})" for n, p, s in missing[:_MAX_LISTED])
        listed += f"; {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
        parts.append(f"Not checked, so not ruled out either: {listed}.")
    return " ".join(parts)


def _chinese(places: list[str], others: list[dict], down: list[str],
             missing: list[tuple[str, str, str]]) -> str:
    parts = []
    if others:
        listed = "；".join(f"{_title(g, ZH)}（{_SEVERITY_ZH.get(g['severity'], g['severity'])}）"
                          for g in others[:_MAX_LISTED])
        listed += f"；另有 {len(others) - _MAX_LISTED} 条" if len(others) > _MAX_LISTED else ""
        parts.append(f"{', '.join(places)} 上还有以下诊断结果：没有规则把它们与这一现象关联起来，"
                     f"但它们可能起了作用，不能排除：{listed}。")
    if down:
        parts.append(f"{', '.join(down)} 上什么都无法检查（采集程序连不上它），"
                     "那里的原因都不能排除。")
    if missing:
        listed = "；".join(f"{n} 上的 {probe_name(p, ZH)}（{probe_status(s, ZH)}）"
                          for n, p, s in missing[:_MAX_LISTED])
        listed += f"；另有 {len(missing) - _MAX_LISTED} 项" if len(missing) > _MAX_LISTED else ""
        parts.append(f"以下探测没有完成，相应的原因同样不能排除：{listed}。")
    return "".join(parts)
