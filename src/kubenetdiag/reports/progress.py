"""What a long run shows on stderr while it works: per-node progress, nodes still pending, notes.

The pipeline reports through the `Observer` interface (kubenetdiag.pipeline); this is the
terminal's implementation of it, beside the other renderers.
"""

from __future__ import annotations

import threading
import time

from rich.console import Console
from rich.markup import escape


class PhaseProgress:
    """Per-node progress on stderr: a live bar on a terminal, one line per node otherwise.

    Never a silent wait: once collection has run PENDING_AFTER seconds, the bar names the nodes
    still being collected, longest first, and how many wait for a free slot; without a terminal
    (CI logs, `2>file`) a line saying the same comes every PENDING_EVERY seconds instead.
    """

    PENDING_AFTER = 3.0
    PENDING_EVERY = 10.0
    PENDING_NAMES = 3

    def __init__(self, total: int, quiet: bool, label: str = "collecting") -> None:
        self.total, self.quiet, self.label = total, quiet, label
        self.done = self.failed = 0
        self.console = Console(stderr=True, highlight=False)
        self.bar = None
        self.started = time.monotonic()
        self.inflight: dict[str, float] = {}  # node -> when its collection began
        # The collector calls from its worker threads while the bar or the ticker reads.
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.ticker: threading.Thread | None = None
        if quiet:
            return
        if self.console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                ProgressColumn,
                TextColumn,
            )
            from rich.text import Text

            progress = self

            class PendingColumn(ProgressColumn):
                # Rendered on every refresh (10 a second), so it changes even while no node
                # finishes, which is exactly when the user wonders what is going on.
                def render(self, task: object) -> Text:
                    return Text(progress.pending(), style="dim", no_wrap=True,
                                overflow="ellipsis")

            self.bar = Progress(
                TextColumn(label),
                BarColumn(bar_width=24),  # room for the pending nodes on 80 columns
                MofNCompleteColumn(),
                TextColumn("{task.description}"),
                PendingColumn(),
                console=self.console,
                transient=True,
            )
            self.task = self.bar.add_task("", total=total)
            self.bar.start()
        else:
            self.ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
            self.ticker.start()

    def pending(self, now: float | None = None) -> str:
        """`waiting for node7 (12s), node9 (11s) +3, 20 queued`, or "" in the first seconds."""
        now = time.monotonic() if now is None else now
        if now - self.started < self.PENDING_AFTER:
            return ""
        with self.lock:
            running = sorted(self.inflight.items(), key=lambda kv: kv[1])
            queued = max(0, self.total - self.done - len(running))
        if not running and not queued:
            return ""
        shown = [f"{printable(n)} ({now - t:.0f}s)" for n, t in running[: self.PENDING_NAMES]]
        text = "waiting for " + ", ".join(shown) if shown else "waiting"
        if len(running) > self.PENDING_NAMES:
            text += f" +{len(running) - self.PENDING_NAMES}"
        if queued:
            text += f", {queued} queued"
        return text

    def _tick(self) -> None:
        while not self.stop.wait(self.PENDING_EVERY):
            text = self.pending()
            if text:
                self.console.print(f"[{self.done}/{self.total}] {escape(text)}")

    def __call__(self, node: str, state: str, detail: str) -> None:
        with self.lock:
            if state == "connecting":
                self.inflight[node] = time.monotonic()
                return
            self.inflight.pop(node, None)
            self.done += 1
            self.failed += state == "failed"
            done = self.done
        if self.quiet:
            return
        word = "[red]FAILED[/red]" if state == "failed" else "[green]ok[/green]"
        line = f"[{done}/{self.total}] {escape(printable(node))} {word}"
        if self.label != "collecting":  # the phase, so a log says which one a line is from
            line = f"{self.label} {line}"
        if detail:
            line += f": {escape(printable(detail))}"
        if self.bar is not None:
            self.bar.update(
                self.task, advance=1, description=f"{self.failed} failed" if self.failed else ""
            )
            if state == "failed":
                self.bar.console.print(line)
        else:
            self.console.print(line)

    def close(self) -> None:
        self.stop.set()
        if self.ticker is not None:
            self.ticker.join(timeout=1)
        if self.bar is not None:
            self.bar.stop()


def printable(text: str) -> str:
    """Node names and errors are untrusted: no escape sequences reach the terminal."""
    return "".join(c if c.isprintable() else "?" for c in text)


class TerminalObserver:
    """The CLI's observer: a progress display per phase, notes as lines on stderr."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.console = Console(stderr=True, highlight=False)

    def phase(self, label: str, total: int) -> PhaseProgress:
        return PhaseProgress(total, self.quiet, label)

    def note(self, text: str) -> None:
        if not self.quiet:
            self.warn(text)

    def warn(self, text: str) -> None:
        self.console.print(escape(printable(text)))
