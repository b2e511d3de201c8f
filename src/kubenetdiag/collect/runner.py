"""Fan the probe script out to every node in parallel and keep every raw answer.

Nothing is parsed here: the runner's product is one record per node (see docs/contracts.md,
"Bundle"), including the nodes that failed and why.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from kubenetdiag.collect import ssh
from kubenetdiag.collect.script import OUTPUT_LIMIT, build_script, new_marker, split_output
from kubenetdiag.errors import CollectError
from kubenetdiag.inventory import Host
from kubenetdiag.probes import PROBES, Probe

# (node name, state, detail); states: "connecting", "done", "failed"
ProgressFn = Callable[[str, str, str], None]


NOT_COLLECTED_INTERRUPTED = "not collected: interrupted"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during collection, carrying every node's record: those already collected, and
    the others marked not collected, so the caller can still write a valid bundle."""

    def __init__(self, records: list[dict]) -> None:
        super().__init__()
        self.records = records


def _record(
    host: Host, reachable: bool, error: str | None, started: float, sections: Sequence = ()
) -> dict:
    return {
        "name": host.name,
        "address": "local" if host.connection == "local" else host.address,
        "reachable": reachable,
        "error": error,
        "duration_s": round(time.monotonic() - started, 3),
        "sections": [s.to_dict() for s in sections],
    }


def unreached(host: Host, why: str, started: float) -> dict:
    """The record of a node not collected, saying why."""
    return _record(host, False, why, started)


def collect_node(
    host: Host,
    connector: ssh.Connector,
    probes: Sequence[Probe] = PROBES,
    progress: ProgressFn | None = None,
) -> dict:
    started = time.monotonic()
    marker = new_marker()
    script = build_script(probes, marker)
    if progress:
        progress(host.name, "connecting", f"{host.address}:{host.port}")
    try:
        result = connector.for_host(host).run_script(script, limit=OUTPUT_LIMIT)
    except CollectError as exc:
        if progress:
            progress(host.name, "failed", str(exc))
        return _record(host, False, str(exc), started)
    except Exception as exc:  # one odd node must never stop the others
        if progress:
            progress(host.name, "failed", f"unexpected error: {exc!r}")
        return _record(host, False, f"unexpected error: {exc!r}", started)
    sections = split_output(
        result.stdout, result.stderr, marker, probes, truncated=result.truncated
    )
    error = None
    if not sections:
        error = (
            f"probe script produced no sections (exit status {result.status}): "
            f"{result.stderr.strip()[:300]}"
        )
    elif result.status == 124:
        error = "probe script hit its time limit on the node; later probes did not run"
    if progress:
        progress(host.name, "failed" if error and not sections else "done", error or "")
    return _record(host, bool(sections), error, started, sections)


def collect(
    hosts: Sequence[Host],
    connector: ssh.Connector,
    *,
    parallel: int = 32,
    probes: Sequence[Probe] = PROBES,
    progress: ProgressFn | None = None,
) -> list[dict]:
    """Collect from every host over `connector`'s connections (the caller closes them);
    return the node records in inventory order."""
    workers = max(1, min(parallel, len(hosts)))
    started = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="collect")
    futures = [pool.submit(collect_node, h, connector, probes, progress) for h in hosts]
    try:
        pending = set(futures)
        while pending:  # short waits: Ctrl-C reaches the main thread within a fraction of one
            _, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
    except KeyboardInterrupt:
        # Stop at once: queued nodes never start, and threads still connecting are left to
        # their timeouts (the caller exits without waiting for them).
        pool.shutdown(wait=False, cancel_futures=True)
        raise Interrupted([
            f.result() if f.done() and not f.cancelled() and f.exception() is None
            else unreached(h, NOT_COLLECTED_INTERRUPTED, started)
            for h, f in zip(hosts, futures, strict=True)]) from None
    pool.shutdown()
    return [f.result() for f in futures]
