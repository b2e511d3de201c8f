"""Traffic control hooks on the path: clsact and ingress qdiscs with their filters (where
Cilium, Calico's eBPF dataplane, bandwidth shapers and security agents attach), classful root
qdiscs with theirs, and any root qdisc that is not a kernel default (netem, tbf...). A packet
meets them before netfilter on the way in and after it on the way out; what a filter's BPF
program or action does cannot be read from here, so the walk only says traffic may be
altered there.

Qdiscs are listed once, as text: every tc prints that form, and the shell picks the devices
that have something to list from it without a fork. Their filters are then listed by one
`tc -j -force -b -` for all of them (a node with a hundred pod devices costs one process, not
a hundred). tc numbers a failed line (a device gone since the listing) on stderr as
`Command failed -:N` and prints no JSON for it, so the parser skips exactly those. A tc
without JSON filters (CentOS 7, iproute2 < 4.19) lists each device in text instead.

Sample output and the facts it gives:

>>> out = (
...     '##knd:qdisc\\n'
...     'qdisc noqueue 0: dev eth0 root refcnt 2\\n'
...     'qdisc clsact ffff: dev eth0 parent ffff:fff1\\n'
...     '##knd:hooks eth0:ingress eth0:egress\\n'
...     '##knd:filters json\\n'
...     '[{"protocol":"ip","pref":49152,"kind":"u32","chain":0},{"protocol":"ip",'
...     '"pref":49152,"kind":"u32","chain":0,"options":{"fh":"800::800","match":'
...     '{"value":"2118","mask":"ffff","offmask":"","off":20},"actions":[{"order":1,'
...     '"kind":"gact","control_action":{"type":"drop"}}]}}]\\n'
...     '[]\\n'
... )
>>> facts = parse(Section("tc", "", 0, 0.0, out, ""), "node1")
>>> [(f.attrs["dev"], f.attrs["direction"], f.attrs["qdisc"], f.attrs["filters"],
...   f.attrs["actions"]) for f in facts]
[('eth0', 'ingress', 'clsact', 1, 'u32,drop'), ('eth0', 'egress', 'clsact', 0, None)]
"""

from __future__ import annotations

import json
import re

from kubenetdiag.facts.model import Fact, Source, excerpt
from kubenetdiag.probes.base import Probe, Section
from kubenetdiag.probes.text import clip, parts

# Qdiscs whose classes filters attach to: their filters steer (or drop) egress traffic.
CLASSFUL = ("htb", "hfsc", "prio", "cbq", "drr", "qfq", "ets", "multiq", "dsmark", "atm")
# What a kernel or a distribution puts on a device by itself: nothing to report without filters.
DEFAULTS = frozenset({"noqueue", "pfifo_fast", "fq_codel", "mq", "noop", "pfifo", "fq"})

# `set -f`: qdisc options and device names are split into words, never globbed. Items are
# DEV:WHAT (a device name cannot hold a colon or a space): WHAT is a clsact's ingress or
# egress, or the handle of the old ingress qdisc (ffff:, which every tc lists by `parent`; the
# `ingress` keyword came with clsact) or of a classful qdisc.
COMMAND = (
    "set -f; q=$(tc qdisc show) || return; printf '##knd:qdisc\\n%s\\n' \"$q\"; "
    "L=; set -- $q; while [ $# -ge 5 ]; do "
    "if [ \"$1\" = qdisc ] && [ \"$4\" = dev ]; then case $2 in "
    "clsact) L=\"$L $5:ingress $5:egress\";; "
    f"ingress|{'|'.join(CLASSFUL)}) L=\"$L $5:$3\";; esac; shift 5; else shift; fi; done; "
    "[ -n \"$L\" ] || return 0; printf '##knd:hooks%s\\n' \"$L\"; "
    "o=$(for i in $L; do d=${i%%:*}; w=${i#*:}; case $w in "
    "ingress|egress) printf 'filter show dev %s %s\\n' \"$d\" \"$w\";; "
    "*) printf 'filter show dev %s parent %s\\n' \"$d\" \"$w\";; esac; done "
    "| tc -j -force -b -); r=$?; "
    "case $r$o in [01]|[01]\\[*) case $o in *'filter protocol '*|*'filter parent '*) ;; "
    "*) echo '##knd:filters json'; printf '%s\\n' \"$o\"; return 0;; esac;; esac; "
    "echo '##knd:filters text'; for i in $L; do d=${i%%:*}; w=${i#*:}; "
    "printf '##knd:filter %s\\n' \"$i\"; case $w in "
    "ingress|egress) tc filter show dev \"$d\" \"$w\";; "
    "*) tc filter show dev \"$d\" parent \"$w\";; esac; done"
)

_FAILED = re.compile(r"^Command failed \S*:(\d+)\s*$", re.M)
_TEXT_KIND = re.compile(r"\bpref \d+ (\S+)")
_TEXT_ACTION = re.compile(r"action order \d+:\s+(\S+)(?:\s+action\s+(\S+))?")


def _qdiscs(lines: list[str]) -> list[dict]:
    out = []
    for line in lines:
        w = line.split()
        if len(w) < 6 or w[0] != "qdisc" or w[3] != "dev":
            continue
        out.append({"kind": w[1], "handle": w[2], "dev": w[4],
                    "root": w[5] == "root",
                    "parent": w[6] if w[5] == "parent" and len(w) > 6 else None,
                    "line": " ".join(w)})
    return out


def _seen(found: list[str], word: object) -> None:
    if isinstance(word, str) and word and word not in found:
        found.append(clip(word, 40))


def _json_filters(entries: list, found: list[str], summary: list[str]) -> int:
    """Filters in one `tc -j filter show` answer. Entries without options are the classifier
    instances themselves, and u32 lists its hash tables as entries: neither is a filter.
    (u32's hash tables are shared by a clsact's two directions: where both have u32 at the same
    priority, the kernel lists each one's filters under both. Counted as listed.)"""
    count = 0
    for e in entries:
        if not isinstance(e, dict):
            continue
        opts = e.get("options")
        if not isinstance(opts, dict) or "ht_divisor" in opts:
            continue
        count += 1
        _seen(found, e.get("kind"))
        words = [str(e.get("kind")), f"pref {e.get('pref')}"]
        match = opts.get("match")
        if isinstance(match, dict):
            words.append(f"match {match.get('value')}/{match.get('mask')} at {match.get('off')}")
        for key in ("flowid", "classid", "bpf_name", "name"):
            if isinstance(opts.get(key), str | int):
                words.append(f"{key} {opts[key]}")
        for action in opts.get("actions") if isinstance(opts.get("actions"), list) else []:
            if not isinstance(action, dict):
                continue
            kind = action.get("kind")
            control = action.get("control_action")
            if kind == "gact" and isinstance(control, dict):
                kind = control.get("type")  # gact's verdict is the action: drop, pass...
            _seen(found, kind)
            words.append(f"action {kind}" + (f" {action.get('mirred_action')} "
                                             f"{action.get('direction')} {action.get('to_dev')}"
                                             if action.get("kind") == "mirred" else ""))
        summary.append(" ".join(words))
    return count


def _text_filters(lines: list[str], found: list[str], summary: list[str]) -> int:
    count = 0
    for line in lines:
        s = line.strip()
        if s.startswith("filter "):
            m = _TEXT_KIND.search(s)
            # a filter has a handle (u32: a node fh H:B:N, not a table fh H:)
            if m and (" handle " in s or re.search(r" fh [0-9a-f]*:[0-9a-f]*:[0-9a-f]+", s)):
                count += 1
                _seen(found, m.group(1))
                summary.append(s)
        elif s.startswith("action order"):
            m = _TEXT_ACTION.match(s)
            if m:
                _seen(found, m.group(2) if m.group(1) == "gact" and m.group(2) else m.group(1))
                summary.append(s)
        elif s.startswith("match ") and summary:
            summary.append(s)
    return count


def parse(section: Section, node: str) -> list[Fact]:
    qdiscs: list[dict] = []
    items: list[str] = []
    answers: dict[str, list] = {}  # item -> its filters: the JSON list, or text lines
    fmt = None
    for name, arg, lines in parts(section.stdout):
        if name == "qdisc":
            qdiscs = _qdiscs(lines)
        elif name == "hooks":
            items = arg.split()
        elif name == "filters":
            fmt = arg
            if arg == "json":
                answers.update(_map_json(items, lines, section.stderr))
        elif name == "filter" and fmt == "text":
            answers[arg] = lines
    facts: list[Fact] = []

    def fact(dev: str, direction: str, qdisc: str, item_list: list[str], text: list[str],
             raw: str, rate: int | None = None) -> None:
        found: list[str] = []
        summary: list[str] = []
        count = 0
        for item in item_list:
            if fmt == "json":
                count += _json_filters(answers[item], found, summary)
            else:
                count += _text_filters(answers[item], found, summary)
        if qdisc in DEFAULTS and not count:
            return
        facts.append(Fact("tc_hook", node, {
            "dev": clip(dev, 64),
            "direction": direction,
            "qdisc": clip(qdisc, 80),
            "filters": count,
            "actions": clip(",".join(found), 200) or None,
            "text": clip("; ".join([*text, *summary[:8]]), 500),
            "rate_bps": rate,
        }, Source("tc", "tc qdisc show; tc -j filter show dev DEV ...", section.exit_code,
                  excerpt(raw, 1000))))

    listed = set(items)
    for dev in dict.fromkeys(q["dev"] for q in qdiscs):
        mine = [q for q in qdiscs if q["dev"] == dev]
        for q in mine:
            if q["kind"] == "clsact":
                hooks = [("ingress", f"{dev}:ingress"), ("egress", f"{dev}:egress")]
            elif q["kind"] == "ingress":
                hooks = [("ingress", f"{dev}:{q['handle']}")]
            else:
                continue
            for direction, item in hooks:
                if item in listed and item not in answers:
                    continue  # listed but not answered: unknown, said by the status below
                fact(dev, direction, q["kind"], [item] if item in answers else [], [q["line"]],
                     _raw([q["line"]], [answers.get(item, [])]))
        tree = [q for q in mine if q["kind"] not in ("clsact", "ingress")]
        if not tree:
            continue
        tree_items = [f"{dev}:{q['handle']}" for q in tree if f"{dev}:{q['handle']}" in listed]
        if any(item not in answers for item in tree_items):
            continue
        kinds = [q["kind"] for q in sorted(tree, key=lambda q: not q["root"])]
        shown = [k for k in dict.fromkeys(kinds) if k not in DEFAULTS] or kinds[:1]
        # only a tbf at the root bounds the whole device: one under a class bounds that class
        rates = [r for q in tree if q["kind"] == "tbf" and q["root"]
                 and (r := tbf_rate(q["line"]))]
        fact(dev, "root", ",".join(shown), tree_items, [q["line"] for q in tree][:4],
             _raw([q["line"] for q in tree], [answers[i] for i in tree_items]),
             min(rates) if rates else None)
    missing = [item for item in items if item not in answers]
    if missing:
        facts.append(Fact("probe_status", node, {
            "probe": "tc", "status": "failed",
            "reason": clip("filters not listed for " + ", ".join(missing), 300),
            "blocks": PROBE.blocks,
        }, Source("tc", "tc -j -force -b -", section.exit_code, excerpt(section.stderr, 1000))))
    return facts


_RATE = re.compile(r"\brate (\d+(?:\.\d+)?)([KMGT]?)(i?)bit\b")
_UNITS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}  # powers of the base


def tbf_rate(line: str) -> int | None:
    """The rate a tbf qdisc line caps its device at, in bits per second (tc prints it with
    SI prefixes, or binary ones under -iec).

    >>> tbf_rate("qdisc tbf 8001: dev eth0 root refcnt 2 rate 8Mbit burst 8Kb lat 60.0ms")
    8000000
    >>> tbf_rate("qdisc tbf 1: dev veth1 root rate 1.5Gibit burst 64Kb lat 25ms")
    1610612736
    >>> tbf_rate("qdisc tbf 1: dev veth1 root rate 96bit burst 1b lat 1s")
    96
    """
    m = _RATE.search(line)
    if not m:
        return None
    base = 1024 if m.group(3) else 1000
    return round(float(m.group(1)) * base ** _UNITS[m.group(2)])


def _raw(qdisc_lines: list[str], answers: list[list]) -> str:
    """The lines behind a fact, as the node printed them (a JSON answer back on one line)."""
    out = list(qdisc_lines)
    for answer in answers:
        if answer and not all(isinstance(x, str) for x in answer):
            out.append(json.dumps(answer))
        else:
            out.extend(answer)
    return "\n".join(out)


def _map_json(items: list[str], lines: list[str], stderr: str) -> dict[str, list]:
    """Each listed item's answer (its JSON list): the answers come in batch order, one line
    each, and a failed batch line (numbered from 1) printed none. Anything else (a count that
    does not add up, a line that is not a JSON list: an old tc printing some classifiers as
    text) and the answers cannot be told apart: none is kept, rather than one device's filters
    given to another or a filter not counted."""
    failed = {int(n) for n in _FAILED.findall(stderr)}
    answered = [item for n, item in enumerate(items, 1) if n not in failed]
    out = []
    for line in lines:
        if not line.strip():
            continue
        try:
            entries = json.loads(line)
        except ValueError:
            return {}
        if not isinstance(entries, list):
            return {}
        out.append(entries)
    if len(out) != len(answered):
        return {}
    return dict(zip(answered, out, strict=True))


PROBE = Probe(
    name="tc",
    command=COMMAND,
    parse=parse,
    kinds=("tc_hook",),
    blocks="traffic control on the path (clsact/ingress filters, BPF programs attached with "
           "tc, classful or non-default qdiscs)",
    tools=("tc",),
)
