"""Benchmark 1: fan-out over real SSH on the lab, side by side with the runbooks' own method.

For each lab size, in one run and alternating: `kubenetdiag collect` (passive facts), the
Ansible ad-hoc baseline running the very same probe script
(`ansible all -i <lab inventory> -m shell -a '<script>' -f N`), a bare parallel paramiko loop
running it too (`bare_paramiko.py`: the floor any SSH tool pays), and the full `diagnose`.
Everything runs in the lab's client namespace; every target is a lab address.

    pip install -e '.[bench]'          # ansible-core
    sudo python bench/bench_fanout.py [--sizes 3,10,25,50] [--repeat 1]

Prints a table and writes bench/results/fanout.json. Lab nodes share this machine's cores, so
wall time grows with N for reasons a real cluster does not have; the figures that matter are
the ratio to the baseline and the diagnoser's own CPU per node (the slope over N).

Every SSH session on a lab node starts root's login shell. A lab node runs its own shell
start-up files (a fresh node's, `lab up --login node`), as a real node does; this machine's
~/.bashrc may do much more (on the machine the figures come from, pyenv's init: ~0.2 s of CPU
per session), and Ansible opens several sessions per node where kubenetdiag opens one. So at the
largest size both tools run a second time with the machine's login (`--login machine`). Both
figures are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SYN_RULE = ["INPUT", "-p", "tcp", "--dport", "22", "--syn"]  # counts SSH connections, no target


def timed(argv: list[str], env: dict | None = None, stdin: bytes | None = None) -> dict:
    """Wall, CPU (user+sys of the process and its children) and peak RSS of one command."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            stdin=subprocess.PIPE if stdin is not None else None)
    out, err = proc.communicate(stdin)
    wall = time.perf_counter() - t0
    # communicate() already reaped the child; its rusage is folded into RUSAGE_CHILDREN
    return {
        "wall_s": round(wall, 3),
        "rc": proc.returncode,
        "stdout": out.decode(errors="replace"),
        "stderr": err.decode(errors="replace"),
    }


def children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def syn_count(lab) -> int:
    total = 0
    for node in lab.nodes:
        out = lab.node_exec(node.name, ["iptables", "-L", "INPUT", "-v", "-x", "-n"]).stdout
        for line in out.splitlines():
            if "dpt:22" in line and "flags:0x17/0x02" in line:
                total += int(line.split()[0])
    return total


LOGIN_LOCK = Path.home() / ".pyenv" / "shims" / ".pyenv-shim"


def _lock_age() -> float | None:
    try:
        return time.time() - LOGIN_LOCK.stat().st_mtime
    except FileNotFoundError:
        return None


def clear_stale_login_lock() -> None:
    """Remove pyenv's rehash lock when a killed login left it behind.

    This machine's ~/.bashrc runs `pyenv rehash` on every login, and it takes a lock file a
    moment before it arms the trap that removes it. Tearing a lab down kills whatever logins
    are in flight, and one caught in that moment leaves the lock: every later login then waits
    60 s for it.
    """
    age = _lock_age()
    if age is None:
        return
    # Called with the lab down: no login is running, so a lock without a rehash is a leftover.
    running = subprocess.run(["pgrep", "-f", "pyenv-rehash"], capture_output=True).stdout
    if not running.strip():
        LOGIN_LOCK.unlink(missing_ok=True)
        print(f"removed a stale pyenv rehash lock ({age:.0f} s old) left by a killed login",
              flush=True)


def check_login_lock() -> None:
    """Refuse to time logins that will stall on a stale lock (see clear_stale_login_lock)."""
    age = _lock_age()
    if age is not None and age > 60:
        raise RuntimeError(
            f"{LOGIN_LOCK} is a stale pyenv rehash lock ({age:.0f} s old): every SSH login on "
            f"the lab nodes would wait 60 s for it. Remove it (no rehash is running) and run "
            f"again."
        )


def parse_ms_per_node(bundle: Path) -> float:
    """The parse stage's CPU on a bundle the run just wrote, per node."""
    from kubenetdiag.bundle import read_bundle, read_cluster
    from kubenetdiag.facts.parse import facts_from_records

    _, records = read_bundle(bundle)
    cluster = read_cluster(bundle)
    best = None
    for _ in range(3):
        c0 = time.process_time()
        facts_from_records(records, cluster)
        used = time.process_time() - c0
        best = used if best is None else min(best, used)
    return round(best * 1000 / len(records), 2)


def measure(n: int, repeat: int, workdir: Path, login: str = "node") -> dict:
    from kubenetdiag.collect.script import build_script, new_marker
    from kubenetdiag.probes import PROBES
    from kubenetdiag_lab import Lab

    lab = Lab(workdir / f"lab{n}", nodes=n, prefix="kndbench", login=login)
    lab.down()
    clear_stale_login_lock()
    t0 = time.perf_counter()
    lab.up()
    up_s = time.perf_counter() - t0
    try:
        for node in lab.nodes:
            lab.node_exec(node.name, ["iptables", "-I", *SYN_RULE])
        in_client = ["ip", "netns", "exec", lab.client_netns]
        py = [sys.executable, "-m", "kubenetdiag"]
        script = build_script(PROBES, new_marker())
        env = dict(
            os.environ,
            ANSIBLE_HOST_KEY_CHECKING="True",
            ANSIBLE_PYTHON_INTERPRETER="/usr/bin/python3",
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_LOCAL_TEMP=str(workdir / "ansible-local"),
        )
        # As on a user's machine, kubenetdiag's own modules are byte-compiled once, not on
        # every start (this sandbox sets PYTHONDONTWRITEBYTECODE).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        runs: dict[str, list[dict]] = {"collect": [], "ansible": [], "diagnose": [],
                                       "bare_paramiko": []}
        tag = f"{n}-{login}"
        # Round 0 is a warm-up for both tools (byte code, page cache, sshd) and is not kept.
        for r in range(repeat + 1):
            for kind in ("collect", "ansible", "bare_paramiko", "diagnose"):
                out_dir = workdir / f"{kind}-{tag}-{r}"
                if kind == "collect":
                    argv = [
                        *py,
                        "collect",
                        "-i",
                        str(lab.inventory_path),
                        "-o",
                        str(out_dir),
                        "--quiet",
                        "--parallel",
                        str(max(n, 1)),
                    ]
                elif kind == "diagnose":
                    argv = [
                        *py,
                        "diagnose",
                        "-i",
                        str(lab.inventory_path),
                        "--bundle",
                        str(out_dir),
                        "--quiet",
                        "--parallel",
                        str(max(n, 1)),
                        "--format",
                        "json",
                        "--report",
                        str(workdir / f"r-{tag}-{r}.html"),
                    ]
                elif kind == "bare_paramiko":
                    argv = [sys.executable, str(ROOT / "bench" / "bare_paramiko.py"),
                            str(lab.inventory_path)]
                else:
                    argv = [
                        "ansible",
                        "all",
                        "-i",
                        str(lab.inventory_path),
                        "-m",
                        "shell",
                        "-a",
                        script,
                        "-f",
                        str(n),
                        "-o",
                    ]
                if login == "machine":
                    check_login_lock()
                syn0, cpu0 = syn_count(lab), children_cpu()
                stdin = script.encode() if kind == "bare_paramiko" else None
                res = timed([*in_client, *argv], env=env, stdin=stdin)
                res["cpu_s"] = round(children_cpu() - cpu0, 3)
                res["ssh_connections_per_node"] = round((syn_count(lab) - syn0) / n, 2)
                if kind == "ansible":
                    res["ok_nodes"] = res["stdout"].count("| CHANGED") + res["stdout"].count(
                        "| SUCCESS"
                    )
                elif kind == "bare_paramiko":
                    res["ok_nodes"] = n if res["rc"] == 0 else 0
                else:
                    res["ok_nodes"] = n if res["rc"] in (0, 1) else 0
                if res["ok_nodes"] != n:
                    raise RuntimeError(f"{kind} at N={n} failed: {res['stderr'][-2000:]}")
                del res["stdout"], res["stderr"]
                if r > 0:
                    runs[kind].append(res)
        best = {k: min(v, key=lambda x: x["wall_s"]) for k, v in runs.items()}
        return {
            "nodes": n,
            "login": login,
            "parse_ms_per_node": parse_ms_per_node(workdir / f"collect-{tag}-1"),
            "lab_up_s": round(up_s, 2),
            "collect_wall_s": best["collect"]["wall_s"],
            "collect_cpu_s": best["collect"]["cpu_s"],
            "collect_ssh_per_node": best["collect"]["ssh_connections_per_node"],
            "diagnose_wall_s": best["diagnose"]["wall_s"],
            "diagnose_cpu_s": best["diagnose"]["cpu_s"],
            "ansible_wall_s": best["ansible"]["wall_s"],
            "ansible_cpu_s": best["ansible"]["cpu_s"],
            "ansible_ssh_per_node": best["ansible"]["ssh_connections_per_node"],
            "ratio_ansible_over_collect": round(
                best["ansible"]["wall_s"] / best["collect"]["wall_s"], 1
            ),
            "bare_paramiko_wall_s": best["bare_paramiko"]["wall_s"],
            "bare_paramiko_cpu_s": best["bare_paramiko"]["cpu_s"],
            "runs": runs,
        }
    finally:
        lab.down()


def main() -> int:
    from kubenetdiag_lab import exit_on_sigterm

    exit_on_sigterm()  # its labs torn down on a timeout too
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="3,10,25,50")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root: it builds a network-namespace lab", file=sys.stderr)
        return 2
    if not shutil.which("ansible"):
        print("needs ansible-core for the baseline: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="knd-bench-") as tmp:
        for n, login in [*((n, "node") for n in sizes), (sizes[-1], "machine")]:
            rows.append(measure(n, args.repeat, Path(tmp), login=login))
            r = rows[-1]
            print(
                f"N={n:3d} {r['login']:7s} collect {r['collect_wall_s']:6.2f}s "
                f"(cpu {r['collect_cpu_s']:.2f}s, {r['collect_ssh_per_node']} ssh/node, "
                f"parse {r['parse_ms_per_node']} ms/node)  diagnose {r['diagnose_wall_s']:6.2f}s  "
                f"ansible {r['ansible_wall_s']:6.2f}s  ratio {r['ratio_ansible_over_collect']}x  "
                f"bare paramiko loop {r['bare_paramiko_wall_s']:6.2f}s",
                flush=True,
            )
    # The marginal CPU per node: the least-squares slope of collect's CPU over N (the
    # node's own login), which removes the fixed cost of starting Python and importing the
    # libraries.
    pts = [(r["nodes"], r["collect_cpu_s"]) for r in rows if r["login"] == "node"]
    slope = None
    if len({x for x, _ in pts}) > 1:
        mx = sum(x for x, _ in pts) / len(pts)
        my = sum(y for _, y in pts) / len(pts)
        slope = round(
            sum((x - mx) * (y - my) for x, y in pts) * 1000 / sum((x - mx) ** 2 for x, _ in pts),
            2,
        )
    parse = max(r["parse_ms_per_node"] for r in rows)
    print(f"collector CPU per extra node: {slope} ms; parsing: at most {parse} ms per node")
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "fanout",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "collect_cpu_ms_per_extra_node": slope,
        "parse_cpu_ms_per_node": parse,
        "rows": rows,
    }
    (RESULTS / "fanout.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"written {RESULTS / 'fanout.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
