"""Command line: diagnose, collect, analyze, rules (and `lab` where the lab is installed).

The CLI parses arguments, calls kubenetdiag.pipeline and hands the result to the renderers in
kubenetdiag.reports. Input is checked before any node is touched: a bad inventory or rule file
exits 2 with file, line and a hint (docs/errors.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from rich.console import Console

from kubenetdiag import __version__, pipeline
from kubenetdiag.bundle import Bundle, json_text, new_bundle_dir, write_text_atomic
from kubenetdiag.collect.cluster import default_kubeconfig
from kubenetdiag.collect.ssh import SshOptions
from kubenetdiag.engine import RuleSet, load_ruleset
from kubenetdiag.errors import (
    EXIT_ALL_FAILED,
    EXIT_BROKEN_PIPE,
    EXIT_FINDINGS,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    InputError,
    for_terminal,
)
from kubenetdiag.inventory import Host, load_inventory, local_host
from kubenetdiag.pipeline import Analysis, CollectOptions, Observer
from kubenetdiag.redact import Redaction, read_key, redact_bundle
from kubenetdiag.reports import print_summary, render
from kubenetdiag.reports.progress import TerminalObserver

# Installed packages add subcommands here (the lab, from lab/ in the repository: it needs root
# and is not part of the product's wheel). Each entry point is a function taking the
# subparsers; the parser it adds sets `handler`.
COMMANDS_GROUP = "kubenetdiag.commands"

EXAMPLES = """\
examples:
  diagnose --inventory hosts.yaml --report incident.html
  diagnose --local --format json
  kubenetdiag collect --inventory hosts.yaml -o bundle/      # air-gapped site: collect only
  kubenetdiag analyze bundle/ --report incident.html          # anywhere, no network needed
  kubenetdiag bundle redact bundle/ shared/ --names           # secrets out, to share it
  kubenetdiag diff bundle-monday/ bundle-now/                 # what changed since it worked
  diagnose --inventory hosts.yaml --baseline bundle-monday/ --report incident.html
  kubenetdiag rules lint my-rules/
exit codes: 0 nothing of severity warning or above, 1 findings, 2 bad input, 3 no node reached,
  4 internal error, 130 Ctrl-C, 141 stdout closed early (| head)
"""

REPORT_SUFFIXES = {
    ".html": "html",
    ".htm": "html",
    ".json": "json",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".xml": "junit",
    ".prom": "prometheus",
}


def _seconds(text: str) -> float:
    """A timeout: a finite number of seconds above zero (argparse turns the error into exit 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a timeout: give seconds above 0")
    return value


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
        "--workers",
        type=int,
        metavar="N",
        help="collector processes, each with its own share of the nodes and connections "
        "(default: one per 200 nodes, at most one per CPU core)",
    )
    g.add_argument(
        "--connect-timeout",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="seconds to connect and log in to one node (default 10)",
    )
    g.add_argument(
        "--command-timeout",
        type=_seconds,
        default=60.0,
        metavar="S",
        help="seconds the probe script may run on one node (default 60)",
    )
    g.add_argument(
        "--ssh-config",
        "-F",
        metavar="FILE",
        help="OpenSSH client config to read (default ~/.ssh/config when it exists): Host "
        "patterns, HostName, User, Port, IdentityFile, ProxyJump, ProxyCommand, "
        "UserKnownHostsFile, StrictHostKeyChecking, ServerAliveInterval; the inventory's "
        "values win, as with Ansible",
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
        help="write a report; the format follows the suffix: .html, .json, .md, .txt, .xml "
        "(JUnit), .prom (Prometheus text, for node-exporter's textfile collector) (repeatable)",
    )
    p.add_argument(
        "--format",
        "-f",
        choices=["text", "json", "markdown", "junit", "prometheus"],
        default="text",
        help="what to print on stdout (default: a terminal summary; junit: one test case per "
        "rule and node; prometheus: text exposition)",
    )
    p.add_argument("--lang", choices=["en", "zh-CN"], default="en", help="report language")
    p.add_argument(
        "--baseline",
        type=Path,
        metavar="BUNDLE",
        help="a bundle from when it worked: the report adds what changed since (facts per "
        "node, findings that appeared or went away)",
    )
    _add_rule_args(p)


def _add_rule_args(p: argparse.ArgumentParser) -> None:
    """The rules a run evaluates: the shipped ones, site rules added, some turned off."""
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


def _add_redaction_args(p: argparse.ArgumentParser, names: str, key_file: str) -> None:
    p.add_argument(
        names,
        dest="redact_names",
        action="store_true",
        help="also replace IP addresses and host names by stable tokens (prefix-preserving: "
        "subnets and routes still add up)" + (" (implies --redact)" if names != "--names"
                                               else ""),
    )
    p.add_argument(
        key_file,
        dest="redact_key_file",
        type=Path,
        metavar="FILE",
        help="key of the tokens, created if missing: bundles redacted with the same file "
        "share their tokens (default: a random key, tokens stable within one bundle)",
    )


def _redaction(args: argparse.Namespace, asked: bool) -> Redaction | None:
    if args.redact_key_file is not None and not args.redact_names:
        raise InputError("a key file is used only with address and host-name tokens",
                         hint="add --names (--redact-names for collect), or drop the key file")
    if not (asked or args.redact_names):
        return None
    key = read_key(args.redact_key_file) if args.redact_key_file is not None else None
    return Redaction(names=args.redact_names, key=key)


def build_parser(prog: str = "kubenetdiag") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
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
    p.set_defaults(handler=cmd_diagnose)

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
    _add_redaction_args(p, "--redact-names", "--redact-key-file")
    p.add_argument(
        "--redact",
        action="store_true",
        help="write the bundle with secrets removed (tokens, passwords, keys), to share it",
    )
    p.set_defaults(handler=cmd_collect)

    p = sub.add_parser(
        "analyze", help="analyze a bundle (no network needed; writes facts.json and report.json "
        "into it)"
    )
    p.add_argument("bundle", type=Path, metavar="BUNDLE")
    _add_analysis_args(p)
    p.set_defaults(handler=cmd_analyze)

    p = sub.add_parser(
        "diff",
        help="what changed between two bundles: facts per node, findings (exit 1 when "
        "anything did)",
        epilog="examples:\n"
        "  kubenetdiag diff bundle-monday/ bundle-now/\n"
        "  kubenetdiag diff bundle-monday/ bundle-now/ --format json | jq .facts\n"
        "compared: settings, rules, routes, interfaces, processes, listeners, the cluster's "
        "objects and the packet paths; counters, PIDs and positions that move on their own are "
        "not (docs/facts.md says, per kind)\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("old", type=Path, metavar="OLD_BUNDLE")
    p.add_argument("new", type=Path, metavar="NEW_BUNDLE")
    p.add_argument("--format", "-f", choices=["text", "json"], default="text")
    _add_rule_args(p)
    p.set_defaults(handler=cmd_diff)

    p = sub.add_parser("bundle", help="work on a bundle: make a redacted copy to share")
    bsub = p.add_subparsers(dest="bundle_command", metavar="ACTION")
    bsub.required = True
    b = bsub.add_parser(
        "redact",
        help="copy a bundle with its secrets removed (and, with --names, its addresses and "
        "host names replaced by tokens)",
        epilog="examples:\n"
        "  kubenetdiag bundle redact bundle/ bundle-shared/\n"
        "  kubenetdiag bundle redact bundle/ bundle-shared/ --names --key-file ~/.knd-key\n"
        "the copy analyses to the same findings; facts.json and report.json are not copied "
        "(run analyze on the copy)\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("source", type=Path, metavar="BUNDLE")
    b.add_argument("output", type=Path, metavar="OUT", help="new or empty directory")
    _add_redaction_args(b, "--names", "--key-file")
    b.set_defaults(handler=cmd_bundle_redact)

    p = sub.add_parser("rules", help="list, lint and test rules")
    rsub = p.add_subparsers(dest="rules_command", metavar="ACTION")
    rsub.required = True
    r = rsub.add_parser("list", help="list the rules")
    r.add_argument("--format", choices=["text", "json"], default="text")
    r.add_argument("--rules-dir", action="append", default=[], type=Path, metavar="DIR")
    r.set_defaults(handler=cmd_rules_list)
    for action, text, handler in (
        ("lint", "check rule files; exit 2 on any problem", cmd_rules_lint),
        ("test", "run the test cases inside rule files", cmd_rules_test),
    ):
        r = rsub.add_parser(action, help=text)
        r.set_defaults(handler=handler)
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
    r.set_defaults(handler=cmd_rules_explain)
    _add_plugin_commands(sub)
    return parser


def _add_plugin_commands(sub: argparse._SubParsersAction) -> None:
    names = set()
    for entry in entry_points(group=COMMANDS_GROUP):
        names.add(entry.name)
        try:
            entry.load()(sub)
        except Exception as exc:  # a broken plugin must not take diagnose down with it
            _add_unavailable(sub, entry.name, f"the {entry.name!r} command failed to load: "
                             f"{exc!r}", f"reinstall the package that provides {entry.value}")
    if "lab" not in names:
        _add_unavailable(sub, "lab", "the lab is not installed: it is a separate package, "
                         "for rule authors and tests",
                         "from a clone of the repository: pip install -e ./lab")


def _add_unavailable(sub: argparse._SubParsersAction, name: str, why: str, hint: str) -> None:
    def handler(args: argparse.Namespace) -> int:
        raise InputError(why, hint=hint)

    parser = sub.add_parser(name, help=f"(unavailable) {why}", add_help=False)
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.set_defaults(handler=handler)


# ---------------------------------------------------------------- running the pipeline


def _hosts(args: argparse.Namespace) -> list[Host]:
    return [local_host()] if args.local else load_inventory(args.inventory)


def _collect_options(args: argparse.Namespace) -> CollectOptions:
    return CollectOptions(
        ssh=SshOptions(
            connect_timeout=args.connect_timeout,
            command_timeout=args.command_timeout,
            accept_new_host_keys=args.accept_new_host_keys,
            known_hosts=args.known_hosts,
            ssh_config=args.ssh_config,
        ),
        parallel=args.parallel,
        workers=args.workers,
        active=args.active,
        kubeconfig=args.kubeconfig,
        context=args.context,
        in_cluster=args.in_cluster,
        inventory=args.inventory,
        redact=_redaction(args, args.redact) if hasattr(args, "redact") else None,
    )


def _load_rules(args: argparse.Namespace) -> RuleSet:
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
        if path.is_dir():
            raise InputError(f"{path} is a directory", hint="name a file for the report")
        bundle = getattr(args, "bundle", None) or getattr(args, "output", None)
        if bundle is not None and path.resolve().is_relative_to(Path(bundle).resolve()):
            raise InputError(
                f"{path} is inside the bundle {bundle}",
                hint="write reports outside it: the bundle keeps the raw evidence, "
                     "and its report.json is written there already")
        targets.append((path, fmt))
    return targets


def _write_reports(args: argparse.Namespace, analysis: Analysis, observer: Observer,
                   ruleset: RuleSet) -> int:
    report = analysis.report
    targets = _report_targets(args)
    for path, fmt in targets:
        try:
            write_text_atomic(path, render(report, fmt, args.lang, ruleset.rules))
        except OSError as exc:
            raise InputError(f"cannot write the report {path}: {exc.strerror or exc}",
                             file=str(path),
                             hint="choose a writable path with free space; a report already "
                                  "there is left as it was") from None
        observer.warn(f"report written to {path}")
    if args.format != "text":
        sys.stdout.write(render(report, args.format, args.lang, ruleset.rules))
    else:
        html = next((str(p) for p, fmt in targets if fmt == "html"), None)
        print_summary(report, Console(highlight=False), lang=args.lang, full_report=html,
                      validated=True)
    return analysis.exit_code


# ---------------------------------------------------------------- commands


def cmd_diagnose(args: argparse.Namespace) -> int:
    ruleset = _load_rules(args)
    _report_targets(args)
    observer = TerminalObserver(args.quiet)
    hosts, options = _hosts(args), _collect_options(args)
    # created only once the input is known good: a refused run leaves nothing behind
    baseline = Bundle.read(args.baseline) if args.baseline else None
    out = args.bundle or new_bundle_dir(Path.cwd())
    try:
        analysis = pipeline.diagnose(hosts, options, ruleset, out, observer, baseline=baseline)
    except BaseException:
        if not args.bundle and not any(out.iterdir()):
            out.rmdir()  # a run that wrote nothing leaves no empty directory named like a bundle
        raise
    return _write_reports(args, analysis, observer, ruleset)


def cmd_collect(args: argparse.Namespace) -> int:
    observer = TerminalObserver(args.quiet)
    bundle = pipeline.collect(_hosts(args), _collect_options(args), args.output, observer)
    reached = sum(1 for r in bundle.records if r["reachable"])
    observer.warn(
        f"bundle written to {args.output}: {reached}/{len(bundle.records)} nodes collected"
    )
    return EXIT_OK if reached else EXIT_ALL_FAILED


def cmd_bundle_redact(args: argparse.Namespace) -> int:
    source = Bundle.read(args.source)
    if args.output.resolve().is_relative_to(args.source.resolve()):
        raise InputError(f"{args.output} is inside the bundle {args.source}",
                         hint="write the redacted copy outside the original")
    # after the bundle was read: a refused run creates no key file
    how = _redaction(args, asked=True) or Redaction()
    _, redactor = redact_bundle(source, args.output, how)
    print(f"redacted copy written to {for_terminal(str(args.output))}: {redactor.summary()}. "
          "Its facts.json and report.json are not copied: run `kubenetdiag analyze` on it.",
          file=sys.stderr)
    return EXIT_OK


def cmd_analyze(args: argparse.Namespace) -> int:
    ruleset = _load_rules(args)
    _report_targets(args)
    observer = TerminalObserver(quiet=False)
    baseline = Bundle.read(args.baseline) if args.baseline else None
    analysis = pipeline.analyze(Bundle.read(args.bundle), ruleset, observer, baseline=baseline)
    return _write_reports(args, analysis, observer, ruleset)


def cmd_diff(args: argparse.Namespace) -> int:
    from kubenetdiag.changes import changes
    from kubenetdiag.reports.changes_view import text

    ruleset = _load_rules(args)
    old, new = Bundle.read(args.old), Bundle.read(args.new)
    a = pipeline.analyze(old, ruleset, save=False)
    b = pipeline.analyze(new, ruleset, save=False)
    diff = changes(a.facts, a.report, b.facts, b.report)
    if args.format == "json":
        sys.stdout.write(json_text(diff, indent=2, ensure_ascii=True) + "\n")
    else:
        sys.stdout.write(text(diff))
    same = not (diff["facts"] or diff["findings"]["appeared"] or diff["findings"]["gone"])
    return EXIT_OK if same else EXIT_FINDINGS


def cmd_rules_list(args: argparse.Namespace) -> int:
    ruleset = load_ruleset(args.rules_dir)
    rows = [
        {"id": r.id, "fault": r.fault, "severity": r.severity, "title": r.title,
         "file": str(r.file)}
        for r in ruleset.rules
    ]
    if args.format == "json":
        sys.stdout.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
        return 0
    if not sys.stdout.isatty():
        # a pipe or a file: one rule a line, tab-separated, for cut, awk and grep
        print("id\tfault\tseverity\ttitle\tfile")
        for row in rows:
            print("\t".join(_cell(row[k]) for k in ("id", "fault", "severity", "title", "file")))
        return 0
    from rich.table import Table
    from rich.text import Text

    table = Table("id", "fault", "severity", "title")
    for row in rows:
        # Text, not markup: a site rule's title is data ([link=...] or an OSC-8 escape in it
        # must show as written, never act on the terminal)
        table.add_row(*(Text(for_terminal(str(v or "-"))) for v in (
            row["id"], row["fault"], row["severity"], row["title"])))
    Console(highlight=False).print(table)
    return 0


def _cell(value: object) -> str:
    """A table cell for tab-separated output: no tab, newline or terminal escape inside."""
    return " ".join(for_terminal(str(value if value is not None else "-")).split())


def cmd_rules_lint(args: argparse.Namespace) -> int:
    from kubenetdiag.engine import SHIPPED_RULES_DIR, lint_paths

    problems = (
        lint_paths(args.paths) if args.paths
        else lint_paths([SHIPPED_RULES_DIR], with_shipped=False)
    )
    for problem in problems:
        print(str(problem), file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return EXIT_USAGE
    print("rules lint: no problems")
    return 0


def cmd_rules_test(args: argparse.Namespace) -> int:
    from kubenetdiag.engine import run_tests

    ruleset = load_ruleset(args.paths if args.paths else ())
    results = run_tests(ruleset, args.paths or None)
    failed = [r for r in results if not r.passed]
    for result in results:
        line = f"{'PASS' if result.passed else 'FAIL'} {result.rule_id}: {result.name}"
        if not result.passed:
            line += f"\n     {result.file}:{result.line}: {result.message}"
        print(line)
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def cmd_rules_explain(args: argparse.Namespace) -> int:
    from kubenetdiag.engine.explain import explain_tree

    ruleset = load_ruleset(args.rules_dir)
    try:
        print(explain_tree(ruleset, args.rule_id))
    except KeyError:
        print(f"no rule {args.rule_id!r}; `kubenetdiag rules list` shows them", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _interrupts_are_never_lost() -> None:
    """Ctrl-C raises KeyboardInterrupt wherever the main thread is, and inside an object's
    __del__ (the CLIPS environment of a rule file checked and dropped: freeing it takes a
    moment, long on a loaded machine) Python reports it as ignored and goes on, for as long as
    the rules take. Such a lost interrupt is sent again a moment later, from another thread,
    to whatever the main thread does then: the collector keeps what it has, anything else
    ends at once, as for any Ctrl-C."""
    previous = sys.unraisablehook
    if getattr(previous, "redelivers_interrupts", False):
        return  # installed by an earlier call in this process

    def hook(unraisable: Any) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type,
                                                          KeyboardInterrupt):
            again = threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGINT))
            again.daemon = True
            again.start()
            return
        previous(unraisable)

    hook.redelivers_interrupts = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def main(argv: Sequence[str] | None = None, *, kubectl: bool = False) -> int:
    _interrupts_are_never_lost()
    try:
        # inside: looking up the commands other packages add reads their metadata, which
        # takes a while on a loaded machine, and Ctrl-C then is a Ctrl-C like any other
        parser = build_parser("kubectl netdiag" if kubectl else "kubenetdiag")
        args = parser.parse_args(argv)
        if kubectl:
            kubectl_kubeconfig(args, os.environ, Path.home())
        return args.handler(args)
    except InputError as exc:  # RuleErrors too: one line per problem
        print(f"kubenetdiag: {for_terminal(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # stdout closed early (`| head`): what was read was wanted, the rest is not an error.
        # stdout is pointed at /dev/null so that Python's exit does not fail flushing it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        # What was collected is written. Leave at once: threads may still wait on connections
        # for their whole connect timeout (Python would join them), and a second Ctrl-C during
        # the interpreter's own shutdown would end it by signal instead of with this code.
        print("kubenetdiag: interrupted", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        if "kubernetes" in sys.modules:  # only a run that read a kubeconfig has its files
            from kubenetdiag.collect.cluster import drop_credentials

            drop_credentials()
        os._exit(EXIT_INTERRUPTED)
    except Exception:
        # A bug, not the user's input or a node's state: exit 1 would read as "findings".
        traceback.print_exc()
        print(
            "kubenetdiag: internal error (the traceback above); the bundle directory, if one "
            "was started, keeps what was collected. Please report it with the traceback.",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def diagnose_main() -> int:
    """The `diagnose` console script: `kubenetdiag diagnose` with fewer keystrokes."""
    return main(["diagnose", *sys.argv[1:]])


def kubectl_main() -> int:
    """`kubectl netdiag ...`: kubectl runs `kubectl-netdiag` from PATH with the words after
    `netdiag` (its plugin convention). The same commands as kubenetdiag, `diagnose` when none
    is named, and the cluster API asked as kubectl asks it (kubectl_kubeconfig)."""
    argv = sys.argv[1:]
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["diagnose", *argv]
    return main(argv, kubectl=True)


def kubectl_kubeconfig(args: argparse.Namespace, environ: os._Environ[str] | dict[str, str],
                       home: Path) -> None:
    """Run as kubectl's plugin, a command that asks the API uses the kubeconfig kubectl reads
    (its current context, or --context) when no --kubeconfig, --in-cluster or $KUBECONFIG
    says otherwise: ~/.kube/config. Run as kubenetdiag, that file is not used unasked: it may
    point at another cluster than the inventory's (collect.cluster.resolve_target)."""
    if not hasattr(args, "kubeconfig") or args.kubeconfig or args.in_cluster \
            or environ.get("KUBECONFIG", "").strip():
        return
    default = default_kubeconfig(home)
    if default is not None:
        args.kubeconfig = str(default)


if __name__ == "__main__":
    sys.exit(main())
