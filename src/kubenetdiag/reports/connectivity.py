"""The connectivity picture: the report's `connectivity` section as heatmaps and summaries.

All geometry is computed here, so the HTML template only writes numbers and already-cleaned
strings into SVG elements, and Markdown and the terminal tell the same story from the same
numbers (which nodes are suspect, how many pairs fail, what was folded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kubenetdiag import localize
from kubenetdiag.reports.sanitize import clean_line

if TYPE_CHECKING:
    from kubenetdiag.reports.i18n import UI

# Above this many nodes a full matrix is a grey carpet nobody can read, and its SVG alone would
# weigh megabytes: only the nodes involved in failures keep their own row and column.
COLLAPSE_ABOVE = 60
MAX_SHOWN = 60  # rows kept when collapsing, failures first
LABEL_CHARS = 22  # axis labels are cut to this; the full name is in the tooltip
MAX_PAIRS_LISTED = 20  # failing pairs listed under the picture and in Markdown
MD_MATRIX_MAX = 12  # Markdown tables wider than this do not fit a ticket

Pair = tuple[str, str]


@dataclass
class Cell:
    x: int
    y: int
    state: str  # ok, fail, mixed, none (not measured), self
    tip: str


@dataclass
class AxisLabel:
    text: str
    tip: str
    x: int
    y: int
    marked: bool


@dataclass
class Box:
    x: int
    y: int
    w: int
    h: int
    tip: str


@dataclass
class Heatmap:
    layer: str
    label: str
    width: int
    height: int
    cell: int
    rows: list[AxisLabel]
    cols: list[AxisLabel]
    cells: list[Cell]
    marks: list[Box]
    measured: int
    failed: int
    summary: str


@dataclass
class Suspect:
    label: str  # label/anchor: the same shape as view.Link, so templates link it the same way
    anchor: str | None
    reason: str


@dataclass
class FailingPair:
    layer: str
    src: str
    dst: str
    detail: str


@dataclass
class ConnectivityView:
    measured: bool
    headline: str  # per layer: how many pairs fail
    line: str = ""  # the headline plus the nodes that stand out: the terminal's one line
    nodes_total: int = 0
    folded: int = 0
    folded_note: str = ""
    suspects: list[Suspect] = field(default_factory=list)
    heatmaps: list[Heatmap] = field(default_factory=list)
    failing: list[FailingPair] = field(default_factory=list)
    failing_more: int = 0
    md_axis: list[str] = field(default_factory=list)  # small clusters: the pod matrix as a table
    md_rows: list[tuple[str, list[str]]] = field(default_factory=list)
    md_layer: str = ""


def _short(name: str) -> str:
    return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"


def _suspects(
    nodes: list[str], layers: dict[str, dict[Pair, dict]], causes: set[str]
) -> dict[str, tuple[bool, bool, bool]]:
    """Nodes to mark: (every probe from it fails, every probe to it fails, root cause on it).

    "Every measured pair in its row or column fails" is what makes one node stand out: a single
    failing pair can be either end's fault, but a whole failing row points at that node. A node
    a root-cause finding names is marked too when the matrix shows failures around it, so the
    picture and the verdict point at the same place.
    """
    # One pass over the pairs: a per-node scan would be quadratic in pairs at 500 nodes.
    row_all: set[str] = set()
    col_all: set[str] = set()
    for pairs in layers.values():
        row_ok: dict[str, list[bool]] = {}
        col_ok: dict[str, list[bool]] = {}
        for (s, d), p in pairs.items():
            if s == d:
                continue
            row_ok.setdefault(s, []).append(p["ok"])
            col_ok.setdefault(d, []).append(p["ok"])
        row_all.update(n for n, oks in row_ok.items() if not any(oks))
        col_all.update(n for n, oks in col_ok.items() if not any(oks))
    # A root-cause node whose only failures are with an isolated node is a bystander: every
    # healthy node has those failures too, and marking it would point away from the culprit.
    touched = _unexplained(layers, row_all | col_all)
    out: dict[str, tuple[bool, bool, bool]] = {}
    for n in nodes:
        cause = n in causes and n in touched
        if n in row_all or n in col_all or cause:
            out[n] = (n in row_all, n in col_all, cause)
    return out


def _unexplained(layers: dict[str, dict[Pair, dict]], isolated: set[str]) -> set[str]:
    """Nodes with a failing pair whose other end is not an isolated node."""
    out: set[str] = set()
    for pairs in layers.values():
        for (s, d), p in pairs.items():
            if s != d and not p["ok"] and s not in isolated and d not in isolated:
                out.update((s, d))
    return out


def _shown_nodes(
    nodes: list[str], layers: dict[str, dict[Pair, dict]], suspects: dict
) -> list[str]:
    if len(nodes) <= COLLAPSE_ABOVE:
        return nodes
    fails: dict[str, int] = {}
    for pairs in layers.values():
        for (s, d), p in pairs.items():
            # Failures already explained by a suspect would pull in every node of the cluster
            # (each has a failing pair with the broken one): they do not earn a row of their own.
            if not p["ok"] and s not in suspects and d not in suspects:
                fails[s] = fails.get(s, 0) + 1
                fails[d] = fails.get(d, 0) + 1
    for n in suspects:
        fails[n] = 1 << 30
    keep = set(sorted(fails, key=lambda n: -fails[n])[:MAX_SHOWN])
    return [n for n in nodes if n in keep]


def _pairs(nodes: list[str], layer: dict) -> dict[Pair, dict]:
    """Measured pairs of one layer, from its matrix rows and the details of failed probes."""
    details = {(f["src"], f["dst"]): f for f in layer["failed"]}
    out: dict[Pair, dict] = {}
    # zip, not indexing: a row shorter or longer than the node list (a hand-edited report)
    # leaves the missing pairs unmeasured instead of failing the whole render.
    for src, row in zip(nodes, layer["matrix"], strict=False):
        for dst, mark in zip(nodes, row, strict=False):
            if mark == ".":
                continue
            ok = mark == "1"
            d = details.get((src, dst), {}) if not ok else {}
            out[(src, dst)] = {"ok": ok, "rtt_ms": d.get("rtt_ms"), "detail": d.get("detail")}
    return out


def _state(ok: list[bool]) -> str:
    if not ok:
        return "none"
    if all(ok):
        return "ok"
    return "fail" if not any(ok) else "mixed"


def build_connectivity(
    section: dict | None, ui: UI, anchors: dict[str, str], causes: set[str]
) -> ConnectivityView:
    """The view of report["connectivity"]; `causes` are the nodes root-cause findings name."""
    if not section or not section["layers"]:
        text = ui("conn_not_measured")
        return ConnectivityView(measured=False, headline=text, line=text)

    nodes = list(section["nodes"])
    layers = {la["layer"]: _pairs(nodes, la) for la in section["layers"]}
    suspects = _suspects(nodes, layers, causes)
    shown = _shown_nodes(nodes, layers, suspects)
    shown_set = set(shown)
    folded = [n for n in nodes if n not in shown_set]
    label = {n: clean_line(n) for n in nodes}

    heatmaps = [
        _heatmap(layer, pairs, shown, folded, suspects, label, ui)
        for layer, pairs in layers.items()
    ]

    suspect_views = []
    for n, (row_all, col_all, _cause) in suspects.items():
        if row_all and col_all:
            reason = ui("conn_suspect_both")
        elif row_all:
            reason = ui("conn_suspect_from")
        elif col_all:
            reason = ui("conn_suspect_to")
        else:
            reason = ui("conn_suspect_cause")
        suspect_views.append(Suspect(label[n], anchors.get(n), reason))

    failing: list[FailingPair] = []
    total_failing = 0
    for layer, pairs in layers.items():
        for (s, d), p in pairs.items():
            # Pairs that a suspect explains are summed up by the suspect line; listing 998 of
            # them would bury the one odd pair between two healthy nodes.
            if p["ok"] or s in suspects or d in suspects:
                continue
            total_failing += 1
            if len(failing) < MAX_PAIRS_LISTED:
                failing.append(
                    FailingPair(ui.layer(layer), label[s], label[d], _detail(p, ui))
                )

    headline = ui("list_sep2").join(h.summary for h in heatmaps)  # under a "Connectivity" heading
    # The terminal line is cut at the screen's edge, so the node to look at comes first.
    short = ui("list_sep2").join(
        ui("conn_short_fail", layer=h.label, failed=f"{h.failed:,}", total=f"{h.measured:,}")
        if h.failed else ui("conn_short_ok", layer=h.label, total=f"{h.measured:,}")
        for h in heatmaps
    )
    named = ui("list_sep").join(f"⚠ {s.label}{ui('colon')}{s.reason}" for s in suspect_views[:3])
    if len(suspect_views) > 3:
        named += " " + ui("more", n=len(suspect_views) - 3)
    line = ui("conn_headline", layers=f"{named} · {short}" if named else short)

    view = ConnectivityView(
        measured=True,
        headline=headline,
        line=line,
        nodes_total=len(nodes),
        folded=len(folded),
        folded_note=(
            ui.plural("conn_folded", len(folded), total=len(nodes)) if folded else ""
        ),
        suspects=suspect_views,
        heatmaps=heatmaps,
        failing=failing,
        failing_more=total_failing - len(failing),
    )
    if len(nodes) <= MD_MATRIX_MAX:
        first = next(iter(layers))
        pairs = layers[first]
        view.md_layer = ui.layer(first)
        view.md_axis = [label[n] for n in nodes]
        for s in nodes:
            row = []
            for d in nodes:
                p = pairs.get((s, d))
                row.append("—" if s == d and p is None else "·" if p is None
                           else "✓" if p["ok"] else "✗")
            view.md_rows.append((label[s], row))
    return view


def _detail(p: dict, ui: UI) -> str:
    parts = []
    if p.get("detail"):
        parts.append(clean_line(localize.value(str(p["detail"]), ui.lang, "detail")))
    if p.get("rtt_ms") is not None:
        parts.append(f"{p['rtt_ms']:.2f} ms")
    return ui("list_sep").join(parts) or (ui("conn_ok") if p["ok"] else ui("conn_fail"))


def _heatmap(
    layer: str,
    pairs: dict[Pair, dict],
    shown: list[str],
    folded: list[str],
    suspects: dict,
    label: dict[str, str],
    ui: UI,
) -> Heatmap:
    n_axis = len(shown) + (1 if folded else 0)
    # A handful of nodes gets cells big enough to read at a glance; more nodes, smaller ones
    cell = (48 if n_axis <= 4 else 36 if n_axis <= 8 else 22 if n_axis <= 16
            else 16 if n_axis <= 36 else 12)
    texts = [_short(label[n]) for n in shown]
    if folded:
        texts.append(ui.plural("conn_others", len(folded)))
    # Labels are drawn at 12px; about 7px a character keeps long names off the cells.
    left = 12 + 7 * max((len(t) + 2 for t in texts), default=4)
    top = int(left * 0.72) + 8  # column labels run at -45 degrees: their height is ~0.7 length
    width = left + n_axis * cell + int(left * 0.72)
    height = top + n_axis * cell + 4

    axis = list(shown) + ([None] if folded else [])
    rows: list[AxisLabel] = []
    cols: list[AxisLabel] = []
    for i, n in enumerate(axis):
        marked = n is not None and n in suspects
        text = texts[i]
        tip = label[n] if n is not None else ui.plural("conn_others_tip", len(folded))
        if marked:
            text = "⚠ " + text
        rows.append(AxisLabel(text, tip, left - 6, top + i * cell + cell // 2 + 4, marked))
        cols.append(AxisLabel(text, tip, left + i * cell + cell // 2 + 4, top - 6, marked))

    layer_label = ui.layer(layer)
    cells: list[Cell] = []
    measured = failed = 0
    for i, s in enumerate(axis):
        for j, d in enumerate(axis):
            srcs = [s] if s is not None else folded
            dsts = [d] if d is not None else folded
            oks = []
            for a in srcs:
                for b in dsts:
                    p = pairs.get((a, b))
                    if p is not None and (a != b or s is not None):
                        oks.append(p["ok"])
            x, y = left + j * cell, top + i * cell
            if s is not None and d is not None:
                p = pairs.get((s, d))
                if p is None:
                    state = "self" if s == d else "none"
                    tip = ui("conn_tip_none", src=label[s], dst=label[d], layer=layer_label)
                    if s == d:
                        tip = ui("conn_tip_self", src=label[s])
                else:
                    state = "ok" if p["ok"] else "fail"
                    tip = ui(
                        "conn_tip_fail" if not p["ok"]
                        else "conn_tip_ok" if p["detail"] or p["rtt_ms"] is not None
                        else "conn_tip_ok_plain",
                        src=label[s], dst=label[d], layer=layer_label, detail=_detail(p, ui),
                    )
            else:
                state = _state(oks)
                src_t = label[s] if s is not None else ui.plural("conn_others_tip", len(folded))
                dst_t = label[d] if d is not None else ui.plural("conn_others_tip", len(folded))
                tip = ui("conn_tip_group", src=src_t, dst=dst_t, layer=layer_label,
                         failed=oks.count(False), total=len(oks))
            cells.append(Cell(x, y, state, tip))
    for (a, b), p in pairs.items():
        if a != b:
            measured += 1
            failed += not p["ok"]

    marks: list[Box] = []
    for i, n in enumerate(shown):
        if n in suspects:
            tip = label[n]
            marks.append(Box(left, top + i * cell, n_axis * cell, cell, tip))
            marks.append(Box(left + i * cell, top, cell, n_axis * cell, tip))

    if failed:
        summary = ui("conn_layer_fail", layer=layer_label, failed=f"{failed:,}",
                     total=f"{measured:,}")
    else:
        summary = ui("conn_layer_ok", layer=layer_label, total=f"{measured:,}")
    return Heatmap(layer, layer_label, width, height, cell, rows, cols, cells, marks,
                   measured, failed, summary)
