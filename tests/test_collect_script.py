"""The probe script and its wire format, run for real with the local shell."""

from __future__ import annotations

import secrets
import subprocess

import pytest

from kubenetdiag.collect.script import build_script, new_marker, split_output
from kubenetdiag.probes import PROBES, Probe
from kubenetdiag.probes.base import HOLD


def _noop(section, node):
    return []


def run(probes, marker=None):
    marker = marker or new_marker()
    proc = subprocess.run(
        ["sh", "-s"], input=build_script(probes, marker), capture_output=True, text=True, timeout=60
    )
    return split_output(proc.stdout, proc.stderr, marker, probes), proc


def test_sections_keep_output_exit_code_and_stderr_exactly():
    probes = [
        Probe("a", "printf 'one\\ntwo'", _noop, ""),  # no trailing newline
        Probe("b", "echo out; echo err >&2; return 3", _noop, ""),
        Probe("c", "printf 'x\\n\\n'", _noop, ""),  # blank lines at the end
    ]
    sections, proc = run(probes)
    assert proc.returncode == 0
    got = {s.probe: s for s in sections}
    assert got["a"].stdout == "one\ntwo" and got["a"].exit_code == 0
    assert got["b"].stdout == "out\n" and got["b"].stderr == "err\n" and got["b"].exit_code == 3
    assert got["c"].stdout == "x\n\n"


def test_missing_tool_is_127_with_reason_and_does_not_run():
    probes = [Probe("t", "echo ran", _noop, "", tools=("no-such-tool-knd",))]
    sections, _ = run(probes)
    assert sections[0].exit_code == 127 and sections[0].stdout == ""
    assert "no-such-tool-knd: command not found" in sections[0].stderr


def test_probe_timeout_is_reported_and_later_probes_still_run():
    probes = [
        Probe("slow", "sleep 30", _noop, "", timeout_s=1),
        Probe("next", "echo ok", _noop, ""),
    ]
    sections, _ = run(probes)
    got = {s.probe: s for s in sections}
    assert got["slow"].exit_code == 124
    assert got["next"].stdout == "ok\n"


def test_forged_markers_in_output_cannot_split_sections():
    marker = new_marker()
    fake = "@@KND:0000000000000000:end:x:0:0"
    probes = [Probe("x", f"echo '{fake}'; echo '{marker[:-1]}:begin:evil'; echo tail", _noop, "")]
    sections, _ = run(probes, marker)
    assert [s.probe for s in sections] == ["x"]
    assert sections[0].stdout.endswith("tail\n") and fake in sections[0].stdout


def test_quoting_a_hostile_command_field():
    # a probe command with quotes and $() is passed as data to sh -c, not spliced into the script
    probes = [Probe("q", "echo \"it's $((1+1))\"; echo '$(id)'", _noop, "")]
    sections, _ = run(probes)
    assert sections[0].stdout == "it's 2\n$(id)\n"


def test_cut_off_script_keeps_partial_section_as_unfinished():
    marker = "@@KND:abc"
    stdout = (
        f"{marker}:begin:kernel\n6.1.0\n\n{marker}:end:kernel:0:1\n{marker}:begin:sysctl\nnet/ipv4"
    )
    sections = split_output(stdout, "", marker, PROBES, truncated=True)
    got = {s.probe: s for s in sections}
    assert got["kernel"].stdout == "6.1.0\n" and got["kernel"].exit_code == 0
    assert got["sysctl"].exit_code is None and got["sysctl"].truncated


def test_real_probes_run_locally():
    sections, _ = run(PROBES)
    got = {s.probe: s for s in sections}
    assert set(got) == {p.name for p in PROBES}
    assert "net/ipv4/ip_forward:" in got["sysctl"].stdout


def test_every_line_of_the_real_script_has_balanced_quotes():
    # The benchmark runs this same script through `ansible -m shell -a`, whose argument splitter
    # refuses a quoted string that spans lines (it did once: a newline inside "trap ...").
    import shlex

    for line in build_script(PROBES, new_marker()).splitlines():
        shlex.split(line)  # raises ValueError on an unbalanced quote


@pytest.mark.parametrize("children", ["kernel list", "pgrep"])
def test_a_hung_probe_is_killed_with_everything_it_started(children):
    """One watchdog for the whole script, not a `timeout` per probe: at the probe's own limit
    it kills what the probe started (a pipeline, a tool waiting on a socket) and ends the
    probe there, says so on the probe's stderr so the section reads as timed out (124) rather
    than whole, and the script goes on. Where the kernel keeps no children list
    (CONFIG_PROC_CHILDREN), pgrep finds them."""
    marker = new_marker()
    # a sleep of its own: the other parametrization may run beside this one
    hang = f"sleep 31.{secrets.randbelow(10**6):06d}"
    probes = [
        Probe("hung", f"{hang} | cat; echo after", _noop, "", timeout_s=1),
        Probe("next", "echo ok", _noop, "", timeout_s=5),
    ]
    script = build_script(probes, marker)
    if children == "pgrep":
        script = script.replace("/task/$1/children", "/task/$1/not-built-in")
    proc = subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True,
                          timeout=60)
    got = {s.probe: s for s in split_output(proc.stdout, proc.stderr, marker, probes)}
    assert got["hung"].exit_code == 124 and "after" not in got["hung"].stdout
    assert "timed out, killed after 1 s" in got["hung"].stderr
    assert got["hung"].duration_s < 10
    assert got["next"].stdout == "ok\n" and got["next"].exit_code == 0
    assert proc.returncode == 0
    left = subprocess.run(["pgrep", "-f", hang], capture_output=True, text=True)
    assert left.stdout == ""


def test_a_probe_runs_in_the_scripts_own_shell_and_cannot_upset_the_next():
    """No subshell per probe (each process counts on a sick node): a probe's directory,
    IFS and globbing are put back before the next one runs."""
    probes = [
        Probe("a", "cd /proc; IFS=:; set -f; echo $$", _noop, ""),
        Probe("b", "pwd; set -- /proc/sel*; echo \"$1\"; x='1 2'; set -- $x; echo $#; echo $$",
              _noop, ""),
    ]
    sections, proc = run(probes)
    got = {s.probe: s for s in sections}
    a_pid = got["a"].stdout.strip()
    assert got["b"].stdout.split() == ["/", "/proc/self", "2", a_pid]


def test_a_probes_scratch_variables_cannot_change_its_recorded_duration():
    """Probes share the script's shell: one that reads a value into __s (the links probe's
    link speeds, the sockets probe's descriptor limits) once moved the runner's start time,
    and the bundle said the probe took 4,000 s."""
    probes = [Probe("a", "__s=-99999999; __d=7; __r=3; __cs=0; __u=1; true", _noop, ""),
              Probe("b", "true", _noop, "")]
    sections, _ = run(probes)
    got = {s.probe: s for s in sections}
    assert got["a"].exit_code == 0
    # the script's own deadline bounds every probe's run: a duration past it is a wrong clock
    assert all(0 <= s.duration_s <= 60 for s in sections), [s.duration_s for s in sections]


def test_no_probe_assigns_what_the_runner_holds_while_it_runs():
    import re

    held = r"(M|__ifs|__main|__knd_\w+)"
    assign = re.compile(rf"(?<![\w$]){held}=|\bread\b[^;|&]*\s{held}\b|\bfor\s+{held}\s+in\b")
    for probe in PROBES:
        commands = [probe.command, *(p.command for p in probe.preludes)]
        for text in commands:
            assert not assign.search(text), (probe.name, assign.search(text).group(0))


def test_no_probe_ends_the_script_with_exit():
    """Probes run as functions of the script's shell: `exit` would end the whole script and
    every later probe would go missing, so they end with `return` (exit only inside $(...) or
    a quoted awk program)."""
    import re

    for probe in PROBES:
        unquoted = re.sub(r"'[^']*'", "''", probe.command)
        without_subshells = re.sub(r"\$\([^()]*\)", "", unquoted)
        assert not re.search(r"\bexit\b", without_subshells), probe.name


def test_the_script_lowers_its_own_priority():
    """A sick node's workloads come first: the script runs at nice 10 (and best-effort I/O
    priority 7 where ionice exists), and so does every probe it starts."""
    probes = [Probe("nice", "read -r s </proc/self/stat; echo \"${s##*) }\"", _noop, "")]
    sections, _ = run(probes)
    fields = sections[0].stdout.split()
    assert fields[16] == "10"  # stat field 19, counted after the command name


def test_a_probe_printing_too_much_is_cut_on_the_node_and_marked_partial():
    """The node keeps at most the limit of each held output (rulesets, IPVS tables) and says
    so on the probe's stderr; the section is marked truncated and its probe_status is
    `partial`, not ok."""
    from kubenetdiag.facts.parse import section_status
    from kubenetdiag.probes import BY_NAME

    marker = new_marker()
    probes = [Probe("big", f"{HOLD} printf '0123456789abcdef'", _noop, ""),
              Probe("small", "echo ok", _noop, "")]
    proc = subprocess.run(["sh", "-s"], input=build_script(probes, marker, output_limit=10),
                          capture_output=True, text=True, timeout=60)
    got = {s.probe: s for s in split_output(proc.stdout, proc.stderr, marker, probes)}
    assert got["big"].stdout == "0123456789" and got["big"].truncated
    assert "output cut at 10 bytes (the probe printed 16)" in got["big"].stderr
    assert got["small"].stdout == "ok\n" and not got["small"].truncated
    status = section_status(got["big"], BY_NAME["kernel"])
    assert status is not None and status[0] == "partial" and "cut at 10 bytes" in status[1]


def test_each_probe_runs_with_capped_cpu_and_memory():
    probes = [Probe("limits", "ulimit -t; ulimit -v", _noop, "", timeout_s=7)]
    sections, _ = run(probes)
    cpu, memory = sections[0].stdout.split()
    assert cpu == "7" and int(memory) == 1024 * 1024


def test_a_run_with_an_active_phase_leaves_the_counters_second_sample_for_later():
    """The passive script then prints the first sample only and does not sleep; the second,
    taken in a session of its own, tops the interval up from the first sample's uptime, and
    the two together parse as one whole counters section."""
    import time

    from kubenetdiag.collect.script import deferring
    from kubenetdiag.facts.parse import facts_from_records
    from kubenetdiag.probes import counters

    started = time.monotonic()
    sections, _ = run([p for p in deferring(PROBES) if p.name == "counters"])
    took = time.monotonic() - started
    (section,) = sections
    assert took < counters.MIN_INTERVAL_S  # no sleep on the node's first session
    assert "##knd:sample 1" in section.stdout and "##knd:sample 2" not in section.stdout
    first = counters.SAMPLING.first_uptime(section.stdout)
    assert first is not None
    started = time.monotonic()
    second = subprocess.run(["sh", "-c", counters.SAMPLING.second_after(first)],
                            capture_output=True, text=True, timeout=30)
    # it slept what was left of the interval since the first sample, and no more
    assert 0.5 < time.monotonic() - started < counters.MIN_INTERVAL_S + 1
    assert second.returncode == 0 and second.stdout.startswith("##knd:sample 2\n")
    whole = section.to_dict() | {"stdout": section.stdout.rstrip("\n") + "\n" + second.stdout}
    facts = facts_from_records([{"name": "n1", "address": "local", "reachable": True,
                                 "error": None, "duration_s": 1.0, "sections": [whole]}])
    rates = [f.attrs for f in facts if f.kind == "net_counter"]
    assert rates and all(a["interval_s"] >= counters.MIN_INTERVAL_S and a["delta"] is not None
                         for a in rates)


def test_each_two_sample_probe_gets_its_own_second_sample_from_one_session():
    """counters and pod_counters both defer their second sample: the collector takes both
    in one session per node, and each section gets its own."""
    from kubenetdiag import pipeline
    from kubenetdiag.collect.script import deferring

    sampled = [p for p in deferring(PROBES) if p.sampling]
    assert {p.name for p in sampled} >= {"counters", "pod_counters"}
    sections, _ = run(sampled)
    record = {"name": "n1", "reachable": True, "sections": [s.to_dict() for s in sections]}

    class Local:  # the fleet's session on each node, run here
        def run(self, commands: dict, timeout: float) -> dict:
            assert set(commands) == {"n1"}
            cp = subprocess.run(["sh", "-c", commands["n1"]], capture_output=True, text=True,
                                timeout=timeout)
            return {"n1": {"error": None, "status": cp.returncode, "stdout": cp.stdout}}

    pipeline._second_samples(Local(), [record])
    for got in record["sections"]:
        assert got["exit_code"] == 0, got
        (first, second) = got["stdout"].split("##knd:sample 2\n")
        assert first.startswith("##knd:sample 1\n") and "##knd-after" not in got["stdout"]
        assert second.split()[0].replace(".", "").isdigit()  # its own /proc/uptime line


def test_a_hostile_first_uptime_cannot_reach_the_shell():
    from kubenetdiag.probes import counters

    # what a node printed is parsed as a float before it is written into a command
    for text in ("$(reboot)", "1e400", "nan", "-5", "12;rm"):
        up = counters.SAMPLING.first_uptime(f"##knd:sample 1\n{text} 7.0\nA: 1")
        if up is not None:
            command = counters.SAMPLING.second_after(up)
            assert "reboot" not in command and ";rm" not in command


def test_a_hung_prelude_is_killed_and_the_probes_still_run():
    """A prelude runs before any probe, outside the probe's trap: the watchdog kills it at
    the script's longest limit, and the probes then run, each falling back on its own."""
    from kubenetdiag.probes.base import Prelude

    hang = f"sleep 31.{secrets.randbelow(10**6):06d}"
    probes = [Probe("p", 'echo "ran ${KND_X:-without}"', _noop, "", timeout_s=1,
                    preludes=(Prelude("KND_X", f"KND_X=$({hang})"),))]
    sections, proc = run(probes)
    assert sections[0].stdout == "ran without\n" and sections[0].exit_code == 0
    assert proc.returncode == 0
    left = subprocess.run(["pgrep", "-f", hang], capture_output=True, text=True)
    assert left.stdout == ""
