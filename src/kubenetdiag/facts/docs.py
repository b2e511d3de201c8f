"""Render the facts registry as Markdown: `python -m kubenetdiag.facts.docs > docs/facts.md`.

The registry YAML is the one source; this page is generated from it so that docs, the rule
linter and the parsers cannot disagree (a test checks the committed page is current).
"""

from __future__ import annotations

import sys

from kubenetdiag.facts import census, paths, vantage
from kubenetdiag.facts.cluster import CALL_KINDS
from kubenetdiag.facts.producers import COLLECTION
from kubenetdiag.facts.registry import registry
from kubenetdiag.probes import PROBES, processes
from kubenetdiag.probes.active import checks

HEADER = """# Fact kinds

Generated from `src/kubenetdiag/facts/kinds/*.yaml` by `python -m kubenetdiag.facts.docs >
docs/facts.md`; do not edit by hand. Every fact also has `node` (the inventory name, or
`cluster`) and a `source` (probe, command, exit code, raw excerpt). A nullable attribute may be
null, which means *unknown*, never *healthy*.

The known-process list behind `process` facts is data: `src/kubenetdiag/probes/processes.yaml`.
Add names (or roles) with a YAML file of the same shape named in the environment variable
`KUBENETDIAG_PROCESSES` (several files separated by `:`) when running `analyze` or `diagnose`.
A `process` fact carries the name in the second column below; `matched` says which of the
names in the third it was found by.

`kubenetdiag diff OLD NEW` (and `--baseline`) compares the kinds whose section says how; the
others (measurements such as pings and counters' values, and derived views) are not compared.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _made_by() -> dict[str, list[str]]:
    """Kind -> who makes it, in words: from the producers' own declarations (facts.producers),
    so a rule author sees which probe's failure would leave a rule unevaluated."""
    out: dict[str, list[str]] = {}
    for p in PROBES:
        for k in p.kinds:
            out.setdefault(k, []).append(f"probe `{p.name}`")
    for c in checks():
        for k in c.kinds:
            out.setdefault(k, []).append(f"active check `{c.name}`")
    for call, kinds in CALL_KINDS.items():
        for k in kinds:
            out.setdefault(k, []).append(f"API call `{call}`")
    for module in (paths, vantage, census):
        inputs = ", ".join(f"`{k}`" for k in module.INPUTS if k not in COLLECTION)
        for k in module.PRODUCES:
            out.setdefault(k, []).append(f"kubenetdiag before the rules run, from {inputs}")
    return out


def _process_roles() -> list[str]:
    """The shipped process list by role: what each name is also recognised as."""
    shown = {"name": "`{}`", "contains": "any command line containing `{}`",
             "command": "`{}` (program and first arguments)"}
    out = ["| role | reported as | recognised as |", "|---|---|---|"]
    for role, entries in processes.shipped().items():
        for known in entries:
            ways = ", ".join(shown[how].format(text) for how, text in known.matchers)
            out.append(f"| {role} | `{known.label}` | {_cell(ways)} |")
    return out


def render() -> str:
    made_by = _made_by()
    kinds = registry()
    out = [HEADER, *_process_roles(), "", "| kind | what it is |", "|---|---|"]
    for name in sorted(kinds):
        first = kinds[name].doc.split(". ")[0].rstrip(".")
        out.append(f"| [`{name}`](#{name}) | {_cell(first)} |")
    for name in sorted(kinds):
        spec = kinds[name]
        out += ["", f"## {name}", ""]
        if spec.derived:
            out.append("*Derived: asserted by rules, not produced by a probe.*\n")
        elif name in made_by:
            out.append(f"*Made by {'; '.join(made_by[name])}.*\n")
        out += [spec.doc, ""]
        if spec.diff is not None:
            key = ", ".join(f"`{k}`" for k in spec.diff.key) or "the node alone (one a node)"
            ignored = ", ".join(f"`{k}`" for k in spec.diff.ignore)
            out += [f"`kubenetdiag diff` and `--baseline` compare it by {key}"
                    + (f"; they leave out {ignored}, which move on their own." if ignored
                       else "."), ""]
        out += ["| attribute | type | doc |", "|---|---|---|"]
        for a in spec.attrs.values():
            typ = a.type + (" or null" if a.nullable else "")
            out.append(f"| `{a.name}` | {typ} | {_cell(a.doc)} |")
    return "\n".join(out) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
