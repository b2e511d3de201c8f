"""What changed since a baseline (kubenetdiag.changes), as lines of text: for `kubenetdiag
diff`, and for the terminal summary and the Markdown report of `diagnose --baseline`."""

from __future__ import annotations

from typing import Any

from kubenetdiag.reports.sanitize import clean_line as clean


def _v(value: Any) -> str:
    return "(none)" if value is None else clean(str(value))[:160]


def fact_line(c: dict) -> str:
    """One changed fact: `node2 sysctl net.ipv4.ip_forward: value 1 -> 0`."""
    what = " ".join(_v(v) for v in c["key"].values() if v not in (None, ""))
    head = f"{clean(c['node'])} {c['kind']}" + (f" {what}" if what else "")
    if c["change"] != "changed":
        return f"{head}: {c['change']}"
    moves = ", ".join(f"{f} {_v(c['before'].get(f))} -> {_v(c['after'].get(f))}"
                      for f in c["fields"])
    return f"{head}: {moves}"


def finding_line(f: dict) -> str:
    root = ", root cause" if f["root_cause"] else ""
    return f"{clean(f['node'])} {f['severity']}{root}: {clean(f['title'])} ({f['rule']})"


def lines(diff: dict) -> list[str]:
    """The whole comparison, a heading and its items at a time; empty when nothing changed."""
    out: list[str] = []
    for heading, items in (("findings that appeared", diff["findings"]["appeared"]),
                           ("findings that went away", diff["findings"]["gone"])):
        if items:
            out += [f"{heading}:", *(f"  {finding_line(f)}" for f in items)]
    if diff["facts"]:
        out += ["facts that changed:", *(f"  {fact_line(c)}" for c in diff["facts"])]
    nodes = diff["nodes"]
    for key, heading in (("only_old", "nodes only in the baseline"),
                         ("only_new", "nodes new since the baseline"),
                         ("not_compared", "nodes not reached in one of the runs (not compared)")):
        if nodes[key]:
            out.append(f"{heading}: {', '.join(clean(n) for n in nodes[key])}")
    return out


def text(diff: dict) -> str:
    head = (f"baseline {_v(diff['old']['bundle'])} ({_v(diff['old']['started_at'])}) -> "
            f"{_v(diff['new']['bundle'])} ({_v(diff['new']['started_at'])})")
    body = lines(diff)
    return "\n".join([head, *(body or ["nothing changed"])]) + "\n"
