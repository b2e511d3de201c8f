"""Every rule example in the README and docs/ passes lint and its own tests as written.

A reader copies these blocks to start a rule of their own: an example that lint rejects (a test
without its `name`, a fact written twice) teaches the mistake. A doc that adds a fact kind (the
probe guide's worked example) declares it in a YAML block of its own; it is registered for the
example's sake only.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from kubenetdiag.engine import lint_paths, load_ruleset
from kubenetdiag.engine.ruletest import run_tests
from kubenetdiag.facts.registry import AttrSpec, KindSpec, registry

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.S | re.M)


def yaml_blocks(doc: Path) -> list[tuple[int, str]]:
    """Each ```yaml block of `doc` with the line its first line of YAML is on."""
    text = doc.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in BLOCK.finditer(text)]


def rule_examples() -> list[tuple[Path, int, str]]:
    return [
        (doc, line, body)
        for doc in DOCS
        for line, body in yaml_blocks(doc)
        if re.search(r"^rules:", body, re.M)
    ]


def declared_kinds(doc: Path) -> dict[str, KindSpec]:
    """Fact kinds a doc declares in a block (`name: {doc: ..., attrs: {...}}`) that the registry
    does not have yet."""
    kinds = {}
    for _, body in yaml_blocks(doc):
        try:
            data = yaml.safe_load(body)
        except yaml.YAMLError:
            continue  # a fragment with `...` in it: not a declaration
        if not isinstance(data, dict) or "rules" in data:
            continue
        for name, spec in data.items():
            if isinstance(spec, dict) and isinstance(spec.get("attrs"), dict):
                attrs = {a: AttrSpec(a, s["type"], s.get("doc", ""), bool(s.get("nullable")))
                         for a, s in spec["attrs"].items()}
                kinds[name] = KindSpec(name, spec.get("doc", ""), attrs)
    return {k: v for k, v in kinds.items() if k not in registry()}


def test_the_docs_have_rule_examples():
    found = {doc.name for doc, _, _ in rule_examples()}
    assert {"README.md", "rules.md", "probes.md"} <= found


@pytest.mark.parametrize(
    ("doc", "line", "body"), rule_examples(),
    ids=lambda x: x.name if isinstance(x, Path) else str(x) if isinstance(x, int) else "",
)
def test_rule_example_passes_lint_and_its_tests(doc, line, body, tmp_path, monkeypatch):
    for name, spec in declared_kinds(doc).items():
        monkeypatch.setitem(registry(), name, spec)
    rules = tmp_path / "example.yaml"
    rules.write_text(body, encoding="utf-8")
    where = f"{doc.relative_to(ROOT)}, the rule example at line {line}"
    problems = lint_paths([rules], with_shipped=False)
    assert not problems, f"{where} fails lint:\n" + "\n".join(
        f"  {doc.relative_to(ROOT)}:{line + (e.line or 1) - 1}: {e.message}"
        + (f" ({e.hint})" if e.hint else "")
        for e in problems
    )
    failed = [r for r in run_tests(load_ruleset([rules], shipped=False)) if not r.passed]
    assert not failed, f"{where}: its tests fail:\n" + "\n".join(
        f"  {r.rule_id} / {r.name}: {r.message}" for r in failed
    )
