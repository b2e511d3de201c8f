"""The README's pictures show the report the shipped example renders today: each picture keeps
the digest of the HTML it was taken of, and a change to the template, the rules or the bundle
makes this test fail until the pictures are taken again."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubenetdiag.reports import render_html
from kubenetdiag.screenshot import bundle_report, digest_path, html_digest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "bundles" / "lab-three-faults"
PICTURES = [(ROOT / "docs" / "report.png", "en"), (ROOT / "docs" / "report-zh-CN.png", "zh-CN")]


@pytest.fixture(scope="module")
def report() -> dict:
    # as the README's command names it: the report shows the bundle's path as given
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        return bundle_report(EXAMPLE.relative_to(ROOT))


@pytest.mark.parametrize(("png", "lang"), PICTURES, ids=[p.name for p, _ in PICTURES])
def test_the_readme_pictures_show_todays_report(report, png, lang):
    assert png.exists(), png
    recorded = digest_path(png).read_text().split()[0] if digest_path(png).exists() else None
    now = html_digest(render_html(report, lang=lang))
    rel = png.relative_to(ROOT)
    assert recorded == now, (
        f"{rel} is stale: the example's HTML report changed since it was taken. Take it again "
        f"(needs chromium): python -m kubenetdiag.screenshot {EXAMPLE.relative_to(ROOT)} {rel}"
        + (f" --lang {lang}" if lang != "en" else ""))
