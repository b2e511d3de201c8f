"""The nodes of one run and the connections to them, in this process or spread over worker
processes: the passive script on every node, then the active checks over the same connections.

    fleet = open_fleet(hosts, ssh_options, parallel=32, active=True, workers=None)
    records = fleet.collect(progress)         # one record per host, inventory order
    results = fleet.active(plans, progress)   # node name -> its `active` record
    outputs = fleet.run({name: command}, 30)  # one more command on some nodes
    saved = fleet.close()                     # known_hosts files that gained keys

With `active`, the connections stay open between the phases and two-sample probes leave their
second sample for later (collect.script.deferring).

One Python process spends most of its collector CPU in paramiko (packets, channels, key
exchange), under one interpreter lock: past a few hundred nodes it uses one core however many
the controller has. Above WORKER_NODES hosts a worker process per such share (at most one per
core) takes a contiguous part of the inventory with its own SSH connections; its progress and
records come back over a pipe and are merged into one stream, so the caller sees the same
records either way.

A worker is its own process group: the terminal's Ctrl-C reaches this process only, which
passes one SIGINT to each worker; a worker then sends what it has collected and exits, and dies
with this process if this process exits first (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from kubenetdiag.collect import ssh
from kubenetdiag.collect.runner import (
    NOT_COLLECTED_INTERRUPTED,
    Interrupted,
    ProgressFn,
    collect,
    unreached,
)
from kubenetdiag.collect.script import deferring
from kubenetdiag.errors import CollectError
from kubenetdiag.inventory import Host
from kubenetdiag.probes import PROBES

WORKER_NODES = 200  # hosts per worker process before another one pays for its start-up
RUN_OUTPUT_LIMIT = 4 * 1024 * 1024  # bytes kept of one `run` command's output
INTERRUPT_GRACE_S = 2.0  # how long a Ctrl-C waits for the workers' collected records
CLOSE_TIMEOUT_S = 10.0  # closing connections and saving host keys


class Fleet(Protocol):
    def collect(self, progress: ProgressFn | None = None) -> list[dict]: ...

    def active(self, plans: dict[str, Any], progress: ProgressFn | None = None
               ) -> dict[str, dict]: ...

    def run(self, commands: dict[str, str], timeout: float) -> dict[str, dict]: ...

    def close(self) -> list[str]: ...


def workers_for(hosts: int, cores: int | None = None) -> int:
    """One worker per WORKER_NODES hosts, at most one per core; 1 means no worker process.

    >>> workers_for(50, cores=8), workers_for(500, cores=2), workers_for(5000, cores=8)
    (1, 2, 8)
    """
    cores = cores or os.cpu_count() or 1
    return max(1, min(cores, math.ceil(hosts / WORKER_NODES)))


def open_fleet(hosts: Sequence[Host], opts: ssh.SshOptions, *, parallel: int, active: bool,
               workers: int | None = None) -> Fleet:
    """`active`: the active phase follows. `workers`: None chooses by the inventory's size
    (workers_for); 1 keeps every connection in this process."""
    count = workers_for(len(hosts)) if workers is None else max(1, min(workers, len(hosts)))
    if count == 1:
        return InProcess(hosts, opts, parallel=parallel, active=active)
    return Workers(hosts, opts, parallel=parallel, active=active, count=count)


class InProcess:
    """Every connection in this process, one thread per node at a time up to `parallel`."""

    def __init__(self, hosts: Sequence[Host], opts: ssh.SshOptions, *, parallel: int,
                 active: bool) -> None:
        self.hosts = list(hosts)
        self.parallel = parallel
        self.probes = deferring(PROBES) if active else PROBES
        self.connector = ssh.Connector(opts, keep=active)
        self._results: dict[str, dict] = {}

    def collect(self, progress: ProgressFn | None = None) -> list[dict]:
        return collect(self.hosts, self.connector, parallel=self.parallel, probes=self.probes,
                       progress=progress)

    def checks(self, plans: dict[str, Any], progress: ProgressFn | None = None
               ) -> dict[str, dict]:
        # Imported here: the active runner pulls in dnspython, which a passive run never needs.
        from kubenetdiag.collect.active import run_checks

        self._results = run_checks(self.hosts, plans, self.connector, parallel=self.parallel,
                                   progress=progress)
        return self._results

    def afters(self, plans: dict[str, Any]) -> dict[str, dict]:
        from kubenetdiag.collect.active import run_afters

        run_afters(self.hosts, plans, self._results, self.connector, parallel=self.parallel)
        return self._results

    def active(self, plans: dict[str, Any], progress: ProgressFn | None = None
               ) -> dict[str, dict]:
        self.checks(plans, progress)
        return self.afters(plans)

    def run(self, commands: dict[str, str], timeout: float) -> dict[str, dict]:
        """One command on each named node, over its kept connection:
        {name: {stdout, stderr, status, error}}."""
        todo = [h for h in self.hosts if h.name in commands]

        def one(host: Host) -> tuple[str, dict]:
            out = {"stdout": "", "stderr": "", "status": None, "error": None}
            try:
                r = self.connector.for_host(host).run_script(
                    commands[host.name], limit=RUN_OUTPUT_LIMIT, timeout=timeout)
                out.update(stdout=r.stdout, stderr=r.stderr, status=r.status)
            except CollectError as exc:
                out["error"] = str(exc)
            except Exception as exc:  # one odd node must not stop the others
                out["error"] = f"unexpected error: {exc!r}"
            return host.name, out

        if not todo:
            return {}
        with ThreadPoolExecutor(max_workers=max(1, min(self.parallel, len(todo))),
                                thread_name_prefix="collect-run") as pool:
            return dict(pool.map(one, todo))

    def close(self) -> list[str]:
        return self.connector.close()


# ---------------------------------------------------------------- worker processes


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the one that started it exits (a second Ctrl-C
    leaves with os._exit, which runs no clean-up that could stop the workers)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent was already gone before prctl took effect
        os._exit(1)


def _serve(conn: Connection, hosts: list[Host], opts: ssh.SshOptions, parallel: int,
           active: bool) -> None:
    """A worker's whole life: collect its hosts, then do what the parent asks."""
    _die_with_parent()
    os.setpgrp()
    lock = threading.Lock()

    def send(*message: Any) -> None:
        with lock:
            conn.send(message)

    def progress(node: str, state: str, detail: str) -> None:
        send("progress", node, state, detail)

    fleet = InProcess(hosts, opts, parallel=parallel, active=active)
    try:
        try:
            send("records", fleet.collect(progress))
        except Interrupted as exc:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            send("interrupted", exc.records, fleet.close())
            return
        while True:
            kind, *args = conn.recv()
            if kind == "checks":
                send("checks", fleet.checks(args[0], progress))
            elif kind == "afters":
                send("afters", fleet.afters(args[0]))
            elif kind == "run":
                send("run", fleet.run(args[0], args[1]))
            else:  # "close"
                send("closed", fleet.close())
                return
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        send("interrupted", None, fleet.close())
    except EOFError:  # the parent is gone
        pass
    except BaseException:  # the parent reports it; the other workers go on
        send("error", traceback.format_exc(limit=8))
    finally:
        conn.close()
        # Threads may still wait on connections the parent no longer wants: no join.
        os._exit(0)


class _Worker:
    def __init__(self, ctx: Any, hosts: list[Host], opts: ssh.SshOptions, parallel: int,
                 active: bool, index: int) -> None:
        self.hosts = hosts
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, hosts, opts, parallel, active),
                                name=f"kubenetdiag-collect-{index}", daemon=True)
        self.proc.start()
        child.close()
        self.done = False  # it said "closed", "interrupted" or "error", or it is gone
        self.saved: list[str] = []


class Workers:
    """Worker processes, each with a contiguous share of the hosts and its own connections."""

    def __init__(self, hosts: Sequence[Host], opts: ssh.SshOptions, *, parallel: int,
                 active: bool, count: int) -> None:
        self.hosts = list(hosts)
        size = math.ceil(len(self.hosts) / count)
        ctx = multiprocessing.get_context("spawn")  # the caller has threads: no fork
        per = max(1, math.ceil(parallel / count))
        self.workers = [_Worker(ctx, self.hosts[i:i + size], opts, per, active, n)
                        for n, i in enumerate(range(0, len(self.hosts), size))]
        self._interrupted = False

    def _gather(self, progress: ProgressFn | None, workers: list[_Worker] | None = None,
                deadline: float | None = None) -> dict[_Worker, tuple]:
        """Relay progress until each of `workers` (default: all) has answered, has gone, or
        `deadline` (monotonic) passed: {worker: its answer}."""
        waiting = {w.conn: w for w in (workers if workers is not None else self.workers)
                   if not w.done}
        answers: dict[_Worker, tuple] = {}
        while waiting:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            for conn in wait(list(waiting), timeout=min(0.25, left) if left else 0.25):
                w = waiting[conn]  # type: ignore[index]
                try:
                    message = conn.recv()  # type: ignore[union-attr]
                except (EOFError, OSError):
                    w.done = True
                    w.proc.join(1)
                    answers[w] = ("error", f"collector worker {w.proc.name} exited "
                                           f"(exit code {w.proc.exitcode})")
                    del waiting[conn]
                    continue
                if message[0] == "progress":
                    if progress:
                        progress(*message[1:])
                    continue
                if message[0] in ("interrupted", "error", "closed"):
                    w.done = True
                    if message[0] != "error":
                        w.saved = list(message[-1])
                answers[w] = message
                del waiting[conn]
        return answers

    def _interrupt(self) -> None:
        self._interrupted = True
        for w in self.workers:
            if not w.done and w.proc.is_alive():
                os.kill(w.proc.pid, signal.SIGINT)

    def collect(self, progress: ProgressFn | None = None) -> list[dict]:
        started = time.monotonic()
        try:
            answers = self._gather(progress)
        except KeyboardInterrupt:
            self._interrupt()
            answers = self._gather(None, deadline=time.monotonic() + INTERRUPT_GRACE_S)
            raise Interrupted(self._merge(answers, started, NOT_COLLECTED_INTERRUPTED)) from None
        return self._merge(answers, started, None)

    def _merge(self, answers: dict[_Worker, tuple], started: float,
               missing: str | None) -> list[dict]:
        records: list[dict] = []
        for w in self.workers:
            kind, *args = answers.get(w, ("missing",))
            if kind in ("records", "interrupted") and args[0] is not None:
                records += args[0]
            else:
                why = missing or (f"not collected: {args[0].strip().splitlines()[-1]}"
                                  if kind == "error" else "not collected: worker gone")
                records += [unreached(h, why, started) for h in w.hosts]
        return records

    def active(self, plans: dict[str, Any], progress: ProgressFn | None = None
               ) -> dict[str, dict]:
        results: dict[str, dict] = {}
        try:
            live = self._ask("checks", plans, progress, results)
            # Only once every worker's nodes have stopped sending checks: a counter read by
            # the after-checks counts all of their traffic.
            self._ask("afters", plans, None, results, workers=live)
        except KeyboardInterrupt:
            self._interrupt()
            raise
        return results

    def run(self, commands: dict[str, str], timeout: float) -> dict[str, dict]:
        results: dict[str, dict] = {}
        try:
            self._ask("run", commands, None, results, timeout)
        except KeyboardInterrupt:
            self._interrupt()
            raise
        return results

    def _ask(self, kind: str, per_host: dict[str, Any], progress: ProgressFn | None,
             results: dict[str, dict], *extra: Any, workers: list[_Worker] | None = None
             ) -> list[_Worker]:
        """Send `kind` to each live worker with its share of `per_host` (and `extra`); merge
        the answers into `results`; the workers that answered."""
        asked = []
        for w in workers if workers is not None else self.workers:
            if w.done:
                continue
            mine = {h.name: per_host[h.name] for h in w.hosts if h.name in per_host}
            try:
                w.conn.send((kind, mine, *extra))
            except (BrokenPipeError, OSError):
                w.done = True
                continue
            asked.append(w)
        answered = []
        for w, (got, *args) in self._gather(progress, asked).items():
            if got == kind:
                results.update(args[0])
                answered.append(w)
        return answered

    def close(self) -> list[str]:
        for w in self.workers:
            if not w.done:
                try:
                    w.conn.send(("close",))
                except (BrokenPipeError, OSError):
                    w.done = True
        # After a Ctrl-C only briefly: a worker still finishing its checks is killed.
        grace = INTERRUPT_GRACE_S if self._interrupted else CLOSE_TIMEOUT_S
        self._gather(None, deadline=time.monotonic() + grace)
        saved: set[str] = set()
        for w in self.workers:
            saved.update(w.saved)
            w.proc.join(0.5)
            if w.proc.is_alive():
                w.proc.kill()
            w.conn.close()
        return sorted(saved)

