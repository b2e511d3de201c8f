"""docs/probes.md's worked example keeps working: its files, put into a copy of the source tree
at the paths the guide names, give a probe that is discovered and runs in the node script, a
parser that turns the fixture into the facts the guide lists, a rule that lints and passes its
tests, and the same report on the shipped example bundle as without them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
GUIDE = ROOT / "docs" / "probes.md"
EXAMPLE = ROOT / "examples" / "bundles" / "lab-three-faults"
# A fenced block whose first line is `# <path>` (or `# <path> (append)`) is a file of the guide.
_BLOCK = re.compile(r"^```[a-z]*\n# ((?:src|tests)/\S+)( \(append\))?\n(.*?)^```$", re.S | re.M)


def guide_files() -> list[tuple[str, bool, str]]:
    """(path, append, text) of every file the guide gives, in page order."""
    return [(m.group(1), bool(m.group(2)), m.group(3)) for m in _BLOCK.finditer(
        GUIDE.read_text(encoding="utf-8"))]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("guide")
    shutil.copytree(ROOT / "src", root / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for path, append, text in guide_files():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if append:
            old = target.read_text(encoding="utf-8")
            text = old + ("" if old.endswith("\n") else "\n") + "\n" + text
        target.write_text(text, encoding="utf-8")
    return root


def run(tree: Path, *argv: str, src: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src or tree / "src")}
    return subprocess.run([sys.executable, *argv], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_guide_gives_the_four_pieces() -> None:
    paths = [path for path, _, _ in guide_files()]
    assert paths == [
        "src/kubenetdiag/probes/nic_drops.py",
        "tests/fixtures/probes/nic_drops/ixgbe-missed.txt",
        "tests/fixtures/probes/nic_drops/README.md",
        "src/kubenetdiag/facts/kinds/node.yaml",
        "src/kubenetdiag/rules/host/nic_drops.yaml",
    ]


CHECK_PROBE = r"""
import doctest, json, sys
import kubenetdiag
from kubenetdiag.collect.script import build_script
from kubenetdiag.facts.registry import validate_fact
from kubenetdiag.probes import BY_NAME, PROBES, Section, probe_names
from kubenetdiag.probes import nic_drops

assert kubenetdiag.__file__.startswith(sys.argv[1]), kubenetdiag.__file__
assert "nic_drops" in probe_names()
assert "__knd_run nic_drops " in build_script(PROBES, "@@KND:x")
assert doctest.testmod(nic_drops).failed == 0
text = open(sys.argv[2]).read()
facts = BY_NAME["nic_drops"].parse(Section("nic_drops", "", 0, 0.0, text, ""), "node1")
for fact in facts:
    assert not validate_fact(fact), validate_fact(fact)
print(json.dumps([(f.kind, f.attrs) for f in facts]))
"""


def test_the_probe_is_discovered_and_parses_its_fixture(tree: Path) -> None:
    fixture = tree / "tests" / "fixtures" / "probes" / "nic_drops" / "ixgbe-missed.txt"
    cp = run(tree, "-c", CHECK_PROBE, str(tree / "src"), str(fixture))
    assert cp.returncode == 0, cp.stderr
    facts = json.loads(cp.stdout)
    # the facts docs/probes.md lists for this fixture
    assert facts == [
        ["nic_drop_counter", {"dev": "eth0", "counter": counter, "value": value}]
        for counter, value in (("rx_dropped", 0), ("tx_dropped", 0),
                               ("rx_missed_errors", 18244), ("rx_no_buffer_count", 310),
                               ("rx_fifo_errors", 0))
    ]


def test_the_rule_lints_and_passes_its_tests(tree: Path) -> None:
    rule = str(tree / "src" / "kubenetdiag" / "rules" / "host" / "nic_drops.yaml")
    for action in ("lint", "test"):
        cp = run(tree, "-m", "kubenetdiag", "rules", action, rule)
        assert cp.returncode == 0, (action, cp.stdout, cp.stderr)
    cp = run(tree, "-m", "kubenetdiag", "rules", "lint")  # and the whole rule base with it
    assert cp.returncode == 0, cp.stdout + cp.stderr


def _report(tree: Path, name: str, src: Path) -> dict:
    bundle = tree / name
    shutil.copytree(EXAMPLE, bundle)
    out = tree / f"{name}.json"
    cp = run(tree, "-m", "kubenetdiag", "analyze", str(bundle), "--format", "json",
             "--report", str(out), src=src)
    assert cp.returncode in (0, 1), cp.stderr
    report = json.loads(out.read_text(encoding="utf-8").replace(str(bundle), "<BUNDLE>"))
    # the rule set is not the same: one more rule, another digest
    report["rules"] = {}
    return report


def test_the_shipped_example_report_changes_only_by_what_it_did_not_collect(tree: Path) -> None:
    with_probe = _report(tree, "with-probe", tree / "src")
    without = _report(tree, "without", ROOT / "src")
    # the example was recorded before the new probe: each reached node says so, and the new
    # rule is listed as not evaluated there (and on the node not reached), never as healthy
    added = [c for c in with_probe["not_checked"] if c["probe"] == "nic_drops"]
    assert [(c["node"], c["status"], c["rules"]) for c in added] == [
        (n, "not_collected", ["nic-dropped-frames"]) for n in ("node1", "node2")]
    (rule,) = [r for r in with_probe["not_evaluated"] if r["rule"] == "nic-dropped-frames"]
    assert rule["nodes"] == ["node3", "node1", "node2"]
    with_probe["not_checked"] = [c for c in with_probe["not_checked"] if c not in added]
    for c in with_probe["not_checked"]:
        c["rules"] = [r for r in c["rules"] if r != "nic-dropped-frames"]
    with_probe["not_evaluated"].remove(rule)
    assert with_probe == without
