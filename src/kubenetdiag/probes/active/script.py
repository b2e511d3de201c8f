"""One node's active script: pings, DF pings, DNS, HTTP and TCP checks under a VXLAN capture.

Read-only like the passive script: it writes no file, changes no setting and starts nothing
that outlives it. Every check prints exactly one line, written with one printf of at most a few
KiB, so lines from parallel jobs never interleave on the pipe (writes up to PIPE_BUF are
atomic):

    <M>:tools: <tools found>            which tools exist (DNS/HTTP fall back to the SSH channel)
    <M>:podns:<netns name>              the pod network namespace entered for the pod's view
    <M>:chk:<id>:<rc>:<cs>:<output>     one check; newlines of its output replaced by \\x1e
    <M>:cap:<rc>:<output>               the capture, printed after every check ended

Checks run as background jobs, at most JOBS at once (a batch, then `wait`). The capture runs
in a command substitution so its output stays in a shell variable, and is stopped as soon as
the checks are done, so the whole script costs roughly the slowest batches plus a second.

A check's command (kubenetdiag.probes.active) runs in its own `sh -c` and may use what the
preamble sets up: `__has TOOL` (the tool was found), `$__pi` (ping's interval option, empty on
busybox), `$__to` (`timeout 4` where there is timeout), `$__inpod` (the nsenter prefix into a
pod's network namespace, empty when there is none), `$__TCP` (the TCP connect helper,
run as `sh -c "$__TCP" _ HOST PORT ip|name node|pod`) and `$__RES` (a name resolved as the
pod resolves it, with the pod's own resolv.conf, `$__prc`, when a process of the pod shows
it: `sh -c "$__RES" _ NAME`).
"""

from __future__ import annotations

from collections.abc import Sequence

from kubenetdiag.probes.active import checks as registered
from kubenetdiag.probes.active.plan import NodePlan
from kubenetdiag.probes.base import ActiveCheck, quoted

JOBS = 16  # checks in flight at once per node: enough for K=8 peers in ~3 batches
BATCH_S = 2.5  # the slowest check of a batch: ping -c 2 -W 1 to a dead peer, curl -m 2
LINE_LIMIT = 3000  # bytes of one check's output (keeps each line one atomic write)
RS = "\x1e"  # the script's stand-in for newlines inside one check's output line

# Node-side helpers. $__pi is ping's interval: iputils accepts 0.2 s, busybox has no -i.
_PREAMBLE = r"""# kubenetdiag active probe: read-only, bounded
export LC_ALL=C
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
M='{marker}'
__knd_cs() {{
  read __u __i </proc/uptime; __w=${{__u%.*}}; __f=${{__u#*.}}; echo $((__w*100+1${{__f}}-100))
}}
__t=
for __x in ping dig nslookup host curl wget nc bash getent tcpdump timeout nsenter ip; do
  command -v "$__x" >/dev/null 2>&1 && __t="$__t $__x"
done
printf '%s:tools:%s\n' "$M" "$__t"
__has() {{ case " $__t " in *" $1 "*) return 0;; esac; return 1; }}
__pi=
if __has ping && ping -V 2>&1 | grep -q iputils; then __pi='-i 0.2'; fi
__to=
if __has timeout; then __to='timeout 4'; fi
__knd_chk() {{
  __id=$1; shift
  __s=$(__knd_cs)
  __o=$("$@" 2>&1 </dev/null); __r=$?
  __e=$(__knd_cs)
  __o=$(printf '%s' "$__o" | tr '\n' '\036' | head -c {limit})
  printf '%s:chk:%s:%s:%s:%s\n' "$M" "$__id" "$__r" "$((__e-__s))" "$__o"
}}
# The pod's view: containerd bind-mounts pod network namespaces under /run/netns/cni-*.
__pns=
for __f in /run/netns/cni-*; do
  case "$__f" in *' '*) continue;; esac
  [ -e "$__f" ] && {{ __pns=$__f; break; }}
done
__inpod=
if [ -n "$__pns" ] && __has nsenter; then
  __inpod="nsenter --net=$__pns"; printf '%s:podns:%s\n' "$M" "${{__pns##*/}}"
fi
"""

# The pod's own resolver: the resolv.conf its runtime mounted, seen through a process of the
# pod (its sandbox) in the node's /proc. Only read: names are resolved with the node's tools.
# A declared endpoint given by name and the pod's DNS check need it, so only a plan with one
# of them walks /proc for it. The pod's view moves to the first pod (of the first 8) whose
# search list is the cluster's (ClusterFirst): CoreDNS and other dnsPolicy Default pods
# carry the node's resolv.conf, and checking that would say nothing about what pods are told.
_POD_RESOLVER = r"""__prc=
if [ -n "$__inpod" ]; then
  __p1=; __n1=; __np=0
  for __n in /run/netns/cni-*; do
    case "$__n" in *' '*) continue;; esac
    [ $__np -lt 8 ] || break; __np=$((__np+1)); __c=
    for __d in /proc/[0-9]*; do
      # a regular file, as kubelet mounts it: a link would be followed from the node's root
      if [ "$__d/ns/net" -ef "$__n" ] 2>/dev/null && [ -f "$__d/root/etc/resolv.conf" ] \
          && [ ! -L "$__d/root/etc/resolv.conf" ]; then
        __c=$__d/root/etc/resolv.conf; break
      fi
    done
    [ -n "$__c" ] || continue
    [ -n "$__p1" ] || { __p1=$__c; __n1=$__n; }
    __k=; __i=0
    while [ $__i -lt 64 ] && read -r __w __v; do
      __i=$((__i+1)); [ "$__w" = search ] && case " $__v " in *.svc.*) __k=1;; esac
    done <"$__c" 2>/dev/null
    [ -z "$__k" ] || { __prc=$__c; __n1=$__n; break; }
  done
  [ -n "$__prc" ] || __prc=$__p1
  if [ -n "$__n1" ] && [ "$__n1" != "$__pns" ]; then
    __pns=$__n1; __inpod="nsenter --net=$__pns"; printf '%s:podns:%s\n' "$M" "${__pns##*/}"
  fi
fi"""

# A name resolved as the pod would resolve it: the node's own getent in a throwaway mount
# namespace that shows copies of the pod's resolv.conf and hosts file, so the pod's libc
# semantics apply (search list, ndots, hosts first) and none of its binaries run. The copies
# sit on a tmpfs of that namespace only (a file of another mount namespace cannot be bound
# directly): nothing reaches the node's disk, and nothing outlives the command. Run as
# `sh -c "$__RES" _ NAME` inside the pod's network namespace; prints `resolver: pod <ns>`,
# `search: <list>`, then `resolved: NAME ADDR` (exit 0) or `unresolved: NAME (why)` (exit 3);
# exit 127 when no process of the pod showed its resolv.conf.
RES_HELPER = r"""h=$1
[ -n "$__prc" ] || { echo "kubenetdiag: no process of the pod shows its resolv.conf"; exit 127; }
set -f
ns=$(awk '$1 == "nameserver" && $2 ~ /^[0-9]+[.][0-9]+[.][0-9]+[.][0-9]+$/ {
  print $2; exit }' "$__prc")
[ -n "$ns" ] || { echo "unresolved: $h (the pod's resolv.conf names no nameserver)"; exit 3; }
echo "resolver: pod $ns"
awk '$1 == "search" {s = ""; for (i = 2; i <= NF; i++) s = s " " $i}
  END {s = substr(s, 2); gsub(/[^A-Za-z0-9_. -]/, "", s); print "search: " substr(s, 1, 512)}' \
  "$__prc"
ph=${__prc%resolv.conf}hosts
a=$(unshare --mount --propagation private sh -c 'mount -t tmpfs -o size=256k tmpfs /tmp &&
  head -c 65536 "$1" >/tmp/resolv.conf && mount --bind /tmp/resolv.conf /etc/resolv.conf || exit
  if [ -f "$2" ] && [ ! -L "$2" ]; then
    head -c 65536 "$2" >/tmp/hosts && mount --bind /tmp/hosts /etc/hosts || exit
  fi
  echo in; timeout 3 getent ahostsv4 "$3"; echo "rc $?"' _ "$__prc" "$ph" "$h" 2>/dev/null)
why=
case $a in
in*)
  r=${a##*rc }; set -- ${a#in}; a=
  if [ "$r" = 0 ]; then a=$1; elif [ "$r" = 124 ]; then why=" (no answer from $ns)"; fi;;
*)
  # not allowed to (not root): ask the pod's nameserver what its libc would ask, in order
  a=
  c=$(awk -v n="$h" '
    $1 == "search" {s = ""; for (i = 2; i <= NF; i++) s = s " " $i}
    $1 == "options" {for (i = 2; i <= NF; i++) if ($i ~ /^ndots:[0-9]+$/) nd = substr($i, 7) + 0}
    END {
      if (nd == "") nd = 1
      m = n; dots = gsub(/[.]/, "", m)
      k = 0
      if (n ~ /[.]$/) out[++k] = substr(n, 1, length(n) - 1)
      else {
        t = split(s, sl, " ")
        if (dots >= nd) out[++k] = n
        for (i = 1; i <= t; i++) out[++k] = n "." sl[i]
        if (dots < nd) out[++k] = n
      }
      for (i = 1; i <= k && i <= 8; i++)
        if (out[i] ~ /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/) print out[i]
    }' "$__prc")
  for q in $c; do
    # a server that does not answer stops the search: each further name would wait as long
    if command -v dig >/dev/null 2>&1; then
      o=$(timeout 3 dig +short +time=1 +tries=1 @"$ns" "$q" A 2>/dev/null); r=$?
      case $r in 9|124) echo "unresolved: $h (no answer from $ns)"; exit 3;; esac
      a=$(printf '%s\n' "$o" | grep -E '^[0-9]+([.][0-9]+){3}$' | head -n 1)
    elif command -v nslookup >/dev/null 2>&1; then
      o=$(timeout 3 nslookup -type=a "$q" "$ns" 2>&1)
      case $o in *"timed out"*|*"no servers"*)
        echo "unresolved: $h (no answer from $ns)"; exit 3;; esac
      a=$(printf '%s\n' "$o" | awk '/^Name:/ {f = 1} f && /^Address/ {print $NF; exit}')
    else
      echo "unresolved: $h (no unshare, dig or nslookup to ask the pod's resolver)"; exit 3
    fi
    [ -n "$a" ] && break
  done;;
esac
[ -n "$a" ] || { echo "unresolved: $h$why"; exit 3; }
echo "resolved: $h $a"
"""

# TCP connect: nc where present, else bash's /dev/tcp; by name: resolve first (from a pod
# with the pod's own resolver, $__RES), so "the name does not resolve" is told apart from
# "refused" and "timeout" (docs/runbooks.md#runbook-002). The checks run it as
# `sh -c "$__TCP" _ host port by where`.
# bash's 3 s start once bash runs, from a watchdog it starts itself: under `timeout 3 bash`
# they included starting bash, and on a busy node (16 checks at once, a loaded host) that took
# seconds, so connects that succeeded in a millisecond were reported as timeouts. The watchdog's
# sleep writes to /dev/null, so a connect that succeeds does not wait for it. nc runs with -v:
# without it OpenBSD's nc -z exits 1 in silence on a timeout and on a refusal alike, and a
# timeout is the answer the node -> endpoint / pod -> endpoint comparison needs.
TCP_HELPER = r"""h=$1; p=$2
if [ "$3" = name ] && [ "$4" = pod ] && [ -n "$__prc" ]; then
  o=$(sh -c "$__RES" _ "$h"); r=$?
  printf '%s\n' "$o"
  [ "$r" = 0 ] || exit 3
  h=${o##* }  # its last line is `resolved: NAME ADDR`
elif [ "$3" = name ] && command -v getent >/dev/null 2>&1; then
  set -f
  set -- $(timeout 3 getent ahostsv4 "$h" 2>/dev/null)
  [ -n "$1" ] || { echo "unresolved: $h"; exit 3; }
  echo "resolved: $h $1"; h=$1
fi
if command -v nc >/dev/null 2>&1; then exec nc -v -z -w 2 "$h" "$p"; fi
if command -v bash >/dev/null 2>&1; then
  exec bash -c '(sleep 3 >/dev/null 2>&1; echo "connect to $0 port $1: timed out"; kill -9 $$) &
exec 3<>"/dev/tcp/$0/$1"; r=$?; kill $! 2>/dev/null; exit $r' "$h" "$p"
fi
echo "kubenetdiag: nc, bash: command not found"; exit 127
"""


def jobs(plan: NodePlan, checks: Sequence[ActiveCheck] | None = None) -> list[tuple[str, str]]:
    """(check id, shell command) of every job in the order they run. Ids index into the plan,
    so the parser maps each line back to its peer, server or endpoint without trusting the
    node."""
    checks = registered() if checks is None else checks
    return [
        (check.section_id(suffix), check.command(plan, target))
        for check in checks
        if check.command is not None and check.window_command is None
        for suffix, target in check.targets(plan)
    ]


def window_check(plan: NodePlan, checks: Sequence[ActiveCheck] | None = None
                 ) -> tuple[ActiveCheck, object] | None:
    """The check that runs around the jobs, with its target, when the plan has one. The wire
    format has one `cap` line, so only the first such check (by order) runs."""
    for check in registered() if checks is None else checks:
        if check.window_command is not None:
            for _, target in check.targets(plan):
                return check, target
    return None


def capture_window(n_checks: int) -> int:
    """Seconds the capture may run at most: every batch at its slowest, plus start-up."""
    batches = -(-n_checks // JOBS)
    return min(14, int(batches * BATCH_S) + 2)


def deadline(plan: NodePlan) -> int:
    """The node-side limit for the whole script (`timeout` around `sh -s`)."""
    return capture_window(len(jobs(plan))) + 5


def build(plan: NodePlan, marker: str) -> str:
    planned = jobs(plan)
    lines = [_PREAMBLE.format(marker=marker, limit=LINE_LIMIT), f"__TCP={quoted(TCP_HELPER)}",
             f"__RES={quoted(RES_HELPER)}"]
    if any(e.get("by") == "name" for e in plan.get("endpoints") or []) or plan.get("dns"):
        lines.append(_POD_RESOLVER)
    body = []
    for n, (cid, cmd) in enumerate(planned):
        body.append(f"__knd_chk {quoted(cid)} sh -c {quoted(_wrap(cmd))} &")
        if (n + 1) % JOBS == 0:
            body.append("wait")
    body.append("wait")
    lines.append("__checks() {\n" + "\n".join("  " + b for b in body) + "\n}")
    lines.append("export __pi __to __inpod __t __TCP __RES __prc")
    around = window_check(plan)
    if around:
        check, target = around
        assert check.window_command is not None
        cap = check.window_command(target, capture_window(len(planned)))
        has = " && ".join(f"__has {tool}" for tool in check.tools) or "true"
        lines.append(
            f"if {has}; then\n"
            "  exec 3>&1\n"
            # The window command's output stays in the variable; the jobs write to stdout.
            f"  __cap=$( {cap} 2>&1 & __tp=$!\n"
            "    ( sleep 0.5; __checks ) >&3 2>&3\n"
            "    sleep 0.3; kill $__tp 2>/dev/null; wait $__tp; echo \"rc=$?\" )\n"
            "  __cap=$(printf '%s' \"$__cap\" | tr '\\n' '\\036')\n"
            "  printf '%s:cap:0:%s\\n' \"$M\" \"$__cap\"\n"
            "else\n"
            "  __checks\n"
            f"  printf '%s:cap:127:kubenetdiag: {' or '.join(check.tools)}: command not found"
            "\\n' \"$M\"\n"
            "fi")
    else:
        lines.append("__checks")
    lines.append("exit 0")
    return "\n".join(lines) + "\n"


def _wrap(cmd: str) -> str:
    # Each check runs in `sh -c` with the helpers it needs defined again (a child sh does not
    # inherit shell functions).
    return "__has() { case \" $__t \" in *\" $1 \"*) return 0;; esac; return 1; }\n" + cmd
