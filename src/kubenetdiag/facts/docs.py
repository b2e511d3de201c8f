"""Render the facts registry as Markdown: `python -m kubenetdiag.facts.docs > docs/facts.md`.

The registry YAML is the one source; this page is generated from it so that docs, the rule
linter and the parsers cannot disagree (a test checks the committed page is current).
"""

from __future__ import annotations

import sys

from kubenetdiag.facts.registry import registry

HEADER = """# Fact kinds

Generated from `src/kubenetdiag/facts/kinds/*.yaml` by `python -m kubenetdiag.facts.docs >
docs/facts.md`; do not edit by hand. Every fact also has `node` (the inventory name, or
`cluster`) and a `source` (probe, command, exit code, raw excerpt). A nullable attribute may be
null, which means *unknown*, never *healthy*.

The known-process list behind `process` facts is data: `src/kubenetdiag/probes/processes.yaml`.
Add names (or roles) with a YAML file of the same shape named in the environment variable
`KUBENETDIAG_PROCESSES` (several files separated by `:`) when running `analyze` or `diagnose`.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    kinds = registry()
    out = [HEADER, "| kind | what it is |", "|---|---|"]
    for name in sorted(kinds):
        first = kinds[name].doc.split(". ")[0].rstrip(".")
        out.append(f"| [`{name}`](#{name}) | {_cell(first)} |")
    for name in sorted(kinds):
        spec = kinds[name]
        out += ["", f"## {name}", ""]
        if spec.derived:
            out.append("*Derived: asserted by rules, not produced by a probe.*\n")
        out += [spec.doc, "", "| attribute | type | doc |", "|---|---|---|"]
        for a in spec.attrs.values():
            typ = a.type + (" or null" if a.nullable else "")
            out.append(f"| `{a.name}` | {typ} | {_cell(a.doc)} |")
    return "\n".join(out) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
