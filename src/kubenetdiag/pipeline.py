"""The pipeline as a library: `collect`, `analyze`, `diagnose`.

The CLI is one caller; a CI job or a chatops bot is another, without argparse:

    from kubenetdiag import pipeline
    from kubenetdiag.engine import load_ruleset
    from kubenetdiag.inventory import load_inventory

    hosts = load_inventory("hosts.yaml")
    result = pipeline.diagnose(hosts, pipeline.CollectOptions(), load_ruleset(), Path("bundle"))
    print(result.report["summary"])

Input is checked before any node is touched (an InputError: bad kubeconfig, a directory that
already holds a bundle, bad options). Nothing here prints: progress and notes go to the
`Observer` the caller passes (the terminal's is kubenetdiag.reports.progress).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from kubenetdiag.bundle import (
    FACTS_SCHEMA,
    Bundle,
    now_iso,
    prepare_dir,
    write_json,
)
from kubenetdiag.changes import changes
from kubenetdiag.collect.cluster import BackgroundApiCollection, resolve_target
from kubenetdiag.collect.fleet import Fleet, open_fleet
from kubenetdiag.collect.runner import Interrupted
from kubenetdiag.collect.ssh import SshOptions
from kubenetdiag.collect.sshconfig import SshConfig
from kubenetdiag.engine import RuleSet, infer
from kubenetdiag.errors import InputError
from kubenetdiag.facts.model import Fact
from kubenetdiag.facts.parse import facts_from_records, facts_of_kinds
from kubenetdiag.findings import build_report
from kubenetdiag.findings.schema import validate_report
from kubenetdiag.inventory import Host
from kubenetdiag.probes import PROBES, probe_names
from kubenetdiag.probes.active import checks
from kubenetdiag.probes.base import TwoSample
from kubenetdiag.redact import Redaction, redact_bundle

SKIPPED_ACTIVE = "active probes not run: --no-active, or `collect` without --active"


class NodeProgress(Protocol):
    """One phase's progress: called from worker threads as each node moves on."""

    def __call__(self, node: str, state: str, detail: str) -> None: ...  # connecting|done|failed

    def close(self) -> None: ...


class Observer(Protocol):
    def phase(self, label: str, total: int) -> NodeProgress: ...

    def note(self, text: str) -> None: ...  # progress chatter: a quiet run hides it

    def warn(self, text: str) -> None: ...  # always shown: a changed file, lost output


class _Silent:
    def __call__(self, node: str, state: str, detail: str) -> None:
        pass

    def close(self) -> None:
        pass

    def phase(self, label: str, total: int) -> _Silent:
        return self

    def note(self, text: str) -> None:
        pass

    def warn(self, text: str) -> None:
        pass


@dataclass(frozen=True)
class CollectOptions:
    """How to reach the nodes and the API. The API is asked only when opted in: `kubeconfig`,
    `context`, `in_cluster`, or $KUBECONFIG set (see collect.cluster.resolve_target)."""

    ssh: SshOptions = field(default_factory=SshOptions)
    parallel: int = 32
    workers: int | None = None  # collector processes; None: chosen by the inventory's size
    active: bool = True  # pings, DNS, HTTP, TCP sent from every node after the passive phase
    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool = False
    inventory: str | None = None  # recorded in the bundle's meta.json
    redact: Redaction | None = None  # the bundle is written redacted (kubenetdiag.redact)

    def check(self) -> None:
        if self.parallel < 1:
            raise InputError("--parallel must be at least 1")
        if self.workers is not None and self.workers < 1:
            raise InputError("--workers must be at least 1")
        SshConfig.load(self.ssh.ssh_config)  # a bad file stops the run before any node


@dataclass
class Analysis:
    """What `analyze` made of a bundle: the facts and the report (docs/contracts.md)."""

    facts: list[Fact]
    report: dict

    @property
    def exit_code(self) -> int:
        return int(self.report["summary"]["exit_code"])


def collect(
    hosts: Sequence[Host],
    options: CollectOptions,
    out: Path,
    observer: Observer | None = None,
) -> Bundle:
    """Collect from every host (and the API, at the same time) into a new bundle at `out`."""
    observer = observer or _Silent()
    options.check()
    # A bad kubeconfig or an old bundle in the way stop the run here, before any node is touched.
    api = BackgroundApiCollection(
        resolve_target(options.kubeconfig, options.context, options.in_cluster),
        connect_timeout=options.ssh.connect_timeout,
        read_timeout=min(options.ssh.command_timeout, 30.0),
    )
    prepare_dir(out)
    started = now_iso()
    api.start()
    # Kept open between the phases: the active script reuses each node's SSH connection.
    fleet = open_fleet(hosts, options.ssh, parallel=options.parallel, active=options.active,
                       workers=options.workers)
    interrupted: KeyboardInterrupt | None = None
    records: list[dict] | None = None
    cluster = None
    try:
        with _phase(observer, "collecting", len(hosts)) as progress:
            records = fleet.collect(progress)
        cluster = api.result()
        if options.active:
            _active_phase(hosts, records, cluster, fleet, observer)
        else:
            _mark_active_skipped(records)
    except KeyboardInterrupt as exc:
        # Keep what was collected: a valid bundle, marked interrupted, then stop. Ctrl-C in
        # the passive phase carries every node's record; later, the passive records stand.
        if isinstance(exc, Interrupted):
            records = exc.records
        elif records is None:
            raise
        interrupted = exc
        _mark_active_skipped([r for r in records if "active" not in r])
        _mark_second_samples_missing(records)
    finally:
        saved = fleet.close()
    kinds = {h.connection for h in hosts}
    meta = {
        "started_at": started,
        "finished_at": now_iso(),
        "transport": kinds.pop() if len(kinds) == 1 else "mixed",
        "inventory": str(Path(options.inventory).resolve()) if options.inventory else None,
        "probes": probe_names(),
        # what this version could send; recorded even without --active, so that a later
        # version tells a check this one lacked from one that failed
        "active_checks": [c.name for c in checks()],
    }
    if interrupted is not None:
        meta["interrupted"] = True
    bundle = Bundle(out, meta, records, cluster)
    if options.redact is None:
        bundle.write()
    else:
        bundle, redactor = redact_bundle(bundle, out, options.redact)
        observer.note(f"redacted: {redactor.summary()}")
    if interrupted is not None:
        kept = sum(1 for r in records if r["reachable"])
        observer.warn(f"interrupted: {kept}/{len(records)} nodes collected are kept in {out} "
                      "(the others say \"not collected: interrupted\"); analyze reads it")
        raise interrupted
    if cluster["queried"]:
        bad = [c["name"] for c in cluster["calls"] if c["status"] not in ("ok", "not_found")]
        observer.note(
            f"cluster API {cluster['source']['server']}: "
            f"{len(cluster['calls']) - len(bad)}/{len(cluster['calls'])} calls answered"
            + (f"; no answer for {', '.join(bad)}" if bad else "")
        )
    for path in saved:
        observer.warn(f"recorded new host keys in {path}")
    return bundle


def analyze(
    bundle: Bundle, ruleset: RuleSet, observer: Observer | None = None, *, save: bool = True,
    baseline: Bundle | None = None,
) -> Analysis:
    """Parse, infer and build the report; keep facts.json and report.json in the bundle
    unless `save` is false (a shipped example stays as committed). With a `baseline` (a
    bundle from when it worked) the report's `changes` say what changed since
    (kubenetdiag.changes)."""
    observer = observer or _Silent()
    meta = bundle.meta
    facts = facts_from_records(bundle.records, bundle.cluster, probes=meta.get("probes"),
                               active_checks=meta.get("active_checks"),
                               version=meta.get("tool_version"))
    findings = infer(ruleset, facts)
    report = build_report(
        bundle.meta,
        bundle.records,
        facts,
        findings,
        rules_count=len(ruleset.rules),
        rules_digest=ruleset.digest,
        bundle=str(bundle.path),
        rules=ruleset.rules,
    )
    if baseline is not None:
        base = analyze(baseline, ruleset, save=False)
        report["changes"] = changes(base.facts, base.report, facts, report)
        validate_report(report)
    if not save:
        return Analysis(facts, report)
    try:
        write_json(
            bundle.path / "facts.json",
            {"schema": FACTS_SCHEMA, "facts": [f.to_dict() for f in facts]},
        )
        write_json(bundle.path / "report.json", report)
    except OSError as exc:  # a read-only bundle (a shipped example, a mounted stick) is fine
        observer.warn(
            f"note: could not save facts.json/report.json in {bundle.path}: {exc.strerror}"
        )
    return Analysis(facts, report)


def diagnose(
    hosts: Sequence[Host],
    options: CollectOptions,
    ruleset: RuleSet,
    out: Path,
    observer: Observer | None = None,
    *,
    baseline: Bundle | None = None,
) -> Analysis:
    """Collect into a new bundle at `out`, then analyze it (against `baseline`, if given)."""
    return analyze(collect(hosts, options, out, observer), ruleset, observer,
                   baseline=baseline)


@contextmanager
def _phase(observer: Observer, label: str, total: int) -> Iterator[NodeProgress]:
    progress = observer.phase(label, total)
    try:
        yield progress
    finally:
        progress.close()


def _active_phase(
    hosts: Sequence[Host],
    records: list[dict],
    cluster: dict,
    fleet: Fleet,
    observer: Observer,
) -> None:
    """Plan from what the passive phase and the API found, run, and keep each node's result
    in its record (the bundle's node file keeps it under `active`)."""
    from kubenetdiag.probes.active.plan import INPUTS, plan

    plans = plan(facts_of_kinds(records, cluster, INPUTS), hosts,
                 outside_name=f"kubenetdiag-{secrets.token_hex(4)}.invalid")
    reached = sum(1 for r in records if r["reachable"])
    with _phase(observer, "active probes", reached) as progress:
        results = fleet.active(plans, progress)
    for rec in records:
        if rec["name"] in results:
            rec["active"] = results[rec["name"]]
    _second_samples(fleet, records)


SAMPLED = {p.name: p.sampling for p in PROBES if p.sampling}
SECOND_SAMPLE_TIMEOUT_S = 30.0


def _second_samples(fleet: Fleet, records: list[dict]) -> None:
    """Take the second sample of each two-sample probe, which the passive script left for now
    (collect.script.deferring), and add it to the probe's section: the section then reads as
    if the script had taken both, and its command says where each came from. A node's probes
    take theirs in one session, one after another, each under a line naming it."""
    todo: dict[str, list[tuple[dict, str]]] = {}
    for rec in records:
        for section in rec["sections"] if rec.get("reachable") else ():
            sampling = SAMPLED.get(section["probe"])
            if sampling is None or TwoSample.has_second(section["stdout"]):
                continue
            first = TwoSample.first_uptime(section["stdout"])
            if first is not None and section["exit_code"] == 0:
                todo.setdefault(rec["name"], []).append((section, sampling.second_after(first)))
    if not todo:
        return
    outputs = fleet.run({name: "; ".join(f"echo '{_AFTER}{section['probe']}'; ({command})"
                                         for section, command in pending)
                         for name, pending in todo.items()}, SECOND_SAMPLE_TIMEOUT_S)
    for name, pending in todo.items():
        out = outputs.get(name) or {"error": "not run", "status": None, "stdout": ""}
        seconds = _by_probe(out["stdout"] or "")
        for section, command in pending:
            section["command"] += f"; after the active checks: {command}"
            second = seconds.get(section["probe"])
            if out["error"] or out["status"] != 0 or second is None:
                _one_sample_only(section, out["error"] or f"exit status {out['status']}")
                continue
            section["stdout"] = section["stdout"].rstrip("\n") + "\n" + second.rstrip("\n")


# The line before each probe's second sample in the one session that takes a node's
_AFTER = "##knd-after "


def _by_probe(stdout: str) -> dict[str, str]:
    """Each probe's output in a session that took several second samples.

    >>> _by_probe("##knd-after a\\nx\\n##knd-after b\\ny\\nz\\n")
    {'a': 'x', 'b': 'y\\nz'}
    """
    out: dict[str, list[str]] = {}
    lines: list[str] | None = None
    for line in stdout.splitlines():
        if line.startswith(_AFTER):
            lines = out.setdefault(line[len(_AFTER):].strip(), [])
        elif lines is not None:
            lines.append(line)
    return {probe: "\n".join(lines) for probe, lines in out.items()}


def _one_sample_only(section: dict, why: str) -> None:
    """The probe did not finish: its rules are then listed as not checked rather than judged
    on one sample."""
    section["exit_code"] = None
    section["stderr"] += f"\nkubenetdiag: second sample not taken: {why}"


def _mark_second_samples_missing(records: list[dict]) -> None:
    for rec in records:
        for section in rec["sections"]:
            if section["probe"] in SAMPLED and section["exit_code"] == 0 \
                    and not TwoSample.has_second(section["stdout"]):
                _one_sample_only(section, "the run was interrupted")


def _mark_active_skipped(records: list[dict]) -> None:
    """Say in every reached node's record that the active phase was not asked for, so the
    report lists it as not checked instead of silently showing no matrix."""
    for rec in records:
        if rec.get("reachable"):
            rec["active"] = {"skipped": SKIPPED_ACTIVE}
