"""The progress display (reports.progress.PhaseProgress): per-node state, never a silent wait."""

from __future__ import annotations

import io
import time

from rich.console import Console

from kubenetdiag.reports.progress import PhaseProgress as _Progress


def plain(progress: _Progress) -> io.StringIO:
    buf = io.StringIO()
    progress.console = Console(file=buf, width=120, highlight=False)
    return buf


def test_names_the_nodes_still_pending_longest_first() -> None:
    p = _Progress(6, quiet=True)
    t0 = p.started
    p("node-a", "connecting", "198.18.0.1:22")
    p("node-b", "connecting", "198.18.0.2:22")
    p("node-c", "connecting", "198.18.0.3:22")
    p("node-d", "connecting", "198.18.0.4:22")
    p.inflight.update({"node-a": t0 + 2, "node-b": t0, "node-c": t0 + 1, "node-d": t0 + 3})
    p("node-c", "done", "")
    assert p.pending(now=t0 + 1) == ""  # the first seconds stay quiet
    text = p.pending(now=t0 + 12)
    assert text == "waiting for node-b (12s), node-a (10s), node-d (9s), 2 queued"
    p.close()


def test_hostile_pending_names_cannot_reach_the_terminal() -> None:
    p = _Progress(1, quiet=True)
    p("evil\x1b]0;x\x07", "connecting", "")
    assert "\x1b" not in p.pending(now=p.started + 5)
    p.close()


def test_without_a_terminal_a_line_per_node_and_a_periodic_pending_line(monkeypatch) -> None:
    monkeypatch.setattr(_Progress, "PENDING_EVERY", 0.05)
    p = _Progress(2, quiet=False)
    buf = plain(p)
    p.started -= 10
    p("n1", "connecting", "")
    p("n2", "connecting", "")
    p("n1", "done", "")
    time.sleep(0.3)
    p("n2", "failed", "ssh: connect timed out after 10 s")
    p.close()
    out = buf.getvalue()
    assert "[1/2] n1 ok" in out
    assert "[1/2] waiting for n2 (" in out
    assert "[2/2] n2 FAILED: ssh: connect timed out after 10 s" in out
