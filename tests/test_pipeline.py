"""The pipeline as a library, as a CI job or a chatops bot would call it: no argparse, nothing
printed, progress through an observer, bad input refused before any node is touched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kubenetdiag import pipeline
from kubenetdiag.bundle import Bundle
from kubenetdiag.engine import load_ruleset
from kubenetdiag.errors import InputError
from kubenetdiag.inventory import Host, local_host

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "examples" / "bundles" / "lab-three-faults"


class Recorder:
    """An observer that keeps what it was told."""

    def __init__(self) -> None:
        self.phases: list[tuple[str, int]] = []
        self.events: list[tuple[str, str]] = []
        self.notes: list[str] = []
        self.closed = 0

    def phase(self, label: str, total: int) -> Recorder:
        self.phases.append((label, total))
        return self

    def __call__(self, node: str, state: str, detail: str) -> None:
        self.events.append((node, state))

    def close(self) -> None:
        self.closed += 1

    def note(self, text: str) -> None:
        self.notes.append(text)

    def warn(self, text: str) -> None:
        self.notes.append(text)


@pytest.fixture(scope="module")
def rules():
    return load_ruleset()


def test_analyze_a_bundle_without_the_cli(tmp_path: Path, rules, capsys) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(EXAMPLE, copy)
    result = pipeline.analyze(Bundle.read(copy), rules)
    # (information is not an alarm: the recording's nodes lack the API's default/kubernetes
    # Service, which its older lab's kube-proxy did not program, and that is shown as such)
    roots = {(f["fault"], tuple(f["nodes"])) for f in result.report["findings"]
             if f["root_cause"] and f["severity"] != "info"}
    assert roots == {("forward_chain_reject", ("node1",)), ("ip_forward_disabled", ("node2",)),
                     ("node_unreachable", ("node3",))}
    assert result.exit_code == 1
    # the analysis is kept beside the raw collection, as `kubenetdiag analyze` keeps it
    saved = json.loads((copy / "report.json").read_text())
    assert saved["summary"] == result.report["summary"]
    assert capsys.readouterr() == ("", "")


def test_a_read_only_bundle_is_analyzed_and_the_observer_told(tmp_path: Path, rules) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(EXAMPLE, copy)
    bundle = Bundle.read(copy)
    bundle.path = tmp_path / "gone"  # nowhere to save facts.json and report.json
    seen = Recorder()
    result = pipeline.analyze(bundle, rules, seen)
    assert result.report["findings"]
    assert len(seen.notes) == 1 and "could not save" in seen.notes[0]


def test_diagnose_this_machine_reports_progress_and_prints_nothing(
    tmp_path: Path, rules, capsys
) -> None:
    seen = Recorder()
    result = pipeline.diagnose([local_host()], pipeline.CollectOptions(active=False), rules,
                               tmp_path / "b", seen)
    assert [label for label, _ in seen.phases] == ["collecting"]
    assert seen.events[-1][1] == "done" and seen.closed == 1
    assert result.report["nodes"][0]["reachable"] is True
    meta = json.loads((tmp_path / "b" / "meta.json").read_text())
    assert "sysctl" in meta["probes"] and meta["probes"][-1] == "socket_reads"
    # recorded without --active too: a later version then tells a check this one lacked
    # from one that failed
    assert {"ping", "pod.link"} <= set(meta["active_checks"])
    # a run of this version lists nothing as "not collected by that version"
    assert not [c for c in result.report["not_checked"] if c["status"] == "not_collected"]
    assert capsys.readouterr() == ("", "")


def test_collect_refuses_an_old_bundle_before_touching_any_node(tmp_path: Path) -> None:
    old = tmp_path / "b"
    shutil.copytree(EXAMPLE, old)
    seen = Recorder()
    never = Host(name="n1", address="127.0.0.1", port=1)  # loopback: refused if ever tried
    with pytest.raises(InputError, match="already holds a bundle"):
        pipeline.collect([never], pipeline.CollectOptions(), old, seen)
    assert seen.phases == []


def test_bad_options_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--parallel"):
        pipeline.collect([local_host()], pipeline.CollectOptions(parallel=0), tmp_path / "b")


def test_analyze_without_saving_leaves_the_bundle_as_it_was(tmp_path: Path, rules) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(EXAMPLE, copy)
    before = sorted(p.relative_to(copy) for p in copy.rglob("*"))
    result = pipeline.analyze(Bundle.read(copy), rules, save=False)
    alarms = [f for f in result.report["findings"] if f["root_cause"] and f["severity"] != "info"]
    assert len(alarms) == 3
    assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == before
