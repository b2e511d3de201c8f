"""Command line: diagnose, collect, analyze, rules.

The CLI only wires the stages together; each stage lives in its own module. Input is checked
before any node is touched: a bad inventory or rule file exits 2 with file, line and a hint.
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from kubenetdiag import __version__
from kubenetdiag.errors import InputError
from kubenetdiag.findings import EXIT_USAGE

EXAMPLES = """\
examples:
  diagnose --inventory hosts.yaml --report incident.html
  diagnose --local --format json
  kubenetdiag collect --inventory hosts.yaml -o bundle/      # air-gapped site: collect only
  kubenetdiag analyze bundle/ --report incident.html          # anywhere, no network needed
  kubenetdiag rules lint my-rules/
exit codes: 0 nothing of severity warning or above, 1 findings, 2 bad input, 3 no node reached
"""

REPORT_SUFFIXES = {
    ".html": "html",
    ".htm": "html",
    ".json": "json",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
}


def _add_target_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--inventory",
        "-i",
        metavar="FILE",
        help="Ansible-style YAML inventory of the nodes to check",
    )
    src.add_argument(
        "--local", action="store_true", help="check this machine as the only node (no SSH)"
    )
    g = p.add_argument_group("connection")
    g.add_argument(
        "--parallel", type=int, default=32, metavar="N", help="nodes collected at once (default 32)"
    )
    g.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds to connect and log in to one node (default 10)",
    )
    g.add_argument(
        "--command-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds the probe script may run on one node (default 60)",
    )
    g.add_argument(
        "--known-hosts",
        metavar="FILE",
        help="known_hosts file (default: the inventory's UserKnownHostsFile, "
        "else ~/.ssh/known_hosts)",
    )
    g.add_argument(
        "--accept-new-host-keys",
        action="store_true",
        help="trust and record host keys seen for the first time (a changed key is still refused)",
    )
    k = p.add_argument_group(
        "cluster API (read-only; asked only with one of these flags or $KUBECONFIG set)"
    )
    k.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig of the cluster to ask")
    k.add_argument(
        "--context",
        metavar="NAME",
        help="kubeconfig context (default: the current one; the file: --kubeconfig, "
        "else $KUBECONFIG, else ~/.kube/config)",
    )
    k.add_argument(
        "--in-cluster",
        action="store_true",
        help="use the pod's service account (when kubenetdiag runs inside the cluster)",
    )


def _add_analysis_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--report",
        "-r",
        action="append",
        default=[],
        metavar="FILE",
        help="write a report; the format follows the suffix: .html, .json, .md, .txt (repeatable)",
    )
    p.add_argument(
        "--format",
        "-f",
        choices=["text", "json", "markdown"],
        default="text",
        help="what to print on stdout (default: a terminal summary)",
    )
    p.add_argument("--lang", choices=["en", "zh-CN"], default="en", help="report language")
    p.add_argument(
        "--rules-dir",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="add site rules; a rule with a shipped id replaces it (repeatable)",
    )
    p.add_argument(
        "--disable",
        action="append",
        default=[],
        metavar="RULE_ID",
        help="turn a rule off (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubenetdiag",
        description="Diagnose Kubernetes network faults: collect read-only facts from every "
        "node over SSH, reason over them with a rule base, report root causes.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"kubenetdiag {__version__}")
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "diagnose",
        help="collect from the nodes, analyze, report",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_target_args(p)
    _add_analysis_args(p)
    p.add_argument(
        "--bundle",
        "-o",
        type=Path,
        metavar="DIR",
        help="where to keep the raw collection (default: ./kubenetdiag-<time>)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    p.add_argument(
        "--no-active",
        dest="active",
        action="store_false",
        help="skip the active probes (pings, DNS, HTTP, TCP sent from every node)",
    )

    p = sub.add_parser("collect", help="collect raw facts into a bundle directory, nothing else")
    _add_target_args(p)
    p.add_argument(
        "--output", "-o", type=Path, required=True, metavar="DIR", help="bundle directory to create"
    )
    p.add_argument(
        "--active",
        action="store_true",
        help="also run the active probes (off by default: collect stays passive-only)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")

    p = sub.add_parser("analyze", help="analyze a bundle (no network needed)")
    p.add_argument("bundle", type=Path, metavar="BUNDLE")
    _add_analysis_args(p)

    p = sub.add_parser("rules", help="list, lint and test rules")
    rsub = p.add_subparsers(dest="rules_command", metavar="ACTION")
    rsub.required = True
    r = rsub.add_parser("list", help="list the rules")
    r.add_argument("--format", choices=["text", "json"], default="text")
    r.add_argument("--rules-dir", action="append", default=[], type=Path, metavar="DIR")
    for action, text in (
        ("lint", "check rule files; exit 2 on any problem"),
        ("test", "run the test cases inside rule files"),
    ):
        r = rsub.add_parser(action, help=text)
        r.add_argument(
            "paths",
            nargs="*",
            type=Path,
            metavar="PATH",
            help="rule files or directories (default: the shipped rules)",
        )
    r = rsub.add_parser("explain", help="show the chain of rules that can lead to a rule")
    r.add_argument("rule_id", metavar="ID")
    r.add_argument("--rules-dir", action="append", default=[], type=Path, metavar="DIR")
    from kubenetdiag.lab.cli import add_parser as add_lab_parser

    add_lab_parser(sub)
    return parser


# ---------------------------------------------------------------- collection


def _hosts(args: argparse.Namespace) -> list:
    from kubenetdiag.inventory import Host, load_inventory

    if args.local:
        return [
            Host(name=socket.gethostname() or "localhost", address="localhost", connection="local")
        ]
    return load_inventory(args.inventory)


class _Progress:
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
        shown = [f"{_printable(n)} ({now - t:.0f}s)" for n, t in running[: self.PENDING_NAMES]]
        text = "waiting for " + ", ".join(shown) if shown else "waiting"
        if len(running) > self.PENDING_NAMES:
            text += f" +{len(running) - self.PENDING_NAMES}"
        if queued:
            text += f", {queued} queued"
        return text

    def _tick(self) -> None:
        from rich.markup import escape

        while not self.stop.wait(self.PENDING_EVERY):
            text = self.pending()
            if text:
                self.console.print(f"[{self.done}/{self.total}] {escape(text)}")

    def __call__(self, node: str, state: str, detail: str) -> None:
        from rich.markup import escape

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
        line = f"[{done}/{self.total}] {escape(_printable(node))} {word}"
        if self.label != "collecting":  # the phase, so a log says which one a line is from
            line = f"{self.label} {line}"
        if detail:
            line += f": {escape(_printable(detail))}"
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


def _printable(text: str) -> str:
    """Node names and errors are untrusted: no escape sequences reach the terminal."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _collect(args: argparse.Namespace, hosts: list, out: Path) -> tuple[dict, list[dict]]:
    from kubenetdiag.active.phase import mark_skipped, run_phase
    from kubenetdiag.bundle import now_iso, prepare_dir, write_bundle, write_cluster
    from kubenetdiag.collect.cluster import BackgroundApiCollection, resolve_target
    from kubenetdiag.collect.runner import collect
    from kubenetdiag.collect.ssh import Connector, SshOptions

    if args.parallel < 1:
        raise InputError("--parallel must be at least 1")
    # a bad kubeconfig stops the run here, like a bad inventory
    api = BackgroundApiCollection(
        resolve_target(args.kubeconfig, args.context, args.in_cluster),
        connect_timeout=args.connect_timeout,
        read_timeout=min(args.command_timeout, 30.0),
    )
    prepare_dir(out)  # fail before touching any node, not after
    opts = SshOptions(
        connect_timeout=args.connect_timeout,
        command_timeout=args.command_timeout,
        accept_new_host_keys=args.accept_new_host_keys,
        known_hosts=args.known_hosts,
    )
    progress = _Progress(len(hosts), args.quiet)
    started = now_iso()
    api.start()  # the API is asked while the nodes are, not after them
    # Kept open between the phases: the active script reuses each node's SSH connection.
    connector = Connector(opts, keep=args.active)
    try:
        try:
            records, _ = collect(
                hosts, opts, parallel=args.parallel, progress=progress, connector=connector
            )
        finally:
            progress.close()
        cluster = api.result()
        if args.active:
            reached = sum(1 for r in records if r["reachable"])
            progress = _Progress(reached, args.quiet, label="active probes")
            try:
                run_phase(hosts, records, cluster, connector, parallel=args.parallel,
                          progress=progress)
            finally:
                progress.close()
        else:
            mark_skipped(records)
    finally:
        saved = connector.close()
    kinds = {h.connection for h in hosts}
    meta = {
        "started_at": started,
        "finished_at": now_iso(),
        "transport": kinds.pop() if len(kinds) == 1 else "mixed",
        "inventory": str(Path(args.inventory).resolve()) if args.inventory else None,
    }
    write_bundle(out, meta, records)
    write_cluster(out, cluster)
    if not args.quiet and cluster["queried"]:
        bad = [c["name"] for c in cluster["calls"] if c["status"] not in ("ok", "not_found")]
        progress.console.print(
            f"cluster API {_printable(str(cluster['source']['server']))}: "
            f"{len(cluster['calls']) - len(bad)}/{len(cluster['calls'])} calls answered"
            + (f"; no answer for {_printable(', '.join(bad))}" if bad else "")
        )
    for path in saved:
        progress.console.print(f"recorded new host keys in {path}")
    return meta, records


# ---------------------------------------------------------------- analysis


def _load_rules(args: argparse.Namespace):
    from kubenetdiag.engine import load_ruleset

    return load_ruleset(args.rules_dir, disable=args.disable)


def _report_targets(args: argparse.Namespace) -> list[tuple[Path, str]]:
    targets = []
    for r in args.report:
        path = Path(r)
        fmt = REPORT_SUFFIXES.get(path.suffix.lower())
        if fmt is None:
            raise InputError(
                f"cannot tell the report format of {path}",
                hint="end the file name with .html, .json, .md or .txt",
            )
        if path.parent and not path.parent.exists():
            raise InputError(f"the directory of {path} does not exist", hint="create it first")
        targets.append((path, fmt))
    return targets


def _analyze(args, ruleset, meta: dict, records: list[dict], bundle_dir: Path) -> int:
    from kubenetdiag.bundle import FACTS_SCHEMA, read_cluster, write_json
    from kubenetdiag.engine import infer
    from kubenetdiag.facts.parse import facts_from_records
    from kubenetdiag.findings import build_report

    facts = facts_from_records(records, read_cluster(bundle_dir))
    findings = infer(ruleset, facts)
    report = build_report(
        meta,
        records,
        facts,
        findings,
        rules_count=len(ruleset.rules),
        rules_digest=ruleset.digest,
        bundle=str(bundle_dir),
    )
    err = Console(stderr=True, highlight=False)
    try:
        write_json(
            bundle_dir / "facts.json",
            {"schema": FACTS_SCHEMA, "facts": [f.to_dict() for f in facts]},
        )
        write_json(bundle_dir / "report.json", report)
    except OSError as exc:  # a read-only bundle (a shipped example, a mounted stick) is fine
        err.print(f"note: could not save facts.json/report.json in {bundle_dir}: {exc.strerror}")
    targets = _report_targets(args)
    for path, fmt in targets:
        path.write_text(_render(report, fmt, args.lang), encoding="utf-8")
        err.print(f"report written to {path}")
    if args.format == "json":
        sys.stdout.write(_render(report, "json", args.lang))
    elif args.format == "markdown":
        sys.stdout.write(_render(report, "markdown", args.lang))
    else:
        from kubenetdiag.reports import print_summary

        html = next((str(p) for p, fmt in targets if fmt == "html"), None)
        print_summary(report, Console(highlight=False), lang=args.lang, full_report=html,
                      validated=True)
    return report["summary"]["exit_code"]


def _render(report: dict, fmt: str, lang: str) -> str:
    from kubenetdiag import reports

    # build_report has checked the report against its schema: once per run, not per format.
    if fmt == "html":
        return reports.render_html(report, lang=lang, validated=True)
    if fmt == "json":
        return reports.render_json(report, validated=True)
    if fmt == "markdown":
        return reports.render_markdown(report, lang=lang, validated=True)
    console = Console(record=True, width=100, file=io.StringIO())
    reports.print_summary(report, console, lang=lang, validated=True)
    return console.export_text()


# ---------------------------------------------------------------- commands


def cmd_diagnose(args: argparse.Namespace) -> int:
    ruleset = _load_rules(args)
    _report_targets(args)
    hosts = _hosts(args)
    out = args.bundle or Path(f"kubenetdiag-{time.strftime('%Y%m%d-%H%M%S')}")
    meta, records = _collect(args, hosts, out)
    return _analyze(args, ruleset, meta, records, out)


def cmd_collect(args: argparse.Namespace) -> int:
    from kubenetdiag.findings import EXIT_ALL_FAILED, EXIT_OK

    hosts = _hosts(args)
    _, records = _collect(args, hosts, args.output)
    reached = sum(1 for r in records if r["reachable"])
    Console(stderr=True, highlight=False).print(
        f"bundle written to {args.output}: {reached}/{len(records)} nodes collected"
    )
    return EXIT_OK if reached else EXIT_ALL_FAILED


def cmd_analyze(args: argparse.Namespace) -> int:
    from kubenetdiag.bundle import read_bundle

    ruleset = _load_rules(args)
    _report_targets(args)
    meta, records = read_bundle(args.bundle)
    return _analyze(args, ruleset, meta, records, args.bundle)


def cmd_rules(args: argparse.Namespace) -> int:
    from kubenetdiag import engine

    out = Console(highlight=False)
    if args.rules_command == "list":
        ruleset = engine.load_ruleset(args.rules_dir)
        rows = [
            {
                "id": r.id,
                "fault": r.fault,
                "severity": r.severity,
                "title": r.title,
                "file": str(r.file),
            }
            for r in ruleset.rules
        ]
        if args.format == "json":
            sys.stdout.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
        else:
            from rich.table import Table

            t = Table("id", "fault", "severity", "title")
            for row in rows:
                t.add_row(row["id"], row["fault"] or "-", row["severity"] or "-", row["title"])
            out.print(t)
        return 0
    if args.rules_command == "lint":
        problems = (
            engine.lint_paths(args.paths)
            if args.paths
            else engine.lint_paths([engine.SHIPPED_RULES_DIR], with_shipped=False)
        )
        for p in problems:
            print(str(p), file=sys.stderr)
        if problems:
            print(f"{len(problems)} problem(s)", file=sys.stderr)
            return EXIT_USAGE
        print("rules lint: no problems")
        return 0
    if args.rules_command == "test":
        ruleset = engine.load_ruleset(args.paths if args.paths else ())
        results = engine.run_tests(ruleset, args.paths or None)
        failed = [r for r in results if not r.passed]
        for r in results:
            mark = "PASS" if r.passed else "FAIL"
            line = f"{mark} {r.rule_id}: {r.name}"
            if not r.passed:
                line += f"\n     {r.file}:{r.line}: {r.message}"
            print(line)
        print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
        return 1 if failed else 0
    if args.rules_command == "explain":
        from kubenetdiag.engine.explain import explain_tree

        ruleset = engine.load_ruleset(args.rules_dir)
        try:
            print(explain_tree(ruleset, args.rule_id))
        except KeyError:
            print(f"no rule {args.rule_id!r}; `kubenetdiag rules list` shows them", file=sys.stderr)
            return EXIT_USAGE
        return 0
    raise AssertionError(args.rules_command)


def cmd_lab(args: argparse.Namespace) -> int:
    from kubenetdiag.lab.cli import run

    return run(args)


COMMANDS = {
    "diagnose": cmd_diagnose,
    "collect": cmd_collect,
    "analyze": cmd_analyze,
    "rules": cmd_rules,
    "lab": cmd_lab,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.subcommand](args)
    except InputError as exc:
        print(f"kubenetdiag: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except _rule_errors() as exc:
        for e in exc.errors:
            print(f"kubenetdiag: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("kubenetdiag: interrupted", file=sys.stderr)
        return 130


def _rule_errors() -> type[Exception]:
    from kubenetdiag.engine import RuleErrors

    return RuleErrors


def diagnose_main() -> int:
    """The `diagnose` console script: `kubenetdiag diagnose` with fewer keystrokes."""
    return main(["diagnose", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
