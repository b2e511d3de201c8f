"""Render a bundle's HTML report and photograph it with headless Chromium (docs/report.png).

    python -m kubenetdiag.screenshot examples/bundles/lab-three-faults docs/report.png
    python -m kubenetdiag.screenshot examples/bundles/lab-three-faults \\
        docs/report-zh-CN.png --lang zh-CN

The bundle is analyzed as `kubenetdiag analyze` does, in memory: nothing is written into it, so
a shipped example stays as committed. Beside the picture, `<picture>.sha256` keeps the digest
of the HTML it shows: tests/test_screenshots_current.py fails when the report rendered now
differs (the template, the rules or the bundle changed), saying how to take it again. Chromium
runs with a throwaway profile, no network
features, and every host name mapped to "not found", so taking the picture cannot fetch
anything either.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


def bundle_report(bundle: Path) -> dict:
    """The report `kubenetdiag analyze BUNDLE` would write, without writing anything."""
    from kubenetdiag.bundle import Bundle
    from kubenetdiag.engine import load_ruleset
    from kubenetdiag.pipeline import analyze

    return analyze(Bundle.read(bundle), load_ruleset(), save=False).report


def screenshot(html: str, out: Path, *, width: int = 1280, height: int = 1500,
               chromium: str | None = None) -> None:
    """Write a PNG of the page's first `width` x `height` pixels, as a laptop shows it."""
    binary = chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        raise RuntimeError("chromium is not installed (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="knd-shot-") as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(html, encoding="utf-8")
        target = out.resolve()
        subprocess.run(
            [binary, *FLAGS, f"--user-data-dir={Path(tmp) / 'profile'}",
             f"--window-size={width},{height}", f"--screenshot={target}", page.as_uri()],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120,
        )
    if not target.exists():
        raise RuntimeError(f"chromium wrote no screenshot to {target}")


def digest_path(png: Path) -> Path:
    """Where the digest of the HTML a picture was taken of is kept, beside the picture: a test
    renders the same report again and fails when the digests differ (the picture is stale)."""
    return png.with_name(png.name + ".sha256")


def html_digest(html: str) -> str:
    return hashlib.sha256(html.encode("utf-8")).hexdigest()


def main(argv: list[str] | None = None) -> int:
    from kubenetdiag.reports import render_html

    p = argparse.ArgumentParser(prog="python -m kubenetdiag.screenshot",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("out", type=Path, help="PNG file to write")
    p.add_argument("--lang", default="en")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=1500)
    args = p.parse_args(argv)
    html = render_html(bundle_report(args.bundle), lang=args.lang)
    screenshot(html, args.out, width=args.width, height=args.height)
    digest_path(args.out).write_text(
        f"{html_digest(html)}  the HTML report of {args.bundle} (--lang {args.lang})\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
