"""UI strings of the reports, in English and Simplified Chinese.

Only the renderer's own words live here; finding texts come from the rules (`finding["i18n"]`).
English entries that depend on a count are (singular, plural) pairs; Chinese needs no plural.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubenetdiag.localize import tidy_zh
from kubenetdiag.reports.sanitize import clean_line

_EN: dict[str, str | tuple[str, str]] = {
    "list_sep2": "; ",
    "confidence_short": "Confidence {value}",
    "unreachable_count": ("{n} unreachable", "{n} unreachable"),
    "doc_title": "Kubernetes network diagnosis",
    "verdict": "Verdict",
    "root_causes_found": ("{n} root cause found", "{n} root causes found"),
    "problems_no_root": (
        "{n} problem found, no root cause identified",
        "{n} problems found, no root cause identified",
    ),
    "no_problems": "No problems found",
    "no_problems_partial": "No problems found in what could be checked",
    "nothing_checked": "Nothing could be checked: collection failed on every node",
    "unchecked_nodes": ("{n} node could not be checked", "{n} nodes could not be checked"),
    "unchecked_probes": (
        "{n} probe could not run on reachable nodes",
        "{n} probes could not run on reachable nodes",
    ),
    "unknown_not_healthy": "What was not checked is unknown, not healthy.",
    "endpoints_not_declared": (
        "Connect timeouts to middleware were not checked: no endpoint is declared. List the "
        "databases and services your pods use as host:port under kubenetdiag_endpoints in the "
        "inventory."
    ),
    "consequences_folded": (
        "{n} consequence, explained by the root causes above",
        "{n} consequences, explained by the root causes above",
    ),
    "other_findings": (
        "{n} other finding without an identified cause",
        "{n} other findings without an identified cause",
    ),
    "info_findings": ("{n} informational finding", "{n} informational findings"),
    "more": "+{n} more",
    "findings": "Findings",
    "no_findings": "No findings.",
    "overview": "Cluster overview",
    "not_checked": "Not checked",
    "all_checked": "Every probe ran on every node.",
    "needs_root": (
        "Some probes were refused on a node (permission denied): they read what only root may. "
        "Log in as root, or set ansible_become: true for those hosts in the inventory (the "
        "probe then runs through sudo -n, which never prompts). Refused although the login is "
        "root: a security module (SELinux, AppArmor) or a container without CAP_NET_ADMIN."
    ),
    "not_evaluated": "Not evaluated",
    "not_evaluated_intro": (
        "These rules read facts that were not collected on these nodes: that they found nothing "
        "there does not mean healthy."
    ),
    "all_evaluated": "Every rule could be evaluated on every node.",
    "why": "Why",
    "rules": "Rules",
    "rules_count": ("{n} rule", "{n} rules"),
    "rules_not_evaluated": (
        "{n} rule not evaluated on {nodes} ({causes})",
        "{n} rules not evaluated on {nodes} ({causes})",
    ),
    "cause": "{probe}: {status}",
    "colon": ": ",
    "in_parens": " ({text})",
    "rules_more": (
        "+{n} more rule: see the HTML or JSON report",
        "+{n} more rules: see the HTML or JSON report",
    ),
    "cause_sep": "; ",
    "list_sep": ", ",
    "rel_sep": "; ",
    "status_failed": "failed",
    "status_missing_tool": "tool missing",
    "status_permission_denied": "permission denied",
    "status_timeout": "timed out",
    "status_unreachable": "not reached",
    "status_not_queried": "not asked",
    "status_not_collected": "not collected by the version that made this bundle",
    "status_partial": "partly understood",
    "run": "Run",
    "evidence": "Evidence",
    "no_evidence": "No evidence recorded.",
    "more_evidence": ("{n} more evidence item", "{n} more evidence items"),
    "remediation": "Remediation",
    "explained_by": "Explained by",
    "explains": "Explains",
    "nodes": "Nodes",
    "confidence": "Confidence",
    "role_root": "root cause",
    "role_consequence": "consequence",
    "role_other": "unexplained",
    "kind": "Kind",
    "node": "Node",
    "attributes": "Attributes",
    "source": "Source",
    "exit_code": "Exit code",
    "excerpt": "Raw output",
    "name": "Name",
    "address": "Address",
    "reachable": "Reachable",
    "kernel": "Kernel",
    "duration": "Duration",
    "errors": "Errors",
    "probe": "Probe",
    "status": "Status",
    "reason": "Reason",
    "blocks": "What it blocked",
    "yes": "yes",
    "no": "no",
    "none": "—",
    "not_finished": "did not finish",
    "read_only": "read-only",
    "changes_state": "changes state",
    "changes_state_note": "Changes the node. Review before running; kubenetdiag never runs it.",
    "healthy_nodes": ("{n} healthy node", "{n} healthy nodes"),
    "print_expand": "Healthy nodes are collapsed: expand the list before printing to include it.",
    "healthy_folded": (
        "{n} healthy node is counted here, not given a row: every probe ran on it and no rule "
        "found a problem.",
        "{n} healthy nodes are counted here, not given rows: every probe ran on them and no rule "
        "found a problem.",
    ),
    "partial_folded": (
        "{n} node is counted here, not given a row: it is only partly checked where every "
        "reachable node is (see Not checked), and no rule found a problem on it.",
        "{n} nodes are counted here, not given rows: they are only partly checked where every "
        "reachable node is (see Not checked), and no rule found a problem on them.",
    ),
    "partial_nodes": ("{n} partly checked node", "{n} partly checked nodes"),
    "rows_in": "Their rows are in the JSON report, {path}.",
    "rows_json": "Their rows are in the JSON report (--format json, or --report FILE.json).",
    "every_reachable_node": ("the {n} reachable node", "all {n} reachable nodes"),
    "node_unreachable": "unreachable",
    "node_affected": "affected",
    "node_partial": "partly checked",
    "node_healthy": "healthy",
    "started": "Started",
    "finished": "Finished",
    "transport": "Transport",
    "inventory": "Inventory",
    "bundle": "Bundle",
    "tool": "Tool",
    "rule_base": "Rule base",
    "rule_base_value": "{count} rules, digest {digest}",
    "schema": "Schema",
    "nodes_count": ("{n} node", "{n} nodes"),
    "findings_count": ("{n} finding", "{n} findings"),
    "full_report": "Full report: {path}",
    "full_report_bundle": "Raw outputs and report.json: {path}",
    "full_report_hint": (
        "For the full report (evidence, all nodes), run again with --report FILE.html"
    ),
    "severity_critical": "critical",
    "severity_error": "error",
    "severity_warning": "warning",
    "severity_info": "info",
    "confidence_high": "high",
    "confidence_medium": "medium",
    "confidence_low": "low",
    "duration_total": "Duration",
    "exit_status": "Exit code",
    "healthy_not_listed": "not listed here, see the HTML or JSON report",
    "connectivity": "Connectivity",
    "changes": "Changed since the baseline",
    "changes_against": "Compared with {path}",
    "nothing_changed": "Nothing changed since the baseline.",
    "changed_since": "changed since the baseline",
    "conn_not_measured": "Node-to-node connectivity was not measured (no active probe results)",
    "conn_not_measured_note": (
        "Without probe results the matrix is unknown, not healthy: a blank picture says nothing "
        "about whether pods on different nodes can reach each other."
    ),
    "conn_headline": "Connectivity: {layers}",
    "conn_layer_ok": "{layer} all {total} pairs answer",
    "conn_layer_fail": "{layer} {failed} of {total} pairs fail",
    "conn_short_ok": "{layer} ok ({total})",
    "conn_short_fail": "{layer} {failed}/{total} fail",
    "conn_suspect_both": "every probe from it and to it fails",
    "conn_suspect_from": "every probe from it fails",
    "conn_suspect_to": "every probe to it fails",
    "conn_suspect_cause": "root cause found on it, and probes around it fail",
    "conn_suspects": "Nodes that stand out",
    "conn_ok": "answered",
    "conn_fail": "no answer",
    "conn_folded": (
        "{n} of {total} nodes folded into one row and column: only nodes involved in failures "
        "keep their own",
        "{n} of {total} nodes folded into one row and column: only nodes involved in failures "
        "keep their own",
    ),
    "conn_others": ("+{n} other", "+{n} others"),
    "conn_others_tip": ("{n} other node, folded", "{n} other nodes, folded"),
    "conn_tip_ok": "{src} → {dst} · {layer}: answered ({detail})",
    "conn_tip_ok_plain": "{src} → {dst} · {layer}: answered",
    "conn_tip_fail": "{src} → {dst} · {layer}: FAILED ({detail})",
    "conn_tip_none": "{src} → {dst} · {layer}: not measured",
    "conn_tip_self": "{src}: same node, not probed",
    "conn_tip_group": "{src} → {dst} · {layer}: {failed} of {total} pairs failed",
    "conn_axis": "rows: from · columns: to",
    "conn_legend_ok": "answered",
    "conn_legend_fail": "failed",
    "conn_legend_mixed": "some failed (folded nodes)",
    "conn_legend_none": "not measured",
    "conn_legend_mark": "node that stands out",
    "conn_failing_pairs": "Other failing pairs",
    "conn_failing_more": ("+{n} more failing pair", "+{n} more failing pairs"),
    "conn_layer": "Layer",
    "conn_from": "From",
    "conn_to": "To",
    "conn_detail": "Detail",
    "conn_matrix": "Matrix ({layer}; ✓ answered, ✗ failed, · not measured)",
    "layer_pod": "Pod network",
    "layer_underlay": "Node addresses",
    "layer_vxlan": "VXLAN tunnels",
    "layer_bgp": "BGP sessions",
    "layer_pod_note": "each node's pod-CIDR gateway",
    "layer_underlay_note": "each node's own address (underlay)",
    "layer_vxlan_note": "overlay tunnel state per pair",
    "layer_bgp_note": "routing session state per pair",
}

_ZH: dict[str, str | tuple[str, str]] = {
    "list_sep2": "；",
    "confidence_short": "置信度：{value}",
    "unreachable_count": "{n} 个不可达",
    "doc_title": "Kubernetes 网络诊断报告",
    "verdict": "结论",
    "root_causes_found": "发现 {n} 个根因",
    "problems_no_root": "发现 {n} 个问题，未能确定根因",
    "no_problems": "未发现问题",
    "no_problems_partial": "在已检查的范围内未发现问题",
    "nothing_checked": "无法检查任何内容：所有节点采集均失败",
    "unchecked_nodes": "{n} 个节点无法检查",
    "unchecked_probes": "可达节点上有 {n} 项探测未能运行",
    "unknown_not_healthy": "未检查的部分状态未知，不代表健康。",
    "endpoints_not_declared": (
        "未检查到中间件的连接超时：清单里没有声明任何端点。请在 inventory 的 kubenetdiag_endpoints "
        "下以 host:port 列出 Pod 依赖的数据库和服务。"
    ),
    "consequences_folded": "另有 {n} 个连带问题，已由上述根因解释",
    "other_findings": "另有 {n} 个问题未找到原因",
    "info_findings": "{n} 条提示信息",
    "more": "另有 {n} 个",
    "findings": "诊断结果",
    "no_findings": "没有诊断结果。",
    "overview": "集群概览",
    "not_checked": "未检查项",
    "all_checked": "所有探测均已在所有节点上运行。",
    "needs_root": (
        "部分探测在节点上被拒绝（权限不足）：它们读取的内容只有 root 能读。"
        "请以 root 登录，或在 inventory 中为这些主机设置 ansible_become: true"
        "（探测随后通过 sudo -n 运行，不会提示输入密码）。若已是 root 仍被拒绝，"
        "原因是安全模块（SELinux、AppArmor）或缺少 CAP_NET_ADMIN 的容器。"
    ),
    "not_evaluated": "未评估的规则",
    "not_evaluated_intro": (
        "下列规则依赖的数据在这些节点上没有采集到：它们在这些节点上没有报出问题，并不代表正常。"
    ),
    "all_evaluated": "所有规则都已在所有节点上完成评估。",
    "why": "原因",
    "rules": "规则",
    "rules_count": "{n} 条规则",
    "rules_not_evaluated": "{nodes} 上有 {n} 条规则未评估（{causes}）",
    "cause": "{probe}：{status}",
    "colon": "：",
    "in_parens": "（{text}）",
    "rules_more": "另有 {n} 条规则，见 HTML 或 JSON 报告",
    "cause_sep": "；",
    "list_sep": "、",
    "rel_sep": "；",
    "status_failed": "执行失败",
    "status_missing_tool": "缺少工具",
    "status_permission_denied": "权限不足",
    "status_timeout": "超时",
    "status_unreachable": "节点连不上",
    "status_not_queried": "未查询",
    "status_not_collected": "生成该采集包的版本还没有这项探测",
    "status_partial": "部分输出无法解析",
    "run": "运行信息",
    "evidence": "证据",
    "no_evidence": "没有记录证据。",
    "more_evidence": "另有 {n} 条证据",
    "remediation": "修复步骤",
    "explained_by": "由以下原因解释",
    "explains": "可以解释",
    "nodes": "节点",
    "confidence": "置信度",
    "role_root": "根因",
    "role_consequence": "连带问题",
    "role_other": "原因未明",
    "kind": "类型",
    "node": "节点",
    "attributes": "属性",
    "source": "来源",
    "exit_code": "退出码",
    "excerpt": "原始输出",
    "name": "名称",
    "address": "地址",
    "reachable": "可达",
    "kernel": "内核",
    "duration": "耗时",
    "errors": "错误",
    "probe": "探测项",
    "status": "状态",
    "reason": "原因",
    "blocks": "因此无法检查",
    "yes": "是",
    "no": "否",
    "none": "—",
    "not_finished": "未完成",
    "read_only": "只读",
    "changes_state": "会改变状态",
    "changes_state_note": "会修改节点状态。执行前请先确认；kubenetdiag 不会自动执行。",
    "healthy_nodes": "{n} 个健康节点",
    "print_expand": "健康节点已折叠：打印前请先展开列表。",
    "healthy_folded": "{n} 个健康节点在此只计数、不逐行列出：所有探测都已运行，没有规则发现问题。",
    "partial_folded": (
        "{n} 个节点在此只计数、不逐行列出：它们只在所有可达节点都未能检查的项目上缺少检查"
        "（见未检查项），且没有规则发现问题。"
    ),
    "partial_nodes": "{n} 个部分检查的节点",
    "rows_in": "它们的逐行信息在 JSON 报告中：{path}。",
    "rows_json": "它们的逐行信息在 JSON 报告中（--format json 或 --report FILE.json）。",
    "every_reachable_node": "全部 {n} 个可达节点",
    "node_unreachable": "不可达",
    "node_affected": "受影响",
    "node_partial": "部分检查",
    "node_healthy": "健康",
    "started": "开始时间",
    "finished": "结束时间",
    "transport": "连接方式",
    "inventory": "主机清单",
    "bundle": "采集包",
    "tool": "工具",
    "rule_base": "规则库",
    "rule_base_value": "{count} 条规则，摘要 {digest}",
    "schema": "格式",
    "nodes_count": "{n} 个节点",
    "findings_count": "{n} 个诊断结果",
    "full_report": "完整报告：{path}",
    "full_report_bundle": "原始输出与 report.json：{path}",
    "full_report_hint": "如需完整报告（证据、全部节点），请加 --report FILE.html 重新运行",
    "severity_critical": "严重",
    "severity_error": "错误",
    "severity_warning": "警告",
    "severity_info": "提示",
    "confidence_high": "高",
    "confidence_medium": "中",
    "confidence_low": "低",
    "duration_total": "总耗时",
    "exit_status": "退出码",
    "healthy_not_listed": "此处未列出，请查看 HTML 或 JSON 报告",
    "connectivity": "连通性",
    "changes": "自基线以来的变化",
    "changes_against": "对比基线：{path}",
    "nothing_changed": "自基线以来没有变化。",
    "changed_since": "自基线以来已变化",
    "conn_not_measured": "未测量节点间连通性（没有主动探测结果）",
    "conn_not_measured_note": (
        "没有探测结果时，连通矩阵的状态是未知，而不是健康："
        "空白的图不能说明不同节点上的 Pod 能否互通。"
    ),
    "conn_headline": "连通性：{layers}",
    "conn_layer_ok": "{layer} 全部 {total} 对可达",
    "conn_layer_fail": "{layer} {total} 对中 {failed} 对失败",
    "conn_short_ok": "{layer} 正常（{total}）",
    "conn_short_fail": "{layer} {failed}/{total} 失败",
    "conn_suspect_both": "从它发出和到它的探测全部失败",
    "conn_suspect_from": "从它发出的探测全部失败",
    "conn_suspect_to": "到它的探测全部失败",
    "conn_suspect_cause": "在该节点发现根因，且其周围的探测失败",
    "conn_suspects": "表现异常的节点",
    "conn_ok": "有应答",
    "conn_fail": "无应答",
    "conn_folded": "{total} 个节点中有 {n} 个被折叠为一行一列：只有涉及故障的节点单独显示",
    "conn_others": "其余 {n} 个",
    "conn_others_tip": "其余 {n} 个节点（已折叠）",
    "conn_tip_ok": "{src} → {dst} · {layer}：有应答（{detail}）",
    "conn_tip_ok_plain": "{src} → {dst} · {layer}：有应答",
    "conn_tip_fail": "{src} → {dst} · {layer}：失败（{detail}）",
    "conn_tip_none": "{src} → {dst} · {layer}：未测量",
    "conn_tip_self": "{src}：同一节点，不探测",
    "conn_tip_group": "{src} → {dst} · {layer}：{total} 对中 {failed} 对失败",
    "conn_axis": "行：源节点 · 列：目标节点",
    "conn_legend_ok": "有应答",
    "conn_legend_fail": "失败",
    "conn_legend_mixed": "部分失败（折叠的节点）",
    "conn_legend_none": "未测量",
    "conn_legend_mark": "表现异常的节点",
    "conn_failing_pairs": "其他失败的节点对",
    "conn_failing_more": "另有 {n} 对失败",
    "conn_layer": "层",
    "conn_from": "源",
    "conn_to": "目标",
    "conn_detail": "详情",
    "conn_matrix": "矩阵（{layer}；✓ 有应答，✗ 失败，· 未测量）",
    "layer_pod": "Pod 网络",
    "layer_underlay": "节点地址",
    "layer_vxlan": "VXLAN 隧道",
    "layer_bgp": "BGP 会话",
    "layer_pod_note": "各节点 Pod 网段的网关",
    "layer_underlay_note": "各节点自身地址（底层网络）",
    "layer_vxlan_note": "每对节点之间的隧道状态",
    "layer_bgp_note": "每对节点之间的路由会话状态",
}

_CATALOGS = {"en": _EN, "zh-CN": _ZH}
SUPPORTED_LANGS: tuple[str, ...] = tuple(_CATALOGS)
_ALIASES = {"en": "en", "en-us": "en", "en-gb": "en", "zh": "zh-CN", "zh-cn": "zh-CN",
            "zh-hans": "zh-CN", "zh-hans-cn": "zh-CN"}


def normalize_lang(lang: str) -> str:
    """The catalog name for `lang` (`zh_CN`, `zh-cn`, `zh` all mean zh-CN).

    An unknown language is an error rather than a silent fall back to English, so a typo in a
    flag is reported instead of producing a report in a language nobody asked for.
    """
    key = lang.strip().replace("_", "-").lower()
    if key in _ALIASES:
        return _ALIASES[key]
    supported = ", ".join(SUPPORTED_LANGS)
    raise ValueError(f"unsupported report language {lang!r}; use one of {supported}")


@dataclass(frozen=True)
class UI:
    """UI strings of one language."""

    lang: str

    def __call__(self, key: str, **kw: object) -> str:
        """The string `key`, its {placeholders} filled from `kw`."""
        entry = _CATALOGS[self.lang].get(key, _EN[key])
        if isinstance(entry, tuple):
            entry = entry[1]
        return self._tidy(entry.format(**kw)) if kw else entry

    def has(self, key: str) -> bool:
        return key in _EN

    def plural(self, key: str, n: int, **kw: object) -> str:
        """The string `key` in its singular or plural form for `n` things, with {n} filled in."""
        entry = _CATALOGS[self.lang].get(key, _EN[key])
        if isinstance(entry, tuple):
            entry = entry[0] if n == 1 else entry[1]
        return self._tidy(entry.format(n=n, **kw))

    def _tidy(self, text: str) -> str:
        """A filled-in Chinese string without the space its template kept for a Latin value
        that turned out to be Chinese ("{layer} 全部" with layer "Pod 网络")."""
        return tidy_zh(text) if self.lang == "zh-CN" else text

    def severity(self, severity: str) -> str:
        return self(f"severity_{severity}")

    def layer(self, layer: str) -> str:
        """A matrix layer's name; a layer this version does not know shows as its code."""
        key = f"layer_{layer}"
        # The layer code comes from node data when it is not one this version names.
        return self(key) if key in _EN else clean_line(layer)

    def layer_note(self, layer: str) -> str:
        key = f"layer_{layer}_note"
        return self(key) if key in _EN else ""
