"""The shipped example and the recorded bundles give exactly the reports they gave when they were
recorded: a refactor, a new probe or a new fact kind that changes what an SRE reads fails here.

When a change is meant to alter these reports (a new rule that fires on them, a reworded title),
regenerate the snapshots and review the diff like code:

    KUBENETDIAG_UPDATE_GOLDEN=1 python3 -m pytest tests/test_report_golden.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from kubenetdiag.cli import main

ROOT = Path(__file__).parent.parent
GOLDEN = Path(__file__).parent / "fixtures" / "golden"
BUNDLES = {
    "lab-three-faults": ROOT / "examples" / "bundles" / "lab-three-faults",
    "lab-conntrack-full": Path(__file__).parent / "fixtures" / "bundles" / "lab-conntrack-full",
    "lab-tw-recycle-3.10": Path(__file__).parent / "fixtures" / "bundles" / "lab-tw-recycle-3.10",
}
FORMATS = ("json", "html", "md", "txt")
PLACEHOLDER = "<BUNDLE>"


def _normalized(text: str, bundle_dir: Path, fmt: str) -> str:
    text = text.replace(str(bundle_dir), PLACEHOLDER)
    if fmt == "html":
        # the style sheet is inlined from reports/templates/report.css, which is in git already
        text = re.sub(r"<style>.*?</style>", "<style>/* report.css */</style>", text, flags=re.S)
    if fmt == "json":
        report = json.loads(text)
        # the digest follows every byte of every rule file, comments included
        report["rules"]["digest"] = "<DIGEST>"
        text = json.dumps(report, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    return text


@pytest.mark.parametrize("name", sorted(BUNDLES))
@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_bundle_report_is_unchanged(name: str, lang: str, tmp_path: Path) -> None:
    bundle = tmp_path / name
    shutil.copytree(BUNDLES[name], bundle)
    outs = {fmt: tmp_path / f"report.{fmt}" for fmt in FORMATS}
    args = ["analyze", str(bundle), "--lang", lang, "--format", "json"]
    for path in outs.values():
        args += ["--report", str(path)]
    rc = main(args)
    assert rc in (0, 1)
    for fmt, path in outs.items():
        if fmt == "json" and lang != "en":
            continue  # the JSON report carries every language already
        got = _normalized(path.read_text(encoding="utf-8"), bundle, fmt)
        golden = GOLDEN / f"{name}.{lang}.{fmt}"
        if os.environ.get("KUBENETDIAG_UPDATE_GOLDEN"):
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(got, encoding="utf-8")
        assert golden.exists(), f"no snapshot {golden}; see this module's docstring"
        want = golden.read_text(encoding="utf-8")
        assert got == want, f"{name} {lang} {fmt} report changed; see this module's docstring"
