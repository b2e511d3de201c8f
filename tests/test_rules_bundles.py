"""The shipped rule base over recorded lab bundles (tests/fixtures/bundles/README.md): the
faults the lab kernel cannot produce are found on the right node, and the untouched rest of the
healthy recording raises nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kubenetdiag.cli import main

BUNDLES = Path(__file__).parent / "fixtures" / "bundles"


def analyze(tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> dict:
    copy = tmp_path / name
    shutil.copytree(BUNDLES / name, copy)  # analyze writes facts.json into the bundle
    main(["analyze", str(copy), "--format", "json"])
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("bundle", "fault", "node"),
    [
        ("lab-tw-recycle-3.10", "tw_recycle_with_timestamps", "node2"),
        ("lab-conntrack-full", "conntrack_table_full", "node1"),
        ("lab-vxlan-underlay-down", "vxlan_underlay_down", "node3"),
        ("lab-tcp-memory-pressure", "tcp_memory_pressure", "node2"),
        ("lab-softnet-backlog-drop", "softnet_backlog_drop", "node3"),
        ("lab-nft-invalid-not-dropped-5.15", "conntrack_invalid_not_dropped", "node2"),
        ("lab-invalid-not-dropped-5.4", "conntrack_invalid_not_dropped", "node1"),
    ],
)
def test_fixture_only_fault_is_the_only_alarm(tmp_path, capsys, bundle, fault, node):
    report = analyze(tmp_path, bundle, capsys)
    alarms = [f for f in report["findings"] if f["severity"] in ("critical", "error", "warning")]
    assert [(f["fault"], f["nodes"], f["root_cause"]) for f in alarms] == [(fault, [node], True)]
    assert report["findings"][0]["i18n"]["zh-CN"]["title"]
