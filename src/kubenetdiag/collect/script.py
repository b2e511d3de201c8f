"""The node-side probe script and its wire format.

A node costs one SSH session: every probe runs inside one POSIX `sh` script fed on stdin, which
prints delimited sections on stdout and on stderr. Markers carry a per-run random nonce, so an
iptables comment or a process name that imitates a marker cannot split or forge a section.

stdout:  <M>:begin:<probe>\\n <output> \\n<M>:end:<probe>:<exit code>:<centiseconds>\\n
stderr:  <M>:begin:<probe>\\n <errors> \\n<M>:end:<probe>\\n

The script writes no file, starts no daemon and changes no setting: it only reads.
"""

from __future__ import annotations

import re
import secrets
import shlex
from collections.abc import Sequence
from dataclasses import replace

from kubenetdiag.probes import Probe, Section
from kubenetdiag.probes.base import CUT_NOTE, HOLD, TIMEOUT_NOTE, shown

OUTPUT_LIMIT = 64 * 1024 * 1024  # per node; a huge kube-proxy ruleset is ~10 MB
PROBE_OUTPUT_LIMIT = 32 * 1024 * 1024  # per held output, cut on the node (the stderr says so)
PROBE_MEMORY_KIB = 1024 * 1024  # virtual memory of the script and its commands (ulimit -v)

# Why the script is written as it is (kept here, not in the script, which every node receives):
# - Every process counts on a sick node, so the probes run in the script's own shell, each as
#   a function (defined by eval from its quoted text, so a broken probe fails alone), not in a
#   subshell each: the only processes are the tools whose output is the fact. After each
#   probe the runner puts back what a probe may change (IFS, globbing, directory); a probe
#   ends with `return`, never `exit`.
# - __knd_cs reads /proc/uptime with the shell's own `read`, into a variable: no fork, 10 ms
#   resolution, works on busybox.
# - Probes share the shell's variables, so what the runner holds while a probe runs has a
#   name no probe uses (its start time is __knd_t0; probes' scratch names are __a, __s...).
# - Output goes straight to the SSH session, but in few writes: every write can become one SSH
#   packet for the collector to decrypt and dispatch. A probe's end marker and the next one's
#   begin marker share one write; tools that write a line at a time (nft) and outputs that
#   grow with the cluster (rulesets, IPVS tables) go through base.HOLD, which holds them,
#   cuts them at the per-probe limit (stderr says so) and prints them in one write. A
#   probe's begin marker is out before it runs, so one cut off by the script's deadline
#   still shows it began.
# - Time limits come from one watchdog for the whole script: it polls the script's children
#   every 2 s (the kernel's children list, or pgrep where that list is not built in) and,
#   once one has run past the probe's limit, says so on stderr (the probe's section: the
#   collector reads it as exit status 124, as timeout(1) reports), sends the script's shell
#   USR1 and every child and everything it started TERM, then KILL. The shell runs its USR1
#   trap once the killed command is gone, and the trap's `return` ends the probe there (in a
#   helper such as base.HOLD, the helper; probes call it last). The limit is the children's
#   own `ulimit -t` (CPU seconds: the probe's limit, set by the runner as a soft limit), which
#   the watchdog reads in /proc/PID/limits: nothing is written to tell it.
# - The script runs at nice 10 and best-effort I/O priority 7: SSH starts it under `nice` (no
#   process more), and it calls renice only where it was started otherwise (locally, a bench).
# - No quoted string spans two lines, and no comment has a quote in it: Ansible's argument
#   splitter, which the benchmark feeds this same script, refuses unbalanced quotes. A newline
#   comes from the shell's default IFS (space, tab, newline) instead.
_PREAMBLE = r"""# kubenetdiag node probe: read-only
export LC_ALL=C
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
M='{marker}'
__ifs=$IFS; __nl=${{IFS#??}}; cd /
__knd_cs() {{
  read __u __i </proc/uptime; __w=${{__u%.*}}; __f=${{__u#*.}}; __cs=$((__w*100+1${{__f}}-100))
}}
__knd_begin() {{
  printf '%s:begin:%s\n' "$M" "$1"; printf '%s:begin:%s\n' "$M" "$1" >&2
}}
__knd_children() {{
  __c=
  if [ -r /proc/$1/task/$1/children ]; then read -r __c </proc/$1/task/$1/children
  elif command -v pgrep >/dev/null 2>&1; then __c=$(pgrep -P "$1" 2>/dev/null)
  fi
}}
__knd_subtree() {{
  __knd_children "$1"
  for __k in $__c; do __all="$__all $__k"; __knd_subtree "$__k"; done
}}
__knd_kill() {{
  __all=; for __j in $2; do __all="$__all $__j"; __knd_subtree "$__j"; done
  kill -"$1" $__all 2>/dev/null
}}
__knd_wd() {{
  read -r __me __x </proc/self/stat; __p=
  while sleep 2; do
    {{ read -r __x </proc/$__main/stat; }} 2>/dev/null || exit 0
    case ${{__x##*) }} in Z*|X*) exit 0;; esac
    __knd_children "$__main"; __cur=; __kids=
    for __k in $__c; do
      [ "$__k" = "$__me" ] || {{ __kids="$__kids $__k"; [ -n "$__cur" ] || __cur=$__k; }}
    done
    [ -n "$__cur" ] || continue
    __knd_cs
    if [ "$__cur" != "$__p" ]; then
      __p=$__cur; __t0=$__cs; __lim={limit}
      while read -r __a __b __x __y __z; do
        [ "$__a $__b" = "Max cpu" ] && case $__y in [0-9]*) __lim=$__y;; esac
      done 2>/dev/null </proc/$__cur/limits
    elif [ $((__cs-__t0)) -ge $((__lim*100)) ]; then
      echo "{timeout_note} $__lim s" >&2
      kill -USR1 "$__main" 2>/dev/null
      __knd_kill TERM "$__kids"; sleep 2; __knd_kill KILL "$__kids"; __p=
    fi
  done
}}
__main=$$
__knd_in=; trap '[ -z "$__knd_in" ] || {{ __knd_in=; return 124; }}' USR1
__knd_wd </dev/null >/dev/null &
__knd_wdpid=$!
read -r __x </proc/self/stat; set -- ${{__x##*) }}
if [ "${{17:-0}}" -lt 10 ] && command -v renice >/dev/null 2>&1; then
  renice -n 10 -p $$ >/dev/null 2>&1
fi
set --
if command -v ionice >/dev/null 2>&1; then ionice -c 2 -n 7 -p $$ >/dev/null 2>&1; fi
ulimit -S -v {memory} 2>/dev/null
{hold}() {{
  __o=$("$@"); __c=$?
  if [ ${{#__o}} -gt {output} ]; then
    echo "{cut} {output} bytes (the probe printed ${{#__o}})" >&2
  fi
  [ -z "$__o" ] || printf '%.{output}s' "$__o$__nl"
  __o=; return $__c
}}
__knd_run() {{
  __knd_cs; __knd_t0=$__cs; __r=0
  for __t in $3; do
    command -v "$__t" >/dev/null 2>&1 ||
      {{ echo "kubenetdiag: $__t: command not found" >&2; __r=127; }}
  done
  if [ "$__r" -eq 0 ]; then
    ulimit -S -t "$2" 2>/dev/null
    eval "__knd_probe() {{ $4$__nl}}" && {{ __knd_in=1; __knd_probe </dev/null; }}
    __r=$?; __knd_in=; IFS=$__ifs; set +f; cd /
  fi
  __knd_cs; __d=$((__cs-__knd_t0))
  if [ -n "$5" ]; then
    printf '\n%s:end:%s:%s:%s\n%s:begin:%s\n' "$M" "$1" "$__r" "$__d" "$M" "$5"
    printf '\n%s:end:%s\n%s:begin:%s\n' "$M" "$1" "$M" "$5" >&2
  else
    printf '\n%s:end:%s:%s:%s\n' "$M" "$1" "$__r" "$__d"
    printf '\n%s:end:%s\n' "$M" "$1" >&2
  fi
}}
"""


def new_marker() -> str:
    return "@@KND:" + secrets.token_hex(8)


def deferring(probes: Sequence[Probe]) -> list[Probe]:
    """The probes for a run whose active phase follows: a two-sample probe prints its first
    sample only, and its second is taken after the node's checks (pipeline), so the interval
    overlaps the active phase instead of adding to the node script's time."""
    return [replace(p, command=p.sampling.first_only) if p.sampling else p for p in probes]


def build_script(probes: Sequence[Probe], marker: str, *,
                 output_limit: int = PROBE_OUTPUT_LIMIT) -> str:
    """The whole script for one node. Every probe field is quoted: none is trusted to be safe.
    The preludes go in as they are written (a here-document needs its lines): they are module
    constants of the probes, not data. `output_limit`: bytes of each held output kept (the
    rest is cut on the node)."""
    limit = max((int(p.timeout_s) for p in probes), default=15)
    lines = [_PREAMBLE.format(marker=marker, limit=limit, output=int(output_limit),
                              memory=PROBE_MEMORY_KIB, cut=CUT_NOTE, timeout_note=TIMEOUT_NOTE,
                              hold=HOLD)]
    # In the script's own shell, into shell variables: the node keeps no trace of them.
    preludes = dict.fromkeys(prelude for probe in probes for prelude in probe.preludes)
    lines += [prelude.command for prelude in preludes]
    if probes:
        lines.append(f"__knd_begin {shlex.quote(probes[0].name)}")
    for probe, after in zip(probes, [*[nxt.name for nxt in probes[1:]], ""], strict=True):
        fields = (probe.name, str(int(probe.timeout_s)), " ".join(probe.tools), probe.command,
                  after)
        lines.append("__knd_run " + " ".join(shlex.quote(field) for field in fields))
    lines.append('__knd_kill TERM "$__knd_wdpid"; exit 0')
    return "\n".join(lines) + "\n"


def split_output(
    stdout: str, stderr: str, marker: str, probes: Sequence[Probe], *, truncated: bool = False
) -> list[Section]:
    """Cut the script's two streams back into sections, one per probe that started.

    A probe that began but never ended (the node-side deadline killed the script) gets
    exit_code None and keeps whatever it printed.
    """
    commands = {probe.name: shown(probe.command) for probe in probes}
    out = _sections(stdout, marker, with_status=True)
    err = _sections(stderr, marker, with_status=False)
    sections = []
    for name, (text, rc, cs) in out.items():
        if name not in commands:
            continue  # a forged or foreign name: we only accept probes we sent
        errors = err.get(name, ("", None, None))[0]
        if rc is not None and TIMEOUT_NOTE in errors:
            rc = 124  # the watchdog killed one of its commands, as timeout(1) reports it
        sections.append(
            Section(
                probe=name,
                command=commands[name],
                exit_code=rc,
                duration_s=cs / 100 if cs is not None else 0.0,
                stdout=text,
                stderr=errors,
                # cut by the node-side limit (a probe that printed too much), or a probe the
                # collector's per-node limit or the script's deadline cut short
                truncated=(truncated and rc is None) or CUT_NOTE in errors,
            )
        )
    return sections


_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_STATUS = re.compile(r"(-?[0-9]+):(-?[0-9]+)")


def _sections(text: str, marker: str, *, with_status: bool) -> dict:
    # Marker lines are matched with plain string operations: a regex built around each node's
    # own nonce would be compiled afresh for every node (re's cache keys on the pattern).
    begin, end = marker + ":begin:", marker + ":end:"
    found: dict[str, tuple[str, int | None, int | None]] = {}
    current: str | None = None
    buf: list[str] = []
    for line in text.split("\n"):
        if line.startswith(marker):
            if line.startswith(begin) and _NAME.fullmatch(line, len(begin)):
                if current is not None:  # previous one never ended
                    found[current] = ("\n".join(buf), None, None)
                current, buf = line[len(begin) :], []
                continue
            if current is not None and line.startswith(end):
                name, _, status = line[len(end) :].partition(":")
                exit_and_time = _STATUS.fullmatch(status)
                if name == current and (exit_and_time or not status):
                    # the newline the script printed before the end marker is the one
                    # split() consumed
                    body = "\n".join(buf)
                    if with_status and exit_and_time:
                        found[current] = (
                            body, int(exit_and_time.group(1)), int(exit_and_time.group(2))
                        )
                    else:
                        found[current] = (body, None, None)
                    current, buf = None, []
                    continue
        if current is not None:
            buf.append(line)
    if current is not None:
        found[current] = ("\n".join(buf), None, None)
    return found

